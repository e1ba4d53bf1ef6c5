/**
 * The SMMUv3's in-memory structures, field by field: stream table descriptors and entries, context descriptors,
 * command-queue entries, event records, PRI-queue entries, and the VMSAv8-64 (LPAE) translation-table descriptors
 * the SMMU walks. Bit numbers count across the whole structure (see fields.ts).
 *
 * Sources: Arm SMMUv3 specification chapters 3, 4, 5 and 7; VMSAv8-64 (Arm ARM D8); cross-checked against Linux
 * arm-smmu-v3.h / io-pgtable-arm.c and QEMU smmuv3-internal.h (../shared/reference/formats.md §1.2–1.9, §2).
 * Fields tagged [SPEC?] there are used only where noted.
 * @linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_*, CTXDESC_*, CMDQ_*, EVTQ_*, PRIQ_*; io-pgtable-arm.c ARM_LPAE_PTE_*
 */
import { bits, field } from "@iommu-sim/core";

// --- stream table ------------------------------------------------------------------------------------------------

/** Bytes per STE. @linux STRTAB_STE_DWORDS * 8 */
export const STE_SIZE = 64;
/** Bytes per L1 stream-table descriptor. @linux STRTAB_L1_DESC_DWORDS * 8 */
export const L1_STD_SIZE = 8;

/** Level-1 stream table descriptor. @linux STRTAB_L1_DESC_SPAN, STRTAB_L1_DESC_L2PTR_MASK */
export const L1_STD = {
  /** The L2 table holds 2^(SPAN-1) STEs; 0 = invalid. */
  SPAN: bits("SPAN", 4, 0),
  L2PTR_LO: bits("L2PTR_LO", 31, 6),
  L2PTR_HI: bits("L2PTR_HI", 51, 32),
} as const;

/** Stream table entry. @linux STRTAB_STE_0_* .. STRTAB_STE_3_* */
export const STE = {
  // dword 0
  V: field("V", 0),
  CONFIG: bits("CONFIG", 3, 1),
  S1FMT: bits("S1FMT", 5, 4),
  S1CTXPTR_LO: bits("S1CTXPTR_LO", 31, 6),
  S1CTXPTR_HI: bits("S1CTXPTR_HI", 51, 32),
  S1CDMAX: bits("S1CDMAX", 63, 59),
  // dword 1
  S1DSS: bits("S1DSS", 65, 64),
  S1CIR: bits("S1CIR", 67, 66),
  S1COR: bits("S1COR", 69, 68),
  S1CSH: bits("S1CSH", 71, 70),
  MEV: field("MEV", 64 + 19),
  S2FWB: field("S2FWB", 64 + 25),
  S1STALLD: field("S1STALLD", 64 + 27),
  EATS: bits("EATS", 64 + 29, 64 + 28),
  STRW: bits("STRW", 64 + 31, 64 + 30),
  SHCFG: bits("SHCFG", 64 + 45, 64 + 44),
  // dword 2
  S2VMID: bits("S2VMID", 128 + 15, 128),
  S2T0SZ: bits("S2T0SZ", 128 + 37, 128 + 32),
  S2SL0: bits("S2SL0", 128 + 39, 128 + 38),
  S2IR0: bits("S2IR0", 128 + 41, 128 + 40),
  S2OR0: bits("S2OR0", 128 + 43, 128 + 42),
  S2SH0: bits("S2SH0", 128 + 45, 128 + 44),
  S2TG: bits("S2TG", 128 + 47, 128 + 46),
  S2PS: bits("S2PS", 128 + 50, 128 + 48),
  S2AA64: field("S2AA64", 128 + 51),
  S2ENDI: field("S2ENDI", 128 + 52),
  S2AFFD: field("S2AFFD", 128 + 53),
  S2PTW: field("S2PTW", 128 + 54),
  S2HD: field("S2HD", 128 + 55),
  S2HA: field("S2HA", 128 + 56),
  S2S: field("S2S", 128 + 57),
  S2R: field("S2R", 128 + 58),
  // dword 3
  S2TTB_LO: bits("S2TTB_LO", 192 + 31, 192 + 4),
  S2TTB_HI: bits("S2TTB_HI", 192 + 51, 192 + 32),
} as const;

/** STE.Config encodings. @linux STRTAB_STE_0_CFG_ABORT / _BYPASS / _S1_TRANS / _S2_TRANS / _NESTED */
export const STE_CFG = { ABORT: 0, BYPASS: 4, S1_TRANS: 5, S2_TRANS: 6, NESTED: 7 } as const;
/** STE.S1Fmt encodings. @linux STRTAB_STE_0_S1FMT_LINEAR / _64K_L2 (and the spec's 4K-leaf two-level format) */
export const S1FMT = { LINEAR: 0, L2_4K: 1, L2_64K: 2 } as const;
/** STE.S1DSS encodings. @linux STRTAB_STE_1_S1DSS_TERMINATE / _BYPASS / _SSID0 */
export const S1DSS = { TERMINATE: 0, BYPASS: 1, SSID0: 2 } as const;
/** STE.STRW encodings. @linux STRTAB_STE_1_STRW_NSEL1 / _EL2 */
export const STRW = { NSEL1: 0, EL2: 2 } as const;
/** STE.EATS encodings. @linux STRTAB_STE_1_EATS_ABT / _TRANS / _S1CHK */
export const EATS = { ABT: 0, TRANS: 1, S1CHK: 2 } as const;

// --- context descriptors -----------------------------------------------------------------------------------------

/** Bytes per CD. @linux CTXDESC_CD_DWORDS * 8 */
export const CD_SIZE = 64;
/** Bytes per L1 CD descriptor. @linux CTXDESC_L1_DESC_DWORDS * 8 */
export const L1_CD_SIZE = 8;

/** Level-1 CD table descriptor. @linux CTXDESC_L1_DESC_V, CTXDESC_L1_DESC_L2PTR_MASK */
export const L1_CD = {
  V: field("V", 0),
  L2PTR_LO: bits("L2PTR_LO", 31, 12),
  L2PTR_HI: bits("L2PTR_HI", 51, 32),
} as const;

/** Context descriptor. @linux CTXDESC_CD_0_* .. CTXDESC_CD_3_* */
export const CD = {
  // dword 0
  T0SZ: bits("T0SZ", 5, 0),
  TG0: bits("TG0", 7, 6),
  IR0: bits("IR0", 9, 8),
  OR0: bits("OR0", 11, 10),
  SH0: bits("SH0", 13, 12),
  EPD0: field("EPD0", 14),
  ENDI: field("ENDI", 15),
  T1SZ: bits("T1SZ", 21, 16),
  TG1: bits("TG1", 23, 22),
  EPD1: field("EPD1", 30),
  V: field("V", 31),
  IPS: bits("IPS", 34, 32),
  AFFD: field("AFFD", 35),
  TBI0: field("TBI0", 38),
  AA64: field("AA64", 41),
  HD: field("HD", 42),
  HA: field("HA", 43),
  S: field("S", 44),
  R: field("R", 45),
  A: field("A", 46),
  ASET: field("ASET", 47),
  ASID: bits("ASID", 63, 48),
  // dword 1
  HAD0: field("HAD0", 64 + 1),
  TTB0_LO: bits("TTB0_LO", 64 + 31, 64 + 4),
  TTB0_HI: bits("TTB0_HI", 64 + 51, 64 + 32),
  // dword 2
  TTB1_LO: bits("TTB1_LO", 128 + 31, 128 + 4),
  TTB1_HI: bits("TTB1_HI", 128 + 51, 128 + 32),
  // dword 3
  MAIR0: bits("MAIR0", 192 + 31, 192),
  MAIR1: bits("MAIR1", 192 + 63, 192 + 32),
} as const;

/** TG0 / S2TG granule encodings → log2 of the granule (-1 = reserved). @linux ARM_LPAE_TCR_TG0_4K / _64K / _16K */
export const TG0_GRANULE_LG2: readonly number[] = [12, 16, 14, -1];

// --- command queue -----------------------------------------------------------------------------------------------

/** Bytes per command. @linux CMDQ_ENT_DWORDS * 8 */
export const CMD_SIZE = 16;

/** Command fields (each command uses a subset). @linux CMDQ_0_* / CMDQ_*_0_* / CMDQ_*_1_* */
export const CMD = {
  OP: bits("OP", 7, 0),
  SSV: field("SSV", 11),
  // CFGI / PREFETCH / ATC / PRI / RESUME
  SID: bits("SID", 63, 32),
  SSID: bits("SSID", 31, 12),
  LEAF: field("LEAF", 64),
  RANGE: bits("RANGE", 68, 64),
  // TLBI
  NUM: bits("NUM", 16, 12),
  SCALE: bits("SCALE", 24, 20),
  VMID: bits("VMID", 47, 32),
  ASID: bits("ASID", 63, 48),
  TTL: bits("TTL", 64 + 9, 64 + 8),
  TG: bits("TG", 64 + 11, 64 + 10),
  ADDR_LO: bits("ADDR_LO", 64 + 31, 64 + 12),
  ADDR_HI: bits("ADDR_HI", 64 + 63, 64 + 32),
  // ATC_INV
  GLOBAL: field("GLOBAL", 9),
  ATC_SIZE: bits("ATC_SIZE", 64 + 5, 64),
  // PRI_RESP
  PRI_GRPID: bits("PRI_GRPID", 64 + 8, 64),
  PRI_RESP: bits("PRI_RESP", 64 + 13, 64 + 12),
  // RESUME
  RESUME_RESP: bits("RESUME_RESP", 13, 12),
  RESUME_STAG: bits("RESUME_STAG", 64 + 15, 64),
  // CMD_SYNC
  SYNC_CS: bits("SYNC_CS", 13, 12),
  SYNC_MSH: bits("SYNC_MSH", 23, 22),
  SYNC_MSIATTR: bits("SYNC_MSIATTR", 27, 24),
  SYNC_MSIDATA: bits("SYNC_MSIDATA", 63, 32),
  SYNC_MSIADDR_LO: bits("SYNC_MSIADDR_LO", 64 + 31, 64 + 2),
  SYNC_MSIADDR_HI: bits("SYNC_MSIADDR_HI", 64 + 51, 64 + 32),
} as const;

/** Command opcodes. @linux CMDQ_OP_* */
export const CMDQ_OP = {
  PREFETCH_CFG: 0x01,
  PREFETCH_ADDR: 0x02,
  CFGI_STE: 0x03,
  CFGI_STE_RANGE: 0x04,
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL3_ALL: 0x18,
  TLBI_EL3_VA: 0x1a,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_EL2_VAA: 0x23,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  STALL_TERM: 0x45,
  CMD_SYNC: 0x46,
} as const;

/** CFGI_STE_RANGE.RANGE meaning "every StreamID" (Linux's CFGI_ALL). @linux CMDQ_OP_CFGI_ALL (range 31) */
export const CFGI_RANGE_ALL = 31;
/** CMD_SYNC.CS encodings. @linux CMDQ_SYNC_0_CS_NONE / _IRQ / _SEV */
export const SYNC_CS = { NONE: 0, SIG_IRQ: 1, SIG_SEV: 2 } as const;
/** PRI_RESP.RESP encodings. @linux enum pri_resp (PRI_RESP_DENY / _FAIL / _SUCC) */
export const PRI_RESP = { DENY: 0, FAIL: 1, SUCC: 2 } as const;
/** RESUME.RESP encodings. @linux CMDQ_RESUME_0_RESP_TERM / _RETRY / _ABORT */
export const RESUME_RESP = { TERM: 0, RETRY: 1, ABORT: 2 } as const;

// --- event queue -------------------------------------------------------------------------------------------------

/** Bytes per event record. @linux EVTQ_ENT_DWORDS * 8 */
export const EVT_SIZE = 32;

/** Event record fields. @linux EVTQ_0_* .. EVTQ_3_* */
export const EVT = {
  ID: bits("ID", 7, 0),
  SSV: field("SSV", 11),
  SSID: bits("SSID", 31, 12),
  SID: bits("SID", 63, 32),
  STAG: bits("STAG", 64 + 15, 64),
  STALL: field("STALL", 64 + 31),
  PNU: field("PnU", 64 + 33),
  IND: field("InD", 64 + 34),
  RNW: field("RnW", 64 + 35),
  S2: field("S2", 64 + 39),
  CLASS: bits("CLASS", 64 + 41, 64 + 40),
  TT_READ: field("TT_READ", 64 + 44),
  ADDR_LO: bits("ADDR_LO", 128 + 31, 128),
  ADDR_HI: bits("ADDR_HI", 128 + 63, 128 + 32),
  /** dword 3: the IPA of a stage-2 fault (bits 51:12) or the fetch address of a configuration fetch (51:3). */
  ADDR2_LO: bits("ADDR2_LO", 192 + 31, 192),
  ADDR2_HI: bits("ADDR2_HI", 192 + 51, 192 + 32),
} as const;

/** Event IDs. @linux EVT_ID_* (and QEMU SMMUEventType for the ones Linux does not name) */
export const EVT_ID = {
  F_UUT: 0x01,
  C_BAD_STREAMID: 0x02,
  F_STE_FETCH: 0x03,
  C_BAD_STE: 0x04,
  F_BAD_ATS_TREQ: 0x05,
  F_STREAM_DISABLED: 0x06,
  F_TRANSL_FORBIDDEN: 0x07,
  C_BAD_SUBSTREAMID: 0x08,
  F_CD_FETCH: 0x09,
  C_BAD_CD: 0x0a,
  F_WALK_EABT: 0x0b,
  F_TRANSLATION: 0x10,
  F_ADDR_SIZE: 0x11,
  F_ACCESS: 0x12,
  F_PERMISSION: 0x13,
  F_TLB_CONFLICT: 0x20,
  F_CFG_CONFLICT: 0x21,
  E_PAGE_REQUEST: 0x24,
} as const;

/** Event names by ID, for fault reasons and reports. */
export const EVT_NAME: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(EVT_ID).map(([k, v]) => [v, k]),
);

/**
 * EVT.CLASS: which access a stage-2 fault happened on. TT (1) is confirmed in Linux; CD (0) and IN (2) follow the
 * spec's encoding (formats.md marks them [SPEC?]; used only in stage-2 fault records).
 * @linux EVTQ_1_CLASS_TT
 */
export const EVT_CLASS = { CD: 0, TT: 1, IN: 2 } as const;

// --- PRI queue ---------------------------------------------------------------------------------------------------

/** Bytes per PRI queue entry. @linux PRIQ_ENT_DWORDS * 8 */
export const PRIQ_SIZE = 16;

/** PRI queue entry fields. @linux PRIQ_0_* / PRIQ_1_* */
export const PRIQ = {
  SID: bits("SID", 31, 0),
  SSID: bits("SSID", 51, 32),
  PRIV: field("PRIV", 58),
  EXEC: field("EXEC", 59),
  READ: field("READ", 60),
  WRITE: field("WRITE", 61),
  LAST: field("LAST", 62),
  SSV: field("SSV", 63),
  PRG_IDX: bits("PRG_IDX", 64 + 8, 64),
  ADDR_LO: bits("ADDR_LO", 64 + 31, 64 + 12),
  ADDR_HI: bits("ADDR_HI", 64 + 63, 64 + 32),
} as const;

// --- VMSAv8-64 translation table descriptors ---------------------------------------------------------------------

/** Translation-table descriptor fields (stage 1 and stage 2). @linux io-pgtable-arm.c ARM_LPAE_PTE_* */
export const PTE = {
  /** Bits 1:0: 0bx0 invalid, 0b01 block (levels 0–2), 0b11 table (levels 0–2) or page (level 3). */
  VALID: field("VALID", 0),
  TYPE: field("TYPE", 1),
  ATTRINDX: bits("ATTRINDX", 4, 2),
  NS: field("NS", 5),
  /** Stage 1: AP[1], unprivileged access. Stage 2: S2AP[0], read. */
  AP1: field("AP1", 6),
  /** Stage 1: AP[2], read-only. Stage 2: S2AP[1], write. */
  AP2: field("AP2", 7),
  SH: bits("SH", 9, 8),
  AF: field("AF", 10),
  NG: field("nG", 11),
  /** 64K granule with 52-bit PA: PA[51:48]. */
  OA_52: bits("OA_52", 15, 12),
  OA_HI: bits("OA_HI", 47, 32),
  DBM: field("DBM", 32 + 19),
  CONT: field("CONT", 32 + 20),
  PXN: field("PXN", 32 + 21),
  XN: field("XN", 32 + 22),
  /** Stage-2 memory attributes (bits 5:2). */
  S2_MEMATTR: bits("S2_MEMATTR", 5, 2),
} as const;
