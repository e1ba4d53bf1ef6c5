/**
 * The driver's "header file": SMMUv3 register offsets and fields, STE/CD/L1-descriptor fields, command, event and
 * PRI-queue record fields, declared once as data and used by name.
 *
 * Spec: Arm IHI 0070 (SMMUv3) chapters 5 (data structures), 4 (commands), 7 (events), 6 (registers);
 * ../../../../../shared/reference/formats.md §1 (only [L]/[Q] rows are used; [SPEC?] rows stay reserved).
 * @linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h
 */

/** A field of a 32-bit register: `width` bits at `bit`. */
export interface Field32 {
  readonly bit: number;
  readonly width: number;
}

/** A field of a 64-bit descriptor word (bigint), `width` bits at `bit`. */
export interface Field64 {
  readonly bit: number;
  readonly width: number;
  /** The field's mask in place. */
  readonly mask: bigint;
}

const f32 = (bit: number, width = 1): Field32 => ({ bit, width });
const f64 = (bit: number, width = 1): Field64 => ({
  bit,
  width,
  mask: ((1n << BigInt(width)) - 1n) << BigInt(bit),
});

/** Extract a 32-bit register field. @linux FIELD_GET */
export function get32(v: number, f: Field32): number {
  return f.width === 32 ? v >>> 0 : (v >>> f.bit) & ((1 << f.width) - 1) & 0xffffffff;
}

/** Place a value in a 32-bit register field. @linux FIELD_PREP */
export function prep32(f: Field32, v: number): number {
  return ((v & (f.width === 32 ? 0xffffffff : (1 << f.width) - 1)) << f.bit) >>> 0;
}

/** Extract a descriptor field. @linux FIELD_GET on a u64 */
export function get64(v: bigint, f: Field64): number {
  return Number((v & f.mask) >> BigInt(f.bit));
}

/** Place a value in a descriptor field. @linux FIELD_PREP on a u64 */
export function prep64(f: Field64, v: number | bigint): bigint {
  return (BigInt(v) << BigInt(f.bit)) & f.mask;
}

/** A mask of bits `hi:lo` inclusive. @linux GENMASK_ULL */
export function genmask64(hi: number, lo: number): bigint {
  return ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

// --- MMIO registers (page 0 unless noted) ---------------------------------------------------------------------

/** Register offsets. Event/PRI queue PROD/CONS are read in page 1 (+64 KiB). @linux ARM_SMMU_IDR0 .. ARM_SMMU_PRIQ_IRQ_CFG2 */
export const SMMU_REG = {
  IDR0: 0x0,
  IDR1: 0x4,
  IDR3: 0xc,
  IDR5: 0x14,
  IIDR: 0x18,
  CR0: 0x20,
  CR0ACK: 0x24,
  CR1: 0x28,
  CR2: 0x2c,
  GBPA: 0x44,
  IRQ_CTRL: 0x50,
  IRQ_CTRLACK: 0x54,
  GERROR: 0x60,
  GERRORN: 0x64,
  STRTAB_BASE: 0x80,
  STRTAB_BASE_CFG: 0x88,
  CMDQ_BASE: 0x90,
  CMDQ_PROD: 0x98,
  CMDQ_CONS: 0x9c,
  EVTQ_BASE: 0xa0,
  EVTQ_PROD: 0x100a8,
  EVTQ_CONS: 0x100ac,
  PRIQ_BASE: 0xc0,
  PRIQ_PROD: 0x100c8,
  PRIQ_CONS: 0x100cc,
} as const;

/** IDR0 fields. @linux IDR0_* */
export const IDR0 = {
  S2P: f32(0),
  S1P: f32(1),
  TTF: f32(2, 2),
  COHACC: f32(4),
  BTM: f32(5),
  HTTU: f32(6, 2),
  HYP: f32(9),
  ATS: f32(10),
  ASID16: f32(12),
  MSI: f32(13),
  SEV: f32(14),
  PRI: f32(16),
  VMID16: f32(18),
  CD2L: f32(19),
  TTENDIAN: f32(21, 2),
  STALL_MODEL: f32(24, 2),
  ST_LVL: f32(27, 2),
} as const;

/** IDR0 encodings. @linux IDR0_TTF_AARCH64, IDR0_HTTU_ACCESS, IDR0_STALL_MODEL_FORCE, IDR0_ST_LVL_2LVL, ... */
export const IDR0_VAL = {
  TTF_AARCH64: 2,
  TTF_AARCH32_64: 3,
  HTTU_ACCESS: 1,
  HTTU_ACCESS_DIRTY: 2,
  TTENDIAN_MIXED: 0,
  TTENDIAN_LE: 2,
  TTENDIAN_BE: 3,
  STALL_MODEL_STALL: 0,
  STALL_MODEL_FORCE: 2,
  ST_LVL_2LVL: 1,
} as const;

/** IDR1 fields. @linux IDR1_* */
export const IDR1 = {
  SIDSIZE: f32(0, 6),
  SSIDSIZE: f32(6, 5),
  PRIQS: f32(11, 5),
  EVTQS: f32(16, 5),
  CMDQS: f32(21, 5),
  ATTR_TYPES_OVR: f32(27),
  REL: f32(28),
  QUEUES_PRESET: f32(29),
  TABLES_PRESET: f32(30),
} as const;

/** IDR3 fields. @linux IDR3_RIL, IDR3_FWB, IDR3_BBML */
export const IDR3 = { FWB: f32(8), RIL: f32(10), BBML: f32(11, 2) } as const;

/** IDR5 fields. @linux IDR5_* */
export const IDR5 = {
  OAS: f32(0, 3),
  GRAN4K: f32(4),
  GRAN16K: f32(5),
  GRAN64K: f32(6),
  VAX: f32(10, 2),
  STALL_MAX: f32(16, 16),
} as const;

/** CR0 bits. @linux CR0_SMMUEN .. CR0_CMDQEN */
export const CR0 = { SMMUEN: f32(0), PRIQEN: f32(1), EVTQEN: f32(2), CMDQEN: f32(3), ATSCHK: f32(4) } as const;

/** CR1 fields and codes. @linux CR1_TABLE_SH, CR1_QUEUE_*, CR1_CACHE_WB, ARM_SMMU_SH_ISH */
export const CR1 = {
  QUEUE_IC: f32(0, 2),
  QUEUE_OC: f32(2, 2),
  QUEUE_SH: f32(4, 2),
  TABLE_IC: f32(6, 2),
  TABLE_OC: f32(8, 2),
  TABLE_SH: f32(10, 2),
  CACHE_NC: 0,
  CACHE_WB: 1,
  CACHE_WT: 2,
  SH_NSH: 0,
  SH_OSH: 2,
  SH_ISH: 3,
} as const;

/** CR2 bits. @linux CR2_PTM, CR2_RECINVSID, CR2_E2H */
export const CR2 = { E2H: f32(0), RECINVSID: f32(1), PTM: f32(2) } as const;

/** GBPA. @linux GBPA_UPDATE, GBPA_ABORT */
export const GBPA = { ABORT: f32(20), UPDATE: f32(31) } as const;

/** IRQ_CTRL. @linux IRQ_CTRL_* */
export const IRQ_CTRL = { GERROR_IRQEN: f32(0), PRIQ_IRQEN: f32(1), EVTQ_IRQEN: f32(2) } as const;

/** GERROR bits. @linux GERROR_* */
export const GERROR = {
  CMDQ_ERR: f32(0),
  EVTQ_ABT_ERR: f32(2),
  PRIQ_ABT_ERR: f32(3),
  SFM_ERR: f32(8),
  /** Every error bit software acknowledges. @linux GERROR_ERR_MASK */
  ERR_MASK: 0x1fd,
} as const;

/** STRTAB_BASE (64-bit): RA and the address. @linux STRTAB_BASE_RA, STRTAB_BASE_ADDR_MASK */
export const STRTAB_BASE = { RA: 1n << 62n, ADDR_MASK: genmask64(51, 6) } as const;

/** STRTAB_BASE_CFG. @linux STRTAB_BASE_CFG_FMT, _SPLIT, _LOG2SIZE */
export const STRTAB_BASE_CFG = {
  LOG2SIZE: f32(0, 6),
  SPLIT: f32(6, 5),
  FMT: f32(16, 2),
  FMT_LINEAR: 0,
  FMT_2LVL: 1,
} as const;

/** Queue base registers (CMDQ/EVTQ/PRIQ_BASE). @linux Q_BASE_RWA, Q_BASE_ADDR_MASK, Q_BASE_LOG2SIZE */
export const Q_BASE = { RWA: 1n << 62n, ADDR_MASK: genmask64(51, 5), LOG2SIZE: 0x1fn } as const;

/** PROD/CONS register bits (index and wrap are sized by the queue). @linux Q_OVERFLOW_FLAG, CMDQ_CONS_ERR */
export const Q_REG = {
  OVF: 1 << 31,
  CMDQ_CONS_ERR: f32(24, 7),
  CERROR_NONE: 0,
  CERROR_ILL: 1,
  CERROR_ABT: 2,
  CERROR_ATC_INV_SYNC: 3,
} as const;

// --- stream table -------------------------------------------------------------------------------------------

/** Stream-table geometry Linux uses. @linux STRTAB_SPLIT, STRTAB_L1_SZ_SHIFT, STRTAB_STE_DWORDS */
export const STRTAB = {
  SPLIT: 8,
  /** log2 of the largest L1 table in bytes (1 MiB: 2^17 descriptors). */
  L1_SZ_SHIFT: 20,
  L1_DESC_BYTES: 8,
  STE_BYTES: 64,
  STE_QWORDS: 8,
} as const;

/** L1 stream-table descriptor. @linux STRTAB_L1_DESC_SPAN, STRTAB_L1_DESC_L2PTR_MASK */
export const STRTAB_L1_DESC = { SPAN: f64(0, 5), L2PTR_MASK: genmask64(51, 6) } as const;

/** STE fields by qword. @linux STRTAB_STE_0_* .. STRTAB_STE_3_* */
export const STE = {
  V: f64(0),
  CFG: f64(1, 3),
  S1FMT: f64(4, 2),
  S1CTXPTR_MASK: genmask64(51, 6),
  S1CDMAX: f64(59, 5),

  S1DSS: f64(0, 2),
  S1CIR: f64(2, 2),
  S1COR: f64(4, 2),
  S1CSH: f64(6, 2),
  MEV: f64(19),
  S2FWB: f64(25),
  S1STALLD: f64(27),
  EATS: f64(28, 2),
  STRW: f64(30, 2),
  SHCFG: f64(44, 2),

  S2VMID: f64(0, 16),
  /** The VTCR image (S2T0SZ..S2PS), 19 bits at 32. */
  VTCR: f64(32, 19),
  S2T0SZ: f64(32, 6),
  S2SL0: f64(38, 2),
  S2IR0: f64(40, 2),
  S2OR0: f64(42, 2),
  S2SH0: f64(44, 2),
  S2TG: f64(46, 2),
  S2PS: f64(48, 3),
  S2AA64: f64(51),
  S2ENDI: f64(52),
  S2PTW: f64(54),
  S2S: f64(57),
  S2R: f64(58),

  S2TTB_MASK: genmask64(51, 4),
} as const;

/** STE encodings. @linux STRTAB_STE_0_CFG_*, STRTAB_STE_0_S1FMT_*, STRTAB_STE_1_* values */
export const STE_VAL = {
  CFG_ABORT: 0,
  CFG_BYPASS: 4,
  CFG_S1_TRANS: 5,
  CFG_S2_TRANS: 6,
  CFG_NESTED: 7,
  S1FMT_LINEAR: 0,
  S1FMT_64K_L2: 2,
  S1DSS_TERMINATE: 0,
  S1DSS_BYPASS: 1,
  S1DSS_SSID0: 2,
  S1C_CACHE_WBRA: 1,
  EATS_ABT: 0,
  EATS_TRANS: 1,
  EATS_S1CHK: 2,
  STRW_NSEL1: 0,
  STRW_EL2: 2,
  SHCFG_INCOMING: 1,
} as const;

/** Bits of a guest's vSTE a nested STE takes. @linux STRTAB_STE_0_NESTING_ALLOWED, STRTAB_STE_1_NESTING_ALLOWED */
export const STE_NESTING_ALLOWED = {
  Q0: STE.V.mask | STE.CFG.mask | STE.S1FMT.mask | STE.S1CTXPTR_MASK | STE.S1CDMAX.mask,
  Q1: STE.S1DSS.mask | STE.S1CIR.mask | STE.S1COR.mask | STE.S1CSH.mask | STE.S1STALLD.mask | STE.EATS.mask,
} as const;

// --- context descriptors ------------------------------------------------------------------------------------

/**
 * CD table geometry. LINEAR_CDMAX caps a linear CD table at 64 KiB (1024 CDs) when the SMMU has no 2-level CD tables.
 * @linux CTXDESC_SPLIT, CTXDESC_L2_ENTRIES, CTXDESC_CD_DWORDS, CTXDESC_L1_DESC_DWORDS, CTXDESC_LINEAR_CDMAX
 */
export const CTXDESC = {
  SPLIT: 10,
  L2_ENTRIES: 1024,
  CD_BYTES: 64,
  CD_QWORDS: 8,
  L1_DESC_BYTES: 8,
  LINEAR_CDMAX: 10,
} as const;

/** L1 CD descriptor. @linux CTXDESC_L1_DESC_V, CTXDESC_L1_DESC_L2PTR_MASK */
export const CD_L1_DESC = { V: f64(0), L2PTR_MASK: genmask64(51, 12) } as const;

/** CD fields by qword. @linux CTXDESC_CD_0_* .. CTXDESC_CD_3_* */
export const CD = {
  T0SZ: f64(0, 6),
  TG0: f64(6, 2),
  IRGN0: f64(8, 2),
  ORGN0: f64(10, 2),
  SH0: f64(12, 2),
  EPD0: f64(14),
  ENDI: f64(15),
  EPD1: f64(30),
  V: f64(31),
  IPS: f64(32, 3),
  TBI0: f64(38),
  AA64: f64(41),
  HD: f64(42),
  HA: f64(43),
  S: f64(44),
  R: f64(45),
  A: f64(46),
  ASET: f64(47),
  ASID: f64(48, 16),

  TTB0_MASK: genmask64(51, 4),
} as const;

// --- command queue ------------------------------------------------------------------------------------------

/** Command opcodes. @linux CMDQ_OP_* */
export const CMDQ_OP = {
  PREFETCH_CFG: 0x1,
  CFGI_STE: 0x3,
  CFGI_ALL: 0x4,
  CFGI_CD: 0x5,
  CFGI_CD_ALL: 0x6,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  CMD_SYNC: 0x46,
} as const;

/**
 * Command fields as (word, bit, width) on the four 32-bit words of a 16-byte command: word 0/1 = dword 0,
 * word 2/3 = dword 1. @linux CMDQ_0_OP .. CMDQ_SYNC_1_MSIADDR_MASK
 */
export const CMD = {
  OP: f32(0, 8),
  SSV: f32(11),
  // dword0 bits 63:32 (word 1)
  SID: f32(0, 32),
  // CFGI
  CFGI_SSID: f32(12, 20),
  CFGI_LEAF: f32(0),
  CFGI_RANGE: f32(0, 5),
  // TLBI, word 0
  TLBI_NUM: f32(12, 5),
  TLBI_SCALE: f32(20, 5),
  // TLBI, word 1 (dword0 bits 47:32 VMID, 63:48 ASID)
  TLBI_VMID: f32(0, 16),
  TLBI_ASID: f32(16, 16),
  // TLBI, word 2 (dword1 low)
  TLBI_LEAF: f32(0),
  TLBI_TTL: f32(8, 2),
  TLBI_TG: f32(10, 2),
  // ATC_INV
  ATC_GLOBAL: f32(9),
  ATC_SSID: f32(12, 20),
  ATC_SIZE: f32(0, 6),
  // PRI_RESP
  PRI_SSID: f32(12, 20),
  PRI_GRPID: f32(0, 9),
  PRI_RESP: f32(12, 2),
  // RESUME
  RESUME_RESP: f32(12, 2),
  RESUME_STAG: f32(0, 16),
  // CMD_SYNC
  SYNC_CS: f32(12, 2),
  SYNC_MSH: f32(22, 2),
  SYNC_MSIATTR: f32(24, 4),
} as const;

/** Command field values. @linux CMDQ_SYNC_0_CS_*, PRI_RESP_*, CMDQ_RESUME_0_RESP_*, ATC_INV_SIZE_ALL, CMDQ_TLBI_RANGE_NUM_MAX */
export const CMD_VAL = {
  SYNC_CS_NONE: 0,
  SYNC_CS_IRQ: 1,
  SYNC_CS_SEV: 2,
  SH_ISH: 3,
  MSIATTR_OIWB: 0xf,
  PRI_RESP_DENY: 0,
  PRI_RESP_FAIL: 1,
  PRI_RESP_SUCC: 2,
  RESUME_TERM: 0,
  RESUME_RETRY: 1,
  RESUME_ABORT: 2,
  ATC_INV_SIZE_ALL: 52,
  TLBI_RANGE_NUM_MAX: 31,
  CFGI_ALL_RANGE: 31,
} as const;

// --- event queue and PRI queue ------------------------------------------------------------------------------

/** Event IDs the driver decodes. @linux EVT_ID_* */
export const EVT_ID = {
  BAD_STREAMID: 0x02,
  STE_FETCH: 0x03,
  BAD_STE: 0x04,
  STREAM_DISABLED: 0x06,
  BAD_SUBSTREAMID: 0x08,
  CD_FETCH: 0x09,
  BAD_CD: 0x0a,
  WALK_EABT: 0x0b,
  TRANSLATION: 0x10,
  ADDR_SIZE: 0x11,
  ACCESS: 0x12,
  PERMISSION: 0x13,
  E_PAGE_REQ: 0x24,
} as const;

/** Event record fields as (word, bit, width) on its eight 32-bit words. @linux EVTQ_0_ID .. EVTQ_3_IPA */
export const EVTQ = {
  /** word 0 */
  ID: f32(0, 8),
  SSV: f32(11),
  SSID: f32(12, 20),
  /** word 1 is the SID. word 2: */
  STAG: f32(0, 16),
  STALL: f32(31),
  /** word 3 (dword1 bits 63:32): */
  PNU: f32(1),
  IND: f32(2),
  RNW: f32(3),
  S2: f32(7),
  CLASS: f32(8, 2),
} as const;

/** Queue geometry Linux chooses. @linux CMDQ_ENT_DWORDS, EVTQ_ENT_DWORDS, PRIQ_ENT_DWORDS, *_MAX_SZ_SHIFT */
export const QUEUE = {
  CMDQ_ENT_BYTES: 16,
  EVTQ_ENT_BYTES: 32,
  PRIQ_ENT_BYTES: 16,
  /** log2 entries at most; Linux caps by Q_MAX_SZ_SHIFT (MAX_PAGE_ORDER pages), the simulation smaller. */
  CMDQ_MAX_SZ_SHIFT: 8,
  EVTQ_MAX_SZ_SHIFT: 7,
  PRIQ_MAX_SZ_SHIFT: 7,
} as const;

/** PRI queue entry fields (words 0–3). @linux PRIQ_0_SID .. PRIQ_1_ADDR_MASK */
export const PRIQ = {
  /** word 0 = SID; word 1 (dword0 bits 63:32): */
  SSID: f32(0, 20),
  PERM_PRIV: f32(26),
  PERM_EXEC: f32(27),
  PERM_READ: f32(28),
  PERM_WRITE: f32(29),
  PRG_LAST: f32(30),
  SSID_V: f32(31),
  /** word 2 (dword1 low): */
  PRG_IDX: f32(0, 9),
} as const;

/** The MAIR Linux programs, as (lo, hi) halves. @linux ARM_LPAE_MAIR_ATTR_* packed by arm_64_lpae_alloc_pgtable_s1 */
export const LPAE_MAIR = 0x00000000f404ff44n;
