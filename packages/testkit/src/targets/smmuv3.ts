/**
 * The conformance target of the SMMUv3 driver (drivers-smmuv3): smmu0 of the default platform.
 */
import { IOMMU_HWPT_ALLOC } from "@iommu-sim/core";
import {
  type ArmSmmuDevice,
  type ArmSmmuDriver,
  armSmmuV3Driver,
  CMDQ_OP,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VEVENT_ARM_SMMUV3_SIZE,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
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

/** A vSTE with V=1, Config=S1 translate, S1ContextPtr = `cdIpa` (one linear CD). */
function s1Vste(cdIpa: number): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setBigUint64(0, 1n | (BigInt(STE_VAL.CFG_S1_TRANS) << 1n) | BigInt(cdIpa), true);
  return b;
}

/** A 16-byte command-queue entry: opcode in dword 0 bits 7:0, `hi` in bits 63:32. */
function cmd(op: number, hi: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, op, true);
  dv.setUint32(4, hi >>> 0, true);
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
        // Guest command-queue entries: CMD_TLBI_NH_ALL (the VMID is the vIOMMU's); a PREFETCH_CONFIG is EIO.
        invalidate: {
          dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
          entryLen: 16,
          entry: () => cmd(CMDQ_OP.TLBI_NH_ALL, 0),
          bad: (vsid) => cmd(CMDQ_OP.PREFETCH_CFG, vsid),
          badCode: "EIO",
        },
        // A stage-1 vSTE whose CD table is a zero page: the CD fetch finds CD.V=0, C_BAD_CD goes to the vEVENTQ.
        vevent: {
          type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
          payloadLen: IOMMU_VEVENT_ARM_SMMUV3_SIZE,
          nestedData: (zeroIpa) => ({ type: IOMMU_HWPT_DATA_ARM_SMMUV3, data: s1Vste(zeroIpa) }),
          trigger: async (m, dev, iova) => {
            try {
              m.device(dev.name).dmaRead(iova, 4);
            } catch {
              // The DMA is refused; its event is what the check reads.
            }
            await (armSmmuV3Driver.instanceFor(m, "smmu0") as ArmSmmuDevice).drainQueues();
          },
          // EVTQ_0_SID: dword 0 bits 63:32, the vSID in a vEVENT.
          virtId: (p) => new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(4, true),
        },
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
