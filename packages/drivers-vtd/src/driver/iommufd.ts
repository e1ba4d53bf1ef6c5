/**
 * The uAPI side of the VT-d driver: IOMMU_GET_HW_INFO data (`struct iommu_hw_info_vtd`: the CAP and ECAP
 * registers), the stage-1 configuration of a nested HWPT (`struct iommu_hwpt_vtd_s1`), and user IOTLB
 * invalidation of a nested domain (`struct iommu_hwpt_vtd_s1_invalidate` entries, `entry_num` written back with the
 * count handled). Nothing here imports iommufd: the driver sees it only through core's contracts.
 * @linux drivers/iommu/intel/iommu.c intel_iommu_hw_info, nested.c (intel_iommu_domain_alloc_nested,
 * intel_nested_cache_invalidate_user), include/uapi/linux/iommufd.h
 */
import { copyStructFromUser, type IommuUserData, type IommuUserDataArray, kerr } from "@iommu-sim/core";
import { cacheTagFlushAll, cacheTagFlushRange } from "./cache.js";
import type { DmarNestedDomain, VtdS1Cfg } from "./domain.js";
import type { IntelIommu } from "./iommu.js";

/** @linux IOMMU_HW_INFO_TYPE_INTEL_VTD */
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
/** @linux IOMMU_HW_INFO_TYPE_DEFAULT */
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
/** @linux IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 (enum iommu_hw_info_vtd_flags) */
export const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0;
/** @linux IOMMU_HWPT_DATA_VTD_S1 */
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
/** @linux IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 */
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;
/** sizeof(struct iommu_hw_info_vtd { __u32 flags, __reserved; __aligned_u64 cap_reg, ecap_reg; }). @linux sizeof(struct iommu_hw_info_vtd) */
export const IOMMU_HW_INFO_VTD_SIZE = 24;
/** sizeof(struct iommu_hwpt_vtd_s1 { __aligned_u64 flags, pgtbl_addr; __u32 addr_width, __reserved; }). @linux sizeof(struct iommu_hwpt_vtd_s1) */
export const IOMMU_HWPT_VTD_S1_SIZE = 24;
/** sizeof(struct iommu_hwpt_vtd_s1_invalidate { __aligned_u64 addr, npages; __u32 flags, __reserved; }). @linux sizeof(struct iommu_hwpt_vtd_s1_invalidate) */
export const IOMMU_HWPT_VTD_S1_INVALIDATE_SIZE = 24;
/** @linux IOMMU_VTD_S1_SRE / _EAFE / _WPE */
export const IOMMU_VTD_S1_FLAGS = 0b111;
/** @linux IOMMU_VTD_INV_FLAGS_LEAF */
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0;

const U64_MAX = 2n ** 64n - 1n;

/**
 * `struct iommu_hw_info_vtd`: the SPR17 errata flag (Linux reports it on every unit: nest parents refuse read-only
 * mappings), the CAP and ECAP registers. EOPNOTSUPP for another requested type.
 * @linux intel_iommu_hw_info
 */
export function intelIommuHwInfo(iommu: IntelIommu, type: number): { type: number; data: Uint8Array } {
  if (type !== IOMMU_HW_INFO_TYPE_DEFAULT && type !== IOMMU_HW_INFO_TYPE_INTEL_VTD) {
    throw kerr("EOPNOTSUPP", `intel-iommu: no hw_info of type ${type}`);
  }
  const data = new Uint8Array(IOMMU_HW_INFO_VTD_SIZE);
  const v = new DataView(data.buffer);
  v.setUint32(0, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, true);
  v.setUint32(8, iommu.capLo, true);
  v.setUint32(12, iommu.capHi, true);
  v.setUint32(16, iommu.ecapLo, true);
  v.setUint32(20, iommu.ecapHi, true);
  return { type: IOMMU_HW_INFO_TYPE_INTEL_VTD, data };
}

/**
 * Read `struct iommu_hwpt_vtd_s1` from nested HWPT data: EOPNOTSUPP for another data type or unknown flags,
 * EINVAL for a short struct or a table pointer that is not 4 KiB aligned; address width and flag support are
 * checked at attach, as Linux does in intel_pasid_setup_nested.
 * @linux iommu_copy_struct_from_user(&vtd, user_data, IOMMU_HWPT_DATA_VTD_S1, __reserved)
 */
export function parseVtdS1(data: IommuUserData): VtdS1Cfg {
  if (data.type !== IOMMU_HWPT_DATA_VTD_S1) throw kerr("EOPNOTSUPP", "intel: nested data type");
  if (data.data.length < IOMMU_HWPT_VTD_S1_SIZE) throw kerr("EINVAL", "intel: short iommu_hwpt_vtd_s1");
  const b = copyStructFromUser(data.data, IOMMU_HWPT_VTD_S1_SIZE);
  const v = new DataView(b.buffer, b.byteOffset, IOMMU_HWPT_VTD_S1_SIZE);
  const flags = v.getBigUint64(0, true);
  const pgtbl = v.getBigUint64(8, true);
  if (flags & ~BigInt(IOMMU_VTD_S1_FLAGS)) throw kerr("EOPNOTSUPP", "intel: iommu_hwpt_vtd_s1 flags");
  if (pgtbl % 4096n !== 0n || pgtbl >= 2n ** 52n) throw kerr("EINVAL", "intel: stage-1 table address");
  return { flags: Number(flags), pgtblAddr: Number(pgtbl), addrWidth: v.getUint32(16, true) };
}

/**
 * Handle user invalidation entries in order; `entry_num` becomes the count handled, also when one fails (EINVAL
 * for a bad type, address or size, EOPNOTSUPP for unknown flags or a non-zero reserved field).
 * @linux intel_nested_cache_invalidate_user + intel_nested_flush_cache
 */
export function vtdInvalidateUser(d: DmarNestedDomain, array: IommuUserDataArray): void {
  if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_VTD_S1) {
    array.entryNum = 0;
    throw kerr("EINVAL", "intel: invalidation data type");
  }
  let done = 0;
  try {
    for (let i = 0; i < array.entryNum; i++) {
      const e = array.entry(i, IOMMU_HWPT_VTD_S1_INVALIDATE_SIZE, IOMMU_HWPT_VTD_S1_INVALIDATE_SIZE);
      const v = new DataView(e.buffer, e.byteOffset, IOMMU_HWPT_VTD_S1_INVALIDATE_SIZE);
      const addr = v.getBigUint64(0, true);
      const npages = v.getBigUint64(8, true);
      const flags = v.getUint32(16, true);
      if (flags & ~IOMMU_VTD_INV_FLAGS_LEAF || v.getUint32(20, true) !== 0)
        throw kerr("EOPNOTSUPP", "intel: invalidation flags");
      if (addr % 4096n !== 0n || (npages === U64_MAX && addr !== 0n))
        throw kerr("EINVAL", "intel: invalidation address");
      if (npages === U64_MAX) cacheTagFlushAll(d);
      else if (npages > 0n) {
        const start = Number(addr);
        cacheTagFlushRange(d, start, start + Number(npages) * 4096 - 1, (flags & IOMMU_VTD_INV_FLAGS_LEAF) !== 0);
      }
      done++;
    }
  } finally {
    array.entryNum = done;
  }
}
