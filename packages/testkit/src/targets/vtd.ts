/**
 * The conformance target of the Intel VT-d driver (drivers-vtd): vtd0 of the default platform, reached through the
 * DMAR table (so the DT-based probe checks that add devices are n/a).
 */
import type { Machine } from "@iommu-sim/core";
import { type IntelIommu, intelIommuDriver, type VtdHw, vtdHw } from "@iommu-sim/drivers-vtd";
import type { ConformanceTarget } from "../target.js";

function hw(m: Machine): VtdHw {
  return m.hw.get("vtd0") as VtdHw;
}

/** nvme0's requester ID as its DMA carries it. */
function rid(m: Machine): number {
  return m.device("nvme0").route.requesterId;
}

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
    mutants: ["vtd:skip-invalidation", "vtd:leaked-device-ref", "vtd:wrong-permission", "vtd:half-written-entry"],
    settle: (m) => (intelIommuDriver.instanceFor(m, "vtd0") as IntelIommu).drainPrq(),
    caps: {
      pageSizes: [4096, 2 * 1024 * 1024],
      iova: { base: 0x100_0000, size: 2 ** 36 },
      identity: true,
      blocked: true,
      pasid: { device: "nvme0", pasids: [1, 2] },
      // The VT-d model takes page requests through its own entry point (it predates the endpoint's pageRequest).
      iopf: {
        device: "nvme0",
        pageRequest: (m, _dev, r) => {
          const before = hw(m).pageResponses.length;
          const P = vtdHw.VTD_PR_PERM;
          hw(m).pageRequest(rid(m), r.pasid, r.addr, r.write ? P.READ | P.WRITE : P.READ, r.grpid, r.last);
          return hw(m).pageResponses.length === before;
        },
        responses: (m) =>
          hw(m).pageResponses.map((x) => ({ grpid: x.prgIndex, code: x.code === 0 ? 0 : x.code === 1 ? 1 : 2 })),
      },
      dirty: true,
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
