/**
 * The table shape the x86-family IOMMU formats share (VT-d second stage, x86-64 first stage, AMD v1): 4 KiB
 * pages, 512 eight-byte entries a table, a fixed number of levels each with a full root, the output address in
 * bits 51:12, a leaf unmapped only whole, no contiguous hint and no custom address packing. Each format adds its
 * own entry bits, leaf levels and dirty convention.
 * @linux generic_pt/fmt/vtdss.h, x86_64.h, amdv1.h (PT_GRANULE_LG2SZ 12, PT_TABLEMEM_LG2SZ 12, PT_ITEM_WORD_SIZE 8)
 */
import type { PageTableFormat } from "../format.js";

/** The fields {@link x86RadixFormatBase} fills. */
export type X86RadixFormatBase = Pick<
  PageTableFormat,
  | "granuleLg2"
  | "bitsPerLevel"
  | "minLevels"
  | "maxLevels"
  | "topTable"
  | "geometry"
  | "oaLo"
  | "oaHi"
  | "partialUnmap"
  | "contig"
  | "packOa"
  | "unpackOa"
>;

/**
 * The shared fields of an x86-family format of exactly `levels` levels, to spread into the format.
 * @linux the common PT_GRANULE_LG2SZ / PT_TABLEMEM_LG2SZ / PT_MAX_OUTPUT_ADDRESS_LG2 (52) of generic_pt/fmt/vtdss.h,
 * x86_64.h and amdv1.h
 */
export function x86RadixFormatBase(levels: number): X86RadixFormatBase {
  return {
    granuleLg2: 12,
    bitsPerLevel: 9,
    minLevels: levels,
    maxLevels: levels,
    topTable: "full",
    geometry: () => ({ levels, topItemsLg2: 9 }),
    oaLo: 0xfffff000 | 0,
    oaHi: 0x000fffff,
    partialUnmap: "whole",
    contig: null,
    packOa: null,
    unpackOa: null,
  };
}
