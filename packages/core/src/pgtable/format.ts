/**
 * How a page-table format is described to the generic engine: geometry as log2 sizes, entry bits as named masks
 * on the two 32-bit halves of a 64-bit entry, and a few hooks the engine calls only when a domain is created or
 * once per map call (never per entry). Level 0 is the leaf level; higher numbers are closer to the root.
 * @linux drivers/iommu/generic_pt/pt_defs.h, pt_fmt_defaults.h and the per-format fmt/*.h
 */

/** Shape of the table tree for one domain. */
export interface PtGeometry {
  /** Number of levels; the top (root) level is `levels - 1`. */
  levels: number;
  /** log2 of the number of entries in the root table (may differ from the other levels). */
  topItemsLg2: number;
}

/**
 * Dirty tracking (HTTU-style) as a masked field of a leaf entry: an entry is write-dirty when
 * `(entry & mask) === dirty`, and write-clean (writable, not yet written) when `(entry & mask) === clean`.
 * Read-and-clear rewrites the field from `dirty` to `clean`. Examples: x86/VT-d/AMD `mask = D|W, dirty = D|W,
 * clean = W`; ARM DBM `mask = DBM|AP[2], dirty = DBM, clean = DBM|AP[2]` (the "writable-clean" convention).
 * @linux pt_entry_is_write_dirty / pt_entry_make_write_clean / pt_entry_make_write_dirty
 */
export interface PtDirtySpec {
  maskLo: number;
  maskHi: number;
  dirtyLo: number;
  dirtyHi: number;
  cleanLo: number;
  cleanHi: number;
}

/**
 * ARM-style contiguous hint: an aligned run of `2^lg2PerLevel[level]` identical-attribute leaves, each holding its
 * own output address, all carrying the marker bits. A level with 0 has no contiguous size.
 * @linux pt_entry_num_contig_lg2 (ARM CONT bit)
 */
export interface PtContigSpec {
  lg2PerLevel: readonly number[];
  markLo: number;
  markHi: number;
}

/**
 * What happens when an unmap covers only part of a leaf (a block, or a contiguous run):
 * - `"whole"` (generic_pt): a range that starts at the leaf removes the whole leaf and reports its full size; a
 *   range starting inside it stops the unmap.
 * - `"refuse"` (io-pgtable-arm since v6.12): stop, WARN_ONCE "Unmap of a partial large IOPTE is not allowed".
 * - `"split"` (older io-pgtable-arm, arm_lpae_split_blk_unmap; v7s): replace the block by a next-level table of
 *   smaller leaves and unmap only the requested part.
 */
export type PtPartialUnmap = "whole" | "refuse" | "split";

/**
 * A page-table format. Every field is plain data or a function called outside the per-entry hot path. The entry
 * encodings work on 32-bit halves: `out[0]` is bits 31:0, `out[1]` bits 63:32.
 */
export interface PageTableFormat {
  /** Short name, e.g. "mock", "arm-lpae-s1-4k". */
  readonly name: string;
  /** The specification section the bit layout follows. */
  readonly spec: string;
  /** log2 bytes mapped by one level-0 entry (12 for 4 KiB; 11 for the mock's 2 KiB pages). */
  readonly granuleLg2: number;
  /** log2 entries of a non-root table (9 for 512 × 8 bytes = 4 KiB; 11 for 16 KiB; 13 for 64 KiB). */
  readonly bitsPerLevel: number;
  /** Fewest / most levels a domain of this format may have. */
  readonly minLevels: number;
  readonly maxLevels: number;
  /**
   * How the root adapts to the input-address size when `geometry` is absent: `"shrink"` gives the root only the
   * entries the IAS needs (ARM LPAE start level), `"full"` keeps a full table (VT-d AGAW, x86, AMD mode).
   */
  readonly topTable: "shrink" | "full";
  /** Optional custom geometry (ARM stage-2 concatenation, AMD mode selection); overrides `topTable`. */
  geometry: ((ias: number) => PtGeometry) | null;
  /** Bit `l` set: level `l` may hold leaves. This and the geometry give the pgsize bitmap. */
  readonly leafLevels: number;
  /** Bits of the low half of which any one set means "present" (VT-d second stage: R|W; others: a P/V bit). */
  readonly presentLo: number;
  /** Output-address field of the entry, low and high halves (e.g. bits 51:12 → 0xfffff000, 0x000fffff). */
  readonly oaLo: number;
  readonly oaHi: number;
  /** Bits of the low half that differ between leaf kinds of different levels (ARM type bits, x86 PS, AMD NL). */
  readonly leafTypeMaskLo: number;
  /** Partial unmap of a leaf, see {@link PtPartialUnmap}. */
  readonly partialUnmap: PtPartialUnmap;
  /** Dirty-bit convention, or null when the format cannot track dirty pages. */
  readonly dirty: PtDirtySpec | null;
  /** Contiguous-hint support, or null. Its sizes join the pgsize bitmap. */
  readonly contig: PtContigSpec | null;
  /**
   * In a table of `level` (≥ 1), the mask and value on the low half that mark a table pointer; everything else
   * present is a leaf. `out[0] = mask, out[1] = value`. Called once per level at domain creation.
   */
  tableMatch(level: number, out: Uint32Array): void;
  /** Attribute bits (no address) of a table pointer stored in a table of `level`. Called once per level. */
  encodeTable(level: number, out: Uint32Array): void;
  /**
   * Attribute and type bits (no address) of a leaf stored in a table of `level` for the IOMMU_* `prot`. Called once
   * per map call. Returns false when the protection cannot be expressed (the map fails with EINVAL).
   */
  encodeLeaf(level: number, prot: number, out: Uint32Array): boolean;
  /** The IOMMU_* protection of a leaf entry (for dumps and tests). */
  decodeProt(lo: number, hi: number, level: number): number;
  /**
   * Custom output-address packing (e.g. ARM 52-bit PA with the 64 KiB granule); null for the plain
   * `oaLo`/`oaHi` field. `packOa` writes the address bits into `out`; `unpackOa` returns the address.
   */
  packOa: ((pa: number, out: Uint32Array) => void) | null;
  unpackOa: ((lo: number, hi: number) => number) | null;
}

/**
 * The default geometry for an input-address size: as many full levels as needed, the remainder in the root
 * (`"shrink"`) or a full root (`"full"`).
 * @linux arm_lpae_alloc_pgtable (levels, pgd_bits), pt_top_range
 */
export function defaultGeometry(format: PageTableFormat, ias: number): PtGeometry {
  const bits = format.bitsPerLevel;
  const span = ias - format.granuleLg2;
  let levels = Math.max(1, Math.ceil(span / bits));
  if (levels < format.minLevels) levels = format.minLevels;
  const rest = span - bits * (levels - 1);
  const topItemsLg2 = format.topTable === "full" || rest > bits ? bits : Math.max(0, rest);
  return { levels, topItemsLg2 };
}
