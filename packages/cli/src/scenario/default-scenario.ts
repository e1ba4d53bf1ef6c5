/**
 * The scenario `iommu-sim run` (and `npm start`) runs when no file is given: a VMM on the default platform using
 * one IOMMU of each kind that has a driver (the mock, the SMMUv3, VT-d and AMD-Vi), the way a VMM developer would exercise
 * iommufd. Kept as data so `examples/default.yaml` can be checked against it.
 */
import type { z } from "zod";
import type { scenarioSchema } from "./schema.js";

/** Guest RAM of the mock device, at the start of the mock's aperture (16 MiB). */
const MOCK_RAM = 0x0100_0000;
/** Guest RAM of the SMMUv3 guest: IPA 1 GiB. */
const SMMU_RAM = 0x4000_0000;
/** Guest RAM of the VT-d device. */
const VTD_RAM = 0x2000_0000;
/** Guest RAM of the AMD-Vi device. */
const AMD_RAM = 0x3000_0000;
/** The IOVA the SMMUv3 guest's own stage 1 maps. */
const GUEST_IOVA = 0x1000_0000;

/** The default scenario, as it would be written in a file. */
export const DEFAULT_SCENARIO: z.input<typeof scenarioSchema> = {
  name: "default",
  description:
    "a VMM drives iommufd on the mock IOMMU, the SMMUv3, VT-d and AMD-Vi: VFIO bind, guest RAM, DMA and faults, a nested SMMUv3 " +
    "guest, page requests, an unbind under a live vDEVICE, and a teardown that must find nothing leaked",
  steps: [
    { do: "boot" },
    { do: "spawn" },
    { do: "open-iommufd" },
    // The mock IOMMU: one device, guest RAM and a read-only page.
    { do: "bind", device: "mock-dev0" },
    { do: "ioas-alloc", as: "ioas0" },
    { do: "map", ioas: "ioas0", iova: MOCK_RAM, size: "1MiB", as: "ram0" },
    { do: "map", ioas: "ioas0", iova: MOCK_RAM + 0x10_0000, size: "4KiB", readonly: true, as: "rom0" },
    { do: "attach", device: "mock-dev0", pt: "ioas0" },
    { do: "dma", name: "DMA write to guest RAM", device: "mock-dev0", op: "write", iova: MOCK_RAM + 0x40 },
    { do: "dma", name: "DMA read of guest RAM", device: "mock-dev0", op: "read", iova: MOCK_RAM + 0x40, length: 4 },
    { do: "dma", name: "DMA read of the read-only page", device: "mock-dev0", op: "read", iova: MOCK_RAM + 0x10_0000 },
    {
      do: "dma",
      name: "DMA write to the read-only page",
      device: "mock-dev0",
      op: "write",
      iova: MOCK_RAM + 0x10_0000,
      outcome: "fault",
      fault: "permission",
    },
    {
      do: "dma",
      name: "DMA to an unmapped IOVA",
      device: "mock-dev0",
      op: "read",
      iova: MOCK_RAM + 0x80_0000,
      outcome: "fault",
      fault: "translation",
    },
    { do: "inspect", device: "mock-dev0", iova: MOCK_RAM + 0x40 },
    // The SMMUv3: stage 2 over guest RAM, then a nested guest on a vIOMMU.
    { do: "bind", device: "smmu-dma0" },
    { do: "ioas-alloc", as: "ioas1" },
    { do: "map", ioas: "ioas1", iova: SMMU_RAM, size: "64KiB", as: "guest-ram" },
    { do: "hwpt-alloc", device: "smmu-dma0", pt: "ioas1", nestParent: true, as: "s2" },
    { do: "attach", device: "smmu-dma0", pt: "s2" },
    { do: "dma", name: "DMA through stage 2", device: "smmu-dma0", op: "write", iova: SMMU_RAM + 0x8000 },
    { do: "viommu-alloc", device: "smmu-dma0", hwpt: "s2", as: "viommu0" },
    { do: "vdevice-alloc", viommu: "viommu0", device: "smmu-dma0", virtId: "0x42", as: "vdev0" },
    { do: "veventq-alloc", viommu: "viommu0", depth: 8, as: "veventq0" },
    { do: "smmuv3-guest", device: "smmu-dma0", viommu: "viommu0", ram: "guest-ram", iova: GUEST_IOVA, as: "guest0" },
    { do: "attach", device: "smmu-dma0", pt: "guest0" },
    {
      do: "dma",
      name: "guest DMA through stage 1 + stage 2",
      device: "smmu-dma0",
      op: "write",
      iova: GUEST_IOVA + 0x10,
    },
    { do: "dma", name: "guest DMA again (an IOTLB hit)", device: "smmu-dma0", op: "read", iova: GUEST_IOVA + 0x10 },
    { do: "inspect", device: "smmu-dma0", iova: GUEST_IOVA + 0x10 },
    { do: "smmuv3-guest-remap", guest: "guest0", page: 6 },
    { do: "dma", name: "guest DMA after its invalidation", device: "smmu-dma0", op: "write", iova: GUEST_IOVA + 0x20 },
    {
      do: "dma",
      name: "guest DMA its stage 1 does not map",
      device: "smmu-dma0",
      op: "write",
      iova: GUEST_IOVA + 0x40_0000,
      outcome: "fault",
      fault: "translation",
    },
    { do: "veventq-read", queue: "veventq0", count: 1, virtId: "0x42" },
    // VT-d: a PCI device on the DMAR unit, its own IOAS.
    { do: "bind", device: "xhci0" },
    { do: "ioas-alloc", as: "ioas2" },
    { do: "map", ioas: "ioas2", iova: VTD_RAM, size: "256KiB", as: "ram2" },
    { do: "map", ioas: "ioas2", iova: VTD_RAM + 0x4_0000, size: "4KiB", readonly: true, as: "rom2" },
    { do: "attach", device: "xhci0", pt: "ioas2" },
    { do: "dma", name: "VT-d DMA write to guest RAM", device: "xhci0", op: "write", iova: VTD_RAM + 0x100 },
    { do: "dma", name: "VT-d DMA read back (an IOTLB hit)", device: "xhci0", op: "read", iova: VTD_RAM + 0x100 },
    {
      do: "dma",
      name: "VT-d DMA write to the read-only page",
      device: "xhci0",
      op: "write",
      iova: VTD_RAM + 0x4_0000,
      outcome: "fault",
      fault: "write",
    },
    {
      do: "dma",
      name: "VT-d DMA to an unmapped IOVA",
      device: "xhci0",
      op: "read",
      iova: VTD_RAM + 0x10_0000,
      outcome: "fault",
    },
    // AMD-Vi: a PCI NIC behind amd0 (a v1 host table), guest RAM with a read-only page, its own IOAS.
    { do: "bind", device: "amd-nic0" },
    { do: "ioas-alloc", as: "ioas3" },
    { do: "map", ioas: "ioas3", iova: AMD_RAM, size: "256KiB", as: "ram3" },
    { do: "map", ioas: "ioas3", iova: AMD_RAM + 0x4_0000, size: "4KiB", readonly: true, as: "rom3" },
    { do: "attach", device: "amd-nic0", pt: "ioas3" },
    { do: "dma", name: "AMD-Vi DMA write to guest RAM", device: "amd-nic0", op: "write", iova: AMD_RAM + 0x200 },
    { do: "dma", name: "AMD-Vi DMA read back (an IOTLB hit)", device: "amd-nic0", op: "read", iova: AMD_RAM + 0x200 },
    {
      do: "dma",
      name: "AMD-Vi DMA write to the read-only page",
      device: "amd-nic0",
      op: "write",
      iova: AMD_RAM + 0x4_0000,
      outcome: "fault",
      fault: "permission",
    },
    {
      do: "dma",
      name: "AMD-Vi DMA to an unmapped IOVA",
      device: "amd-nic0",
      op: "read",
      iova: AMD_RAM + 0x10_0000,
      outcome: "fault",
      fault: "not present",
    },
    { do: "inspect", device: "amd-nic0", iova: AMD_RAM + 0x200 },
    // Page requests: a fault-capable HWPT; the VMM maps the page on demand and answers.
    { do: "bind", device: "mock-dev1" },
    { do: "fault-queue-alloc", as: "fq0" },
    { do: "hwpt-alloc", device: "mock-dev1", pt: "ioas0", faultQueue: "fq0", as: "iopf-hwpt" },
    { do: "attach", device: "mock-dev1", pt: "iopf-hwpt" },
    {
      do: "dma",
      name: "DMA to a page not yet mapped",
      device: "mock-dev1",
      op: "write",
      iova: MOCK_RAM + 0x20_0000,
      outcome: "page-request",
    },
    { do: "page-requests", queue: "fq0", count: 1, mapIn: "ioas0", respond: "success" },
    { do: "dma", name: "the device retries", device: "mock-dev1", op: "write", iova: MOCK_RAM + 0x20_0000 },
    { do: "snapshot", label: "everything live" },
    // Unbind under a live vDEVICE: the vDEVICE goes, its ID stays a tombstone.
    { do: "detach", device: "smmu-dma0" },
    { do: "destroy", object: "guest0" },
    { do: "unbind", device: "smmu-dma0" },
    { do: "snapshot", label: "after the unbind" },
    { do: "destroy", name: "destroy the tombstoned vDEVICE", object: "vdev0", expect: "ENOENT" },
    { do: "close", fd: "veventq0" },
    { do: "destroy", object: "veventq0" },
    { do: "destroy", object: "viommu0" },
    { do: "destroy", object: "s2" },
    { do: "teardown" },
  ],
};
