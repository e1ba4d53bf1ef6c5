/**
 * The uAPI side of the AMD driver: IOMMU_GET_HW_INFO data (`struct iommu_hw_info_amd`: the Extended Feature
 * Registers), the AMD vIOMMU type and the nested HWPT data (`struct iommu_hwpt_amd_guest`: the guest's DTE).
 * Nothing here imports iommufd: the driver sees it only through core's contracts.
 * @linux drivers/iommu/amd/iommufd.c amd_iommufd_hw_info, amd_iommufd_get_viommu_size; include/uapi/linux/iommufd.h
 */
import { copyStructFromUser, type IommuUserData, kerr } from "@iommu-sim/core";
import type { AmdIommu } from "./iommu.js";

/** @linux IOMMU_HW_INFO_TYPE_AMD */
export const IOMMU_HW_INFO_TYPE_AMD = 4;
/** @linux IOMMU_HW_INFO_TYPE_DEFAULT */
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
/** sizeof(struct iommu_hw_info_amd { __aligned_u64 efr, efr2; }). */
export const IOMMU_HW_INFO_AMD_SIZE = 16;

/**
 * `struct iommu_hw_info_amd`: the EFR and EFR2 registers. EOPNOTSUPP for another requested type.
 * @linux amd_iommufd_hw_info
 */
export function amdIommuHwInfo(iommu: AmdIommu, type: number): { type: number; data: Uint8Array } {
  if (type !== IOMMU_HW_INFO_TYPE_DEFAULT && type !== IOMMU_HW_INFO_TYPE_AMD) {
    throw kerr("EOPNOTSUPP", `amd-iommu: no hw_info of type ${type}`);
  }
  const data = new Uint8Array(IOMMU_HW_INFO_AMD_SIZE);
  const v = new DataView(data.buffer);
  v.setUint32(0, iommu.efrLo, true);
  v.setUint32(4, iommu.efrHi, true);
  v.setUint32(8, iommu.efr2Lo, true);
  v.setUint32(12, iommu.efr2Hi, true);
  return { type: IOMMU_HW_INFO_TYPE_AMD, data };
}

/** @linux IOMMU_VIOMMU_TYPE_AMD (enum iommu_viommu_type) */
export const IOMMU_VIOMMU_TYPE_AMD = 3;
/** @linux IOMMU_HWPT_DATA_AMD_GUEST (enum iommu_hwpt_data_type) */
export const IOMMU_HWPT_DATA_AMD_GUEST = 3;
/** sizeof(struct iommu_hwpt_amd_guest { __aligned_u64 dte[4]; }). */
export const IOMMU_HWPT_AMD_GUEST_SIZE = 32;

/**
 * Non-zero for the vIOMMU types the driver implements (IOMMU_VIOMMU_TYPE_AMD only).
 * @linux amd_iommufd_get_viommu_size
 */
export function amdViommuSize(type: number): number {
  return type === IOMMU_VIOMMU_TYPE_AMD ? 1 : 0;
}

/**
 * The guest DTE of `struct iommu_hwpt_amd_guest` as eight 32-bit words, copied as iommu_copy_struct_from_user
 * does: EINVAL for another data type or a length short of `dte`, E2BIG for non-zero bytes past it.
 * @linux iommu_copy_struct_from_user(&ndom->gdte, user_data, IOMMU_HWPT_DATA_AMD_GUEST, dte)
 */
export function copyAmdGuestDte(data: IommuUserData): number[] {
  if (data.type !== IOMMU_HWPT_DATA_AMD_GUEST) throw kerr("EINVAL", "amd: nested data type");
  if (data.data.length < IOMMU_HWPT_AMD_GUEST_SIZE) throw kerr("EINVAL", "amd: short iommu_hwpt_amd_guest");
  const b = copyStructFromUser(data.data, IOMMU_HWPT_AMD_GUEST_SIZE);
  const v = new DataView(b.buffer, b.byteOffset, IOMMU_HWPT_AMD_GUEST_SIZE);
  return Array.from({ length: 8 }, (_, i) => v.getUint32(4 * i, true));
}
