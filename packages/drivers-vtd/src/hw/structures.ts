/**
 * VT-d in-memory structures, as the specification's tables: root and context entries (legacy and scalable),
 * PASID directory and table entries, the two paging-entry formats, invalidation-queue descriptors, fault
 * records, page request descriptors, and the fault reason codes. Bits count across the structure (bit 64 is bit 0
 * of the second qword); addresses are declared as _LO/_HI halves.
 * Intel VT-d specification chapter 9 and 6.5; ../../../../../shared/reference/formats.md §3.2-3.12.
 * @linux drivers/iommu/intel/iommu.h (root/context helpers, QI_* descriptor macros), pasid.h (struct pasid_entry
 * fields), prq.c (struct page_req_dsc), dmar.c (fault reasons); QEMU hw/i386/intel_iommu_internal.h
 */
import { bits, field } from "@iommu-sim/core";

/** Legacy root entry (16 B, indexed by bus). @linux struct root_entry (lo: present + context table) */
export const ROOT = {
  P: field("P", 0),
  CTP_LO: bits("CTP_LO", 31, 12),
  CTP_HI: bits("CTP_HI", 63, 32),
} as const;

/** Scalable-mode root entry (16 B): lower and upper context-table pointers. @linux root_entry lo/hi, sm_root_present */
export const SM_ROOT = {
  LP: field("LP", 0),
  LCTP_LO: bits("LCTP_LO", 31, 12),
  LCTP_HI: bits("LCTP_HI", 63, 32),
  UP: field("UP", 64),
  UCTP_LO: bits("UCTP_LO", 95, 76),
  UCTP_HI: bits("UCTP_HI", 127, 96),
} as const;

/** Legacy context entry (16 B, indexed by devfn). @linux context_set_present / _translation_type / _address_width / _domain_id */
export const CTX = {
  P: field("P", 0),
  FPD: field("FPD", 1),
  TT: bits("TT", 3, 2),
  SLPTPTR_LO: bits("SLPTPTR_LO", 31, 12),
  SLPTPTR_HI: bits("SLPTPTR_HI", 63, 32),
  AW: bits("AW", 66, 64),
  AVAIL: bits("AVAIL", 70, 67),
  DID: bits("DID", 87, 72),
} as const;

/** Legacy translation types. @linux CONTEXT_TT_MULTI_LEVEL / CONTEXT_TT_DEV_IOTLB / CONTEXT_TT_PASS_THROUGH */
export const CTX_TT = { MULTI_LEVEL: 0, DEV_IOTLB: 1, PASS_THROUGH: 2 } as const;

/** Reserved bits of a legacy context entry, per 32-bit word (QEMU's checks; AVAIL is software's). @linux none: QEMU VTD_CONTEXT_ENTRY_RSVD_LO/HI */
export const CTX_RSVD = [0x00000ff0, 0, 0xff000080, 0xffffffff] as const;

/** Scalable-mode context entry (32 B, 128 per table, indexed by devfn & 0x7f). @linux context_set_sm_* , context_pdts */
export const SM_CTX = {
  P: field("P", 0),
  FPD: field("FPD", 1),
  DTE: field("DTE", 2),
  PASIDE: field("PASIDE", 3),
  PRE: field("PRE", 4),
  PDTS: bits("PDTS", 11, 9),
  PASIDDIRPTR_LO: bits("PASIDDIRPTR_LO", 31, 12),
  PASIDDIRPTR_HI: bits("PASIDDIRPTR_HI", 63, 32),
  RID_PASID: bits("RID_PASID", 83, 64),
} as const;

/** Reserved bits of a scalable context entry, per 32-bit word (words 4-7 are all reserved). @linux none: QEMU VTD_SM_CONTEXT_ENTRY_RSVD_VAL0/1 */
export const SM_CTX_RSVD = [
  0x000001e0, 0, 0xffe00000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
] as const;

/** PASID directory entry (8 B, indexed by pasid >> 6). @linux struct pasid_dir_entry, PASID_PTE_PRESENT / PASID_PTE_FPD */
export const PASID_DIR = {
  P: field("P", 0),
  FPD: field("FPD", 1),
  PTP_LO: bits("PTP_LO", 31, 12),
  PTP_HI: bits("PTP_HI", 63, 32),
} as const;
/** PASIDs per PASID table (64 × 64 B = 4 KiB). @linux PASID_PDE_SHIFT */
export const PASID_PDE_SHIFT = 6;
/** Bytes of a PASID table entry. @linux sizeof(struct pasid_entry) */
export const PASID_ENTRY_SIZE = 64;

/** Scalable-mode PASID table entry (64 B). @linux pasid_set_* helpers of pasid.h */
export const PASID_ENTRY = {
  P: field("P", 0),
  FPD: field("FPD", 1),
  AW: bits("AW", 4, 2),
  PGTT: bits("PGTT", 8, 6),
  SSADE: field("SSADE", 9),
  SSPTPTR_LO: bits("SSPTPTR_LO", 31, 12),
  SSPTPTR_HI: bits("SSPTPTR_HI", 63, 32),
  DID: bits("DID", 79, 64),
  PWSNP: field("PWSNP", 87),
  PGSNP: field("PGSNP", 88),
  SRE: field("SRE", 128),
  FSPM: bits("FSPM", 131, 130),
  WPE: field("WPE", 132),
  NXE: field("NXE", 133),
  EAFE: field("EAFE", 135),
  FSPTPTR_LO: bits("FSPTPTR_LO", 159, 140),
  FSPTPTR_HI: bits("FSPTPTR_HI", 191, 160),
} as const;

/** PASID granular translation types. @linux PASID_ENTRY_PGTT_FL_ONLY / _SL_ONLY / _NESTED / _PT */
export const PGTT = { FS: 1, SS: 2, NESTED: 3, PT: 4 } as const;

/** Second-stage paging entry bits (low half). No present bit: R or W set means present. @linux DMA_PTE_READ / _WRITE / _LARGE_PAGE / _SNP, VTDSS_* */
export const SS_PTE = { R: 1 << 0, W: 1 << 1, X: 1 << 2, PS: 1 << 7, A: 1 << 8, D: 1 << 9, SNP: 1 << 11 } as const;

/** First-stage (x86-64) paging entry bits; XD is bit 63 (bit 31 of the high half). @linux X86_64_FMT_*, DMA_FL_PTE_* */
export const FS_PTE = {
  P: 1 << 0,
  RW: 1 << 1,
  US: 1 << 2,
  PWT: 1 << 3,
  PCD: 1 << 4,
  A: 1 << 5,
  D: 1 << 6,
  PS: 1 << 7,
  G: 1 << 8,
  XD_HI: 1 << 31,
} as const;

/** Address field of both paging formats: bits 51:12. @linux VTD_PAGE_MASK on the entry (bits 51:12) */
export const PTE_ADDR_LO = 0xfffff000 | 0;
/** Address field, high half (bits 51:32). @linux VTD_PAGE_MASK on the entry */
export const PTE_ADDR_HI = 0x000fffff;

// --- invalidation queue ------------------------------------------------------------------------------------------

/** Descriptor types (qw0 bits 3:0). @linux QI_CC_TYPE … QI_PGRP_RESP_TYPE */
export const QI_TYPE = {
  CC: 0x1,
  IOTLB: 0x2,
  DIOTLB: 0x3,
  IEC: 0x4,
  IWD: 0x5,
  EIOTLB: 0x6,
  PC: 0x7,
  DEIOTLB: 0x8,
  PGRP_RESP: 0x9,
} as const;

/** Common descriptor type field. @linux QI_*_TYPE in bits 3:0 */
export const QI_DESC = { TYPE: bits("TYPE", 3, 0), TYPE_HI: bits("TYPE_HI", 11, 9) } as const;

/** Context-cache invalidate. @linux QI_CC_GRAN / QI_CC_DID / QI_CC_SID / QI_CC_FM */
export const QI_CC = {
  G: bits("G", 5, 4),
  DID: bits("DID", 31, 16),
  SID: bits("SID", 47, 32),
  FM: bits("FM", 49, 48),
} as const;

/** IOTLB invalidate. @linux QI_IOTLB_GRAN / _DR / _DW / _DID / _AM / _IH / _ADDR */
export const QI_IOTLB = {
  G: bits("G", 5, 4),
  DW: field("DW", 6),
  DR: field("DR", 7),
  DID: bits("DID", 31, 16),
  AM: bits("AM", 69, 64),
  IH: field("IH", 70),
  ADDR_LO: bits("ADDR_LO", 95, 76),
  ADDR_HI: bits("ADDR_HI", 127, 96),
} as const;

/** Device-TLB invalidate. @linux QI_DEV_IOTLB_SID / _QDEP / _PFSID / _SIZE / _ADDR */
export const QI_DEV_IOTLB = {
  PFSID_LO: bits("PFSID_LO", 15, 12),
  MIP: bits("MIP", 20, 16),
  SID: bits("SID", 47, 32),
  PFSID_HI: bits("PFSID_HI", 63, 52),
  S: field("S", 64),
  ADDR_LO: bits("ADDR_LO", 95, 76),
  ADDR_HI: bits("ADDR_HI", 127, 96),
} as const;

/** Invalidation wait. @linux QI_IWD_STATUS_DATA / _STATUS_WRITE / _FENCE / _PRQ_DRAIN / _IWD_IF */
export const QI_IWD = {
  IF: field("IF", 4),
  SW: field("SW", 5),
  FN: field("FN", 6),
  PD: field("PD", 7),
  DATA: bits("DATA", 63, 32),
  ADDR_LO: bits("ADDR_LO", 95, 66),
  ADDR_HI: bits("ADDR_HI", 127, 96),
} as const;

/** PASID-based IOTLB invalidate. @linux QI_EIOTLB_GRAN / _DID / _PASID / _AM / _IH / _ADDR */
export const QI_EIOTLB = {
  G: bits("G", 5, 4),
  DID: bits("DID", 31, 16),
  PASID: bits("PASID", 51, 32),
  AM: bits("AM", 69, 64),
  IH: field("IH", 70),
  ADDR_LO: bits("ADDR_LO", 95, 76),
  ADDR_HI: bits("ADDR_HI", 127, 96),
} as const;

/** Granularities of a PASID-based IOTLB invalidation. @linux QI_GRAN_NONG_PASID / QI_GRAN_PSI_PASID */
export const EIOTLB_GRAN = { PASID: 2, PAGE: 3 } as const;

/** PASID-cache invalidate. @linux QI_PC_GRAN / QI_PC_DID / QI_PC_PASID */
export const QI_PC = { G: bits("G", 5, 4), DID: bits("DID", 31, 16), PASID: bits("PASID", 51, 32) } as const;

/** PASID-cache granularities. @linux QI_PC_ALL_PASIDS / QI_PC_PASID_SEL / QI_PC_GLOBAL */
export const PC_GRAN = { DOMAIN: 0, PASID: 1, GLOBAL: 3 } as const;

/** PASID-based device-TLB invalidate. @linux QI_DEV_EIOTLB_* */
export const QI_DEV_EIOTLB = {
  MIP: bits("MIP", 8, 4),
  PFSID_LO: bits("PFSID_LO", 15, 12),
  SID: bits("SID", 31, 16),
  PASID: bits("PASID", 51, 32),
  PFSID_HI: bits("PFSID_HI", 63, 52),
  GLOB: field("GLOB", 64),
  S: field("S", 75),
  ADDR_LO: bits("ADDR_LO", 95, 76),
  ADDR_HI: bits("ADDR_HI", 127, 96),
} as const;

/** Page group response. @linux QI_PGRP_PASID_P / QI_PGRP_RESP_CODE / QI_PGRP_DID (requester ID) / QI_PGRP_PASID / QI_PGRP_IDX */
export const QI_PGRP = {
  PASID_P: field("PASID_P", 4),
  RESP_CODE: bits("RESP_CODE", 15, 12),
  RID: bits("RID", 31, 16),
  PASID: bits("PASID", 51, 32),
  IDX: bits("IDX", 75, 67),
} as const;

/** Page group response codes. @linux QI_RESP_SUCCESS / QI_RESP_INVALID / QI_RESP_FAILURE */
export const QI_RESP = { SUCCESS: 0x0, INVALID: 0x1, FAILURE: 0xf } as const;

/**
 * Reserved bits QEMU enforces, per 32-bit word of qw0/qw1, by descriptor type. A descriptor with any of them set
 * is an invalid descriptor (FSTS.IQE).
 * @linux none: QEMU VTD_INV_DESC_*_RSVD_*
 */
export const QI_RSVD: Readonly<Record<number, readonly number[]>> = {
  [QI_TYPE.CC]: [0x0000ffc0, 0xfffc0000, 0, 0],
  [QI_TYPE.IOTLB]: [0x0000ff00, 0xffffffff, 0xf80, 0],
  [QI_TYPE.IWD]: [0xffffff00, 0, 0x3, 0],
  [QI_TYPE.EIOTLB]: [0x0000f1c0, 0xfff00000, 0xf80, 0],
  [QI_TYPE.PC]: [0x0000f1c0, 0xfff00000, 0, 0],
  [QI_TYPE.PGRP_RESP]: [0x000001e0, 0xfff00000, 0xfffff003, 0xffffffff],
};

// --- fault recording ---------------------------------------------------------------------------------------------

/** Fault recording register (128-bit). @linux dma_frcd_* helpers and DMA_FRCD_F (dmar.c) */
export const FRCD = {
  FI_LO: bits("FI_LO", 31, 12),
  FI_HI: bits("FI_HI", 63, 32),
  SID: bits("SID", 79, 64),
  PRIV: field("PRIV", 93),
  EXE: field("EXE", 94),
  PP: field("PP", 95),
  FR: bits("FR", 103, 96),
  PV: bits("PV", 123, 104),
  T: field("T", 126),
  F: field("F", 127),
} as const;

/** Bytes of one fault record. @linux PRIMARY_FAULT_REG_LEN */
export const FRCD_SIZE = 16;

// --- page request queue ------------------------------------------------------------------------------------------

/** Page request descriptor (32 B). @linux struct page_req_dsc (prq.c) */
export const PRQ_DESC = {
  TYPE: bits("TYPE", 7, 0),
  PASID_PRESENT: field("PASID_PRESENT", 8),
  PRIV_DATA_PRESENT: field("PRIV_DATA_PRESENT", 9),
  RID: bits("RID", 31, 16),
  PASID: bits("PASID", 51, 32),
  EXE_REQ: field("EXE_REQ", 52),
  PM_REQ: field("PM_REQ", 53),
  RD_REQ: field("RD_REQ", 64),
  WR_REQ: field("WR_REQ", 65),
  LPIG: field("LPIG", 66),
  PRG_INDEX: bits("PRG_INDEX", 75, 67),
  ADDR_LO: bits("ADDR_LO", 95, 76),
  ADDR_HI: bits("ADDR_HI", 127, 96),
} as const;

/** Bytes of a page request descriptor. @linux sizeof(struct page_req_dsc) */
export const PRQ_DESC_SIZE = 32;

/**
 * Fault reason codes recorded in FRCD.FR.
 * @linux the dma_remap_fault_reasons / dma_remap_sm_fault_reasons tables of dmar.c
 */
export const FR = {
  ROOT_NOT_PRESENT: 0x01,
  CTX_NOT_PRESENT: 0x02,
  CTX_INVALID: 0x03,
  ADDR_BEYOND_MGAW: 0x04,
  WRITE: 0x05,
  READ: 0x06,
  PAGING_ENTRY_ERR: 0x07,
  ROOT_ADDR_INVALID: 0x08,
  CTP_INVALID: 0x09,
  ROOT_RSVD: 0x0a,
  CTX_RSVD: 0x0b,
  PAGING_RSVD: 0x0c,
  TT_BLOCKED: 0x0d,
  SM_ROOT_ADDR_INVALID: 0x30,
  SM_PASID_IN_LEGACY: 0x31,
  SM_ROOT_READ: 0x38,
  SM_ROOT_NOT_PRESENT: 0x39,
  SM_ROOT_RSVD: 0x3a,
  SM_CTX_READ: 0x40,
  SM_CTX_NOT_PRESENT: 0x41,
  SM_CTX_RSVD: 0x42,
  SM_CTX_INVALID: 0x43,
  SM_PASIDE_CLEAR: 0x45,
  SM_PASID_TOO_LARGE: 0x46,
  SM_PRE_CLEAR: 0x47,
  SM_PDIR_READ: 0x50,
  SM_PDIR_NOT_PRESENT: 0x51,
  SM_PDIR_RSVD: 0x52,
  SM_PTE_READ: 0x58,
  SM_PTE_NOT_PRESENT: 0x59,
  SM_PTE_RSVD: 0x5a,
  SM_PTE_INVALID: 0x5b,
  SM_SRE_CLEAR: 0x5d,
  SM_FS_READ: 0x70,
  SM_FS_NOT_PRESENT: 0x71,
  SM_FS_RSVD: 0x72,
  SM_SS_READ: 0x78,
  SM_SS_NOT_PRESENT: 0x79,
  SM_SS_RSVD: 0x7a,
  SM_NON_CANONICAL: 0x80,
  SM_US: 0x81,
  SM_EXEC: 0x82,
  SM_FS_BEYOND: 0x83,
  SM_SS_BEYOND: 0x84,
  SM_WRITE: 0x85,
  SM_READ: 0x86,
} as const;

/** Short names of the fault reasons, for `faultReason` strings and reports. @linux dmar_get_fault_reason */
export const FR_NAME: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(FR).map(([k, v]) => [v, k.toLowerCase().replace(/_/g, " ")]),
);
