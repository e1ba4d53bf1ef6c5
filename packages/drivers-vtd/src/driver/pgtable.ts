/**
 * The VT-d page-table formats for core's `IoPageTable` engine: the VT-d second-stage format here, and the x86-64
 * first-stage format from core (shared with AMD-Vi v2), bit-exact to what intel-iommu writes. Engine level 0 is
 * the architecture's level 1 (4 KiB).
 *
 * Spec: Intel VT-d 9.8 (second-stage entries), 9.7 / Intel SDM 4.5 (first-stage = IA-32e paging);
 * ../../../../../shared/reference/formats.md §3.8-3.9.
 *
 * | Bits  | Second stage (vtdss)                 |
 * |-------|--------------------------------------|
 * | 0     | R (no present bit: R or W present)   |
 * | 1     | W                                    |
 * | 7     | PS (2 MiB / 1 GiB leaves)            |
 * | 8 / 9 | A / D (with SSADE)                   |
 * | 11    | SNP                                  |
 * | 51:12 | next table / page                    |
 * @linux drivers/iommu/generic_pt/fmt/vtdss.h, fmt/x86_64.h; intel/iommu.c domain_pfn_mapping (older io-pgtable)
 */
import { IOMMU_READ, IOMMU_WRITE, kerr, type PageTableFormat, x86RadixFormatBase } from "@iommu-sim/core";

/** Second-stage entry bits. @linux VTDSS_FMT_R / _W / _PS / _A / _D / _SNP (DMA_PTE_*) */
export const VTDSS = { R: 1 << 0, W: 1 << 1, PS: 1 << 7, A: 1 << 8, D: 1 << 9, SNP: 1 << 11 } as const;

const cache = new Map<string, PageTableFormat>();

/** Leaf levels with large pages: bit 0 = 4 KiB; 2 MiB and 1 GiB as the unit supports. */
function leafLevels(mib2: boolean, gib1: boolean): number {
  return 1 | (mib2 ? 2 : 0) | (gib1 ? 4 : 0);
}

/**
 * The VT-d second-stage format for a table of `levels` levels (3-5, the AGAW). `superpages`: CAP.SLLPS bits (bit 0
 * 2 MiB, bit 1 1 GiB). With `dirty`, D|W marks a written page (SSADE).
 * @linux generic_pt/fmt/vtdss.h (vtdss_pt_install_leaf, vtdss_pt_iommu_fmt_init)
 */
export function vtdssFormat(levels: number, superpages: number): PageTableFormat {
  if (levels < 3 || levels > 5) throw kerr("EINVAL", `vtdss: ${levels} levels`);
  const key = `ss/${levels}/${superpages}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const S = VTDSS;
  const fmt: PageTableFormat = {
    name: `vtdss-${levels}lvl`,
    spec: "Intel VT-d 9.8 second-stage paging entries; generic_pt/fmt/vtdss.h",
    ...x86RadixFormatBase(levels),
    leafLevels: leafLevels((superpages & 1) !== 0, (superpages & 2) !== 0),
    presentLo: S.R | S.W,
    leafTypeMaskLo: S.PS,
    dirty: { maskLo: S.D | S.W, maskHi: 0, dirtyLo: S.D | S.W, dirtyHi: 0, cleanLo: S.W, cleanHi: 0 },
    tableMatch(_level, out) {
      out[0] = S.PS;
      out[1] = 0;
    },
    encodeTable(_level, out) {
      out[0] = S.R | S.W;
      out[1] = 0;
    },
    encodeLeaf(level, prot, out) {
      if (!(prot & (IOMMU_READ | IOMMU_WRITE))) return false;
      let lo = 0;
      if (prot & IOMMU_READ) lo |= S.R;
      if (prot & IOMMU_WRITE) lo |= S.W;
      if (level > 0) lo |= S.PS;
      out[0] = lo;
      out[1] = 0;
      return true;
    },
    decodeProt(lo) {
      return (lo & S.R ? IOMMU_READ : 0) | (lo & S.W ? IOMMU_WRITE : 0);
    },
  };
  cache.set(key, fmt);
  return fmt;
}

/**
 * The x86-64 first-stage format lives in core (shared with the AMD-Vi v2 table); re-exported for this package's users.
 * @linux generic_pt/fmt/x86_64.h
 */
export { X86_64, x86_64Format } from "@iommu-sim/core";
