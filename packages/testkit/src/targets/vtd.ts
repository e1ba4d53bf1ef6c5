/**
 * The conformance target of the Intel VT-d driver (drivers-vtd): vtd0 of the default platform, reached through the
 * DMAR table. The probe checks add a device behind it by hot-adding a PCI function on segment 1, which vtd0's DRHD
 * covers with INCLUDE_PCI_ALL (`sparePci`).
 */
import { IOMMU_HWPT_ALLOC, iommuDomainAllocNested } from "@iommu-sim/core";
import { type IntelIommu, IOMMU_HWPT_DATA_VTD_S1, intelIommuDriver } from "@iommu-sim/drivers-vtd";
import type { ConformanceTarget } from "../target.js";

/**
 * The VT-d driver as a conformance target: xhci0 and nvme0 (PASID, PRI) on segment 1; devices the probe checks add
 * are PCI functions hot-added at `pci1` 00:15.0, inside vtd0's INCLUDE_PCI_ALL segment.
 * @linux drivers/iommu/intel, as the suite sees it
 */
export function vtdTarget(): ConformanceTarget {
  return {
    name: "vtd",
    driver: intelIommuDriver,
    iommu: "vtd0",
    devices: { primary: "xhci0", secondary: "nvme0" },
    // vtd0 is found through ACPI DMAR, not DT `iommus`: no IDs for added platform devices. Added devices are PCI
    // functions on segment 1 (vtd0's INCLUDE_PCI_ALL DRHD; no other IOMMU covers the segment). They sit in the upper
    // half of bus 0, whose scalable-mode context table xhci0 and sata0 already use: as in Linux, a context table
    // stays allocated until the unit is torn down (free_context_table), so a device on a fresh bus would leave one
    // page behind by design and the probe checks' page balance could not tell it from a leak.
    spareIds: [],
    sparePci: [
      { bus: "pci1", bdf: "00:15.0" },
      { bus: "pci1", bdf: "00:16.0" },
    ],
    mutants: ["vtd:skip-invalidation", "vtd:leaked-device-ref", "vtd:wrong-permission", "vtd:half-written-entry"],
    settle: (m) => (intelIommuDriver.instanceFor(m, "vtd0") as IntelIommu).drainPrq(),
    caps: {
      pageSizes: [4096, 2 * 1024 * 1024, 1024 * 1024 * 1024],
      iova: { base: 0x100_0000, size: 2 ** 36 },
      identity: true,
      blocked: true,
      pasid: { device: "nvme0", pasids: [1, 2] },
      // A nested domain from struct iommu_hwpt_vtd_s1 (4-level guest table at GPA 0, which the suite's parent leaves
      // unmapped: its DMA faults in the second stage).
      nested: {
        parentFlags: IOMMU_HWPT_ALLOC.NEST_PARENT,
        alloc: (_m, dev, parent) => {
          const data = new Uint8Array(24);
          new DataView(data.buffer).setUint32(16, 48, true); // addr_width
          return iommuDomainAllocNested(dev, parent, 0, { type: IOMMU_HWPT_DATA_VTD_S1, data });
        },
      },
      // Page requests go through the endpoint (its model's acceptPageRequest); responses are read back from it.
      iopf: { device: "nvme0" },
      dirty: true,
      strict: {
        options: {
          strict: true,
          tlbEntries: 2,
          tlbWays: 1,
          contextEntries: 2,
          pasidEntries: 2,
          cacheWays: 1,
          pagingCacheEntries: 2,
        },
      },
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
