/**
 * The conformance target of the SMMUv3 driver (drivers-smmuv3): smmu0 of the default platform.
 */
import { IOMMU_HWPT_ALLOC } from "@iommu-sim/core";
import {
  type ArmSmmuDevice,
  type ArmSmmuDriver,
  armSmmuV3Driver,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  STE_VAL,
} from "@iommu-sim/drivers-smmuv3";
import type { ConformanceTarget } from "../target.js";

/** A vSTE with V=1, Config=bypass: the nested domain translates with the parent's stage 2 only. */
function bypassVste(): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setBigUint64(0, 1n | (BigInt(STE_VAL.CFG_BYPASS) << 1n), true);
  return b;
}

/**
 * The SMMUv3 driver as a conformance target: smmu-dma0/smmu-dma1, nic0 for PASID and PRI.
 * @linux drivers/iommu/arm/arm-smmu-v3, as the suite sees it
 */
export function smmuv3Target(): ConformanceTarget {
  return {
    name: "smmuv3",
    driver: armSmmuV3Driver,
    iommu: "smmu0",
    devices: { primary: "smmu-dma0", secondary: "smmu-dma1" },
    spareIds: [0x20, 0x21],
    settle: (m) => (armSmmuV3Driver.instanceFor(m, "smmu0") as ArmSmmuDevice).drainQueues(),
    mutants: [
      "smmuv3:skip-invalidation",
      "smmuv3:leaked-device-ref",
      "smmuv3:wrong-permission",
      "smmuv3:half-written-entry",
    ],
    caps: {
      pageSizes: [4096, 2 * 1024 * 1024, 1024 * 1024 * 1024],
      iova: { base: 0x100_0000, size: 2 ** 36 },
      identity: true,
      blocked: true,
      pasid: { device: "nic0", pasids: [1, 2] },
      nested: {
        parentFlags: IOMMU_HWPT_ALLOC.NEST_PARENT,
        alloc: (m, dev, parent) => {
          const drv = (armSmmuV3Driver.driverFor(m) as unknown as { state: ArmSmmuDriver }).state;
          return drv.domainAllocNested(dev, parent, 0, { type: IOMMU_HWPT_DATA_ARM_SMMUV3, data: bypassVste() });
        },
      },
      // nic0's page requests go through its endpoint (PRI on the SMMU's PRI queue).
      iopf: { device: "nic0" },
      viommu: {
        type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
        nestedData: () => ({ type: IOMMU_HWPT_DATA_ARM_SMMUV3, data: bypassVste() }),
      },
      reportsFaults: true,
      dirty: true,
      strict: {
        options: {
          strict: true,
          tlbEntries: 2,
          tlbWays: 1,
          cfgEntries: 2,
          cfgWays: 1,
          walkCacheEntries: 2,
          walkCacheWays: 1,
        },
      },
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
