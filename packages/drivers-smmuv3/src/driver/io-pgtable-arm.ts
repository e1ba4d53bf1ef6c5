/**
 * ARM LPAE (VMSAv8-64 long-descriptor) stage-1 and stage-2 page-table formats for core's `IoPageTable` engine, and
 * the TCR/VTCR/MAIR values a driver programs for a table, bit-exact to io-pgtable-arm.c.
 *
 * Spec: Arm ARM D8.3 (VMSAv8-64 translation table descriptors), D8.2 (granules, start levels, concatenation);
 * ../../../../../shared/reference/formats.md §2. Engine level 0 is the architecture's level 3.
 *
 * | Bits  | Stage 1                         | Stage 2                               |
 * |-------|---------------------------------|---------------------------------------|
 * | 1:0   | 0b11 table/page, 0b01 block     | same                                  |
 * | 4:2   | AttrIndx (MAIR byte)            | MemAttr[3:0] in 5:2                   |
 * | 6     | AP[1] unprivileged              | S2AP[0] read                          |
 * | 7     | AP[2] read-only                 | S2AP[1] write                         |
 * | 9:8   | SH (IS cacheable, else OS)      | SH                                    |
 * | 10    | AF                              | AF                                    |
 * | 11    | nG                              | —                                     |
 * | 47:g  | output address / next table     | same (64K + 52-bit PA: PA[51:48] in 15:12) |
 * | 51    | DBM (with HD)                   | —                                     |
 * | 52    | contiguous hint                 | contiguous hint                       |
 * | 54:53 | PXN/UXN (both for NOEXEC)       | XN[1:0]                               |
 */
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IoPageTable,
  kerr,
  type PageTableFormat,
  type PtGeometry,
} from "@iommu-sim/core";
import { LPAE_MAIR } from "./regs.js";

/** Descriptor bits: `*_LO` in bits 31:0, `*_HI` in bits 63:32 (shifted down by 32). @linux ARM_LPAE_PTE_* */
export const ARM_LPAE_PTE = {
  VALID: 1 << 0,
  TYPE_MASK: 0b11,
  TYPE_TABLE: 0b11,
  TYPE_PAGE: 0b11,
  TYPE_BLOCK: 0b01,
  ATTRINDX_SHIFT: 2,
  AP_UNPRIV: 1 << 6,
  AP_RDONLY: 1 << 7,
  SH_OS: 2 << 8,
  SH_IS: 3 << 8,
  AF: 1 << 10,
  NG: 1 << 11,
  /** Stage 2: S2AP read / write, MemAttr. @linux ARM_LPAE_PTE_HAP_READ / _WRITE, ARM_LPAE_PTE_MEMATTR_* */
  HAP_READ: 1 << 6,
  HAP_WRITE: 2 << 6,
  MEMATTR_SHIFT: 2,
  MEMATTR_OIWB: 0xf,
  MEMATTR_NC: 0x5,
  MEMATTR_DEV: 0x1,
  DBM_HI: 1 << (51 - 32),
  CONT_HI: 1 << (52 - 32),
  PXN_HI: 1 << (53 - 32),
  XN_HI: 3 << (53 - 32),
  /** OA bits 47:32 in the high half. @linux ARM_LPAE_PTE_ADDR_MASK */
  OA_HI: 0x0000ffff,
} as const;

/** MAIR attribute indexes. @linux ARM_LPAE_MAIR_ATTR_IDX_NC / _CACHE / _DEV / _INC_OWBRWA */
export const ARM_LPAE_MAIR_ATTR_IDX = { NC: 0, CACHE: 1, DEV: 2, INC_OWBRWA: 3 } as const;

/** TCR encodings. @linux ARM_LPAE_TCR_TG0_*, ARM_LPAE_TCR_RGN_*, ARM_LPAE_TCR_SH_*, ARM_LPAE_TCR_PS_* */
export const ARM_LPAE_TCR = {
  TG0_4K: 0,
  TG0_64K: 1,
  TG0_16K: 2,
  RGN_NC: 0,
  RGN_WBWA: 1,
  SH_OS: 2,
  SH_IS: 3,
} as const;

/** Which stage a format encodes. @linux ARM_64_LPAE_S1 / ARM_64_LPAE_S2 */
export type ArmLpaeStage = 1 | 2;

/** Variants of the ARM formats. */
export interface ArmLpaeFormatOptions {
  /** Hardware dirty management: writable stage-1 leaves get DBM. @linux IO_PGTABLE_QUIRK_ARM_HD */
  hd?: boolean;
  /** OAS above 48 bits: 52-bit PA packing with 64K granules and the 4 TiB level-1 block. */
  oas52?: boolean;
  /**
   * Offer the contiguous-hint sizes (generic_pt's ARMv8 format does; io-pgtable-arm does not). Default false.
   * @linux generic_pt/fmt/armv8.h ARMV8PT_FMT_CONT
   */
  contig?: boolean;
}

const P = ARM_LPAE_PTE;
const formatCache = new Map<string, PageTableFormat>();

/** Stage-2 start level and concatenation. @linux arm_64_lpae_alloc_pgtable_s2 (ARM_LPAE_S2_MAX_CONCAT_PAGES) */
function s2Geometry(granuleLg2: number, ias: number): PtGeometry {
  const bits = granuleLg2 - 3;
  const va = ias - granuleLg2;
  let levels = Math.max(1, Math.ceil(va / bits));
  let pgdBits = va - bits * (levels - 1);
  if (levels === 4 && 2 ** pgdBits <= 16) {
    pgdBits += bits;
    levels--;
  }
  return { levels, topItemsLg2: pgdBits };
}

/**
 * The ARM LPAE format for a stage and granule (cached: one object per variant, so the engine stays monomorphic).
 * @linux io-pgtable-arm.c: arm_lpae_prot_to_pte, arm_lpae_init_pte, paddr_to_iopte / iopte_to_paddr,
 * arm_lpae_restrict_pgsizes (leaf sizes)
 */
export function armLpaeFormat(
  stage: ArmLpaeStage,
  granuleLg2: number,
  opts: ArmLpaeFormatOptions = {},
): PageTableFormat {
  if (granuleLg2 !== 12 && granuleLg2 !== 14 && granuleLg2 !== 16) {
    throw kerr("EINVAL", `arm-lpae: granule 2^${granuleLg2} not supported`);
  }
  const hd = stage === 1 && opts.hd === true;
  const oas52 = opts.oas52 === true;
  const contig = opts.contig === true;
  const key = `${stage}/${granuleLg2}/${hd}/${oas52}/${contig}`;
  const hit = formatCache.get(key);
  if (hit) return hit;
  const g = granuleLg2;
  // Engine levels: 0 = L3 pages, 1 = L2 blocks, 2 = L1 blocks.
  const leafLevels = g === 12 ? 0b0111 : g === 16 && oas52 ? 0b0111 : 0b0011;
  const contigLg2 = g === 12 ? [4, 4, 4, 0] : g === 14 ? [7, 5, 0, 0] : [5, 5, 0, 0];
  const packed = g === 16 && oas52;
  const fmt: PageTableFormat = {
    name: `arm-lpae-s${stage}-${2 ** (g - 10)}k${hd ? "-hd" : ""}${oas52 ? "-52" : ""}${contig ? "-cont" : ""}`,
    spec: "Arm ARM D8.3 VMSAv8-64 descriptors; io-pgtable-arm.c",
    granuleLg2: g,
    bitsPerLevel: g - 3,
    minLevels: 1,
    maxLevels: 4,
    topTable: "shrink",
    geometry: stage === 2 ? (ias) => s2Geometry(g, ias) : null,
    leafLevels,
    presentLo: P.VALID,
    oaLo: (0xffffffff << g) | 0,
    oaHi: P.OA_HI,
    leafTypeMaskLo: P.TYPE_MASK,
    partialUnmap: "refuse",
    dirty: hd
      ? {
          maskLo: P.AP_RDONLY,
          maskHi: P.DBM_HI,
          dirtyLo: 0,
          dirtyHi: P.DBM_HI,
          cleanLo: P.AP_RDONLY,
          cleanHi: P.DBM_HI,
        }
      : null,
    contig: contig ? { lg2PerLevel: contigLg2, markLo: 0, markHi: P.CONT_HI } : null,
    tableMatch(_level, out) {
      out[0] = P.TYPE_MASK;
      out[1] = P.TYPE_TABLE;
    },
    encodeTable(_level, out) {
      out[0] = P.TYPE_TABLE;
      out[1] = 0;
    },
    encodeLeaf(level, prot, out) {
      let lo = (level === 0 ? P.TYPE_PAGE : P.TYPE_BLOCK) | P.AF;
      let hi = 0;
      if (stage === 1) {
        lo |= P.NG;
        if (!(prot & IOMMU_WRITE) && prot & IOMMU_READ) lo |= P.AP_RDONLY;
        else if (hd) hi |= P.DBM_HI;
        if (!(prot & IOMMU_PRIV)) lo |= P.AP_UNPRIV;
        if (prot & IOMMU_MMIO) lo |= ARM_LPAE_MAIR_ATTR_IDX.DEV << P.ATTRINDX_SHIFT;
        else if (prot & IOMMU_CACHE) lo |= ARM_LPAE_MAIR_ATTR_IDX.CACHE << P.ATTRINDX_SHIFT;
      } else {
        if (prot & IOMMU_READ) lo |= P.HAP_READ;
        if (prot & IOMMU_WRITE) lo |= P.HAP_WRITE;
        if (prot & IOMMU_MMIO) lo |= P.MEMATTR_DEV << P.MEMATTR_SHIFT;
        else if (prot & IOMMU_CACHE) lo |= P.MEMATTR_OIWB << P.MEMATTR_SHIFT;
        else lo |= P.MEMATTR_NC << P.MEMATTR_SHIFT;
      }
      lo |= prot & IOMMU_CACHE ? P.SH_IS : P.SH_OS;
      if (prot & IOMMU_NOEXEC) hi |= P.XN_HI;
      out[0] = lo >>> 0;
      out[1] = hi >>> 0;
      return true;
    },
    decodeProt(lo, hi) {
      let prot = 0;
      if (stage === 1) {
        prot |= IOMMU_READ;
        if (!(lo & P.AP_RDONLY) || hi & P.DBM_HI) prot |= IOMMU_WRITE;
        if (!(lo & P.AP_UNPRIV)) prot |= IOMMU_PRIV;
        const attr = (lo >>> P.ATTRINDX_SHIFT) & 7;
        if (attr === ARM_LPAE_MAIR_ATTR_IDX.DEV) prot |= IOMMU_MMIO;
        else if (attr === ARM_LPAE_MAIR_ATTR_IDX.CACHE) prot |= IOMMU_CACHE;
      } else {
        if (lo & P.HAP_READ) prot |= IOMMU_READ;
        if (lo & P.HAP_WRITE) prot |= IOMMU_WRITE;
        const attr = (lo >>> P.MEMATTR_SHIFT) & 0xf;
        if (attr === P.MEMATTR_DEV) prot |= IOMMU_MMIO;
        else if (attr === P.MEMATTR_OIWB) prot |= IOMMU_CACHE;
      }
      if (hi & P.XN_HI) prot |= IOMMU_NOEXEC;
      return prot;
    },
    packOa: packed
      ? (pa, out) => {
          // PA[51:48] folds onto bits 15:12; bits 47:16 stay in place.
          const hiPart = Math.floor(pa / 2 ** 32);
          out[0] = ((pa & 0xffff0000) | (((hiPart >>> 16) & 0xf) << 12)) >>> 0;
          out[1] = hiPart & 0xffff;
        }
      : null,
    unpackOa: packed
      ? (lo, hi) => (hi & 0xffff) * 2 ** 32 + ((lo & 0xffff0000) >>> 0) + ((lo >>> 12) & 0xf) * 2 ** 48
      : null,
  };
  formatCache.set(key, fmt);
  return fmt;
}

/**
 * Pick the granule and page sizes for a domain from the SMMU's page sizes and the kernel's PAGE_SIZE.
 * @linux arm_lpae_restrict_pgsizes
 */
export function armLpaeRestrictPgsizes(
  smmuPgsizes: number,
  pageSize: number,
  oas: number,
): { granuleLg2: number; pgsizeBitmap: number } {
  const has = (s: number) => Math.floor(smmuPgsizes / s) % 2 === 1;
  let granule: number;
  if (has(pageSize)) granule = pageSize;
  else if (has(4096) || has(16384) || has(65536)) {
    // The largest granule below PAGE_SIZE, else the smallest above it.
    const below = [65536, 16384, 4096].filter((s) => s < pageSize && has(s));
    const above = [4096, 16384, 65536].filter((s) => s > pageSize && has(s));
    granule = below[0] ?? above[0] ?? 4096;
  } else throw kerr("EINVAL", "arm-lpae: no supported granule");
  let sizes: number;
  if (granule === 4096) sizes = 4096 + 2 ** 21 + 2 ** 30;
  else if (granule === 16384) sizes = 16384 + 2 ** 25;
  else sizes = 65536 + 2 ** 29 + (oas > 48 ? 2 ** 42 : 0);
  // Keep only what the SMMU supports.
  let bitmap = 0;
  for (let lg2 = 12; lg2 < 53; lg2++) {
    const s = 2 ** lg2;
    if (Math.floor(sizes / s) % 2 === 1 && has(s)) bitmap += s;
  }
  return { granuleLg2: Math.log2(granule), pgsizeBitmap: bitmap };
}

/** PS/IPS code of an address size. @linux the ARM_LPAE_TCR_PS_* switch of arm_64_lpae_alloc_pgtable_s1/_s2 */
export function armLpaePsCode(bits: number): number {
  switch (bits) {
    case 32:
      return 0;
    case 36:
      return 1;
    case 40:
      return 2;
    case 42:
      return 3;
    case 44:
      return 4;
    case 48:
      return 5;
    case 52:
      return 6;
    default:
      throw kerr("EINVAL", `arm-lpae: unsupported address size ${bits}`);
  }
}

/** TG0 code of a granule. @linux ARM_LPAE_TCR_TG0_4K / _16K / _64K */
export function armLpaeTg0(granuleLg2: number): number {
  return granuleLg2 === 12 ? ARM_LPAE_TCR.TG0_4K : granuleLg2 === 14 ? ARM_LPAE_TCR.TG0_16K : ARM_LPAE_TCR.TG0_64K;
}

/** Stage-1 table configuration. @linux struct io_pgtable_cfg.arm_lpae_s1_cfg */
export interface ArmLpaeS1Cfg {
  tcr: { tsz: number; tg: number; irgn: number; orgn: number; sh: number; ips: number };
  ttbr: number;
  mair: bigint;
}

/** Stage-2 table configuration. @linux struct io_pgtable_cfg.arm_lpae_s2_cfg */
export interface ArmLpaeS2Cfg {
  vtcr: { tsz: number; sl: number; irgn: number; orgn: number; sh: number; tg: number; ps: number };
  vttbr: number;
}

function walkAttrs(coherentWalk: boolean): { irgn: number; orgn: number; sh: number } {
  return coherentWalk
    ? { irgn: ARM_LPAE_TCR.RGN_WBWA, orgn: ARM_LPAE_TCR.RGN_WBWA, sh: ARM_LPAE_TCR.SH_IS }
    : { irgn: ARM_LPAE_TCR.RGN_NC, orgn: ARM_LPAE_TCR.RGN_NC, sh: ARM_LPAE_TCR.SH_OS };
}

/** TCR, TTBR and MAIR of a stage-1 table. @linux arm_64_lpae_alloc_pgtable_s1 */
export function armLpaeS1Cfg(pt: IoPageTable, coherentWalk: boolean): ArmLpaeS1Cfg {
  return {
    tcr: {
      tsz: 64 - pt.ias,
      tg: armLpaeTg0(pt.format.granuleLg2),
      ...walkAttrs(coherentWalk),
      ips: armLpaePsCode(pt.oas),
    },
    ttbr: pt.root,
    mair: LPAE_MAIR,
  };
}

/** VTCR and VTTBR of a stage-2 table. @linux arm_64_lpae_alloc_pgtable_s2 */
export function armLpaeS2Cfg(pt: IoPageTable, coherentWalk: boolean): ArmLpaeS2Cfg {
  const g = pt.format.granuleLg2;
  let sl = 4 - pt.levels; // architectural start level
  if (g === 12) sl++; // SL0 counts differently with the 4K granule
  return {
    vtcr: {
      tsz: 64 - pt.ias,
      sl: ~sl & 3,
      ...walkAttrs(coherentWalk),
      tg: armLpaeTg0(g),
      ps: armLpaePsCode(pt.oas),
    },
    vttbr: pt.root,
  };
}
