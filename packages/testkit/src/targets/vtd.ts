/**
 * The conformance target of the Intel VT-d driver (drivers-vtd): vtd0 of the default platform, reached through the
 * DMAR table (so the DT-based probe checks that add devices are n/a).
 */
import { type IntelIommu, intelIommuDriver } from "@iommu-sim/drivers-vtd";
import type { ConformanceTarget } from "../target.js";

/**
 * The VT-d driver as a conformance target: xhci0 and nvme0 (PASID, PRI) on segment 1.
 * @linux drivers/iommu/intel, as the suite sees it
 */
export function vtdTarget(): ConformanceTarget {
  return {
    name: "vtd",
    driver: intelIommuDriver,
    iommu: "vtd0",
    devices: { primary: "xhci0", secondary: "nvme0" },
    // vtd0 is found through ACPI DMAR, not DT `iommus`: no IDs for added platform devices.
    spareIds: [],
    settle: (m) => (intelIommuDriver.instanceFor(m, "vtd0") as IntelIommu).drainPrq(),
    caps: {
      pageSizes: [4096, 2 * 1024 * 1024],
      iova: { base: 0x100_0000, size: 2 ** 36 },
      identity: true,
      blocked: true,
      pasid: { device: "nvme0", pasids: [1, 2] },
      // Page requests go through the endpoint (its model's acceptPageRequest); responses are read back from it.
      iopf: { device: "nvme0" },
      dirty: true,
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
