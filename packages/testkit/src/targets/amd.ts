/**
 * The conformance target of the AMD IOMMU driver (drivers-amd): amd0 of the default platform, reached through the
 * IVRS table. The probe checks add a device behind it by hot-adding a PCI function inside amd0's IVHD range entry
 * on segment 2 (`sparePci`).
 */
import {
  type AmdIommu,
  amdHardwareKind,
  createAmdIommuDriver,
  IOMMU_HWPT_DATA_AMD_GUEST,
  IOMMU_VIOMMU_TYPE_AMD,
} from "@iommu-sim/drivers-amd";
import type { ConformanceTarget } from "../target.js";

/**
 * A guest DTE for `struct iommu_hwpt_amd_guest` with V and TV and no guest translation: DMA through the nested
 * domain goes through the nest parent only.
 */
function plainGuestDte(): Uint8Array {
  const b = new Uint8Array(32);
  new DataView(b.buffer).setBigUint64(0, 3n, true);
  return b;
}

/**
 * The AMD driver as a conformance target: amd-nic0 and amd-gpu0 (PASID, PRI, ATS) on segment 2; devices the probe
 * checks add are PCI functions hot-added at `pci2` 01:01.0, inside amd0's IVRS range entry. Paging domains
 * allocated without flags use v2 tables (`amd_iommu=pgtbl_v2`), so they attach at PASIDs through the GCR3 table;
 * dirty tracking (v1, HAD) and the AMD vIOMMU with nested HWPTs from a guest DTE are claimed. The domain-level
 * `nested` capability is not: as in Linux, AMD nested domains exist only on a vIOMMU (no domain_alloc_nested), and
 * the vIOMMU check covers them. IOPF is claimed for amd-gpu0: as in Linux, attaching a v2 (or identity) domain
 * puts a PRI-capable device on its IOMMU's IOPF queue (amd_iommu_iopf_add_device) with PPR in its DTE; page
 * requests go through the endpoint into the PPR log and COMPLETE_PPR_REQUEST answers reach the endpoint.
 * @linux drivers/iommu/amd, as the suite sees it
 */
export function amdTarget(): ConformanceTarget {
  const driver = createAmdIommuDriver({ hardware: [amdHardwareKind], pgtable: "v2" });
  return {
    name: "amd",
    driver,
    iommu: "amd0",
    devices: { primary: "amd-nic0", secondary: "amd-gpu0" },
    // amd0 is found through the ACPI IVRS, not DT `iommus`: no IDs for added platform devices. Added devices are PCI
    // functions in amd0's IVHD range entry 01:00.0-01:1f.7 on segment 2 (amd-gpu0 is 01:00.0; no other IOMMU covers
    // the segment).
    spareIds: [],
    sparePci: [
      { bus: "pci2", bdf: "01:01.0" },
      { bus: "pci2", bdf: "01:02.0" },
    ],
    settle: (m) => (driver.instanceFor(m, "amd0") as AmdIommu).drainPpr(),
    mutants: ["amd:skip-invalidation", "amd:leaked-device-ref", "amd:wrong-permission", "amd:half-written-entry"],
    caps: {
      pageSizes: [4096, 2 * 1024 * 1024],
      iova: { base: 0x100_0000, size: 2 ** 36 },
      identity: true,
      blocked: true,
      pasid: { device: "amd-gpu0", pasids: [1, 2] },
      // Page requests go through the endpoint (the model's acceptPageRequest); responses are read back from it.
      iopf: { device: "amd-gpu0" },
      dirty: true,
      viommu: {
        type: IOMMU_VIOMMU_TYPE_AMD,
        nestedData: () => ({ type: IOMMU_HWPT_DATA_AMD_GUEST, data: plainGuestDte() }),
      },
      strict: { options: { strict: true, tlbEntries: 2, tlbWays: 1, dteEntries: 2 } },
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
