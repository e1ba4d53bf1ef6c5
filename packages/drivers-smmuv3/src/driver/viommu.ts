/**
 * The ARM SMMUv3 vIOMMU: one per VM per physical SMMU, over a stage-2 nesting parent whose VMID it uses. Nested
 * domains (a guest vSTE) are allocated on it; vDEVICEs give each assigned device its virtual StreamID; the guest's
 * command-queue entries come in through IOMMU_HWPT_INVALIDATE and go to the real command queue with the VMID
 * forced and vSIDs turned into physical SIDs; stage-1 faults of a device attached to one of its nested domains go
 * to the vIOMMU's vEVENTQ with the virtual SID. The driver reaches iommufd only through core's `IommuViommu` (`reportEvent`
 * included).
 * @linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c (struct arm_vsmmu, struct arm_smmu_vmaster,
 * arm_smmu_get_viommu_size, arm_vsmmu_init, arm_vsmmu_alloc_domain_nested, arm_vsmmu_cache_invalidate,
 * arm_vsmmu_convert_user_cmd, arm_vsmmu_vsid_to_sid, arm_smmu_attach_prepare_vmaster, arm_vmaster_report_event)
 */
import {
  type Device,
  type IommuDomain,
  type IommuUserData,
  type IommuUserDataArray,
  type IommuVdevice,
  type IommuViommu,
  type IommuViommuOps,
  kerr,
} from "@iommu-sim/core";
import { ArmSmmuDomain, type ArmSmmuNestedDomain } from "./domain.js";
import {
  type ArmSmmuVste,
  armSmmuValidateVste,
  IOMMU_VEVENT_ARM_SMMUV3_SIZE,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_SIZE,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  vsteCfg,
} from "./iommufd.js";
import type { ArmSmmuMaster } from "./master.js";
import { CMDQ_OP, STE_VAL } from "./regs.js";
import type { ArmSmmuDevice } from "./smmu.js";

/** Commands per batch (the last slot of a batch is the CMD_SYNC). @linux CMDQ_BATCH_ENTRIES */
const CMDQ_BATCH_ENTRIES = 64;
/** Largest virtual StreamID (a StreamID is 32 bits in commands and event records). */
export const ARM_VSMMU_VSID_MAX = 0xffff_ffff;

/**
 * The driver half of an ARM SMMUv3 vIOMMU (`viommu.priv`).
 * @linux struct arm_vsmmu
 */
export class ArmVsmmu {
  constructor(
    /** @linux arm_vsmmu.core */
    readonly core: IommuViommu,
    /** @linux arm_vsmmu.smmu */
    readonly smmu: ArmSmmuDevice,
    /** @linux arm_vsmmu.s2_parent */
    readonly s2Parent: ArmSmmuDomain,
    /** The VMID every command of the VM is tagged with (the parent's). @linux arm_vsmmu.vmid */
    readonly vmid: number,
  ) {}
}

/**
 * A master attached to a stage-1 nested domain of a vIOMMU through its vDEVICE: what its events are reported as.
 * @linux struct arm_smmu_vmaster
 */
export interface ArmSmmuVmaster {
  /** @linux arm_smmu_vmaster.vsmmu */
  readonly vsmmu: ArmVsmmu;
  /** @linux arm_smmu_vmaster.vsid */
  readonly vsid: number;
}

/** What the vIOMMU code needs of the driver. */
export interface ArmVsmmuDeps {
  /** The master of a probed device (ENODEV otherwise). @linux dev_iommu_priv_get */
  master(dev: Device): ArmSmmuMaster;
  /** A nested domain for a validated vSTE on `vsmmu`. */
  allocNested(vsmmu: ArmVsmmu, vste: ArmSmmuVste): IommuDomain;
}

/** The ARM vIOMMU of a core vIOMMU object. */
export function armVsmmuOf(viommu: IommuViommu): ArmVsmmu {
  const v = viommu.priv;
  if (!(v instanceof ArmVsmmu)) throw kerr("EINVAL", "not an ARM SMMUv3 vIOMMU");
  return v;
}

/**
 * Whether the device's root complex is known to make every write-back cacheable access coherent. The IORT CANWBS
 * flag is not modelled: a DMA-coherent SMMU (IDR0.COHACC) stands in for it.
 * @linux arm_smmu_master_canwbs (IOMMU_FWSPEC_PCI_RC_CANWBS)
 */
export function armSmmuMasterCanwbs(master: ArmSmmuMaster): boolean {
  return master.smmu.feat.coherency;
}

/**
 * Non-zero when the master's SMMU can host a vIOMMU of `viommuType`: nesting supported, and a guest unable to make
 * DMA non-coherent (CANWBS or S2FWB), for the ARM_SMMUV3 type.
 * @linux arm_smmu_get_viommu_size
 */
export function armSmmuGetViommuSize(master: ArmSmmuMaster, viommuType: number): number {
  const smmu = master.smmu;
  if (!smmu.feat.nesting) return 0;
  if (!armSmmuMasterCanwbs(master) && !smmu.feat.s2fwb) return 0;
  return viommuType === IOMMU_VIOMMU_TYPE_ARM_SMMUV3 ? 1 : 0;
}

/**
 * Set up the vIOMMU: its SMMU and stage-2 parent, whose VMID it takes. EINVAL for a parent of another SMMU or not
 * an SMMUv3 paging domain; EOPNOTSUPP for a type other than ARM_SMMUV3 (no implementation-specific vIOMMUs).
 * @linux arm_vsmmu_init
 */
export async function armVsmmuInit(
  viommu: IommuViommu,
  parentDomain: IommuDomain,
  _userData: IommuUserData | undefined,
  ops: IommuViommuOps,
): Promise<void> {
  const smmu = viommu.iommuDev as ArmSmmuDevice | undefined;
  if (!(parentDomain instanceof ArmSmmuDomain) || !smmu || parentDomain.smmu !== smmu) {
    throw kerr("EINVAL", "arm-smmu-v3: vIOMMU parent of another SMMU");
  }
  if (viommu.viommuType !== IOMMU_VIOMMU_TYPE_ARM_SMMUV3) {
    throw kerr("EOPNOTSUPP", `arm-smmu-v3: no vIOMMU of type ${viommu.viommuType}`);
  }
  viommu.priv = new ArmVsmmu(viommu, smmu, parentDomain, parentDomain.vmid);
  viommu.ops = ops;
}

/**
 * The physical SID of the device whose vDEVICE has `vsid` (its first StreamID, as Linux assumes one per device).
 * EIO without such a vDEVICE.
 * @linux arm_vsmmu_vsid_to_sid
 */
export function armVsmmuVsidToSid(vsmmu: ArmVsmmu, deps: ArmVsmmuDeps, vsid: number): number {
  const dev = vsmmu.core.findDev(vsid);
  if (!dev) throw kerr("EIO", `arm-smmu-v3: no vDEVICE with vSID 0x${vsid.toString(16)}`);
  return deps.master(dev).streams[0]!;
}

/**
 * Rewrite one guest command (four 32-bit words, in place) for the physical queue: TLBI_NSNH_ALL becomes
 * TLBI_NH_ALL of the VM; TLBI_NH_{VA,VAA,ALL,ASID} get the vIOMMU's VMID; ATC_INV, CFGI_CD and CFGI_CD_ALL get
 * the physical SID of their vSID. EIO for any other opcode or an unknown vSID.
 * @linux arm_vsmmu_convert_user_cmd
 */
export function armVsmmuConvertUserCmd(vsmmu: ArmVsmmu, deps: ArmVsmmuDeps, w: Uint32Array, at: number): void {
  const op = w[at]! & 0xff;
  switch (op) {
    case CMDQ_OP.TLBI_NSNH_ALL:
      w[at] = CMDQ_OP.TLBI_NH_ALL;
      w[at + 1] = vsmmu.vmid & 0xffff;
      w[at + 2] = 0;
      w[at + 3] = 0;
      break;
    case CMDQ_OP.TLBI_NH_VA:
    case CMDQ_OP.TLBI_NH_VAA:
    case CMDQ_OP.TLBI_NH_ALL:
    case CMDQ_OP.TLBI_NH_ASID:
      // CMDQ_TLBI_0_VMID: dword 0 bits 47:32.
      w[at + 1] = ((w[at + 1]! & ~0xffff) | (vsmmu.vmid & 0xffff)) >>> 0;
      break;
    case CMDQ_OP.ATC_INV:
    case CMDQ_OP.CFGI_CD:
    case CMDQ_OP.CFGI_CD_ALL:
      // CMDQ_CFGI_0_SID (= CMDQ_ATC_0_SID): dword 0 bits 63:32.
      w[at + 1] = armVsmmuVsidToSid(vsmmu, deps, w[at + 1]!) >>> 0;
      break;
    default:
      throw kerr("EIO", `arm-smmu-v3: guest command opcode 0x${op.toString(16)} not allowed`);
  }
}

/**
 * Invalidate from an array of `struct iommu_viommu_arm_smmuv3_invalidate` (guest command-queue entries): every
 * entry is fetched first (EINVAL for another type, E2BIG/EINVAL for bad lengths, nothing handled), then converted
 * and issued in batches with a CMD_SYNC. On an entry that cannot be converted (EIO) the commands converted before
 * it are issued and `entryNum` is the count of those; on a command-queue failure the batch's last entry does not
 * count.
 * @linux arm_vsmmu_cache_invalidate
 */
export async function armVsmmuCacheInvalidate(
  viommu: IommuViommu,
  array: IommuUserDataArray,
  deps: ArmVsmmuDeps,
): Promise<void> {
  const vsmmu = armVsmmuOf(viommu);
  const smmu = vsmmu.smmu;
  const n = array.entryNum;
  let cur = 0;
  try {
    // iommu_copy_struct_from_full_user_array
    if (array.type !== IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) {
      throw kerr("EINVAL", "arm-smmu-v3: bad invalidation data type");
    }
    const words = new Uint32Array(4 * n);
    for (let i = 0; i < n; i++) {
      const e = array.entry(i, IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_SIZE);
      const v = new DataView(e.buffer, e.byteOffset, IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_SIZE);
      for (let j = 0; j < 4; j++) words[4 * i + j] = v.getUint32(4 * j, true);
    }
    let last = 0;
    while (cur !== n) {
      try {
        armVsmmuConvertUserCmd(vsmmu, deps, words, 4 * cur);
      } catch (e) {
        // Linux reports the pending converted commands as handled without issuing them; issue them here.
        if (cur > last) smmu.cmdq.issueRaw(words.subarray(4 * last, 4 * cur), cur - last, true);
        throw e;
      }
      cur++;
      if (cur !== n && cur - last !== CMDQ_BATCH_ENTRIES - 1) continue;
      try {
        smmu.cmdq.issueRaw(words.subarray(4 * last, 4 * cur), cur - last, true);
      } catch (e) {
        cur--;
        throw e;
      }
      last = cur;
    }
  } finally {
    array.entryNum = cur;
  }
}

/**
 * A nested domain from a vSTE on this vIOMMU. EOPNOTSUPP for flags; the vSTE checks of
 * {@link armSmmuValidateVste}.
 * @linux arm_vsmmu_alloc_domain_nested
 */
export async function armVsmmuAllocDomainNested(
  viommu: IommuViommu,
  flags: number,
  userData: IommuUserData,
  deps: ArmVsmmuDeps,
): Promise<IommuDomain> {
  const vsmmu = armVsmmuOf(viommu);
  if (flags) throw kerr("EOPNOTSUPP", "arm-smmu-v3: nested flags");
  return deps.allocNested(vsmmu, armSmmuValidateVste(userData));
}

/**
 * The vmaster an attach of `nested` gives `dev`: its vDEVICE's vSID. A stage-1 vSTE needs a vDEVICE (ENOENT
 * without: invalidations and events need the vSID); abort and bypass vSTEs attach without one (undefined).
 * @linux arm_smmu_attach_prepare_vmaster
 */
export function armSmmuPrepareVmaster(nested: ArmSmmuNestedDomain, dev: Device): ArmSmmuVmaster | undefined {
  const vsmmu = nested.vsmmu;
  if (!vsmmu) return undefined;
  let vsid: number;
  try {
    vsid = vsmmu.core.getVdevId(dev);
  } catch (e) {
    const cfg = vsteCfg(nested.ste);
    if (cfg === STE_VAL.CFG_ABORT || cfg === STE_VAL.CFG_BYPASS) return undefined;
    throw e;
  }
  return { vsmmu, vsid };
}

/**
 * Report an event record (eight 32-bit words) of a vmaster's stream to its vIOMMU's vEVENTQ as a
 * `struct iommu_vevent_arm_smmuv3` with the SID replaced by the vSID. EOPNOTSUPP when the vIOMMU has no ARM_SMMUV3
 * vEVENTQ.
 * @linux arm_vmaster_report_event
 */
export async function armVmasterReportEvent(vmaster: ArmSmmuVmaster, raw: Uint32Array): Promise<void> {
  const vevt = new Uint8Array(IOMMU_VEVENT_ARM_SMMUV3_SIZE);
  const v = new DataView(vevt.buffer);
  for (let i = 0; i < 8; i++) v.setUint32(4 * i, raw[i]! >>> 0, true);
  // EVTQ_0_SID: dword 0 bits 63:32.
  v.setUint32(4, vmaster.vsid >>> 0, true);
  await vmaster.vsmmu.core.reportEvent(IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, vevt);
}

/**
 * The vIOMMU ops of ARM SMMUv3.
 * @linux arm_vsmmu_ops
 */
export function createArmVsmmuOps(deps: ArmVsmmuDeps): IommuViommuOps {
  return {
    destroy: (viommu) => {
      viommu.priv = undefined;
    },
    allocDomainNested: (viommu, flags, userData) => armVsmmuAllocDomainNested(viommu, flags, userData, deps),
    cacheInvalidate: (viommu, array) => armVsmmuCacheInvalidate(viommu, array, deps),
    /**
     * A vSID names a StreamID in 32-bit command and event fields: EINVAL beyond (Linux has no vdevice_init for a
     * plain SMMUv3 and accepts any virt_id, which a guest could then never name).
     */
    vdeviceInit: async (vdev: IommuVdevice) => {
      if (vdev.virtId > ARM_VSMMU_VSID_MAX) throw kerr("EINVAL", `arm-smmu-v3: vSID ${vdev.virtId} out of range`);
    },
  };
}
