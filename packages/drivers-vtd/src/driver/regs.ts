/**
 * The driver's view of the VT-d registers and structures, named as intel-iommu's headers name them. Written
 * independently of the hardware model's tables (src/hw), as a driver knows the hardware only from its own headers.
 * 64-bit values are handled as two 32-bit halves (`lo`, `hi`).
 * @linux drivers/iommu/intel/iommu.h, pasid.h, prq.c (struct page_req_dsc), include/linux/intel-iommu.h history
 */

/** Register offsets. @linux DMAR_*_REG */
export const DMAR = {
  VER: 0x00,
  CAP: 0x08,
  ECAP: 0x10,
  GCMD: 0x18,
  GSTS: 0x1c,
  RTADDR: 0x20,
  CCMD: 0x28,
  FSTS: 0x34,
  FECTL: 0x38,
  IQH: 0x80,
  IQT: 0x88,
  IQA: 0x90,
  IQER: 0xb0,
  PQH: 0xc0,
  PQT: 0xc8,
  PQA: 0xd0,
  PRS: 0xdc,
  PECTL: 0xe0,
} as const;

/** GCMD / GSTS bits. @linux DMA_GCMD_* / DMA_GSTS_* */
export const DMA_GCMD = { TE: 1 << 31, SRTP: 1 << 30, WBF: 1 << 27, QIE: 1 << 26 } as const;
/** GSTS bits. @linux DMA_GSTS_TES / _RTPS / _WBFS / _QIES / _IRES */
export const DMA_GSTS = { TES: 1 << 31, RTPS: 1 << 30, WBFS: 1 << 27, QIES: 1 << 26, IRES: 1 << 25 } as const;
/** FSTS bits. @linux DMA_FSTS_* */
export const DMA_FSTS = { PFO: 1 << 0, PPF: 1 << 1, IQE: 1 << 4, ICE: 1 << 5, ITE: 1 << 6, PRO: 1 << 7 } as const;
/** FECTL / PECTL interrupt mask. @linux DMA_FECTL_IM */
export const DMA_FECTL_IM = 1 << 31;
/** PRS bits. @linux DMA_PRS_PPR / DMA_PRS_PRO */
export const DMA_PRS = { PPR: 1, PRO: 2 } as const;
/** RTADDR scalable-mode table bit. @linux DMA_RTADDR_SMT */
export const DMA_RTADDR_SMT = 1 << 10;
/** IQA 256-bit descriptor bit. @linux DMA_IQA_DW */
export const DMA_IQA_DW = 1 << 11;

/** CAP accessors on (lo, hi). @linux cap_* macros */
export const cap = {
  ndoms: (lo: number) => 2 ** (4 + 2 * (lo & 7)),
  rwbf: (lo: number) => (lo >>> 4) & 1,
  cachingMode: (lo: number) => (lo >>> 7) & 1,
  sagaw: (lo: number) => (lo >>> 8) & 0x1f,
  mgaw: (lo: number) => ((lo >>> 16) & 0x3f) + 1,
  faultRegOffset: (lo: number, hi: number) => ((lo >>> 24) | ((hi & 3) << 8)) * 16,
  superPageVal: (hi: number) => (hi >>> 2) & 0xf,
  pgselInv: (hi: number) => (hi >>> 7) & 1,
  numFaultRegs: (hi: number) => ((hi >>> 8) & 0xff) + 1,
  maxAmaskVal: (hi: number) => (hi >>> 16) & 0x3f,
  fl1gpSupport: (hi: number) => (hi >>> 24) & 1,
  fl5lpSupport: (hi: number) => (hi >>> 28) & 1,
} as const;

/** ECAP accessors on (lo, hi). @linux ecap_* macros */
export const ecap = {
  coherent: (lo: number) => lo & 1,
  qis: (lo: number) => (lo >>> 1) & 1,
  devTlb: (lo: number) => (lo >>> 2) & 1,
  passThrough: (lo: number) => (lo >>> 6) & 1,
  iotlbOffset: (lo: number) => ((lo >>> 8) & 0x3ff) * 16,
  nest: (lo: number) => (lo >>> 26) & 1,
  prs: (lo: number) => (lo >>> 29) & 1,
  srs: (lo: number) => (lo >>> 31) & 1,
  pss: (hi: number) => (hi >>> 3) & 0x1f,
  pasid: (hi: number) => (hi >>> 8) & 1,
  smts: (hi: number) => (hi >>> 11) & 1,
  slads: (hi: number) => (hi >>> 13) & 1,
  slts: (hi: number) => (hi >>> 14) & 1,
  flts: (hi: number) => (hi >>> 15) & 1,
  smpwc: (hi: number) => (hi >>> 16) & 1,
} as const;

/** Context-cache invalidation granularity (CCMD.CIRG, bits 62:61). @linux DMA_CCMD_*_INVL */
export const DMA_CCMD = { ICC_HI: 1 << 31, GLOBAL_HI: 1 << 29, DOMAIN_HI: 2 << 29, DEVICE_HI: 3 << 29 } as const;
/** IOTLB register (at ECAP.IRO + 8) bits, high half. @linux DMA_TLB_* */
export const DMA_TLB = {
  IVT_HI: 1 << 31,
  GLOBAL_HI: 1 << 28,
  DSI_HI: 2 << 28,
  PSI_HI: 3 << 28,
  DR_HI: 1 << 17,
  DW_HI: 1 << 16,
} as const;

/** Invalidation descriptor types. @linux QI_*_TYPE */
export const QI_TYPE = {
  CC: 0x1,
  IOTLB: 0x2,
  DIOTLB: 0x3,
  IWD: 0x5,
  EIOTLB: 0x6,
  PC: 0x7,
  DEIOTLB: 0x8,
  PGRP_RESP: 0x9,
} as const;

/** Granularities. @linux QI_CC_GRAN / QI_IOTLB_GRAN / QI_GRAN_*_PASID / QI_PC_* */
export const QI_GRAN = {
  CC_GLOBAL: 1,
  CC_DOMAIN: 2,
  CC_DEVICE: 3,
  IOTLB_GLOBAL: 1,
  IOTLB_DSI: 2,
  IOTLB_PSI: 3,
  NONG_PASID: 2,
  PSI_PASID: 3,
  PC_ALL_PASIDS: 0,
  PC_PASID_SEL: 1,
  PC_GLOBAL: 3,
} as const;

/** Status values of the wait descriptor's status word. @linux QI_FREE / QI_IN_USE / QI_DONE / QI_ABORT */
export const QI_STATUS = { FREE: 0, IN_USE: 1, DONE: 2, ABORT: 3 } as const;

/** Page group response codes. @linux QI_RESP_SUCCESS / _INVALID / _FAILURE */
export const QI_RESP = { SUCCESS: 0x0, INVALID: 0x1, FAILURE: 0xf } as const;

/**
 * One descriptor as four 32-bit words of qw0 and qw1 (qw2/qw3 are zero).
 * @linux struct qi_desc
 */
export type QiDesc = [number, number, number, number];

const lo32 = (x: number) => (x % 4294967296) >>> 0;
const hi32 = (x: number) => Math.floor(x / 4294967296) >>> 0;

/** @linux qi_flush_context's descriptor (QI_CC_*) */
export function qiDescContext(did: number, sid: number, fm: number, gran: number): QiDesc {
  return [(QI_TYPE.CC | (gran << 4) | (did << 16)) >>> 0, (sid & 0xffff) | ((fm & 3) << 16), 0, 0];
}

/** @linux qi_desc_iotlb (QI_IOTLB_*) */
export function qiDescIotlb(did: number, addr: number, ih: boolean, am: number, gran: number): QiDesc {
  return [
    (QI_TYPE.IOTLB | (gran << 4) | (1 << 6) | (1 << 7) | (did << 16)) >>> 0,
    0,
    ((lo32(addr) & 0xfffff000) | (ih ? 1 << 6 : 0) | (am & 0x3f)) >>> 0,
    hi32(addr),
  ];
}

/** Every mapping of a PASID. @linux qi_desc_piotlb_all (QI_GRAN_NONG_PASID) */
export function qiDescPiotlbAll(did: number, pasid: number): QiDesc {
  return [(QI_TYPE.EIOTLB | (QI_GRAN.NONG_PASID << 4) | (did << 16)) >>> 0, pasid & 0xfffff, 0, 0];
}

/** Page-selective within a PASID: 2^mask pages at `addr` (aligned down to them). @linux qi_desc_piotlb (QI_EIOTLB_*) */
export function qiDescPiotlb(did: number, pasid: number, addr: number, mask: number, ih: boolean): QiDesc {
  const align = 2 ** (12 + mask);
  const a = addr - (addr % align);
  return [
    (QI_TYPE.EIOTLB | (QI_GRAN.PSI_PASID << 4) | (did << 16)) >>> 0,
    pasid & 0xfffff,
    ((lo32(a) & 0xfffff000) | (ih ? 1 << 6 : 0) | (mask & 0x3f)) >>> 0,
    hi32(a),
  ];
}

/** @linux qi_desc_dev_iotlb (QI_DEV_IOTLB_*): size encoded in the address when mask > 0 */
export function qiDescDevIotlb(sid: number, pfsid: number, qdep: number, addr: number, mask: number): QiDesc {
  let a = addr;
  let s = 0;
  if (mask > 0) {
    a = addr + 2 ** (12 + mask - 1) - 1;
    s = 1;
  }
  const q = qdep >= 32 ? 0 : qdep;
  // Sizes beyond the 53-bit number range: every address bit 62:12 set.
  if (12 + mask - 1 >= 52) {
    return [
      (QI_TYPE.DIOTLB | ((pfsid & 0xf) << 12) | (q << 16)) >>> 0,
      ((sid & 0xffff) | ((pfsid >>> 4) << 20)) >>> 0,
      0xfffff001,
      0x7fffffff,
    ];
  }
  return [
    (QI_TYPE.DIOTLB | ((pfsid & 0xf) << 12) | (q << 16)) >>> 0,
    ((sid & 0xffff) | ((pfsid >>> 4) << 20)) >>> 0,
    ((lo32(a) & 0xfffff000) | s) >>> 0,
    hi32(a),
  ];
}

/** Everything (all address bits set, S = 1). @linux qi_flush_dev_iotlb_pasid with MAX_AGAW_PFN_WIDTH */
export function qiDescDevIotlbPasidAll(sid: number, pfsid: number, qdep: number, pasid: number): QiDesc {
  const q = qdep >= 32 ? 0 : qdep;
  return [
    (QI_TYPE.DEIOTLB | (q << 4) | ((pfsid & 0xf) << 12) | ((sid & 0xffff) << 16)) >>> 0,
    ((pasid & 0xfffff) | ((pfsid >>> 4) << 20)) >>> 0,
    (0xfffff000 | (1 << 11)) >>> 0,
    0x7fffffff,
  ];
}

/** @linux qi_desc_dev_iotlb_pasid */
export function qiDescDevIotlbPasid(
  sid: number,
  pfsid: number,
  pasid: number,
  qdep: number,
  addr: number,
  sizeOrder: number,
): QiDesc {
  const q = qdep >= 32 ? 0 : qdep;
  let a = addr;
  let s = 0;
  if (sizeOrder > 0) {
    a = addr + 2 ** (12 + sizeOrder - 1) - 1;
    s = 1;
  }
  return [
    (QI_TYPE.DEIOTLB | (q << 4) | ((pfsid & 0xf) << 12) | ((sid & 0xffff) << 16)) >>> 0,
    ((pasid & 0xfffff) | ((pfsid >>> 4) << 20)) >>> 0,
    ((lo32(a) & 0xfffff000) | (s << 11)) >>> 0,
    hi32(a),
  ];
}

/** @linux qi_flush_pasid_cache's descriptor (QI_PC_*) */
export function qiDescPasidCache(did: number, pasid: number, gran: number): QiDesc {
  return [(QI_TYPE.PC | (gran << 4) | (did << 16)) >>> 0, pasid & 0xfffff, 0, 0];
}

/** Wait descriptor with status write and fence. @linux QI_IWD_STATUS_DATA | QI_IWD_STATUS_WRITE | QI_IWD_FENCE */
export function qiDescWait(statusPa: number, data: number): QiDesc {
  return [(QI_TYPE.IWD | (1 << 5) | (1 << 6)) >>> 0, data >>> 0, lo32(statusPa) & 0xfffffffc, hi32(statusPa)];
}

/** @linux intel_iommu_page_response's descriptor (QI_PGRP_*) */
export function qiDescPageResponse(
  rid: number,
  pasidPresent: boolean,
  pasid: number,
  code: number,
  prgIndex: number,
): QiDesc {
  return [
    (QI_TYPE.PGRP_RESP | (pasidPresent ? 1 << 4 : 0) | (code << 12) | (rid << 16)) >>> 0,
    pasid & 0xfffff,
    (prgIndex & 0x1ff) << 3,
    0,
  ];
}

// --- root, context and PASID entries ---------------------------------------------------------------------------

/** Context entry low-word bits (legacy). @linux context_set_* (iommu.h) */
export const CONTEXT = {
  PRESENT: 1,
  FPD: 2,
  TT_SHIFT: 2,
  TT_MULTI_LEVEL: 0,
  TT_DEV_IOTLB: 1,
  TT_PASS_THROUGH: 2,
} as const;
/** Scalable context entry low-word bits. @linux context_set_sm_dte / _pre, context_set_pasid, context_pdts */
export const SM_CONTEXT = { PRESENT: 1, DTE: 1 << 2, PASIDE: 1 << 3, PRE: 1 << 4, PDTS_SHIFT: 9 } as const;

/** PASID entry fields, by 32-bit word. @linux pasid_set_* (pasid.h) */
export const PASID_PTE = {
  /** word 0 */
  PRESENT: 1,
  FPD: 2,
  AW_SHIFT: 2,
  PGTT_SHIFT: 6,
  SSADE: 1 << 9,
  /** word 3 (bits 127:96 unused); DID in word 2 */
  PWSNP_W2: 1 << 23,
  /** word 4 */
  SRE: 1,
  FSPM_SHIFT: 2,
  WPE: 1 << 4,
  NXE: 1 << 5,
  EAFE: 1 << 7,
} as const;

/** PGTT values. @linux PASID_ENTRY_PGTT_* */
export const PGTT = { FL_ONLY: 1, SL_ONLY: 2, NESTED: 3, PT: 4 } as const;

/** The domain ID Linux gives pass-through and first-level default PASID entries. @linux FLPT_DEFAULT_DID */
export const FLPT_DEFAULT_DID = 1;
/** The PASID of requests without one. @linux IOMMU_NO_PASID */
export const IOMMU_NO_PASID = 0;
/** PASIDs per PASID table and directory entry shift. @linux PASID_PDE_SHIFT */
export const PASID_PDE_SHIFT = 6;

/** Page request descriptor decoding. @linux struct page_req_dsc */
export interface PageReqDsc {
  rid: number;
  pasidPresent: boolean;
  pasid: number;
  exe: boolean;
  pm: boolean;
  rd: boolean;
  wr: boolean;
  lpig: boolean;
  prgIndex: number;
  addr: number;
}

/** Decode a page request descriptor from its four low 32-bit words. @linux the bitfields of struct page_req_dsc */
export function decodePageReq(w: ArrayLike<number>): PageReqDsc {
  const w0 = w[0]!;
  const w1 = w[1]!;
  const w2 = w[2]!;
  const w3 = w[3]!;
  return {
    pasidPresent: ((w0 >>> 8) & 1) === 1,
    rid: (w0 >>> 16) & 0xffff,
    pasid: w1 & 0xfffff,
    exe: ((w1 >>> 20) & 1) === 1,
    pm: ((w1 >>> 21) & 1) === 1,
    rd: (w2 & 1) === 1,
    wr: ((w2 >>> 1) & 1) === 1,
    lpig: ((w2 >>> 2) & 1) === 1,
    prgIndex: (w2 >>> 3) & 0x1ff,
    addr: ((w2 & 0xfffff000) >>> 0) + w3 * 4294967296,
  };
}

/** AGAW code of a number of levels (levels − 2). @linux width_to_agaw / agaw_to_level */
export function levelsToAgaw(levels: number): number {
  return levels - 2;
}
