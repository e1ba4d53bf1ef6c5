/**
 * The platform every example and most tests boot: one IOMMU of each shipped kind, each reached by the firmware
 * mechanism its architecture uses, with a few endpoints behind each.
 */
import { readFile } from "node:fs/promises";
import {
  type ParsePlatformOptions,
  type PlatformDescription,
  type PlatformInput,
  parsePlatform,
  parsePlatformText,
} from "./description.js";

/**
 * The default platform as JSON input (before parsing), for tools that want to show or edit it.
 *
 * - `mock0`, `mock1`: mock IOMMUs described in DT; platform devices reach them through `iommus` (args[0] = ID).
 * - `smmu0`: an SMMUv3 in DT; PCI segment 0 (`pci0`) reaches it through the host bridge's `iommu-map` (SID =
 *   0x100 + RID), and two platform devices through `iommus`.
 * - `vtd0`: a VT-d unit; its DMAR DRHD has INCLUDE_PCI_ALL for segment 1 (`pci1`).
 * - `amd0`: an AMD-Vi unit; its IVHD lists select, range and alias entries for segment 2 (`pci2`).
 *
 * Grouping cases: `gpu0`/`gpu0-audio` are functions of one multi-function device without ACS; `sata0` carries a
 * DMA alias of another function (`00:17.1`); `amd-legacy0` sits behind a bridge whose ID (`00:02.0`) it aliases
 * in the IVRS. `uart0` has no IOMMU: its DMA reaches memory directly.
 * @linux the DT blob and ACPI tables of a test machine
 */
export function defaultPlatformInput(): PlatformInput {
  return {
    memory: { size: "4GiB" },
    iommus: [
      { name: "mock0", kind: "mock", mmio: { base: "0x09000000", size: "4KiB" }, options: { pasidBits: 20 } },
      { name: "mock1", kind: "mock", mmio: { base: "0x09010000", size: "4KiB" }, options: { pasidBits: 20 } },
      {
        name: "smmu0",
        kind: "smmuv3",
        mmio: { base: "0x09050000", size: "128KiB" },
        options: { stages: "s1s2", ssidBits: 20, sidBits: 16, pri: true, ats: true },
      },
      {
        name: "vtd0",
        kind: "vtd",
        mmio: { base: "0xfed90000", size: "4KiB" },
        options: { scalableMode: true, pasidBits: 20, pri: true, ats: true },
      },
      {
        name: "amd0",
        kind: "amd",
        mmio: { base: "0xfeb80000", size: "512KiB" },
        options: { v2: true, ppr: true, pasidBits: 16 },
      },
    ],
    buses: [
      { name: "platform", type: "platform" },
      {
        name: "pci0",
        type: "pci",
        segment: 0,
        acs: true,
        iommuMap: [{ ridBase: 0, iommu: "smmu0", sidBase: "0x100", length: "0x100" }],
      },
      { name: "pci1", type: "pci", segment: 1, acs: true },
      { name: "pci2", type: "pci", segment: 2, acs: true },
    ],
    devices: [
      // DT platform devices.
      { name: "mock-dev0", bus: "platform", iommus: [{ iommu: "mock0", args: [1] }] },
      { name: "mock-dev1", bus: "platform", iommus: [{ iommu: "mock0", args: [2] }] },
      { name: "mock1-dev0", bus: "platform", iommus: [{ iommu: "mock1", args: [1] }] },
      { name: "smmu-dma0", bus: "platform", iommus: [{ iommu: "smmu0", args: [0x10] }] },
      { name: "smmu-dma1", bus: "platform", iommus: [{ iommu: "smmu0", args: [0x11] }] },
      { name: "uart0", bus: "platform" },
      // Segment 0: SMMUv3 through iommu-map.
      { name: "nic0", bus: "pci0", bdf: "00:01.0", ats: true, pri: true, pasid: 20 },
      { name: "gpu0", bus: "pci0", bdf: "00:02.0", ats: true, pasid: 20 },
      { name: "gpu0-audio", bus: "pci0", bdf: "00:02.1" },
      // Segment 1: VT-d through DMAR INCLUDE_PCI_ALL.
      { name: "xhci0", bus: "pci1", bdf: "00:14.0" },
      { name: "sata0", bus: "pci1", bdf: "00:17.0", aliases: ["00:17.1"] },
      { name: "nvme0", bus: "pci1", bdf: "01:00.0", ats: true, pri: true, pasid: 20 },
      // Segment 2: AMD-Vi through IVRS.
      { name: "amd-nic0", bus: "pci2", bdf: "00:01.0" },
      { name: "amd-gpu0", bus: "pci2", bdf: "01:00.0", ats: true, pri: true, pasid: 16 },
      { name: "amd-legacy0", bus: "pci2", bdf: "02:00.0" },
    ],
    acpi: {
      dmar: [{ iommu: "vtd0", segment: 1, includePciAll: true }],
      ivrs: [
        {
          iommu: "amd0",
          segment: 2,
          entries: [
            { type: "select", bdf: "00:01.0" },
            { type: "range", start: "01:00.0", end: "01:1f.7" },
            { type: "alias", bdf: "02:00.0", alias: "00:02.0" },
          ],
        },
      ],
    },
  };
}

/**
 * The default platform, parsed. A fresh object each call.
 * @linux the firmware description of the default test machine
 */
export function defaultPlatform(): PlatformDescription {
  return parsePlatform(defaultPlatformInput());
}

/**
 * Read a JSON platform description from a file and parse it; throws `PlatformError` (with the file name in front)
 * when it is not JSON or is invalid (see {@link parsePlatformText}).
 * @linux loading a DT blob / ACPI tables from the boot loader
 */
export async function platformFromFile(path: string, opts: ParsePlatformOptions = {}): Promise<PlatformDescription> {
  const text = await readFile(path, "utf8");
  try {
    return parsePlatformText(text, opts);
  } catch (e) {
    if (e instanceof Error) e.message = `${path}: ${e.message}`;
    throw e;
  }
}
