/**
 * The uAPI side of the SMMUv3 driver that needs no vIOMMU state: IOMMU_GET_HW_INFO data (the ID registers), the
 * uAPI type numbers and struct sizes of `include/uapi/linux/iommufd.h` for ARM SMMUv3, and the validation of a
 * guest's vSTE (`struct iommu_hwpt_arm_smmuv3`) into the qwords a nested domain keeps. The vIOMMU itself is in
 * `viommu.ts`. Nothing here imports iommufd: the driver sees iommufd only through core's vIOMMU contracts.
 * @linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c (arm_smmu_hw_info, arm_smmu_validate_vste),
 * include/uapi/linux/iommufd.h
 */
import { copyStructFromUser, type IommuUserData, kerr } from "@iommu-sim/core";
import { SMMU_REG, STE, STE_NESTING_ALLOWED, STE_VAL } from "./regs.js";

/** Hardware-info type of SMMUv3. @linux IOMMU_HW_INFO_TYPE_ARM_SMMUV3 */
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
/** The type a caller gets without asking for one. @linux IOMMU_HW_INFO_TYPE_DEFAULT */
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
/** Nested HWPT data type: a vSTE. @linux IOMMU_HWPT_DATA_ARM_SMMUV3 */
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;
/** vIOMMU type of a plain SMMUv3 (no vendor command queue). @linux IOMMU_VIOMMU_TYPE_ARM_SMMUV3 */
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
/** Invalidation entry type: one guest command-queue entry. @linux IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 */
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;
/** vEVENTQ type carrying guest event records. @linux IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 */
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;

/** sizeof(struct iommu_hw_info_arm_smmuv3 { __u32 flags, __reserved, idr[6], iidr, aidr; }). */
export const IOMMU_HW_INFO_ARM_SMMUV3_SIZE = 40;
/** sizeof(struct iommu_hwpt_arm_smmuv3 { __aligned_le64 ste[2]; }). */
export const IOMMU_HWPT_ARM_SMMUV3_SIZE = 16;
/** sizeof(struct iommu_viommu_arm_smmuv3_invalidate { __aligned_le64 cmd[2]; }). */
export const IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_SIZE = 16;
/** sizeof(struct iommu_vevent_arm_smmuv3 { __aligned_le64 evt[4]; }). */
export const IOMMU_VEVENT_ARM_SMMUV3_SIZE = 32;

/** MMIO offsets the hardware-info copy reads beyond those the probe needs. @linux ARM_SMMU_IDR2, _IDR4, _AIDR */
export const SMMU_REG_ID = { IDR2: 0x8, IDR4: 0x10, AIDR: 0x1c } as const;

/** What {@link armSmmuHwInfo} reads: the ID registers as the probe captured them. */
export interface ArmSmmuIdRegs {
  /** IDR0..IDR5. */
  readonly idr: Uint32Array;
  readonly iidr: number;
  readonly aidr: number;
}

/**
 * `struct iommu_hw_info_arm_smmuv3` for IOMMU_GET_HW_INFO: flags 0, the six IDRs, IIDR and AIDR. EOPNOTSUPP for a
 * requested type other than DEFAULT / ARM_SMMUV3 (no implementation-specific info in the simulation).
 * @linux arm_smmu_hw_info
 */
export function armSmmuHwInfo(regs: ArmSmmuIdRegs, type: number): { type: number; data: Uint8Array } {
  if (type !== IOMMU_HW_INFO_TYPE_DEFAULT && type !== IOMMU_HW_INFO_TYPE_ARM_SMMUV3) {
    throw kerr("EOPNOTSUPP", `arm-smmu-v3: no hw_info of type ${type}`);
  }
  const data = new Uint8Array(IOMMU_HW_INFO_ARM_SMMUV3_SIZE);
  const v = new DataView(data.buffer);
  for (let i = 0; i < 6; i++) v.setUint32(8 + 4 * i, regs.idr[i]! >>> 0, true);
  v.setUint32(32, regs.iidr >>> 0, true);
  v.setUint32(36, regs.aidr >>> 0, true);
  return { type: IOMMU_HW_INFO_TYPE_ARM_SMMUV3, data };
}

/** Offsets of the ID registers in register order (IDR0..5). @linux ARM_SMMU_IDR0 + 4 * i */
export const SMMU_IDR_OFFSETS = [
  SMMU_REG.IDR0,
  SMMU_REG.IDR1,
  SMMU_REG_ID.IDR2,
  SMMU_REG.IDR3,
  SMMU_REG_ID.IDR4,
  SMMU_REG.IDR5,
] as const;

/** A validated vSTE and whether the guest asked for ATS. */
export interface ArmSmmuVste {
  /** qwords 0–1 (EATS cleared; zero for a non-valid vSTE). @linux arm_smmu_nested_domain.ste */
  ste: [bigint, bigint];
  /** @linux arm_smmu_nested_domain.enable_ats */
  enableAts: boolean;
}

/**
 * Read a `struct iommu_hwpt_arm_smmuv3` from HWPT driver data and validate it: EINVAL for another data type or a
 * struct shorter than `ste[2]`, E2BIG for non-zero bytes past it; a vSTE with V=0 becomes all zeroes; EIO (kept for
 * bad STE data) for bits outside STRTAB_STE_0/1_NESTING_ALLOWED, a Config other than abort/bypass/stage-1
 * translate, or an EATS other than ABT/TRANS. EATS is cleared (the nested STE sets it from the attach).
 * @linux iommu_copy_struct_from_user(..., IOMMU_HWPT_DATA_ARM_SMMUV3, ste) + arm_smmu_validate_vste
 */
export function armSmmuValidateVste(userData: IommuUserData): ArmSmmuVste {
  if (userData.type !== IOMMU_HWPT_DATA_ARM_SMMUV3) throw kerr("EINVAL", "arm-smmu-v3: bad nested data type");
  if (userData.data.length < IOMMU_HWPT_ARM_SMMUV3_SIZE) throw kerr("EINVAL", "arm-smmu-v3: short vSTE");
  const bytes = copyStructFromUser(userData.data, IOMMU_HWPT_ARM_SMMUV3_SIZE);
  const v = new DataView(bytes.buffer, bytes.byteOffset, IOMMU_HWPT_ARM_SMMUV3_SIZE);
  let s0 = v.getBigUint64(0, true);
  let s1 = v.getBigUint64(8, true);
  if (!(s0 & STE.V.mask)) return { ste: [0n, 0n], enableAts: false };
  if (s0 & ~STE_NESTING_ALLOWED.Q0 || s1 & ~STE_NESTING_ALLOWED.Q1) {
    throw kerr("EIO", "arm-smmu-v3: vSTE bits not allowed");
  }
  const cfg = Number((s0 & STE.CFG.mask) >> BigInt(STE.CFG.bit));
  if (cfg !== STE_VAL.CFG_ABORT && cfg !== STE_VAL.CFG_BYPASS && cfg !== STE_VAL.CFG_S1_TRANS) {
    throw kerr("EIO", "arm-smmu-v3: vSTE config not allowed");
  }
  const eats = Number((s1 & STE.EATS.mask) >> BigInt(STE.EATS.bit));
  s1 &= ~STE.EATS.mask;
  if (eats !== STE_VAL.EATS_ABT && eats !== STE_VAL.EATS_TRANS) {
    throw kerr("EIO", "arm-smmu-v3: vSTE EATS not allowed");
  }
  s0 &= STE_NESTING_ALLOWED.Q0;
  return { ste: [s0, s1], enableAts: cfg === STE_VAL.CFG_S1_TRANS && eats === STE_VAL.EATS_TRANS };
}

/** The Config field of a vSTE, abort for a non-valid one. @linux FIELD_GET(STRTAB_STE_0_CFG, ste[0]) */
export function vsteCfg(ste: readonly [bigint, bigint]): number {
  if (!(ste[0] & STE.V.mask)) return STE_VAL.CFG_ABORT;
  return Number((ste[0] & STE.CFG.mask) >> BigInt(STE.CFG.bit));
}
