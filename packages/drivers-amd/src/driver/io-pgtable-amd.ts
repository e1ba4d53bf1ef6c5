/**
 * The AMD IOMMU v1 (host) page-table format for core's `IoPageTable` engine, bit-exact to what amd-iommu writes.
 * Engine level 0 is the specification's level 1 (4 KiB); a table pointer stored in engine level `l` carries
 * Next Level = `l` (the 1-based level of the table it points to), leaves carry Next Level 0 and IR/IW. Linux sets
 * IR and IW on table pointers too (the hardware ANDs them over every level).
 *
 * Spec: AMD IOMMU Specification §2.2.3 (I/O page tables for host translations);
 * ../../../../../shared/reference/formats.md §4.3.
 *
 * | Bits  | Entry                                    |
 * |-------|------------------------------------------|
 * | 0     | PR (present)                             |
 * | 6     | D (host dirty, with HAD)                 |
 * | 11:9  | Next Level (0 = leaf, 7 = sized leaf)    |
 * | 51:12 | next table / page                        |
 * | 60    | FC (force coherent)                      |
 * | 61/62 | IR / IW                                  |
 *
 * Not on the engine: leaves of non-natural sizes (Next Level 7 replicated over several slots). The engine's
 * contiguous-hint model gives each slot its own output address, which is not this encoding, so the driver maps
 * 4 KiB, 2 MiB and 1 GiB pages only (the hardware model decodes Next Level 7; see the README).
 * @linux drivers/iommu/generic_pt/fmt/amdv1.h (amdv1pt_install_leaf_entry, amdv1pt_install_table,
 * amdv1pt_iommu_fmt_init); older io_pgtable.c (iommu_v1_map_pages, PM_LEVEL_ENC)
 */
import { IOMMU_READ, IOMMU_WRITE, kerr, type PageTableFormat, x86RadixFormatBase } from "@iommu-sim/core";

/** v1 entry bits (low and high halves). @linux AMDV1PT_FMT_PR, _D, _NEXT_LEVEL, _FC, _IR, _IW */
export const AMDV1 = {
  PR: 1 << 0,
  D: 1 << 6,
  NL_SHIFT: 9,
  NL_MASK: 7 << 9,
  FC_HI: 1 << 28,
  IR_HI: 1 << 29,
  IW_HI: 1 << 30,
} as const;

const cache = new Map<number, PageTableFormat>();

/**
 * The v1 format for a table of `levels` levels (the DTE Mode, 3–6), with 4 KiB, 2 MiB and 1 GiB leaves.
 * @linux generic_pt/fmt/amdv1.h
 */
export function amdv1Format(levels: number): PageTableFormat {
  if (levels < 3 || levels > 6) throw kerr("EINVAL", `amdv1: ${levels} levels`);
  const hit = cache.get(levels);
  if (hit) return hit;
  const A = AMDV1;
  const fmt: PageTableFormat = {
    name: `amdv1-${levels}lvl`,
    spec: "AMD IOMMU Specification 2.2.3 host I/O page tables; generic_pt/fmt/amdv1.h",
    ...x86RadixFormatBase(levels),
    leafLevels: 0b111,
    presentLo: A.PR,
    leafTypeMaskLo: A.NL_MASK,
    dirty: { maskLo: A.D, maskHi: A.IW_HI, dirtyLo: A.D, dirtyHi: A.IW_HI, cleanLo: 0, cleanHi: A.IW_HI },
    tableMatch(level, out) {
      out[0] = A.NL_MASK;
      out[1] = level << A.NL_SHIFT;
    },
    encodeTable(level, out) {
      out[0] = A.PR | (level << A.NL_SHIFT);
      out[1] = A.IR_HI | A.IW_HI;
    },
    encodeLeaf(_level, prot, out) {
      if (!(prot & (IOMMU_READ | IOMMU_WRITE))) return false;
      out[0] = A.PR;
      out[1] = (prot & IOMMU_READ ? A.IR_HI : 0) | (prot & IOMMU_WRITE ? A.IW_HI : 0);
      return true;
    },
    decodeProt(_lo, hi) {
      return (hi & A.IR_HI ? IOMMU_READ : 0) | (hi & A.IW_HI ? IOMMU_WRITE : 0);
    },
  };
  cache.set(levels, fmt);
  return fmt;
}
