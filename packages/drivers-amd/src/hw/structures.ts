/**
 * The AMD-Vi in-memory structures, as the specification's tables: the 256-bit device table entry, the v1 (host)
 * page-table entry, the GCR3 table entry and the x86-64 (v2, guest) entry bits, the command buffer entry and its
 * opcodes, the event log entry and its codes, and the PPR log entry. Bits are counted across the structure (bit 64
 * is bit 0 of its third 32-bit word).
 * Spec: AMD IOMMU Specification §2.2.2 (DTE), §2.2.3 (I/O page tables), §2.2.6 (GCR3), §2.4 (commands), §2.5
 * (event log), §2.6 (PPR); ../../../../../shared/reference/formats.md §4.2–4.7.
 * @linux drivers/iommu/amd/amd_iommu_types.h (DTE_FLAG_*, DEV_ENTRY_*, IOMMU_PTE_*, CMD_*, EVENT_*, PPR_*),
 * generic_pt/fmt/amdv1.h; QEMU hw/i386/amd_iommu.h
 */
import { bits, field } from "@iommu-sim/core";

/** Bytes of a device table entry. @linux struct dev_table_entry (4 × u64) */
export const DTE_SIZE = 32;

/** Device table entry fields. @linux DTE_FLAG_V/TV/IR/IW/GV/GIOV/PPR, DEV_ENTRY_MODE_*, DTE_GLX, DTE_GCR3_* */
export const DTE = {
  V: field("V", 0),
  TV: field("TV", 1),
  HAD: bits("HAD", 8, 7),
  MODE: bits("Mode", 11, 9),
  ROOT_LO: bits("HostPtRoot_lo", 31, 12),
  ROOT_HI: bits("HostPtRoot_hi", 51, 32),
  PPR: field("PPR", 52),
  GIOV: field("GIOV", 54),
  GV: field("GV", 55),
  GLX: bits("GLX", 57, 56),
  GCR3_14_12: bits("GCR3TRP[14:12]", 60, 58),
  IR: field("IR", 61),
  IW: field("IW", 62),
  DOMAIN_ID: bits("DomainID", 79, 64),
  GCR3_30_15: bits("GCR3TRP[30:15]", 95, 80),
  I: field("I", 96),
  NO_PAGE_FAULT: field("SA", 98),
  GCR3_51_31: bits("GCR3TRP[51:31]", 127, 107),
  IV: field("IV", 128),
  GPT_LEVEL: bits("GuestPagingMode", 183, 182),
} as const;

/** Reserved host paging mode. @linux PAGE_MODE_7_LEVEL (never valid in a DTE) */
export const DTE_MODE_RESERVED = 7;

/** v1 (host) page-table entry fields. @linux IOMMU_PTE_PR, IOMMU_PTE_NEXT_LEVEL, IOMMU_PTE_FC, IOMMU_PTE_IR/IW; amdv1.h */
export const V1_PTE = {
  PR: field("PR", 0),
  A: field("A", 5),
  D: field("D", 6),
  NL: bits("NextLevel", 11, 9),
  ADDR_LO: bits("Addr_lo", 31, 12),
  ADDR_HI: bits("Addr_hi", 51, 32),
  U: field("U", 59),
  FC: field("FC", 60),
  IR: field("IR", 61),
  IW: field("IW", 62),
} as const;

/** Next-level value of a leaf whose page size is encoded in its address bits. @linux AMDV1PT_FMT_NL_SIZE (7) */
export const NL_SIZE = 7;

/** GCR3 table entry: valid bit and the next level / guest CR3. @linux GCR3_VALID, iommu_virt_to_phys(gcr3 root) */
export const GCR3_ENTRY = {
  V: field("V", 0),
  ADDR_LO: bits("Addr_lo", 31, 12),
  ADDR_HI: bits("Addr_hi", 51, 32),
} as const;

/** x86-64 (v2) entry bits. @linux X86_64_FMT_P / _RW / _U / _A / _D / _PS / _NX (generic_pt/fmt/x86_64.h) */
export const X86_PTE = {
  P: field("P", 0),
  RW: field("RW", 1),
  US: field("US", 2),
  A: field("A", 5),
  D: field("D", 6),
  PS: field("PS", 7),
  ADDR_LO: bits("Addr_lo", 31, 12),
  ADDR_HI: bits("Addr_hi", 51, 32),
  XD: field("XD", 63),
} as const;

/** Bytes of a command / event / PPR entry. @linux sizeof(struct iommu_cmd), EVENT_ENTRY_SIZE, PPR_ENTRY_SIZE */
export const LOG_ENTRY_SIZE = 16;

/** Command opcodes (data1 bits 31:28). @linux CMD_COMPL_WAIT, CMD_INV_DEV_ENTRY, ... */
export const CMD_OP = {
  COMPLETION_WAIT: 0x01,
  INVALIDATE_DEVTAB_ENTRY: 0x02,
  INVALIDATE_IOMMU_PAGES: 0x03,
  INVALIDATE_IOTLB_PAGES: 0x04,
  INVALIDATE_INTERRUPT_TABLE: 0x05,
  PREFETCH_IOMMU_PAGES: 0x06,
  COMPLETE_PPR_REQUEST: 0x07,
  INVALIDATE_IOMMU_ALL: 0x08,
} as const;

/** Command entry fields (bits across the 128-bit entry). @linux build_completion_wait, build_inv_iommu_pages, ... */
export const CMD = {
  OPCODE: bits("Opcode", 63, 60),
  // COMPLETION_WAIT
  CW_S: field("S", 0),
  CW_I: field("I", 1),
  CW_F: field("F", 2),
  CW_ADDR_LO: bits("StoreAddr_lo", 31, 3),
  CW_ADDR_HI: bits("StoreAddr_hi", 51, 32),
  CW_DATA_LO: bits("StoreData_lo", 95, 64),
  CW_DATA_HI: bits("StoreData_hi", 127, 96),
  // INVALIDATE_DEVTAB_ENTRY / INVALIDATE_INTERRUPT_TABLE / COMPLETE_PPR_REQUEST / INVALIDATE_IOTLB_PAGES
  DEVID: bits("DeviceID", 15, 0),
  // INVALIDATE_IOMMU_PAGES
  PASID: bits("PASID", 19, 0),
  DOMAIN_ID: bits("DomainID", 47, 32),
  S: field("S", 64),
  PDE: field("PDE", 65),
  GN: field("GN", 66),
  ADDR_LO: bits("Address_lo", 95, 76),
  ADDR_HI: bits("Address_hi", 127, 96),
  // INVALIDATE_IOTLB_PAGES
  IOTLB_PASID_HI: bits("PASID[15:8]", 23, 16),
  IOTLB_MAXPEND: bits("Maxpend", 31, 24),
  IOTLB_PASID_LO: bits("PASID[7:0]", 55, 48),
  // COMPLETE_PPR_REQUEST
  PPR_PASID: bits("PASID", 51, 32),
  PPR_TAG: bits("PRGIndex", 104, 96),
  PPR_STATUS: bits("Status", 111, 108),
} as const;

/** Event codes (data1 bits 31:28). @linux EVENT_TYPE_ILL_DEV, EVENT_TYPE_IO_FAULT, ... */
export const EVT_CODE = {
  ILLEGAL_DEV_TABLE_ENTRY: 0x1,
  IO_PAGE_FAULT: 0x2,
  DEV_TAB_HARDWARE_ERROR: 0x3,
  PAGE_TAB_HARDWARE_ERROR: 0x4,
  ILLEGAL_COMMAND_ERROR: 0x5,
  COMMAND_HARDWARE_ERROR: 0x6,
  IOTLB_INV_TIMEOUT: 0x7,
  INVALID_DEVICE_REQUEST: 0x8,
  INVALID_PPR_REQUEST: 0x9,
} as const;

/** Event names by code. */
export const EVT_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(EVT_CODE).map(([k, v]) => [v, k]),
) as Record<number, string>;

/** Event entry fields. @linux iommu_print_event (devid, pasid, flags, type, address) */
export const EVT = {
  DEVID: bits("DeviceID", 15, 0),
  PASID_HI: bits("PASID[19:16]", 19, 16),
  PASID_LO: bits("PASID[15:0]", 47, 32),
  FLAGS: bits("Flags", 59, 48),
  CODE: bits("EventCode", 63, 60),
  ADDR_LO: bits("Address_lo", 95, 64),
  ADDR_HI: bits("Address_hi", 127, 96),
} as const;

/**
 * IO_PAGE_FAULT flags. I and RW are confirmed in Linux and QEMU; the others follow the specification's table
 * (formats.md marks them [SPEC?]).
 * @linux EVENT_FLAG_I, EVENT_FLAG_RW; the spec's GN/NX/US/PR/PE/RZ/TR
 */
export const EVT_FLAG = {
  GN: 0x001,
  NX: 0x002,
  US: 0x004,
  I: 0x008,
  PR: 0x010,
  RW: 0x020,
  PE: 0x040,
  RZ: 0x080,
  TR: 0x100,
} as const;

/** PPR log entry fields. @linux PPR_DEVID, PPR_PASID1/2, PPR_TAG, PPR_FLAGS, PPR_REQ_TYPE (amd_iommu_types.h) */
export const PPR = {
  DEVID: bits("DeviceID", 15, 0),
  PASID_LO: bits("PASID[15:0]", 31, 16),
  TAG: bits("Tag", 41, 32),
  PASID_HI: bits("PASID[19:16]", 45, 42),
  FLAGS: bits("Flags", 59, 48),
  TYPE: bits("Type", 63, 60),
  ADDR_LO: bits("Address_lo", 95, 64),
  ADDR_HI: bits("Address_hi", 127, 96),
} as const;

/** PPR flags. @linux PPR_FLAG_EXEC, PPR_FLAG_READ, PPR_FLAG_WRITE, PPR_FLAG_US, PPR_FLAG_RVSD, PPR_FLAG_GN */
export const PPR_FLAG = { EXEC: 0x002, READ: 0x004, WRITE: 0x020, US: 0x040, RVSD: 0x080, GN: 0x100 } as const;
/** PPR request type of a page request. @linux PPR_REQ_FAULT */
export const PPR_REQ_FAULT = 1;
