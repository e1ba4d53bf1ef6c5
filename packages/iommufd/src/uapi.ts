/**
 * The iommufd uAPI: ioctl numbers, flag values and every struct of include/uapi/linux/iommufd.h as a
 * {@link UapiStruct} with the kernel's field names (`__u32` as number, `__u64` / `__aligned_u64` as bigint).
 * @linux include/uapi/linux/iommufd.h
 */
import { UapiStruct } from "./core-user.js";

/** The ioctl type of every iommufd command. @linux IOMMUFD_TYPE */
export const IOMMUFD_TYPE = 0x3b; // ';'
/** First command number. @linux IOMMUFD_CMD_BASE */
export const IOMMUFD_CMD_BASE = 0x80;

/**
 * An ioctl number without size or direction bits, as iommufd encodes them.
 * @linux _IO
 */
export function _IO(type: number, nr: number): number {
  return ((type & 0xff) << 8) | (nr & 0xff);
}
/** The command number of an ioctl. @linux _IOC_NR */
export function _IOC_NR(cmd: number): number {
  return cmd & 0xff;
}
/** The type of an ioctl. @linux _IOC_TYPE */
export function _IOC_TYPE(cmd: number): number {
  return (cmd >>> 8) & 0xff;
}

/** Command numbers. @linux enum iommufd_cmd */
export const IOMMUFD_CMD = {
  DESTROY: 0x80,
  IOAS_ALLOC: 0x81,
  IOAS_ALLOW_IOVAS: 0x82,
  IOAS_COPY: 0x83,
  IOAS_IOVA_RANGES: 0x84,
  IOAS_MAP: 0x85,
  IOAS_UNMAP: 0x86,
  OPTION: 0x87,
  VFIO_IOAS: 0x88,
  HWPT_ALLOC: 0x89,
  GET_HW_INFO: 0x8a,
  HWPT_SET_DIRTY_TRACKING: 0x8b,
  HWPT_GET_DIRTY_BITMAP: 0x8c,
  HWPT_INVALIDATE: 0x8d,
  FAULT_QUEUE_ALLOC: 0x8e,
  IOAS_MAP_FILE: 0x8f,
  VIOMMU_ALLOC: 0x90,
  VDEVICE_ALLOC: 0x91,
  IOAS_CHANGE_PROCESS: 0x92,
  VEVENTQ_ALLOC: 0x93,
  HW_QUEUE_ALLOC: 0x94,
} as const;

/** @linux IOMMU_DESTROY */
export const IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.DESTROY);
/** @linux IOMMU_IOAS_ALLOC */
export const IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_ALLOC);
/** @linux IOMMU_IOAS_ALLOW_IOVAS */
export const IOMMU_IOAS_ALLOW_IOVAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_ALLOW_IOVAS);
/** @linux IOMMU_IOAS_COPY */
export const IOMMU_IOAS_COPY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_COPY);
/** @linux IOMMU_IOAS_IOVA_RANGES */
export const IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_IOVA_RANGES);
/** @linux IOMMU_IOAS_MAP */
export const IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_MAP);
/** @linux IOMMU_IOAS_UNMAP */
export const IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_UNMAP);
/** @linux IOMMU_OPTION */
export const IOMMU_OPTION = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.OPTION);
/** @linux IOMMU_VFIO_IOAS */
export const IOMMU_VFIO_IOAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.VFIO_IOAS);
/** @linux IOMMU_HWPT_ALLOC */
export const IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_ALLOC);
/** @linux IOMMU_GET_HW_INFO */
export const IOMMU_GET_HW_INFO = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.GET_HW_INFO);
/** @linux IOMMU_HWPT_SET_DIRTY_TRACKING */
export const IOMMU_HWPT_SET_DIRTY_TRACKING = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_SET_DIRTY_TRACKING);
/** @linux IOMMU_HWPT_GET_DIRTY_BITMAP */
export const IOMMU_HWPT_GET_DIRTY_BITMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_GET_DIRTY_BITMAP);
/** @linux IOMMU_HWPT_INVALIDATE */
export const IOMMU_HWPT_INVALIDATE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_INVALIDATE);
/** @linux IOMMU_FAULT_QUEUE_ALLOC */
export const IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.FAULT_QUEUE_ALLOC);
/** @linux IOMMU_IOAS_MAP_FILE */
export const IOMMU_IOAS_MAP_FILE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_MAP_FILE);
/** @linux IOMMU_VIOMMU_ALLOC */
export const IOMMU_VIOMMU_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.VIOMMU_ALLOC);
/** @linux IOMMU_VDEVICE_ALLOC */
export const IOMMU_VDEVICE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.VDEVICE_ALLOC);
/** @linux IOMMU_IOAS_CHANGE_PROCESS */
export const IOMMU_IOAS_CHANGE_PROCESS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_CHANGE_PROCESS);
/** @linux IOMMU_VEVENTQ_ALLOC */
export const IOMMU_VEVENTQ_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.VEVENTQ_ALLOC);
/** @linux IOMMU_HW_QUEUE_ALLOC */
export const IOMMU_HW_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HW_QUEUE_ALLOC);

/** Flags of iommu_ioas_map / iommu_ioas_copy / iommu_ioas_map_file. @linux enum iommufd_ioas_map_flags */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
/** @linux IOMMU_IOAS_MAP_WRITEABLE */
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
/** @linux IOMMU_IOAS_MAP_READABLE */
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

/** Option IDs. @linux enum iommufd_option */
export const IOMMU_OPTION_RLIMIT_MODE = 0;
/** @linux IOMMU_OPTION_HUGE_PAGES */
export const IOMMU_OPTION_HUGE_PAGES = 1;
/** @linux IOMMU_OPTION_OP_SET */
export const IOMMU_OPTION_OP_SET = 0;
/** @linux IOMMU_OPTION_OP_GET */
export const IOMMU_OPTION_OP_GET = 1;

/** Ops of IOMMU_VFIO_IOAS. @linux enum iommufd_vfio_ioas_op */
export const IOMMU_VFIO_IOAS_GET = 0;
/** @linux IOMMU_VFIO_IOAS_SET */
export const IOMMU_VFIO_IOAS_SET = 1;
/** @linux IOMMU_VFIO_IOAS_CLEAR */
export const IOMMU_VFIO_IOAS_CLEAR = 2;

/** HWPT allocation flags. @linux enum iommufd_hwpt_alloc_flags */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
/** @linux IOMMU_HWPT_ALLOC_DIRTY_TRACKING */
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
/** @linux IOMMU_HWPT_FAULT_ID_VALID */
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;
/** @linux IOMMU_HWPT_ALLOC_PASID */
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;

/** HWPT data types. @linux enum iommu_hwpt_data_type */
export const IOMMU_HWPT_DATA_NONE = 0;
/** @linux IOMMU_HWPT_DATA_VTD_S1 */
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
/** @linux IOMMU_HWPT_DATA_ARM_SMMUV3 */
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;

/** GET_HW_INFO flags. @linux IOMMU_HW_INFO_FLAG_INPUT_TYPE */
export const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0;
/** HW info types. @linux enum iommu_hw_info_type */
export const IOMMU_HW_INFO_TYPE_NONE = 0;
/** @linux IOMMU_HW_INFO_TYPE_DEFAULT */
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
/** @linux IOMMU_HW_INFO_TYPE_INTEL_VTD */
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
/** @linux IOMMU_HW_INFO_TYPE_ARM_SMMUV3 */
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
/** Capabilities. @linux IOMMU_HW_CAP_DIRTY_TRACKING */
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1n << 0n;
/** @linux IOMMU_HW_CAP_PCI_PASID_EXEC */
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1n << 1n;
/** @linux IOMMU_HW_CAP_PCI_PASID_PRIV */
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1n << 2n;

/** @linux IOMMU_HWPT_DIRTY_TRACKING_ENABLE */
export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;
/** @linux IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR */
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;

/** @linux struct iommu_destroy */
export interface IommuDestroy {
  size: number;
  id: number;
}
/** @linux struct iommu_destroy */
export const iommu_destroy = new UapiStruct<IommuDestroy>("iommu_destroy", [
  { name: "size", type: "u32" },
  { name: "id", type: "u32" },
]);

/** @linux struct iommu_ioas_alloc */
export interface IommuIoasAlloc {
  size: number;
  flags: number;
  out_ioas_id: number;
}
/** @linux struct iommu_ioas_alloc */
export const iommu_ioas_alloc = new UapiStruct<IommuIoasAlloc>("iommu_ioas_alloc", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "out_ioas_id", type: "u32" },
]);

/** @linux struct iommu_iova_range */
export interface IommuIovaRange {
  start: bigint;
  last: bigint;
}
/** @linux struct iommu_iova_range */
export const iommu_iova_range = new UapiStruct<IommuIovaRange>("iommu_iova_range", [
  { name: "start", type: "u64" },
  { name: "last", type: "u64" },
]);

/** @linux struct iommu_ioas_iova_ranges */
export interface IommuIoasIovaRanges {
  size: number;
  ioas_id: number;
  num_iovas: number;
  __reserved: number;
  allowed_iovas: bigint;
  out_iova_alignment: bigint;
}
/** @linux struct iommu_ioas_iova_ranges */
export const iommu_ioas_iova_ranges = new UapiStruct<IommuIoasIovaRanges>("iommu_ioas_iova_ranges", [
  { name: "size", type: "u32" },
  { name: "ioas_id", type: "u32" },
  { name: "num_iovas", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "allowed_iovas", type: "u64" },
  { name: "out_iova_alignment", type: "u64" },
]);

/** @linux struct iommu_ioas_allow_iovas */
export interface IommuIoasAllowIovas {
  size: number;
  ioas_id: number;
  num_iovas: number;
  __reserved: number;
  allowed_iovas: bigint;
}
/** @linux struct iommu_ioas_allow_iovas */
export const iommu_ioas_allow_iovas = new UapiStruct<IommuIoasAllowIovas>("iommu_ioas_allow_iovas", [
  { name: "size", type: "u32" },
  { name: "ioas_id", type: "u32" },
  { name: "num_iovas", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "allowed_iovas", type: "u64" },
]);

/** @linux struct iommu_ioas_map */
export interface IommuIoasMap {
  size: number;
  flags: number;
  ioas_id: number;
  __reserved: number;
  user_va: bigint;
  length: bigint;
  iova: bigint;
}
/** @linux struct iommu_ioas_map */
export const iommu_ioas_map = new UapiStruct<IommuIoasMap>("iommu_ioas_map", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "ioas_id", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "user_va", type: "u64" },
  { name: "length", type: "u64" },
  { name: "iova", type: "u64" },
]);

/** @linux struct iommu_ioas_map_file */
export interface IommuIoasMapFile {
  size: number;
  flags: number;
  ioas_id: number;
  fd: number;
  start: bigint;
  length: bigint;
  iova: bigint;
}
/** @linux struct iommu_ioas_map_file */
export const iommu_ioas_map_file = new UapiStruct<IommuIoasMapFile>("iommu_ioas_map_file", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "ioas_id", type: "u32" },
  { name: "fd", type: "s32" },
  { name: "start", type: "u64" },
  { name: "length", type: "u64" },
  { name: "iova", type: "u64" },
]);

/** @linux struct iommu_ioas_copy */
export interface IommuIoasCopy {
  size: number;
  flags: number;
  dst_ioas_id: number;
  src_ioas_id: number;
  length: bigint;
  dst_iova: bigint;
  src_iova: bigint;
}
/** @linux struct iommu_ioas_copy */
export const iommu_ioas_copy = new UapiStruct<IommuIoasCopy>("iommu_ioas_copy", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "dst_ioas_id", type: "u32" },
  { name: "src_ioas_id", type: "u32" },
  { name: "length", type: "u64" },
  { name: "dst_iova", type: "u64" },
  { name: "src_iova", type: "u64" },
]);

/** @linux struct iommu_ioas_unmap */
export interface IommuIoasUnmap {
  size: number;
  ioas_id: number;
  iova: bigint;
  length: bigint;
}
/** @linux struct iommu_ioas_unmap */
export const iommu_ioas_unmap = new UapiStruct<IommuIoasUnmap>("iommu_ioas_unmap", [
  { name: "size", type: "u32" },
  { name: "ioas_id", type: "u32" },
  { name: "iova", type: "u64" },
  { name: "length", type: "u64" },
]);

/** @linux struct iommu_ioas_change_process */
export interface IommuIoasChangeProcess {
  size: number;
  __reserved: number;
}
/** @linux struct iommu_ioas_change_process */
export const iommu_ioas_change_process = new UapiStruct<IommuIoasChangeProcess>("iommu_ioas_change_process", [
  { name: "size", type: "u32" },
  { name: "__reserved", type: "u32" },
]);

/** @linux struct iommu_option */
export interface IommuOption {
  size: number;
  option_id: number;
  op: number;
  __reserved: number;
  object_id: number;
  val64: bigint;
}
/** @linux struct iommu_option */
export const iommu_option = new UapiStruct<IommuOption>("iommu_option", [
  { name: "size", type: "u32" },
  { name: "option_id", type: "u32" },
  { name: "op", type: "u16" },
  { name: "__reserved", type: "u16" },
  { name: "object_id", type: "u32" },
  { name: "val64", type: "u64" },
]);

/** @linux struct iommu_vfio_ioas */
export interface IommuVfioIoas {
  size: number;
  ioas_id: number;
  op: number;
  __reserved: number;
}
/** @linux struct iommu_vfio_ioas */
export const iommu_vfio_ioas = new UapiStruct<IommuVfioIoas>("iommu_vfio_ioas", [
  { name: "size", type: "u32" },
  { name: "ioas_id", type: "u32" },
  { name: "op", type: "u16" },
  { name: "__reserved", type: "u16" },
]);

/** @linux struct iommu_hwpt_alloc */
export interface IommuHwptAlloc {
  size: number;
  flags: number;
  dev_id: number;
  pt_id: number;
  out_hwpt_id: number;
  __reserved: number;
  data_type: number;
  data_len: number;
  data_uptr: bigint;
  fault_id: number;
  __reserved2: number;
}
/** @linux struct iommu_hwpt_alloc */
export const iommu_hwpt_alloc = new UapiStruct<IommuHwptAlloc>("iommu_hwpt_alloc", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "dev_id", type: "u32" },
  { name: "pt_id", type: "u32" },
  { name: "out_hwpt_id", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "data_type", type: "u32" },
  { name: "data_len", type: "u32" },
  { name: "data_uptr", type: "u64" },
  { name: "fault_id", type: "u32" },
  { name: "__reserved2", type: "u32" },
]);

/** @linux struct iommu_hw_info */
export interface IommuHwInfo {
  size: number;
  flags: number;
  dev_id: number;
  data_len: number;
  data_uptr: bigint;
  /** The union of in_data_type and out_data_type. */
  out_data_type: number;
  out_max_pasid_log2: number;
  __reserved: number[];
  out_capabilities: bigint;
}
/** @linux struct iommu_hw_info (in_data_type shares out_data_type's slot) */
export const iommu_hw_info = new UapiStruct<IommuHwInfo>("iommu_hw_info", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "dev_id", type: "u32" },
  { name: "data_len", type: "u32" },
  { name: "data_uptr", type: "u64" },
  { name: "out_data_type", type: "u32" },
  { name: "out_max_pasid_log2", type: "u8" },
  { name: "__reserved", type: "u8", count: 3 },
  { name: "out_capabilities", type: "u64" },
]);

/** @linux struct iommu_hwpt_set_dirty_tracking */
export interface IommuHwptSetDirtyTracking {
  size: number;
  flags: number;
  hwpt_id: number;
  __reserved: number;
}
/** @linux struct iommu_hwpt_set_dirty_tracking */
export const iommu_hwpt_set_dirty_tracking = new UapiStruct<IommuHwptSetDirtyTracking>(
  "iommu_hwpt_set_dirty_tracking",
  [
    { name: "size", type: "u32" },
    { name: "flags", type: "u32" },
    { name: "hwpt_id", type: "u32" },
    { name: "__reserved", type: "u32" },
  ],
);

/** @linux struct iommu_hwpt_get_dirty_bitmap */
export interface IommuHwptGetDirtyBitmap {
  size: number;
  hwpt_id: number;
  flags: number;
  __reserved: number;
  iova: bigint;
  length: bigint;
  page_size: bigint;
  data: bigint;
}
/** @linux struct iommu_hwpt_get_dirty_bitmap */
export const iommu_hwpt_get_dirty_bitmap = new UapiStruct<IommuHwptGetDirtyBitmap>("iommu_hwpt_get_dirty_bitmap", [
  { name: "size", type: "u32" },
  { name: "hwpt_id", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "iova", type: "u64" },
  { name: "length", type: "u64" },
  { name: "page_size", type: "u64" },
  { name: "data", type: "u64" },
]);

/** @linux struct iommu_hwpt_invalidate */
export const iommu_hwpt_invalidate = new UapiStruct("iommu_hwpt_invalidate", [
  { name: "size", type: "u32" },
  { name: "hwpt_id", type: "u32" },
  { name: "data_uptr", type: "u64" },
  { name: "data_type", type: "u32" },
  { name: "entry_len", type: "u32" },
  { name: "entry_num", type: "u32" },
  { name: "__reserved", type: "u32" },
]);

/** @linux struct iommu_fault_alloc */
export const iommu_fault_alloc = new UapiStruct("iommu_fault_alloc", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "out_fault_id", type: "u32" },
  { name: "out_fault_fd", type: "u32" },
]);

/** @linux struct iommu_hwpt_pgfault */
export const iommu_hwpt_pgfault = new UapiStruct("iommu_hwpt_pgfault", [
  { name: "flags", type: "u32" },
  { name: "dev_id", type: "u32" },
  { name: "pasid", type: "u32" },
  { name: "grpid", type: "u32" },
  { name: "perm", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "addr", type: "u64" },
  { name: "length", type: "u32" },
  { name: "cookie", type: "u32" },
]);

/** @linux struct iommu_hwpt_page_response */
export const iommu_hwpt_page_response = new UapiStruct("iommu_hwpt_page_response", [
  { name: "cookie", type: "u32" },
  { name: "code", type: "u32" },
]);

/** @linux struct iommu_viommu_alloc */
export const iommu_viommu_alloc = new UapiStruct("iommu_viommu_alloc", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "type", type: "u32" },
  { name: "dev_id", type: "u32" },
  { name: "hwpt_id", type: "u32" },
  { name: "out_viommu_id", type: "u32" },
  { name: "data_len", type: "u32" },
  { name: "__reserved", type: "u32" },
  { name: "data_uptr", type: "u64" },
]);

/** @linux struct iommu_vdevice_alloc */
export const iommu_vdevice_alloc = new UapiStruct("iommu_vdevice_alloc", [
  { name: "size", type: "u32" },
  { name: "viommu_id", type: "u32" },
  { name: "dev_id", type: "u32" },
  { name: "out_vdevice_id", type: "u32" },
  { name: "virt_id", type: "u64" },
]);

/** @linux struct iommu_veventq_alloc */
export const iommu_veventq_alloc = new UapiStruct("iommu_veventq_alloc", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "viommu_id", type: "u32" },
  { name: "type", type: "u32" },
  { name: "veventq_depth", type: "u32" },
  { name: "out_veventq_id", type: "u32" },
  { name: "out_veventq_fd", type: "u32" },
  { name: "__reserved", type: "u32" },
]);

/** @linux struct iommufd_vevent_header */
export const iommufd_vevent_header = new UapiStruct("iommufd_vevent_header", [
  { name: "flags", type: "u32" },
  { name: "sequence", type: "u32" },
]);

/** @linux struct iommu_hw_queue_alloc */
export const iommu_hw_queue_alloc = new UapiStruct("iommu_hw_queue_alloc", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "viommu_id", type: "u32" },
  { name: "type", type: "u32" },
  { name: "index", type: "u32" },
  { name: "out_hw_queue_id", type: "u32" },
  { name: "nesting_parent_iova", type: "u64" },
  { name: "length", type: "u64" },
]);

/** U64_MAX as the uAPI spells "everything". */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

// --- issue 5: nested translation, vIOMMU, vDEVICE, HW queue (viommu.ts, vdevice.ts, hw-queue.ts, nested.ts) ---

/** HWPT invalidation data types. @linux enum iommu_hwpt_invalidate_data_type */
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;
/** @linux IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 */
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;

/** vIOMMU types. @linux enum iommu_viommu_type */
export const IOMMU_VIOMMU_TYPE_DEFAULT = 0;
/** @linux IOMMU_VIOMMU_TYPE_ARM_SMMUV3 */
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
/** @linux IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV */
export const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2;

/** HW queue types. @linux enum iommu_hw_queue_type */
export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;
/** @linux IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV */
export const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1;

/** @linux struct iommu_hwpt_invalidate */
export interface IommuHwptInvalidate {
  size: number;
  hwpt_id: number;
  data_uptr: bigint;
  data_type: number;
  entry_len: number;
  entry_num: number;
  __reserved: number;
}

/** @linux struct iommu_viommu_alloc */
export interface IommuViommuAlloc {
  size: number;
  flags: number;
  type: number;
  dev_id: number;
  hwpt_id: number;
  out_viommu_id: number;
  data_len: number;
  __reserved: number;
  data_uptr: bigint;
}

/** @linux struct iommu_vdevice_alloc */
export interface IommuVdeviceAlloc {
  size: number;
  viommu_id: number;
  dev_id: number;
  out_vdevice_id: number;
  virt_id: bigint;
}

/** @linux struct iommu_hw_queue_alloc */
export interface IommuHwQueueAlloc {
  size: number;
  flags: number;
  viommu_id: number;
  type: number;
  index: number;
  out_hw_queue_id: number;
  nesting_parent_iova: bigint;
  length: bigint;
}
