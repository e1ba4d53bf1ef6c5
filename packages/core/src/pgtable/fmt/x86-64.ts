/**
 * The x86-64 (IA-32e) page-table format for core's engine, 4- or 5-level: the VT-d first stage and the AMD-Vi v2
 * (guest) table are both this format, so it lives here once. Engine level 0 is the architecture's level 1 (4 KiB).
 *
 * Spec: Intel SDM vol. 3 §4.5 (4-level and 5-level paging); VT-d §9.7 (first-stage entries); AMD IOMMU
 * Specification §2.2.7 (guest page tables); ../../../../../shared/reference/formats.md §3.9 and §4.4.
 *
 * | Bits  | Entry                                         |
 * |-------|-----------------------------------------------|
 * | 0     | P                                             |
 * | 1     | R/W                                           |
 * | 2     | U/S (Linux always sets it)                    |
 * | 5     | A (set by software on every entry)            |
 * | 6     | D (set with R/W on leaves)                    |
 * | 7     | PS (2 MiB / 1 GiB leaves)                     |
 * | 51:12 | next table / page                             |
 * | 63    | XD                                            |
 * @linux drivers/iommu/generic_pt/fmt/x86_64.h (x86_64_pt_install_leaf_entry, x86_64_pt_install_table); older
 * drivers/iommu/amd/io_pgtable_v2.c (set_pte_attr) and intel/iommu.c first-level entries
 */
import { kerr } from "../../kernel/errno.js";
import type { PageTableFormat } from "../format.js";
import { IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE } from "../prot.js";
import { x86RadixFormatBase } from "./x86-radix.js";

/** x86-64 entry bits (low half; XD in the high half). @linux X86_64_FMT_P / _RW / _U / _A / _D / _PS, X86_64_FMT_NX */
export const X86_64 = { P: 1 << 0, RW: 1 << 1, U: 1 << 2, A: 1 << 5, D: 1 << 6, PS: 1 << 7, NX_HI: 1 << 31 } as const;

const cache = new Map<string, PageTableFormat>();

/**
 * The x86-64 format for 4- or 5-level tables with 4 KiB and 2 MiB leaves, and 1 GiB leaves when `gib1` (VT-d
 * CAP.FL1GP; always on AMD v2). Leaves carry P, U, A, R/W with D, and XD for IOMMU_NOEXEC; tables P|RW|U|A.
 * @linux generic_pt/fmt/x86_64.h (x86_64_pt_install_leaf_entry / x86_64_pt_install_table)
 */
export function x86_64Format(levels: number, gib1: boolean): PageTableFormat {
  if (levels !== 4 && levels !== 5) throw kerr("EINVAL", `x86-64: ${levels} levels`);
  const key = `${levels}/${gib1}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const X = X86_64;
  const fmt: PageTableFormat = {
    name: `x86-64-${levels}lvl`,
    spec: "Intel SDM 4.5 IA-32e paging (VT-d first stage, AMD-Vi v2); generic_pt/fmt/x86_64.h",
    ...x86RadixFormatBase(levels),
    leafLevels: 0b11 | (gib1 ? 0b100 : 0),
    presentLo: X.P,
    leafTypeMaskLo: X.PS,
    dirty: null,
    tableMatch(_level, out) {
      out[0] = X.PS;
      out[1] = 0;
    },
    encodeTable(_level, out) {
      out[0] = X.P | X.RW | X.U | X.A;
      out[1] = 0;
    },
    encodeLeaf(level, prot, out) {
      if (!(prot & (IOMMU_READ | IOMMU_WRITE))) return false;
      let lo = X.P | X.U | X.A;
      if (prot & IOMMU_WRITE) lo |= X.RW | X.D;
      if (level > 0) lo |= X.PS;
      out[0] = lo;
      out[1] = prot & IOMMU_NOEXEC ? X.NX_HI : 0;
      return true;
    },
    decodeProt(lo, hi) {
      return IOMMU_READ | (lo & X.RW ? IOMMU_WRITE : 0) | (hi & X.NX_HI ? IOMMU_NOEXEC : 0);
    },
  };
  cache.set(key, fmt);
  return fmt;
}
