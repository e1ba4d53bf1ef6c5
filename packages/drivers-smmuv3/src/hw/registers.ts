/**
 * The SMMUv3 register file, read like the specification's register tables: each register line (offset, width,
 * access) followed by its fields. Page 0 is the SMMU base; page 1 (base + 64 KiB) holds the event- and PRI-queue
 * PROD/CONS registers.
 *
 * Sources: Arm SMMUv3 specification chapter 6 (register map); cross-checked against Linux
 * `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h` and QEMU `hw/arm/smmuv3-internal.h` (see
 * ../shared/reference/formats.md §1.1).
 * @linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h ARM_SMMU_* register offsets and their fields
 */
import { bits, type Field, field } from "@iommu-sim/core";

/** Access type of a register. @linux the RO/RW/WO columns of the SMMUv3 register tables */
export type RegAccess = "ro" | "rw" | "wo";

/**
 * One register: its offset in the MMIO window, width in bits and access type.
 * @linux an ARM_SMMU_* offset #define
 */
export interface RegDef {
  readonly name: string;
  readonly offset: number;
  readonly width: 32 | 64;
  readonly access: RegAccess;
}

const reg = (name: string, offset: number, width: 32 | 64, access: RegAccess): RegDef => ({
  name,
  offset,
  width,
  access,
});

/** Size of one register page. @linux ARM_SMMU_REG_SZ */
export const SMMU_PAGE_SIZE = 0x10000;
/** Size of the register window (page 0 and page 1). @linux the 128 KiB resource of an SMMUv3 (arm_smmu_resource_size) */
export const SMMU_MMIO_SIZE = 0x20000;

/** Identification register 0: features. @linux ARM_SMMU_IDR0 */
export const IDR0 = {
  S2P: field("S2P", 0),
  S1P: field("S1P", 1),
  TTF: bits("TTF", 3, 2),
  COHACC: field("COHACC", 4),
  BTM: field("BTM", 5),
  HTTU: bits("HTTU", 7, 6),
  DORMHINT: field("DORMHINT", 8),
  HYP: field("HYP", 9),
  ATS: field("ATS", 10),
  NS1ATS: field("NS1ATS", 11),
  ASID16: field("ASID16", 12),
  MSI: field("MSI", 13),
  SEV: field("SEV", 14),
  ATOS: field("ATOS", 15),
  PRI: field("PRI", 16),
  VMW: field("VMW", 17),
  VMID16: field("VMID16", 18),
  CD2L: field("CD2L", 19),
  VATOS: field("VATOS", 20),
  TTENDIAN: bits("TTENDIAN", 22, 21),
  ATSRECERR: field("ATSRECERR", 23),
  STALL_MODEL: bits("STALL_MODEL", 25, 24),
  TERM_MODEL: field("TERM_MODEL", 26),
  ST_LEVEL: bits("ST_LEVEL", 28, 27),
} as const;

/** IDR0.TTF: AArch64 tables only. @linux IDR0_TTF_AARCH64 */
export const IDR0_TTF_AARCH64 = 2;
/** IDR0.HTTU encodings. @linux IDR0_HTTU_ACCESS / IDR0_HTTU_ACCESS_DIRTY */
export const IDR0_HTTU = { NONE: 0, ACCESS: 1, ACCESS_DIRTY: 2 } as const;
/** IDR0.STALL_MODEL encodings. @linux IDR0_STALL_MODEL_STALL / IDR0_STALL_MODEL_FORCE */
export const IDR0_STALL_MODEL = { STALL: 0, NONE: 1, FORCE: 2 } as const;
/** IDR0.TTENDIAN: little-endian only. @linux IDR0_TTENDIAN_LE */
export const IDR0_TTENDIAN_LE = 2;
/** IDR0.ST_LEVEL: 2-level stream tables supported. @linux IDR0_ST_LVL_2LVL */
export const IDR0_ST_LVL_2LVL = 1;

/** Identification register 1: sizes. @linux ARM_SMMU_IDR1 */
export const IDR1 = {
  SIDSIZE: bits("SIDSIZE", 5, 0),
  SSIDSIZE: bits("SSIDSIZE", 10, 6),
  PRIQS: bits("PRIQS", 15, 11),
  EVTQS: bits("EVTQS", 20, 16),
  CMDQS: bits("CMDQS", 25, 21),
  ATTR_PERMS_OVR: field("ATTR_PERMS_OVR", 26),
  ATTR_TYPES_OVR: field("ATTR_TYPES_OVR", 27),
  REL: field("REL", 28),
  QUEUES_PRESET: field("QUEUES_PRESET", 29),
  TABLES_PRESET: field("TABLES_PRESET", 30),
  ECMDQ: field("ECMDQ", 31),
} as const;

/** Identification register 3. @linux ARM_SMMU_IDR3 */
export const IDR3 = {
  HAD: field("HAD", 2),
  XNX: field("XNX", 4),
  FWB: field("FWB", 8),
  RIL: field("RIL", 10),
  BBML: bits("BBML", 12, 11),
} as const;

/** Identification register 5: output size and granules. @linux ARM_SMMU_IDR5 */
export const IDR5 = {
  OAS: bits("OAS", 2, 0),
  GRAN4K: field("GRAN4K", 4),
  GRAN16K: field("GRAN16K", 5),
  GRAN64K: field("GRAN64K", 6),
  VAX: bits("VAX", 11, 10),
  STALL_MAX: bits("STALL_MAX", 31, 16),
} as const;

/** Control register 0 (and CR0ACK, which mirrors it once a change took effect). @linux ARM_SMMU_CR0 */
export const CR0 = {
  SMMUEN: field("SMMUEN", 0),
  PRIQEN: field("PRIQEN", 1),
  EVTQEN: field("EVTQEN", 2),
  CMDQEN: field("CMDQEN", 3),
  ATSCHK: field("ATSCHK", 4),
} as const;

/** Control register 1: cacheability of queue and table accesses. @linux ARM_SMMU_CR1 */
export const CR1 = {
  QUEUE_IC: bits("QUEUE_IC", 1, 0),
  QUEUE_OC: bits("QUEUE_OC", 3, 2),
  QUEUE_SH: bits("QUEUE_SH", 5, 4),
  TABLE_IC: bits("TABLE_IC", 7, 6),
  TABLE_OC: bits("TABLE_OC", 9, 8),
  TABLE_SH: bits("TABLE_SH", 11, 10),
} as const;

/** Control register 2. @linux ARM_SMMU_CR2 */
export const CR2 = {
  E2H: field("E2H", 0),
  RECINVSID: field("RECINVSID", 1),
  PTM: field("PTM", 2),
} as const;

/** Global bypass attributes: what traffic does while SMMUEN = 0. @linux ARM_SMMU_GBPA */
export const GBPA = {
  MEMATTR: bits("MEMATTR", 3, 0),
  MTCFG: field("MTCFG", 4),
  ALLOCCFG: bits("ALLOCCFG", 11, 8),
  SHCFG: bits("SHCFG", 13, 12),
  PRIVCFG: bits("PRIVCFG", 17, 16),
  INSTCFG: bits("INSTCFG", 19, 18),
  ABORT: field("ABORT", 20),
  UPDATE: field("UPDATE", 31),
} as const;

/** IRQ_CTRL (and IRQ_CTRLACK): interrupt enables. @linux ARM_SMMU_IRQ_CTRL */
export const IRQ_CTRL = {
  GERROR_IRQEN: field("GERROR_IRQEN", 0),
  PRIQ_IRQEN: field("PRIQ_IRQEN", 1),
  EVTQ_IRQEN: field("EVTQ_IRQEN", 2),
} as const;

/** GERROR / GERRORN: global errors, active where the two differ. @linux ARM_SMMU_GERROR */
export const GERROR = {
  CMDQ_ERR: field("CMDQ_ERR", 0),
  EVTQ_ABT_ERR: field("EVTQ_ABT_ERR", 2),
  PRIQ_ABT_ERR: field("PRIQ_ABT_ERR", 3),
  MSI_CMDQ_ABT_ERR: field("MSI_CMDQ_ABT_ERR", 4),
  MSI_EVTQ_ABT_ERR: field("MSI_EVTQ_ABT_ERR", 5),
  MSI_PRIQ_ABT_ERR: field("MSI_PRIQ_ABT_ERR", 6),
  MSI_GERROR_ABT_ERR: field("MSI_GERROR_ABT_ERR", 7),
  SFM_ERR: field("SFM_ERR", 8),
} as const;

/** An MSI address register (*_IRQ_CFG0), as a 64-bit register split in words. @linux MSI_CFG0_ADDR_MASK */
export const IRQ_CFG0 = {
  ADDR_LO: bits("ADDR_LO", 31, 2),
  ADDR_HI: bits("ADDR_HI", 51, 32),
} as const;

/** STRTAB_BASE: stream table base address. @linux ARM_SMMU_STRTAB_BASE */
export const STRTAB_BASE = {
  ADDR_LO: bits("ADDR_LO", 31, 6),
  ADDR_HI: bits("ADDR_HI", 51, 32),
  RA: field("RA", 62),
} as const;

/** STRTAB_BASE_CFG: stream table format and size. @linux ARM_SMMU_STRTAB_BASE_CFG */
export const STRTAB_BASE_CFG = {
  LOG2SIZE: bits("LOG2SIZE", 5, 0),
  SPLIT: bits("SPLIT", 10, 6),
  FMT: bits("FMT", 17, 16),
} as const;

/** STRTAB_BASE_CFG.FMT encodings. @linux STRTAB_BASE_CFG_FMT_LINEAR / STRTAB_BASE_CFG_FMT_2LVL */
export const STRTAB_FMT = { LINEAR: 0, TWO_LEVEL: 1 } as const;

/** A queue base register (CMDQ_BASE, EVTQ_BASE, PRIQ_BASE). @linux Q_BASE_ADDR_MASK, Q_BASE_LOG2SIZE, Q_BASE_RWA */
export const Q_BASE = {
  LOG2SIZE: bits("LOG2SIZE", 4, 0),
  ADDR_LO: bits("ADDR_LO", 31, 5),
  ADDR_HI: bits("ADDR_HI", 51, 32),
  RWA: field("RWA", 62),
} as const;

/**
 * A queue index register (PROD/CONS): the index sits in bits [LOG2SIZE-1:0] with the wrap bit just above; these
 * fields are the fixed parts.
 * @linux Q_OVERFLOW_FLAG, CMDQ_CONS_ERR
 */
export const Q_IDX = {
  /** CMDQ_CONS only: the error code of the command at CONS. */
  ERR: bits("ERR", 30, 24),
  /** EVTQ/PRIQ PROD: overflow flag (toggled by the SMMU); CONS: its acknowledgement. */
  OVF: field("OVF", 31),
} as const;

/** CMDQ_CONS.ERR codes. @linux CMDQ_ERR_CERROR_NONE_IDX / _ILL_IDX / _ABT_IDX / _ATC_INV_IDX */
export const CERROR = { NONE: 0, ILL: 1, ABT: 2, ATC_INV_SYNC: 3 } as const;

/**
 * The registers the model implements.
 * @linux the ARM_SMMU_* offsets of arm-smmu-v3.h
 */
export const REG = {
  IDR0: reg("IDR0", 0x000, 32, "ro"),
  IDR1: reg("IDR1", 0x004, 32, "ro"),
  IDR2: reg("IDR2", 0x008, 32, "ro"),
  IDR3: reg("IDR3", 0x00c, 32, "ro"),
  IDR4: reg("IDR4", 0x010, 32, "ro"),
  IDR5: reg("IDR5", 0x014, 32, "ro"),
  IIDR: reg("IIDR", 0x018, 32, "ro"),
  AIDR: reg("AIDR", 0x01c, 32, "ro"),
  CR0: reg("CR0", 0x020, 32, "rw"),
  CR0ACK: reg("CR0ACK", 0x024, 32, "ro"),
  CR1: reg("CR1", 0x028, 32, "rw"),
  CR2: reg("CR2", 0x02c, 32, "rw"),
  STATUSR: reg("STATUSR", 0x040, 32, "ro"),
  GBPA: reg("GBPA", 0x044, 32, "rw"),
  IRQ_CTRL: reg("IRQ_CTRL", 0x050, 32, "rw"),
  IRQ_CTRLACK: reg("IRQ_CTRLACK", 0x054, 32, "ro"),
  GERROR: reg("GERROR", 0x060, 32, "ro"),
  GERRORN: reg("GERRORN", 0x064, 32, "rw"),
  GERROR_IRQ_CFG0: reg("GERROR_IRQ_CFG0", 0x068, 64, "rw"),
  GERROR_IRQ_CFG1: reg("GERROR_IRQ_CFG1", 0x070, 32, "rw"),
  GERROR_IRQ_CFG2: reg("GERROR_IRQ_CFG2", 0x074, 32, "rw"),
  STRTAB_BASE: reg("STRTAB_BASE", 0x080, 64, "rw"),
  STRTAB_BASE_CFG: reg("STRTAB_BASE_CFG", 0x088, 32, "rw"),
  CMDQ_BASE: reg("CMDQ_BASE", 0x090, 64, "rw"),
  CMDQ_PROD: reg("CMDQ_PROD", 0x098, 32, "rw"),
  CMDQ_CONS: reg("CMDQ_CONS", 0x09c, 32, "rw"),
  EVTQ_BASE: reg("EVTQ_BASE", 0x0a0, 64, "rw"),
  /** Page 1. (The page-0 offset 0x0a8 is accepted as an alias, like implementations with page-0-only registers.) */
  EVTQ_PROD: reg("EVTQ_PROD", 0x100a8, 32, "rw"),
  EVTQ_CONS: reg("EVTQ_CONS", 0x100ac, 32, "rw"),
  EVTQ_IRQ_CFG0: reg("EVTQ_IRQ_CFG0", 0x0b0, 64, "rw"),
  EVTQ_IRQ_CFG1: reg("EVTQ_IRQ_CFG1", 0x0b8, 32, "rw"),
  EVTQ_IRQ_CFG2: reg("EVTQ_IRQ_CFG2", 0x0bc, 32, "rw"),
  PRIQ_BASE: reg("PRIQ_BASE", 0x0c0, 64, "rw"),
  PRIQ_PROD: reg("PRIQ_PROD", 0x100c8, 32, "rw"),
  PRIQ_CONS: reg("PRIQ_CONS", 0x100cc, 32, "rw"),
  PRIQ_IRQ_CFG0: reg("PRIQ_IRQ_CFG0", 0x0d0, 64, "rw"),
  PRIQ_IRQ_CFG1: reg("PRIQ_IRQ_CFG1", 0x0d8, 32, "rw"),
  PRIQ_IRQ_CFG2: reg("PRIQ_IRQ_CFG2", 0x0dc, 32, "rw"),
} as const satisfies Record<string, RegDef>;

/** The fields of each register that has them, by register name (for tools and tests). */
export const REG_FIELDS: Readonly<Record<string, Readonly<Record<string, Field>>>> = {
  IDR0,
  IDR1,
  IDR3,
  IDR5,
  CR0,
  CR0ACK: CR0,
  CR1,
  CR2,
  GBPA,
  IRQ_CTRL,
  IRQ_CTRLACK: IRQ_CTRL,
  GERROR,
  GERRORN: GERROR,
  STRTAB_BASE,
  STRTAB_BASE_CFG,
  CMDQ_BASE: Q_BASE,
  EVTQ_BASE: Q_BASE,
  PRIQ_BASE: Q_BASE,
  CMDQ_CONS: Q_IDX,
  EVTQ_PROD: Q_IDX,
  PRIQ_PROD: Q_IDX,
};

/**
 * Output/intermediate address size encodings (IDR5.OAS, CD.IPS, STE.S2PS) to bits.
 * @linux ARM_LPAE_TCR_PS_* / arm_smmu_device_hw_probe's IDR5_OAS_* switch
 */
export const PA_SIZE_BITS: readonly number[] = [32, 36, 40, 42, 44, 48, 52];

/** The encoding of `bits` (rounded down to a supported size). @linux arm_lpae_ps encoding (ARM_LPAE_TCR_PS_*) */
export function paSizeCode(bitsWanted: number): number {
  let code = 0;
  for (let i = 0; i < PA_SIZE_BITS.length; i++) if (PA_SIZE_BITS[i]! <= bitsWanted) code = i;
  return code;
}
