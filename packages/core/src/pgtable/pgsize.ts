/**
 * Choosing the page size for the next chunk of a map/unmap, exactly as the iommu core does.
 *
 * The map/unmap hot path calls this once per chunk, so a page-size bitmap is decoded once into a
 * {@link PgsizeTable} (its sizes smallest first, with the masks of each size) and cached by bitmap value; each call
 * then tests alignment with int32 mask operations on the low and high words of the addresses instead of walking
 * the bitmap bit by bit with floating-point divisions, and writes its answer into a caller-owned object.
 * @linux iommu_pgsize (drivers/iommu/iommu.c)
 */
import { KernelError } from "../kernel/errno.js";

/** Result of {@link pgsizeFor}. */
export interface PgsizeChoice {
  pgsize: number;
  count: number;
}

const TWO_32 = 4294967296;
/** Page sizes above 2^52 are not representable next to a safe-integer address; the choice ignores them. */
const MAX_PGSIZE_BIT = 52;

/**
 * A page-size bitmap decoded once: the supported sizes smallest first, each with `size - 1` split into an int32 low
 * word and a high word, so that "is `x` aligned to this size" is `((x | 0) & lo) === 0 && (hi(x) & hi) === 0`.
 */
export class PgsizeTable {
  /** The bitmap this table decodes (a sum of powers of two). */
  readonly bitmap: number;
  /** Supported sizes up to 2^52, ascending. */
  readonly sizes: Float64Array;
  /** Low 32 bits of `size - 1` per size, as int32 (-1 from 2^32 on). */
  readonly loMask: Int32Array;
  /** Bits 32 and up of `size - 1` per size (0 up to 2^32). */
  readonly hiMask: Int32Array;
  /** The smallest page size of the bitmap (1 << __ffs), 0 for an empty bitmap. */
  readonly min: number;
  /** {@link loMask}/{@link hiMask} of {@link min}. */
  readonly minLo: number;
  readonly minHi: number;

  constructor(bitmap: number) {
    this.bitmap = bitmap;
    const shifts: number[] = [];
    let min = 0;
    // Bits above 52 count for the minimum only (as the kernel's __ffs would see them).
    for (let i = 0; i < 64; i++) {
      if (Math.floor(bitmap / 2 ** i) % 2 !== 1) continue;
      if (min === 0) min = 2 ** i;
      if (i <= MAX_PGSIZE_BIT) shifts.push(i);
    }
    this.sizes = new Float64Array(shifts.length);
    this.loMask = new Int32Array(shifts.length);
    this.hiMask = new Int32Array(shifts.length);
    for (let k = 0; k < shifts.length; k++) {
      const s = shifts[k]!;
      this.sizes[k] = 2 ** s;
      this.loMask[k] = lowMask(s);
      this.hiMask[k] = highMask(s);
    }
    this.min = min;
    const minShift = min === 0 ? 0 : Math.log2(min);
    this.minLo = lowMask(minShift);
    this.minHi = highMask(minShift);
  }

  /** Whether the non-negative safe integer `x` is a multiple of {@link min} (always true for an empty bitmap). */
  minAligned(x: number): boolean {
    return ((x | 0) & this.minLo) === 0 && (this.minHi === 0 || (Math.floor(x / TWO_32) & this.minHi) === 0);
  }
}

/** Low 32 bits of 2^s - 1 as int32. */
function lowMask(s: number): number {
  return s >= 32 ? -1 : (2 ** s - 1) | 0;
}

/** Bits 32.. of 2^s - 1. */
function highMask(s: number): number {
  return s <= 32 ? 0 : 2 ** (s - 32) - 1;
}

/** Cache of decoded bitmaps: the last one used, then a small map (a system has few distinct bitmaps). */
const tables = new Map<number, PgsizeTable>();
let lastTable = new PgsizeTable(0);

/** The decoded form of `bitmap`, built on first use and cached. */
export function pgsizeTable(bitmap: number): PgsizeTable {
  if (bitmap === lastTable.bitmap) return lastTable;
  let t = tables.get(bitmap);
  if (t === undefined) {
    if (tables.size >= 64) tables.clear();
    t = new PgsizeTable(bitmap);
    tables.set(bitmap, t);
  }
  lastTable = t;
  return t;
}

/**
 * {@link pgsizeFor} on a decoded bitmap, writing the choice into `out` (no allocation). `iova`, `paddr` and `size`
 * must be non-negative safe integers, as the iommu core checks before calling it.
 * @linux iommu_pgsize
 */
export function pgsizeInto(t: PgsizeTable, iova: number, paddr: number, size: number, out: PgsizeChoice): void {
  const iLo = iova | 0;
  const pLo = paddr | 0;
  const iHi = Math.floor(iova / TWO_32);
  const pHi = Math.floor(paddr / TWO_32);
  const sizes = t.sizes;
  const loMask = t.loMask;
  const hiMask = t.hiMask;
  // The largest size that fits in `size` (size <= __fls(size)) and both addresses are aligned to (<= __ffs).
  const mLo = iLo | pLo;
  const mHi = iHi | pHi;
  let k = sizes.length - 1;
  while (k >= 0 && (sizes[k]! > size || (mLo & loMask[k]!) !== 0 || (mHi & hiMask[k]!) !== 0)) k--;
  if (k < 0) throw new KernelError("EINVAL", "iommu_pgsize: no page size fits (BUG)");
  const pgsize = sizes[k]!;
  if (k + 1 < sizes.length) {
    // Only worth it when iova and paddr sit at the same offset inside the next larger page.
    const lo = loMask[k + 1]!;
    const hi = hiMask[k + 1]!;
    if (((iLo ^ pLo) & lo) === 0 && ((iHi ^ pHi) & hi) === 0) {
      const nextSize = sizes[k + 1]!;
      const offset = nextSize - ((iHi & hi) * TWO_32 + ((iLo & lo) >>> 0));
      if (offset + nextSize <= size) size = offset;
    }
  }
  out.pgsize = pgsize;
  out.count = Math.floor(size / pgsize);
}

/**
 * The largest supported page size usable at `iova`/`paddr` for `size` bytes, and how many of them to map before a
 * larger size could take over. Throws (the kernel BUG()s) when no size fits; callers check alignment first.
 * @linux iommu_pgsize
 */
export function pgsizeFor(bitmap: number, iova: number, paddr: number, size: number): PgsizeChoice {
  const out: PgsizeChoice = { pgsize: 0, count: 0 };
  pgsizeInto(pgsizeTable(bitmap), iova, paddr, size, out);
  return out;
}
