/**
 * The in-run baselines every bench compares with, and the access patterns they share.
 *
 * Each bench measures its subject (core's page-table engine, a hardware model's translation, a driver's
 * map/unmap) beside these plain structures, in the same process and run, with the same access pattern:
 *
 * - {@link RawRadix}: a 4-level, 512-way radix table over `Int32Array` frames (lo/hi words per entry), the work a
 *   page-table walk or update does without anything around it;
 * - {@link DirectTlb}: a direct-mapped `Int32Array` TLB (tag + data arrays), the work of a TLB hit;
 * - {@link PageMap}: a `Map` from page number to frame, what a JS program would write first.
 *
 * They use integer arithmetic only (no bigint; one floating-point division for the top table index of page numbers
 * beyond 2^27), and each instance keeps one shape. The pattern generators draw from mulberry32, so a seed
 * reproduces a run. Import this file by relative path, as the benches import harness.ts.
 */
import { mulberry32 } from "../src/kernel/fault-inject.js";

const TWO_27 = 134217728;

/** Leaf descriptor flags of {@link RawRadix} (valid page, AF), below the frame number. */
const LEAF_FLAGS = 0x403;
/** Table descriptor flags of {@link RawRadix}; the next-level frame's index sits at bit 12. */
const TABLE_FLAGS = 3;

/**
 * A 4-level, 512-way radix table over `Int32Array` frames of 512 entries (lo/hi words each); frame 0 is the root.
 * Keys are page numbers (below 2^36); a leaf holds the frame number at bit 12 (lo word: its low 20 bits over
 * {@link LEAF_FLAGS}; hi word: the rest), a table entry the next frame's index the same way, so every shift is
 * constant whatever the page size. `map`/`unmap` take runs of pages and find the leaf table once per 512 pages;
 * `unmap` gives back leaf tables a run covers whole.
 */
export class RawRadix {
  /** Frames of 512 entries; frame 0 is the root. */
  readonly frames: Int32Array[] = [new Int32Array(1024)];
  /** Indexes of frames given back by `unmap`, reused by `map`. */
  readonly free: number[] = [];
  /** Page size in bytes, for {@link walk} (2 KiB and 4 KiB granules are used). */
  readonly pageSize: number;

  constructor(pageShift = 12) {
    this.pageSize = 2 ** pageShift;
  }

  private allocFrame(): number {
    const f = this.free.pop();
    if (f !== undefined) return f;
    this.frames.push(new Int32Array(1024));
    return this.frames.length - 1;
  }

  /** The frame entry `idx` of frame `t` points to; a missing table is allocated when `create`, else -1. */
  private next(t: number, idx: number, create: boolean): number {
    const f = this.frames[t]!;
    const lo = f[idx << 1]!;
    if (lo !== 0) return lo >>> 12;
    if (!create) return -1;
    const c = this.allocFrame();
    f[idx << 1] = (c << 12) | TABLE_FLAGS;
    return c;
  }

  /** The level-1 frame (whose entries point to leaf tables) on the way to page `pn`, or -1. */
  private level1For(pn: number, create: boolean): number {
    const t = this.next(0, Math.floor(pn / TWO_27) & 511, create);
    return t < 0 ? t : this.next(t, (pn >>> 18) & 511, create);
  }

  /** The leaf frame of page `pn`, or -1 when a table on the way is missing and not `create`d. */
  leafFor(pn: number, create: boolean): number {
    const t = this.level1For(pn, create);
    return t < 0 ? t : this.next(t, (pn >>> 9) & 511, create);
  }

  /** Map `count` pages from page `pn` to frames from `pfn`; throws on a page already mapped. */
  map(pn: number, pfn: number, count = 1): void {
    while (count > 0) {
      const f = this.frames[this.leafFor(pn, true)]!;
      let idx = pn & 511;
      const n = Math.min(count, 512 - idx);
      for (let k = 0; k < n; k++, idx++, pfn++) {
        const w = idx << 1;
        if (f[w] !== 0) throw new Error("RawRadix.map: page already mapped");
        f[w + 1] = (pfn / 1048576) | 0;
        f[w] = (pfn << 12) | LEAF_FLAGS;
      }
      pn += n;
      count -= n;
    }
  }

  /** Unmap up to `count` pages from page `pn`, stopping at the first hole; returns the pages unmapped. */
  unmap(pn: number, count = 1): number {
    let done = 0;
    while (done < count) {
      const parent = this.level1For(pn, false);
      if (parent < 0) return done;
      const pf = this.frames[parent]!;
      const pw = ((pn >>> 9) & 511) << 1;
      const lo = pf[pw]!;
      if (lo === 0) return done;
      const t = lo >>> 12;
      const f = this.frames[t]!;
      let idx = pn & 511;
      const n = Math.min(count - done, 512 - idx);
      let k = 0;
      for (; k < n; k++, idx++) {
        const w = idx << 1;
        if (f[w] === 0) break;
        f[w] = 0;
        f[w + 1] = 0;
      }
      done += k;
      if (k < n) return done;
      if (n === 512) {
        pf[pw] = 0;
        this.free.push(t);
      }
      pn += n;
    }
    return done;
  }

  /** The address `iova` translates to, walking from the root; -1 when unmapped. */
  walk(iova: number): number {
    const pn = Math.floor(iova / this.pageSize);
    const t = this.leafFor(pn, false);
    if (t < 0) return -1;
    const f = this.frames[t]!;
    const w = (pn & 511) << 1;
    const lo = f[w]!;
    if (lo === 0) return -1;
    const pfn = f[w + 1]! * 1048576 + (lo >>> 12);
    return (pfn - pn) * this.pageSize + iova;
  }

  /** Translate every IOVA with {@link walk}: the sum of the addresses, or -1 at the first unmapped one. */
  walkAll(iovas: Float64Array): number {
    let sum = 0;
    for (let i = 0; i < iovas.length; i++) {
      const pa = this.walk(iovas[i]!);
      if (pa < 0) return -1;
      sum += pa;
    }
    return sum;
  }
}

/**
 * A direct-mapped TLB of 2^bits entries: `Int32Array` tags (page numbers, below 2^31) and data (frame numbers).
 * {@link translateAll} refills a miss with the linear mapping `pfn = pn + pfnDelta`, as the benches map their
 * ranges, so it measures the hit path.
 */
export class DirectTlb {
  readonly tag: Int32Array;
  readonly data: Int32Array;
  readonly pageSize: number;
  /** Frame number minus page number of the mapping a miss refills from. */
  readonly pfnDelta: number;
  private readonly mask: number;

  constructor(bits = 12, pageSize = 4096, pfnDelta = 0) {
    this.tag = new Int32Array(1 << bits).fill(-1);
    this.data = new Int32Array(1 << bits);
    this.mask = (1 << bits) - 1;
    this.pageSize = pageSize;
    this.pfnDelta = pfnDelta;
  }

  /** Put page `pn` → frame `pfn` in its slot. */
  fill(pn: number, pfn: number): void {
    const e = pn & this.mask;
    this.tag[e] = pn;
    this.data[e] = pfn;
  }

  /** The frame of page `pn`, or -1 on a miss. */
  lookup(pn: number): number {
    const e = pn & this.mask;
    return this.tag[e] === pn ? this.data[e]! : -1;
  }

  /**
   * A function returning the sum of {@link lookup} over the page numbers `pns` (-1 per miss). The arrays are
   * captured as constants of the closure, which V8 folds into the loop: a method reading them from `this` costs about
   * half as much again on a loop this short.
   */
  lookupAllFn(pns: Int32Array): () => number {
    const mask = this.mask;
    const tag = this.tag;
    const data = this.data;
    const n = pns.length;
    return () => {
      let sum = 0;
      for (let i = 0; i < n; i++) {
        const pn = pns[i]!;
        const e = pn & mask;
        sum += tag[e] === pn ? data[e]! : -1;
      }
      return sum;
    };
  }

  /** Translate every IOVA, refilling misses from the linear mapping; the sum of the addresses. */
  translateAll(iovas: Float64Array): number {
    const page = this.pageSize;
    const mask = this.mask;
    const tag = this.tag;
    const data = this.data;
    let sum = 0;
    for (let i = 0; i < iovas.length; i++) {
      const iova = iovas[i]!;
      const pn = Math.floor(iova / page);
      const e = pn & mask;
      if (tag[e] !== pn) {
        tag[e] = pn;
        data[e] = pn + this.pfnDelta;
      }
      sum += data[e]! * page + (iova - pn * page);
    }
    return sum;
  }
}

/** A `Map` from page number to frame number. */
export class PageMap {
  readonly pages = new Map<number, number>();
  readonly pageSize: number;

  constructor(pageSize = 4096) {
    this.pageSize = pageSize;
  }

  get size(): number {
    return this.pages.size;
  }

  /** Map `count` pages from page `pn` to frames from `pfn`. */
  map(pn: number, pfn: number, count = 1): void {
    for (let i = 0; i < count; i++) this.pages.set(pn + i, pfn + i);
  }

  /** Unmap `count` pages from page `pn`. */
  unmap(pn: number, count = 1): void {
    for (let i = 0; i < count; i++) this.pages.delete(pn + i);
  }

  /** The frame of page `pn`, or -1. */
  lookup(pn: number): number {
    return this.pages.get(pn) ?? -1;
  }

  /** Translate every IOVA: the sum of the addresses, or -1 at the first unmapped one. */
  translateAll(iovas: Float64Array): number {
    const page = this.pageSize;
    let sum = 0;
    for (let i = 0; i < iovas.length; i++) {
      const iova = iovas[i]!;
      const pn = Math.floor(iova / page);
      const f = this.pages.get(pn);
      if (f === undefined) return -1;
      sum += f * page + (iova - pn * page);
    }
    return sum;
  }
}

/** The three baselines of one mapping: a range of pages mapped linearly to frames. */
export interface MappedBaselines {
  raw: RawRadix;
  tlb: DirectTlb;
  jsMap: PageMap;
}

/**
 * {@link RawRadix}, {@link DirectTlb} (4096 entries, refilling from the same mapping) and {@link PageMap} with the
 * pages of `range` mapped to consecutive frames from physical address `paBase`: what a translation bench compares
 * its subject with, after mapping the same range in it.
 */
export function mappedBaselines(range: PageRange, paBase: number): MappedBaselines {
  const pn = range.base / range.pageSize;
  const pfn = paBase / range.pageSize;
  const raw = new RawRadix(Math.log2(range.pageSize));
  raw.map(pn, pfn, range.pages);
  const tlb = new DirectTlb(12, range.pageSize, pfn - pn);
  const jsMap = new PageMap(range.pageSize);
  jsMap.map(pn, pfn, range.pages);
  return { raw, tlb, jsMap };
}

// --- access patterns -----------------------------------------------------------------------------------------------

/** `pages` pages of `pageSize` bytes mapped from IOVA `base`. */
export interface PageRange {
  base: number;
  pages: number;
  pageSize: number;
}

/** `count` page indexes in [0, pages), drawn uniformly with mulberry32(`seed`): a working set. */
export function randomPages(pages: number, count: number, seed: number): Int32Array {
  const rand = mulberry32(seed);
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.floor(rand() * pages);
  return out;
}

/** The i-th IOVA of a pattern: page index `page` of `range`, at byte offset (i × offsetStep) mod pageSize. */
function iovaAt(range: PageRange, page: number, i: number, offsetStep: number): number {
  return range.base + page * range.pageSize + ((i * offsetStep) & (range.pageSize - 1));
}

/** `n` IOVAs at uniformly random pages of `range` (mulberry32(`seed`)). */
export function randomIovas(range: PageRange, n: number, seed: number, offsetStep = 8): Float64Array {
  const rand = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = iovaAt(range, Math.floor(rand() * range.pages), i, offsetStep);
  return out;
}

/** `n` IOVAs at pages picked uniformly from the page indexes `set` (mulberry32(`seed`)). */
export function setIovas(range: PageRange, set: Int32Array, n: number, seed: number, offsetStep = 8): Float64Array {
  const rand = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = iovaAt(range, set[Math.floor(rand() * set.length)]!, i, offsetStep);
  return out;
}

/** `n` IOVAs over `span` consecutive pages from page index `first`, in order, again and again (wrapping at the end of `range`). */
export function sequentialIovas(
  range: PageRange,
  n: number,
  first = 0,
  span = range.pages,
  offsetStep = 8,
): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = iovaAt(range, (first + (i % span)) % range.pages, i, offsetStep);
  return out;
}

/** The page number (IOVA / pageSize) of each IOVA. */
export function pageNumbers(iovas: Float64Array, pageSize: number): Int32Array {
  const out = new Int32Array(iovas.length);
  for (let i = 0; i < iovas.length; i++) out[i] = Math.floor(iovas[i]! / pageSize);
  return out;
}
