/**
 * The mock IOMMU's page-table format (drivers-mock): 2 KiB pages and 1 MiB huge pages, so tests catch code that
 * assumes the CPU page size, as the kernel's selftest variant of its mock format does.
 *
 * Spec: this file (the mock hardware model decodes the same layout). Entries are 8 bytes, tables 512 entries
 * (4 KiB) at every level; level 0 maps 2 KiB, level 1 1 MiB, level l 2^(11 + 9l) bytes.
 *
 * | Bits  | Field | Meaning                                                                |
 * |-------|-------|------------------------------------------------------------------------|
 * | 0     | V     | valid (present)                                                        |
 * | 1     | T     | table pointer (levels ≥ 1); 0 = leaf                                   |
 * | 2     | R     | device may read                                                        |
 * | 3     | W     | device may write                                                       |
 * | 4     | C     | cacheable (IOMMU_CACHE)                                                |
 * | 5     | NX    | no execute (IOMMU_NOEXEC)                                              |
 * | 6     | D     | dirty: set by the hardware on a write through a W leaf                 |
 * | 7     | MMIO  | device memory (IOMMU_MMIO)                                             |
 * | 8     | PRIV  | privileged only (IOMMU_PRIV)                                           |
 * | 10:9  | —     | reserved, 0                                                            |
 * | 51:11 | OA    | next table (4 KiB aligned) or output address (2 KiB / 1 MiB aligned)   |
 * | 63:52 | —     | reserved, 0                                                            |
 *
 * Table entries are V | T | R | W | next-table address. Leaves at levels 0 and 1 only. A write-dirty leaf has
 * W and D set; read-and-clear clears D. The root is a full 512-entry table (levels chosen from the IAS).
 * Partial unmaps of a huge page follow generic_pt ("whole").
 * @linux drivers/iommu/generic_pt/fmt/iommu_mock.c (the amdv1 mock variant) — layout simplified
 */
import type { PageTableFormat } from "../format.js";
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE } from "../prot.js";

/** Mock entry bits (low half). */
export const MOCK_PTE = {
  V: 1 << 0,
  T: 1 << 1,
  R: 1 << 2,
  W: 1 << 3,
  C: 1 << 4,
  NX: 1 << 5,
  D: 1 << 6,
  MMIO: 1 << 7,
  PRIV: 1 << 8,
  /** OA bits 31:11 of the low half. */
  OA_LO: 0xfffff800 | 0,
  /** OA bits 51:32, in the high half. */
  OA_HI: 0x000fffff,
} as const;

/** log2 of the mock page (2 KiB) and huge page (1 MiB). */
export const MOCK_PAGE_SHIFT = 11;
export const MOCK_HUGE_PAGE_SHIFT = 20;

const P = MOCK_PTE;

/** The mock driver's page-table format. */
export const mockFormat: PageTableFormat = {
  name: "mock",
  spec: "iommu-sim mock IOMMU page table (packages/core/src/pgtable/fmt/mock.ts)",
  granuleLg2: MOCK_PAGE_SHIFT,
  bitsPerLevel: 9,
  minLevels: 1,
  maxLevels: 5,
  topTable: "full",
  geometry: null,
  leafLevels: 0b11,
  presentLo: P.V,
  oaLo: P.OA_LO,
  oaHi: P.OA_HI,
  leafTypeMaskLo: P.T,
  partialUnmap: "whole",
  dirty: { maskLo: P.D | P.W, maskHi: 0, dirtyLo: P.D | P.W, dirtyHi: 0, cleanLo: P.W, cleanHi: 0 },
  contig: null,
  tableMatch(_level, out) {
    out[0] = P.T;
    out[1] = P.T;
  },
  encodeTable(_level, out) {
    out[0] = P.V | P.T | P.R | P.W;
    out[1] = 0;
  },
  encodeLeaf(_level, prot, out) {
    let lo = P.V;
    if (prot & IOMMU_READ) lo |= P.R;
    if (prot & IOMMU_WRITE) lo |= P.W;
    if (prot & IOMMU_CACHE) lo |= P.C;
    if (prot & IOMMU_NOEXEC) lo |= P.NX;
    if (prot & IOMMU_MMIO) lo |= P.MMIO;
    if (prot & IOMMU_PRIV) lo |= P.PRIV;
    out[0] = lo;
    out[1] = 0;
    return true;
  },
  decodeProt(lo) {
    let prot = 0;
    if (lo & P.R) prot |= IOMMU_READ;
    if (lo & P.W) prot |= IOMMU_WRITE;
    if (lo & P.C) prot |= IOMMU_CACHE;
    if (lo & P.NX) prot |= IOMMU_NOEXEC;
    if (lo & P.MMIO) prot |= IOMMU_MMIO;
    if (lo & P.PRIV) prot |= IOMMU_PRIV;
    return prot;
  },
  packOa: null,
  unpackOa: null,
};
