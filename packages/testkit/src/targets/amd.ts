/**
 * The conformance target of the AMD IOMMU driver (drivers-amd): amd0 of the default platform, reached through the
 * IVRS table (so the DT-based probe checks that add devices are n/a).
 */
import { amdIommuDriver } from "@iommu-sim/drivers-amd";
import type { ConformanceTarget } from "../target.js";

/**
 * The AMD driver as a conformance target: amd-nic0 and amd-gpu0 on segment 2. PASID (v2) domains, IOPF, dirty
 * tracking and fault reporting are not claimed: the driver builds v1 domains only.
 * @linux drivers/iommu/amd, as the suite sees it
 */
export function amdTarget(): ConformanceTarget {
  return {
    name: "amd",
    driver: amdIommuDriver,
    iommu: "amd0",
    devices: { primary: "amd-nic0", secondary: "amd-gpu0" },
    // amd0 is found through the ACPI IVRS, not DT `iommus`: no IDs for added platform devices.
    spareIds: [],
    mutants: ["amd:skip-invalidation", "amd:leaked-device-ref", "amd:wrong-permission", "amd:half-written-entry"],
    caps: {
      pageSizes: [4096, 2 * 1024 * 1024],
      iova: { base: 0x100_0000, size: 2 ** 36 },
      identity: true,
      blocked: true,
      strict: { options: { strict: true, tlbEntries: 2, tlbWays: 1, dteEntries: 2 } },
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
