/**
 * A test-only format with the geometry and descriptor layout of ARM LPAE stage 1 (VMSAv8-64), for the engine's
 * own tests and benchmarks. The real ARM formats live in drivers-smmuv3; this one exists so core can exercise
 * 4K/16K/64K granules, shrunken roots, the contiguous hint and the DBM "writable-clean" dirty convention.
 *
 * Spec: Arm ARM D8.3 (VMSAv8-64 translation table descriptors); ../../../../../../shared/reference/formats.md §2.
 *
 * | Bits  | Field    | Use here                                                                 |
 * |-------|----------|--------------------------------------------------------------------------|
 * | 1:0   | type     | 0b11 table (levels ≥ 1) or page (level 0); 0b01 block (levels ≥ 1)       |
 * | 4:2   | AttrIndx | 0 normal non-cacheable, 1 normal write-back (IOMMU_CACHE), 2 device (MMIO) |
 * | 6     | AP[1]    | unprivileged access; set unless IOMMU_PRIV                               |
 * | 7     | AP[2]    | read-only; with DBM set it means writable-clean                          |
 * | 10    | AF       | always 1                                                                 |
 * | 11    | nG       | always 1                                                                 |
 * | 47:g  | OA       | next table or output address (g = granule shift)                         |
 * | 51    | DBM      | set on writable leaves (hardware dirty management)                       |
 * | 52    | CONT     | contiguous hint                                                          |
 * | 54:53 | PXN/UXN  | both set for IOMMU_NOEXEC                                                |
 */
import type { PageTableFormat, PtPartialUnmap } from "../format.js";
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE } from "../prot.js";

/** Descriptor bits: `*_LO` in bits 31:0, `*_HI` in bits 63:32 (shifted down by 32). */
export const TEST_LPAE_PTE = {
  VALID: 1 << 0,
  TYPE_MASK: 0b11,
  TYPE_TABLE: 0b11,
  TYPE_PAGE: 0b11,
  TYPE_BLOCK: 0b01,
  ATTRINDX_SHIFT: 2,
  AP_UNPRIV: 1 << 6,
  AP_RDONLY: 1 << 7,
  AF: 1 << 10,
  NG: 1 << 11,
  DBM_HI: 1 << (51 - 32),
  CONT_HI: 1 << (52 - 32),
  PXN_HI: 1 << (53 - 32),
  UXN_HI: 1 << (54 - 32),
  /** OA bits 47:32 in the high half. */
  OA_HI: 0x0000ffff,
} as const;

/** Options of {@link makeTestLpaeFormat}. */
export interface TestLpaeOptions {
  /** 12, 14 or 16. Default 12. */
  granuleLg2?: number;
  partialUnmap?: PtPartialUnmap;
  /** Offer the contiguous-hint sizes. Default false. */
  contig?: boolean;
  name?: string;
}

const T = TEST_LPAE_PTE;

/** Build an LPAE-shaped test format. */
export function makeTestLpaeFormat(opts: TestLpaeOptions = {}): PageTableFormat {
  const g = opts.granuleLg2 ?? 12;
  const bits = g - 3;
  // Leaves: 4K → 4K/2M/1G; 16K → 16K/32M; 64K → 64K/512M (as io-pgtable-arm offers them for 48-bit OAs).
  const leafLevels = g === 12 ? 0b0111 : 0b0011;
  const contigLg2 = g === 12 ? [4, 4, 4, 0] : g === 14 ? [7, 5, 0, 0] : [5, 5, 0, 0];
  return {
    name: opts.name ?? `test-lpae-${2 ** (g - 10)}k`,
    spec: "Arm ARM D8.3, VMSAv8-64 stage 1 descriptors (test-only)",
    granuleLg2: g,
    bitsPerLevel: bits,
    minLevels: 1,
    maxLevels: 4,
    topTable: "shrink",
    geometry: null,
    leafLevels,
    presentLo: T.VALID,
    oaLo: (0xffffffff << g) | 0,
    oaHi: T.OA_HI,
    leafTypeMaskLo: T.TYPE_MASK,
    partialUnmap: opts.partialUnmap ?? "refuse",
    dirty: {
      maskLo: T.AP_RDONLY,
      maskHi: T.DBM_HI,
      dirtyLo: 0,
      dirtyHi: T.DBM_HI,
      cleanLo: T.AP_RDONLY,
      cleanHi: T.DBM_HI,
    },
    contig: opts.contig ? { lg2PerLevel: contigLg2, markLo: 0, markHi: T.CONT_HI } : null,
    tableMatch(_level, out) {
      out[0] = T.TYPE_MASK;
      out[1] = T.TYPE_TABLE;
    },
    encodeTable(_level, out) {
      out[0] = T.TYPE_TABLE;
      out[1] = 0;
    },
    encodeLeaf(level, prot, out) {
      let lo = (level === 0 ? T.TYPE_PAGE : T.TYPE_BLOCK) | T.AF | T.NG;
      let hi = 0;
      if (!(prot & IOMMU_PRIV)) lo |= T.AP_UNPRIV;
      if (prot & IOMMU_WRITE) hi |= T.DBM_HI;
      lo |= T.AP_RDONLY; // writable leaves start writable-clean (DBM=1, AP[2]=1)
      if (prot & IOMMU_MMIO) lo |= 2 << T.ATTRINDX_SHIFT;
      else if (prot & IOMMU_CACHE) lo |= 1 << T.ATTRINDX_SHIFT;
      if (prot & IOMMU_NOEXEC) hi |= T.PXN_HI | T.UXN_HI;
      out[0] = lo;
      out[1] = hi;
      return true;
    },
    decodeProt(lo, hi) {
      let prot = IOMMU_READ;
      if (hi & T.DBM_HI || !(lo & T.AP_RDONLY)) prot |= IOMMU_WRITE;
      if (!(lo & T.AP_UNPRIV)) prot |= IOMMU_PRIV;
      const attr = (lo >>> T.ATTRINDX_SHIFT) & 7;
      if (attr === 2) prot |= IOMMU_MMIO;
      else if (attr === 1) prot |= IOMMU_CACHE;
      if (hi & T.UXN_HI) prot |= IOMMU_NOEXEC;
      return prot;
    },
    packOa: null,
    unpackOa: null,
  };
}

/** LPAE 4 KiB granule, 4 levels at a 48-bit IAS, partial block unmaps refused (io-pgtable-arm today). */
export const TEST_4K_FORMAT: PageTableFormat = makeTestLpaeFormat({ name: "test-4k" });
