/**
 * The VT-d register file, as the specification's register tables: offsets, then each register's fields, 64-bit
 * registers split into their 32-bit halves (a field's bit counts across the register, bit 32 is bit 0 of the
 * upper half). Intel VT-d specification chapter 11; ../../../../../shared/reference/formats.md §3.1.
 * @linux drivers/iommu/intel/iommu.h (DMAR_*_REG, DMA_GCMD_*, DMA_GSTS_*, DMA_FSTS_*, cap_* / ecap_* macros);
 * QEMU hw/i386/intel_iommu_internal.h
 */
import { bits, field } from "@iommu-sim/core";

/** Register offsets. @linux DMAR_VER_REG … DMAR_PRS_REG */
export const VTD_REG = {
  VER: 0x00,
  CAP: 0x08,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  CCMD: 0x28,
  FSTS: 0x34,
  FECTL: 0x38,
  FEDATA: 0x3c,
  FEADDR: 0x40,
  FEUADDR: 0x44,
  AFLOG: 0x58,
  PMEN: 0x64,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  ICS: 0x9c,
  IECTL: 0xa0,
  IEDATA: 0xa4,
  IEADDR: 0xa8,
  IEUADDR: 0xac,
  IQER: 0xb0,
  IRTA: 0xb8,
  PQH: 0xc0,
  PQT: 0xc8,
  PQA: 0xd0,
  PRS: 0xdc,
  PECTL: 0xe0,
  PEDATA: 0xe4,
  PEADDR: 0xe8,
  PEUADDR: 0xec,
} as const;

/** Register window size of one unit. @linux VTD_PAGE_SIZE mapping of the DRHD register base */
export const VTD_MMIO_SIZE = 0x1000;
/** Offset of the IOTLB register pair (IVA, IOTLB) in 16-byte units (ECAP.IRO). @linux ecap_iotlb_offset */
export const VTD_IRO = 0x50;
/** Offset of the first fault recording register in 16-byte units (CAP.FRO). @linux cap_fault_reg_offset */
export const VTD_FRO = 0x40;

/** VER. @linux DMAR_VER_MAJOR / DMAR_VER_MINOR */
export const VER = { MINOR: bits("MIN", 3, 0), MAJOR: bits("MAX", 7, 4) } as const;

/** CAP (64-bit). @linux cap_nd … cap_esrtps (iommu.h) */
export const CAP = {
  ND: bits("ND", 2, 0),
  AFL: field("AFL", 3),
  RWBF: field("RWBF", 4),
  PLMR: field("PLMR", 5),
  PHMR: field("PHMR", 6),
  CM: field("CM", 7),
  SAGAW: bits("SAGAW", 12, 8),
  MGAW: bits("MGAW", 21, 16),
  ZLR: field("ZLR", 22),
  FRO_LO: bits("FRO_LO", 31, 24),
  FRO_HI: bits("FRO_HI", 33, 32),
  SLLPS: bits("SLLPS", 37, 34),
  PSI: field("PSI", 39),
  NFR: bits("NFR", 47, 40),
  MAMV: bits("MAMV", 53, 48),
  DWD: field("DWD", 54),
  DRD: field("DRD", 55),
  FL1GP: field("FL1GP", 56),
  PI: field("PI", 59),
  FL5LP: field("FL5LP", 60),
} as const;

/** ECAP (64-bit). @linux ecap_coherent … ecap_pms (iommu.h) */
export const ECAP = {
  C: field("C", 0),
  QI: field("QI", 1),
  DT: field("DT", 2),
  IR: field("IR", 3),
  EIM: field("EIM", 4),
  PT: field("PT", 6),
  SC: field("SC", 7),
  IRO: bits("IRO", 17, 8),
  MHMV: bits("MHMV", 23, 20),
  MTS: field("MTS", 25),
  NEST: field("NEST", 26),
  PRS: field("PRS", 29),
  ERS: field("ERS", 30),
  SRS: field("SRS", 31),
  NWFS: field("NWFS", 33),
  EAFS: field("EAFS", 34),
  PSS: bits("PSS", 39, 35),
  PASID: field("PASID", 40),
  DIT: field("DIT", 41),
  PDS: field("PDS", 42),
  SMTS: field("SMTS", 43),
  VCS: field("VCS", 44),
  SLADS: field("SLADS", 45),
  SLTS: field("SLTS", 46),
  FLTS: field("FLTS", 47),
  SMPWCS: field("SMPWCS", 48),
  RPS: field("RPS", 49),
} as const;

/** GCMD / GSTS bits (same positions). @linux DMA_GCMD_TE … DMA_GSTS_* */
export const GCMD = {
  CFI: field("CFI", 23),
  SIRTP: field("SIRTP", 24),
  IRE: field("IRE", 25),
  QIE: field("QIE", 26),
  WBF: field("WBF", 27),
  EAFL: field("EAFL", 28),
  SFL: field("SFL", 29),
  SRTP: field("SRTP", 30),
  TE: field("TE", 31),
} as const;

/** RTADDR (64-bit). @linux DMA_RTADDR_SMT (bit 10, the low bit of TTM) */
export const RTADDR = {
  TTM: bits("TTM", 11, 10),
  RTA_LO: bits("RTA_LO", 31, 12),
  RTA_HI: bits("RTA_HI", 63, 32),
} as const;

/** Translation table modes of RTADDR.TTM. @linux DMA_RTADDR_SMT */
export const TTM = { LEGACY: 0, SCALABLE: 1, ABORT_DMA: 3 } as const;

/** CCMD (64-bit). @linux DMA_CCMD_ICC, DMA_CCMD_*_INVL, DMA_CCMD_SID/DID/FM */
export const CCMD = {
  DID: bits("DID", 15, 0),
  SID: bits("SID", 31, 16),
  FM: bits("FM", 33, 32),
  CAIG: bits("CAIG", 60, 59),
  CIRG: bits("CIRG", 62, 61),
  ICC: field("ICC", 63),
} as const;

/** Context-cache invalidation granularities (CCMD.CIRG and the descriptor's G). @linux DMA_CCMD_GLOBAL_INVL … */
export const CC_GRAN = { GLOBAL: 1, DOMAIN: 2, DEVICE: 3 } as const;

/** IVA (64-bit, at ECAP.IRO × 16). @linux DMA_TLB_IH_NONLEAF, VTD_PAGE_SHIFT address, AM in bits 5:0 */
export const IVA = {
  AM: bits("AM", 5, 0),
  IH: field("IH", 6),
  ADDR_LO: bits("ADDR_LO", 31, 12),
  ADDR_HI: bits("ADDR_HI", 63, 32),
} as const;

/** IOTLB register (64-bit, at ECAP.IRO × 16 + 8). @linux DMA_TLB_IVT, DMA_TLB_*_FLUSH, DMA_TLB_DID, DMA_TLB_READ/WRITE_DRAIN */
export const IOTLB_REG = {
  DID: bits("DID", 47, 32),
  DW: field("DW", 48),
  DR: field("DR", 49),
  IAIG: bits("IAIG", 58, 57),
  IIRG: bits("IIRG", 61, 60),
  IVT: field("IVT", 63),
} as const;

/** IOTLB invalidation granularities (register IIRG and the descriptor's G). @linux DMA_TLB_GLOBAL_FLUSH … */
export const IOTLB_GRAN = { GLOBAL: 1, DOMAIN: 2, PAGE: 3 } as const;

/** FSTS. @linux DMA_FSTS_PFO / PPF / IQE / ICE / ITE / PRO, dma_fsts_fault_record_index */
export const FSTS = {
  PFO: field("PFO", 0),
  PPF: field("PPF", 1),
  IQE: field("IQE", 4),
  ICE: field("ICE", 5),
  ITE: field("ITE", 6),
  FRI: bits("FRI", 15, 8),
} as const;

/** FECTL / IECTL / PECTL. @linux DMA_FECTL_IM, DMA_FECTL_IP */
export const FECTL = { IP: field("IP", 30), IM: field("IM", 31) } as const;

/** IQA (64-bit). @linux DMA_IQA_DW (bit 11), QS in bits 2:0 */
export const IQA = {
  QS: bits("QS", 2, 0),
  DW: field("DW", 11),
  IQA_LO: bits("IQA_LO", 31, 12),
  IQA_HI: bits("IQA_HI", 63, 32),
} as const;

/** IQH / IQT: the descriptor index shifted by 4 (128-bit) or 5 (256-bit). @linux DMAR_IQ_SHIFT */
export const IQ_SHIFT = 4;

/** ICS. @linux DMA_ICS_IWC */
export const ICS = { IWC: field("IWC", 0) } as const;

/** IQER. @linux DMAR_IQER_REG_IQEI / _ITESID / _ICESID */
export const IQER = {
  IQEI: bits("IQEI", 3, 0),
  ITESID: bits("ITESID", 47, 32),
  ICESID: bits("ICESID", 63, 48),
} as const;

/** Invalidation queue error codes in IQER.IQEI. @linux DMAR_IQER_REG_IQEI values */
export const IQEI = { INFO: 0, INVALID_TYPE: 1, RESERVED: 2, DESC_WIDTH: 3, QUEUE_TAIL: 4, QUEUE_ADDR: 6 } as const;

/** PQA (64-bit). PQS in bits 2:0 (2^PQS × 4 KiB). @linux DMA_PRS_PPR users in prq.c, PRQ_ORDER */
export const PQA = { PQS: bits("PQS", 2, 0), PQA_LO: bits("PQA_LO", 31, 12), PQA_HI: bits("PQA_HI", 63, 32) } as const;

/** PRS. @linux DMA_PRS_PPR / DMA_PRS_PRO */
export const PRS = { PPR: field("PPR", 0), PRO: field("PRO", 1) } as const;

/** SAGAW bit of a number of second-stage levels (3 → bit 1 = 39-bit, 4 → bit 2 = 48-bit, 5 → bit 3 = 57-bit). @linux cap_sagaw */
export function sagawBit(levels: number): number {
  return 1 << (levels - 2);
}

/** Address width of a number of levels (AW code = levels − 2; width = 30 + 9·code). @linux agaw_to_width */
export function levelsToWidth(levels: number): number {
  return 12 + 9 * levels;
}
