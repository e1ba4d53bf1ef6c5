/**
 * The uAPI side of the AMD driver: IOMMU_GET_HW_INFO data (`struct iommu_hw_info_amd`: the Extended Feature
 * Registers). Nothing here imports iommufd: the driver sees it only through core's contracts.
 * @linux drivers/iommu/amd/iommufd.c amd_iommufd_hw_info, include/uapi/linux/iommufd.h
 */
import { kerr } from "@iommu-sim/core";
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
