/**
 * Simulated physical memory: sparse, frame-granular, little-endian.
 *
 * Frames (4 KiB) are created zero-filled on the first write and found by array index from the frame number (no
 * hashing), so a 2^52-byte memory costs nothing until it is touched:
 *
 * - a three-level directory maps a frame number to a *slot*: two small JS arrays, then an `Int32Array` leaf of 8192
 *   slot numbers (32 MiB of address space per leaf);
 * - a slot is 4 KiB of frame storage. Slot 0 is a frame of zeros that is never written: every untouched directory
 *   entry holds 0, so reads of untouched memory return 0, allocate nothing and take no branch.
 *
 * Storage has two tiers, told apart by the sign of the slot:
 *
 * - tier 1 (slot >= 0): ONE growable `SharedArrayBuffer` (reserved up to 4 GiB, or less for a small memory), seen
 *   through one fixed-length `Uint32Array` over all of it. Slot `s` is words `s << 10 ..` of it, so a read is
 *   `low[pfn]`, then the data: one dependent load before the data instead of two. The buffer grows (`grow`, doubling,
 *   at most 64 MiB a step) as frames are created, and the views are then replaced; the OS backs it lazily, and the
 *   reservation costs address space only (1000 instances in one process are fine).
 *   Why shared, not a resizable `ArrayBuffer`: a resizable buffer can shrink, so V8 re-derives the length of every
 *   view of it on every access (measured: random reads over 1 GiB at ~0.5x a plain `Uint32Array`). A growable shared
 *   buffer never shrinks or moves, so a fixed-length view of it is an ordinary typed array (same speed as plain),
 *   and a `frame32` view of a slot stays valid as the buffer grows. The memory is never handed to another thread.
 * - tier 2 (slot < 0): once more frames are touched than tier 1 holds (4 GiB), frame `k = -slot - 1` lives in pooled
 *   1 MiB chunks (256 frames per `ArrayBuffer`). Correct, a little slower.
 *
 * Why slots rather than one `Uint32Array` object per frame: a random read then costs one cache miss on the data (the
 * leaves are 4 bytes per frame, so they mostly stay cached) instead of three dependent misses (directory entry,
 * typed-array object, its separately allocated backing store). `frame32` still hands out a `Uint32Array(1024)`: a
 * fixed-length view of the frame's slot (created on first use and cached), valid across growth of the buffer.
 *
 * Address split (a physical address is a JS number below 2^53, split as `hi = pa / 2^32`, `lo = pa >>> 0`):
 *
 * | bits of pa | 51..38 | 37..25 | 24..12 | 11..0 |
 * | ---------- | ------ | ------ | ------ | ----- |
 * | use        | L1     | L2     | leaf   | byte in frame |
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import type { FaultInjector } from "../kernel/fault-inject.js";

/**
 * log2 of the page (frame) size.
 * @linux PAGE_SHIFT
 */
export const PAGE_SHIFT = 12;
/**
 * Bytes in a page (frame).
 * @linux PAGE_SIZE
 */
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** 32-bit words in a frame. */
const FRAME_WORDS = 1024;
/**
 * The same as PAGE_SHIFT / PAGE_SIZE, for use in this file: V8 loads an exported module binding from a cell with a
 * TDZ check on every use, while a private `const` folds into the code.
 */
const FRAME_SHIFT = 12;
const FRAME_SIZE = 4096;
/**
 * Largest physical memory we model: 52-bit physical addresses, the widest any IOMMU here supports.
 * @linux MAX_PHYSMEM_BITS (52 on arm64 with 52-bit PA)
 */
export const MAX_PHYS_SIZE = 2 ** 52;

const TWO_32 = 4294967296;
/** Directory geometry, declared once: L3 indexes pa bits 12..24, L2 bits 25..37, L1 bits 38..51. */
const L3_BITS = 13;
const L2_BITS = 13;
const L3_ENTRIES = 1 << L3_BITS;
const L2_ENTRIES = 1 << L2_BITS;
const L3_MASK = L3_ENTRIES - 1;
/** pa bits 32..37 (the low bits of `hi`) that belong to the L2 index. */
const L2_HI_BITS = FRAME_SHIFT + L3_BITS + L2_BITS - 32; // 6
const L2_HI_MASK = (1 << L2_HI_BITS) - 1;
/** pa bits 25..31 (the top bits of `lo`) that belong to the L2 index. */
const L2_LO_SHIFT = FRAME_SHIFT + L3_BITS; // 25
const L2_LO_BITS = 32 - L2_LO_SHIFT; // 7

/** Whether this host stores typed-array words little-endian; bulk byte access relies on it. */
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Frames per tier-2 pooled chunk, as log2: 256 frames = 1 MiB per `ArrayBuffer`. */
const CHUNK_SHIFT = 8;
const CHUNK_FRAMES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_FRAMES - 1;
/** log2 of words per frame. */
const WORD_SHIFT = FRAME_SHIFT - 2;
const WORD_MASK = FRAME_WORDS - 1;
const BYTE_MASK = FRAME_SIZE - 1;
/** Largest tier-1 buffer: the largest `maxByteLength` V8 accepts (4 GiB + 4 KiB is rejected). */
const MAX_FIRST_TIER_BYTES = 4 * 2 ** 30;
/** Tier-1 growth: doubling, but at least 64 KiB and at most 64 MiB per `grow`. */
const MIN_GROW_BYTES = 64 * 1024;
const MAX_GROW_BYTES = 64 * 2 ** 20;

/** An ES2024 growable `SharedArrayBuffer` (this project's TypeScript lib predates it; Node 20 has it). */
interface GrowableSharedArrayBuffer extends SharedArrayBuffer {
  grow(byteLength: number): void;
}
const GrowableSharedArrayBuffer = SharedArrayBuffer as unknown as new (
  byteLength: number,
  opts: { maxByteLength: number },
) => GrowableSharedArrayBuffer;

/** A leaf maps 8192 frames to slots (0 = untouched). */
type Leaf = Int32Array;
type L2Dir = Leaf[];

/**
 * Options of {@link PhysicalMemory}.
 * @linux the memory nodes of the device tree / e820 map that size RAM
 */
export interface PhysicalMemoryOptions {
  /** Bytes of physical address space, a multiple of 4 KiB up to 2^52. Default 4 GiB. */
  size?: number;
  /** The machine's fault injector (kept for collaborators such as the page allocator). */
  faults?: FaultInjector;
  /** The machine's diagnostics (kept for collaborators such as the page allocator). */
  diag?: Diagnostics;
  /**
   * @internal Most bytes of storage in the fast tier (one growable buffer, including the 4 KiB zero frame); frames
   * touched beyond it go to pooled chunks. A multiple of 4 KiB from 4 KiB to 4 GiB; default (and cap) 4 GiB. Tests
   * shrink it to exercise the tier boundary cheaply.
   */
  firstTierBytes?: number;
  /**
   * @internal Commit tier 1's whole address range up front (default true: it costs neither resident memory nor
   * commit charge on Linux, and keeps `data` one never-replaced view that V8 can treat as constant). `false` grows
   * it step by step, which is also the fallback when the up-front grow fails. Tests use it to exercise growth.
   */
  firstTierEager?: boolean;
}

function hex(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return n < 0 ? `-0x${(-n).toString(16)}` : `0x${n.toString(16)}`;
}

function checkByte(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`fill byte ${v} is not in 0..255`);
  return v;
}

/**
 * The machine's physical memory: DRAM as device models and page-table walkers see it.
 * All multi-byte accesses are little-endian; 8/16/32-bit reads return unsigned numbers.
 * @linux the physical memory behind phys_to_virt/memremap, accessed like readl/writel or READ_ONCE on a descriptor
 */
export class PhysicalMemory {
  /** Bytes of physical address space. */
  declare readonly size: number;
  /** The fault injector this memory was created with, for collaborators. */
  declare readonly faults: FaultInjector | undefined;
  /** The diagnostics this memory was created with, for collaborators. */
  declare readonly diag: Diagnostics | undefined;

  /** Slots of the frames below 4 GiB (or below `size`), indexed by frame number: one load on the common path. */
  declare private readonly low: Int32Array;
  /** Above 4 GiB: L1 -> L2 -> leaf (Int32Array of slots). Untouched entries share the zero L2 / zero leaf. */
  declare private readonly l1: L2Dir[];
  declare private readonly zeroLeaf: Leaf;
  declare private readonly zeroL2: L2Dir;
  /**
   * Tier 1: the growable buffer and fixed-length views of all of it (replaced when it grows); slot `s >= 0` is words
   * `s << 10 ..` of `data`.
   */
  declare private readonly gsab: GrowableSharedArrayBuffer;
  declare private data: Uint32Array;
  declare private data8: Uint8Array;
  /** Slots tier 1 holds now, and at most. */
  declare private t1Frames: number;
  declare private readonly t1MaxFrames: number;
  /** Tier 2: slot `s < 0` is frame `k = -s - 1`, words `(k & 255) << 10 ..` of `chunks[k >>> 8]`. */
  private readonly chunks: Uint32Array[] = [];
  private readonly chunks8: Uint8Array[] = [];
  private t2Next = 0;
  /** `frame32` views of tier-1 slots, created on first use (index = slot); tier 2's, index = k. */
  private readonly views: (Uint32Array | undefined)[] = [];
  private readonly views2: Uint32Array[] = [];
  /** Released slots, reused (zeroed) before either tier grows. */
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  /** Highest valid address for an access of 1, 2, 4 and 8 bytes. */
  declare private readonly last8: number;
  declare private readonly last16: number;
  declare private readonly last32: number;
  declare private readonly last64: number;
  private touched = 0;

  constructor(opts: PhysicalMemoryOptions = {}) {
    const size = opts.size ?? 4 * 2 ** 30;
    if (!Number.isInteger(size) || size <= 0 || size % FRAME_SIZE !== 0 || size > MAX_PHYS_SIZE) {
      throw new RangeError(`physical memory size ${hex(size)} must be a positive multiple of 4 KiB up to 2^52`);
    }
    const t1Bytes = opts.firstTierBytes ?? MAX_FIRST_TIER_BYTES;
    if (
      !Number.isInteger(t1Bytes) ||
      t1Bytes < FRAME_SIZE ||
      t1Bytes % FRAME_SIZE !== 0 ||
      t1Bytes > MAX_FIRST_TIER_BYTES
    ) {
      throw new RangeError(`firstTierBytes ${hex(t1Bytes)} must be a multiple of 4 KiB from 4 KiB to 4 GiB`);
    }
    if (!HOST_LITTLE_ENDIAN) throw new Error("PhysicalMemory needs a little-endian host");
    this.size = size;
    this.faults = opts.faults;
    this.diag = opts.diag;
    this.last8 = size - 1;
    this.last16 = size - 2;
    this.last32 = size - 4;
    this.last64 = size - 8;

    // Zero-filled and lazily backed by the OS: 4 MiB of address space for 4 GiB of memory, resident as it is used.
    this.low = new Int32Array(Math.min(size, TWO_32) / FRAME_SIZE);
    this.zeroLeaf = new Int32Array(L3_ENTRIES);
    // Filled by push so the arrays stay PACKED_ELEMENTS (holey arrays take a slower load path).
    const zl2: L2Dir = [];
    for (let i = 0; i < L2_ENTRIES; i++) zl2.push(this.zeroLeaf);
    this.zeroL2 = zl2;
    const l1Entries = Math.ceil(size / 2 ** (FRAME_SHIFT + L3_BITS + L2_BITS));
    const l1: L2Dir[] = [];
    for (let i = 0; i < l1Entries; i++) l1.push(zl2);
    this.l1 = l1;

    // Tier 1 reserves address space for every frame of a small memory plus the zero frame, at most 4 GiB. Only the
    // zero frame (slot 0) is committed now; hundreds of instances per process are fine.
    let maxBytes = Math.min(t1Bytes, size + FRAME_SIZE);
    let gsab: GrowableSharedArrayBuffer | undefined;
    while (gsab === undefined) {
      try {
        gsab = new GrowableSharedArrayBuffer(FRAME_SIZE, { maxByteLength: maxBytes });
      } catch (e) {
        // Address space exhausted (not seen with 1000 instances on Linux x64): reserve less, spill to tier 2 sooner.
        if (!(e instanceof RangeError) || maxBytes <= FRAME_SIZE) throw e;
        maxBytes = Math.max(FRAME_SIZE, Math.floor(maxBytes / 2 / FRAME_SIZE) * FRAME_SIZE);
      }
    }
    let bytes = FRAME_SIZE;
    if (opts.firstTierEager ?? true) {
      try {
        gsab.grow(maxBytes);
        bytes = maxBytes;
      } catch {
        // Strict overcommit, say: grow step by step as frames are created.
      }
    }
    this.gsab = gsab;
    this.data = new Uint32Array(gsab, 0, bytes / 4);
    this.data8 = new Uint8Array(gsab, 0, bytes);
    this.t1Frames = bytes / FRAME_SIZE;
    this.t1MaxFrames = maxBytes / FRAME_SIZE;
    this.views.push(undefined);
    this.nextSlot = 1;
  }

  /** Number of frames that have storage (written at least once and not released). */
  get touchedFrames(): number {
    return this.touched;
  }

  // --- address checks -------------------------------------------------------------------------------------------

  private rangeError(pa: number, len: number): RangeError {
    const what = Number.isInteger(pa) ? "" : " (not an integer)";
    return new RangeError(
      `physical access of ${len} byte(s) at ${hex(pa)}${what} is outside memory of size ${hex(this.size)}`,
    );
  }

  /** Check a bulk range [pa, pa + len); throws the RangeError naming pa and the memory size. */
  private checkRange(pa: number, len: number): void {
    if (!Number.isInteger(len) || len < 0) throw new RangeError(`length ${len} is not a non-negative integer`);
    if (!Number.isInteger(pa) || pa < 0 || pa + len > this.size) throw this.rangeError(pa, len);
  }

  // --- frame lookup ---------------------------------------------------------------------------------------------

  /** The slot of the frame holding `pa` (0 when untouched). `pa` must be valid. */
  private slotR(pa: number): number {
    if (pa < TWO_32) return this.low[pa >>> FRAME_SHIFT]!;
    const lo = pa >>> 0;
    const hi = (pa - lo) / TWO_32;
    return this.l1[hi >>> L2_HI_BITS]![((hi & L2_HI_MASK) << L2_LO_BITS) | (lo >>> L2_LO_SHIFT)]![
      (lo >>> FRAME_SHIFT) & L3_MASK
    ]!;
  }

  /** The slot of the frame holding `pa`, created on first touch. `pa` must be valid. */
  private slotW(pa: number): number {
    const slot = this.slotR(pa);
    return slot !== 0 ? slot : this.createFrame(pa);
  }

  /** The directory leaf holding the slot of `pa` (created when `create`), or undefined; its index is `leafIndex`. */
  private leafOf(pa: number, create: boolean): Int32Array | undefined {
    if (pa < TWO_32) return this.low;
    const lo = pa >>> 0;
    const hi = (pa - lo) / TWO_32;
    const i1 = hi >>> L2_HI_BITS;
    const i2 = ((hi & L2_HI_MASK) << L2_LO_BITS) | (lo >>> L2_LO_SHIFT);
    let l2 = this.l1[i1]!;
    let leaf = l2[i2]!;
    if (leaf !== this.zeroLeaf) return leaf;
    if (!create) return undefined;
    if (l2 === this.zeroL2) {
      l2 = this.zeroL2.slice();
      this.l1[i1] = l2;
    }
    leaf = new Int32Array(L3_ENTRIES);
    l2[i2] = leaf;
    return leaf;
  }

  private leafIndex(pa: number): number {
    return pa < TWO_32 ? pa >>> FRAME_SHIFT : ((pa >>> 0) >>> FRAME_SHIFT) & L3_MASK;
  }

  /** Give the untouched frame holding `pa` storage (zeroed) and return its slot. */
  private createFrame(pa: number): number {
    const leaf = this.leafOf(pa, true)!;
    let slot = this.freeSlots.pop();
    if (slot !== undefined) {
      if (slot >= 0) this.data.fill(0, slot << WORD_SHIFT, (slot + 1) << WORD_SHIFT);
      else this.views2[-slot - 1]!.fill(0);
    } else if (this.nextSlot < this.t1Frames || this.growFirstTier()) {
      slot = this.nextSlot++;
      this.views.push(undefined);
    } else {
      slot = this.newSecondTierSlot();
    }
    leaf[this.leafIndex(pa)] = slot;
    this.touched++;
    return slot;
  }

  /** Grow the tier-1 buffer by a step; false when it is at its maximum. New bytes read as zero. */
  private growFirstTier(): boolean {
    const cur = this.t1Frames * FRAME_SIZE;
    const max = this.t1MaxFrames * FRAME_SIZE;
    if (cur >= max) return false;
    const step = Math.min(Math.max(cur, MIN_GROW_BYTES), MAX_GROW_BYTES);
    const bytes = Math.min(cur + step, max);
    this.gsab.grow(bytes);
    this.data = new Uint32Array(this.gsab, 0, bytes / 4);
    this.data8 = new Uint8Array(this.gsab, 0, bytes);
    this.t1Frames = bytes / FRAME_SIZE;
    return true;
  }

  /** A fresh tier-2 slot (negative), growing the chunk pool when full. */
  private newSecondTierSlot(): number {
    const k = this.t2Next++;
    if (k === this.chunks.length << CHUNK_SHIFT) {
      const buf = new ArrayBuffer(CHUNK_FRAMES * FRAME_SIZE);
      this.chunks.push(new Uint32Array(buf));
      this.chunks8.push(new Uint8Array(buf));
      for (let i = 0; i < CHUNK_FRAMES; i++) this.views2.push(new Uint32Array(buf, i * FRAME_SIZE, FRAME_WORDS));
    }
    return -k - 1;
  }

  /** The `frame32` view of a slot (tier-1 views are made on first use and cached). */
  private viewOf(slot: number): Uint32Array {
    if (slot < 0) return this.views2[-slot - 1]!;
    let v = this.views[slot];
    if (v === undefined) {
      // A growable SharedArrayBuffer never moves or shrinks: fixed-length views of it stay valid as it grows.
      v = new Uint32Array(this.gsab, slot * FRAME_SIZE, FRAME_WORDS);
      this.views[slot] = v;
    }
    return v;
  }

  /** Word `w` (0..1023) of the frame in `slot`. */
  private loadWord(slot: number, w: number): number {
    if (slot >= 0) return this.data[(slot << WORD_SHIFT) | w]!;
    const k = -slot - 1;
    return this.chunks[k >>> CHUNK_SHIFT]![((k & CHUNK_MASK) << WORD_SHIFT) | w]!;
  }

  /** Set word `w` (0..1023) of the frame in `slot`. */
  private storeWord(slot: number, w: number, v: number): void {
    if (slot >= 0) {
      this.data[(slot << WORD_SHIFT) | w] = v;
      return;
    }
    const k = -slot - 1;
    this.chunks[k >>> CHUNK_SHIFT]![((k & CHUNK_MASK) << WORD_SHIFT) | w] = v;
  }

  /** The byte array holding the frame in `slot`; its offset there is {@link byteBase}. */
  private bytesOf(slot: number): Uint8Array {
    return slot >= 0 ? this.data8 : this.chunks8[(-slot - 1) >>> CHUNK_SHIFT]!;
  }

  /** Byte offset of the frame in `slot` within {@link bytesOf} (a multiplication: tier-1 offsets reach 2^32). */
  private byteBase(slot: number): number {
    return slot >= 0 ? slot * FRAME_SIZE : ((-slot - 1) & CHUNK_MASK) * FRAME_SIZE;
  }

  /**
   * The 1024-word frame holding `pa`, created (zero-filled) on first touch. Word `i` holds bytes `4i..4i+3` of the
   * frame, little-endian. For page-table walkers that read many descriptors of one table. The view stays valid while
   * the frame is not released with {@link releaseFrame}.
   * @linux page_address(pfn_to_page(pa >> PAGE_SHIFT))
   */
  frame32(pa: number): Uint32Array {
    if (!(pa >= 0 && pa <= this.last8) || !Number.isInteger(pa)) throw this.rangeError(pa, 1);
    return this.viewOf(this.slotW(pa));
  }

  /**
   * The 1024-word frame holding `pa`, for reading only: like {@link frame32}, but an untouched frame is not created —
   * its view is the shared frame of zeros, which must not be written. For page-table walkers, which read a table
   * (possibly never written) once per level and index it.
   * @linux page_address(pfn_to_page(pa >> PAGE_SHIFT)), read-only
   */
  frame32R(pa: number): Uint32Array {
    const lo = pa >>> 0;
    // Below 4 GiB (pa === lo: an integer in uint32 range), a tier-1 frame whose view exists: two loads.
    if (pa === lo) {
      // `low` covers exactly the frames below min(size, 4 GiB): its bounds check is the range check.
      const slot = this.low[lo >>> FRAME_SHIFT];
      if (slot !== undefined && slot >= 0) {
        const v = this.views[slot];
        if (v !== undefined) return v;
      }
    }
    return this.frame32RFar(pa);
  }

  /**
   * The fast tier's storage as one word array, for walkers that index tables with {@link wordIndexR}. Read it again
   * after anything that may create a frame (a write to untouched memory): growing the fast tier replaces the array.
   * @linux the kernel's linear map (phys_to_virt) seen as one array of words
   */
  get words32(): Uint32Array {
    return this.data;
  }

  /**
   * Where the 32-bit word at `pa` sits in {@link words32}, for reading only; -1 when it is not there (an unaligned or
   * invalid address, a frame above 4 GiB or in the pooled tier): the caller then uses {@link read32} or
   * {@link frame32R}. An untouched frame is not created: its index points into the shared frame of zeros, which
   * must not be written. One load (the frame's slot) and no call on the path page-table walkers take at every level.
   * @linux phys_to_virt(pa), read-only
   */
  wordIndexR(pa: number): number {
    const lo = pa >>> 0;
    if (pa === lo && (lo & 3) === 0) {
      const slot = this.low[lo >>> FRAME_SHIFT];
      if (slot !== undefined && slot >= 0) return (slot << WORD_SHIFT) | ((lo >>> 2) & WORD_MASK);
    }
    return -1;
  }

  /** frame32R above 4 GiB, of tier-2 frames, of a frame whose view is not made yet, or invalid. */
  private frame32RFar(pa: number): Uint32Array {
    if (!(pa >= 0 && pa <= this.last8) || !Number.isInteger(pa)) throw this.rangeError(pa, 1);
    return this.viewOf(this.slotR(pa));
  }

  /** Whether the frame holding `pa` has storage (reads of other frames return 0 and allocate nothing). */
  isTouched(pa: number): boolean {
    if (!(pa >= 0 && pa <= this.last8) || !Number.isInteger(pa)) throw this.rangeError(pa, 1);
    return this.slotR(pa) !== 0;
  }

  /**
   * Drop the storage of frame `pfn`; it reads as zeros afterwards. Its storage is recycled for a later frame, so a
   * `frame32` view taken earlier must not be used again.
   * @linux the memory hot-remove / balloon path giving a frame back (no direct counterpart)
   */
  releaseFrame(pfn: number): void {
    const pa = pfn * FRAME_SIZE;
    if (!Number.isInteger(pfn) || pfn < 0 || pa > this.last8) throw this.rangeError(pa, FRAME_SIZE);
    const leaf = this.leafOf(pa, false);
    if (leaf === undefined) return;
    const i = this.leafIndex(pa);
    const slot = leaf[i]!;
    if (slot === 0) return;
    leaf[i] = 0;
    this.freeSlots.push(slot);
    this.touched--;
  }

  // --- 32-bit (hot path) ----------------------------------------------------------------------------------------

  /**
   * Read a little-endian 32-bit word (unsigned).
   * @linux readl / le32_to_cpu(READ_ONCE(*p))
   */
  read32(pa: number): number {
    const lo = pa >>> 0;
    // Below 4 GiB (pa === lo: an integer in uint32 range) the L1 index is 0 and no division is needed.
    if (pa === lo && (lo & 3) === 0) {
      // `low` covers exactly the frames below min(size, 4 GiB): its bounds check is the range check.
      const slot = this.low[lo >>> FRAME_SHIFT];
      // Tier 1 (and the zero frame): one load from the directory, then the data.
      if (slot !== undefined && slot >= 0) return this.data[(slot << WORD_SHIFT) | ((lo >>> 2) & WORD_MASK)]!;
    }
    return this.read32Far(pa);
  }

  /** read32 above 4 GiB, of tier-2 frames, unaligned or invalid. */
  private read32Far(pa: number): number {
    const lo = pa >>> 0;
    if ((lo & 3) === 0 && pa >= 0 && pa <= this.last32 && Number.isInteger(pa)) {
      return this.loadWord(this.slotR(pa), (lo >>> 2) & WORD_MASK);
    }
    return this.read32Slow(pa);
  }

  private read32Slow(pa: number): number {
    if (!(pa >= 0 && pa <= this.last32) || !Number.isInteger(pa)) throw this.rangeError(pa, 4);
    return (this.read8(pa) | (this.read8(pa + 1) << 8) | (this.read8(pa + 2) << 16) | (this.read8(pa + 3) << 24)) >>> 0;
  }

  /**
   * Write a little-endian 32-bit word (`v` is taken modulo 2^32).
   * @linux writel / WRITE_ONCE(*p, cpu_to_le32(v))
   */
  write32(pa: number, v: number): void {
    const lo = pa >>> 0;
    if (pa === lo && (lo & 3) === 0 && lo <= this.last32) {
      const slot = this.low[lo >>> FRAME_SHIFT]!;
      // Slot 0 (the zero frame) is never written: the frame is created first.
      if (slot > 0) {
        this.data[(slot << WORD_SHIFT) | ((lo >>> 2) & WORD_MASK)] = v;
        return;
      }
    }
    this.write32Far(pa, v);
  }

  /** write32 creating a frame, above 4 GiB, to tier-2 frames, unaligned or invalid. */
  private write32Far(pa: number, v: number): void {
    const lo = pa >>> 0;
    if ((lo & 3) === 0 && pa >= 0 && pa <= this.last32 && Number.isInteger(pa)) {
      this.storeWord(this.slotW(pa), (lo >>> 2) & WORD_MASK, v);
      return;
    }
    this.write32Slow(pa, v);
  }

  private write32Slow(pa: number, v: number): void {
    if (!(pa >= 0 && pa <= this.last32) || !Number.isInteger(pa)) throw this.rangeError(pa, 4);
    this.write8(pa, v & 0xff);
    this.write8(pa + 1, (v >>> 8) & 0xff);
    this.write8(pa + 2, (v >>> 16) & 0xff);
    this.write8(pa + 3, (v >>> 24) & 0xff);
  }

  // --- 8 and 16 bits --------------------------------------------------------------------------------------------

  /** Index of the word holding `pa` within its frame. */
  private wordIn(pa: number): number {
    return ((pa >>> 0) >>> 2) & WORD_MASK;
  }

  /**
   * Read a byte.
   * @linux readb
   */
  read8(pa: number): number {
    if (!(pa >= 0 && pa <= this.last8) || !Number.isInteger(pa)) throw this.rangeError(pa, 1);
    return (this.loadWord(this.slotR(pa), this.wordIn(pa)) >>> ((pa & 3) << 3)) & 0xff;
  }

  /**
   * Write a byte (`v` is taken modulo 256).
   * @linux writeb
   */
  write8(pa: number, v: number): void {
    if (!(pa >= 0 && pa <= this.last8) || !Number.isInteger(pa)) throw this.rangeError(pa, 1);
    const slot = this.slotW(pa);
    const w = this.wordIn(pa);
    const sh = (pa & 3) << 3;
    this.storeWord(slot, w, (this.loadWord(slot, w) & ~(0xff << sh)) | ((v & 0xff) << sh));
  }

  /**
   * Read a little-endian 16-bit value (unsigned); unaligned reads may cross words and frames.
   * @linux readw
   */
  read16(pa: number): number {
    if (!(pa >= 0 && pa <= this.last16) || !Number.isInteger(pa)) throw this.rangeError(pa, 2);
    if ((pa & 3) !== 3) {
      return (this.loadWord(this.slotR(pa), this.wordIn(pa)) >>> ((pa & 3) << 3)) & 0xffff;
    }
    return this.read8(pa) | (this.read8(pa + 1) << 8);
  }

  /**
   * Write a little-endian 16-bit value (`v` is taken modulo 2^16); unaligned writes may cross words and frames.
   * @linux writew
   */
  write16(pa: number, v: number): void {
    if (!(pa >= 0 && pa <= this.last16) || !Number.isInteger(pa)) throw this.rangeError(pa, 2);
    if ((pa & 3) !== 3) {
      const slot = this.slotW(pa);
      const w = this.wordIn(pa);
      const sh = (pa & 3) << 3;
      this.storeWord(slot, w, (this.loadWord(slot, w) & ~(0xffff << sh)) | ((v & 0xffff) << sh));
      return;
    }
    this.write8(pa, v & 0xff);
    this.write8(pa + 1, (v >>> 8) & 0xff);
  }

  // --- 64 bits --------------------------------------------------------------------------------------------------

  /**
   * Read the low 32 bits of the little-endian 64-bit value at `pa`.
   * @linux lower_32_bits(readq)
   */
  read64Lo(pa: number): number {
    if (!(pa >= 0 && pa <= this.last64) || !Number.isInteger(pa)) throw this.rangeError(pa, 8);
    return this.read32(pa);
  }

  /**
   * Read the high 32 bits of the little-endian 64-bit value at `pa`.
   * @linux upper_32_bits(readq)
   */
  read64Hi(pa: number): number {
    if (!(pa >= 0 && pa <= this.last64) || !Number.isInteger(pa)) throw this.rangeError(pa, 8);
    return this.read32(pa + 4);
  }

  /**
   * Read a little-endian 64-bit value as two 32-bit halves into `out[0]` (low) and `out[1]` (high); no allocation.
   * @linux readq / le64_to_cpu(READ_ONCE(*p)) on a descriptor
   */
  read64Parts(pa: number, out: Uint32Array): void {
    if (!(pa >= 0 && pa <= this.last64) || !Number.isInteger(pa)) throw this.rangeError(pa, 8);
    if ((pa & 7) === 0) {
      // An aligned quadword never crosses a frame.
      const slot = this.slotR(pa);
      const w = this.wordIn(pa);
      out[0] = this.loadWord(slot, w);
      out[1] = this.loadWord(slot, w + 1);
      return;
    }
    out[0] = this.read32(pa);
    out[1] = this.read32(pa + 4);
  }

  /**
   * Write a little-endian 64-bit value given as two 32-bit halves (each taken modulo 2^32).
   * @linux writeq / WRITE_ONCE(*p, cpu_to_le64(v)) on a descriptor
   */
  write64Parts(pa: number, lo: number, hi: number): void {
    if (!(pa >= 0 && pa <= this.last64) || !Number.isInteger(pa)) throw this.rangeError(pa, 8);
    if ((pa & 7) === 0) {
      const slot = this.slotW(pa);
      const w = this.wordIn(pa);
      this.storeWord(slot, w, lo);
      this.storeWord(slot, w + 1, hi);
      return;
    }
    this.write32(pa, lo);
    this.write32(pa + 4, hi);
  }

  /**
   * Read a little-endian 64-bit value as a bigint (convenience; hot paths use {@link read64Parts}).
   * @linux readq
   */
  read64(pa: number): bigint {
    if (!(pa >= 0 && pa <= this.last64) || !Number.isInteger(pa)) throw this.rangeError(pa, 8);
    const lo = this.read32(pa);
    const hi = this.read32(pa + 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /**
   * Write a 64-bit value given as a bigint, taken modulo 2^64 (convenience; hot paths use {@link write64Parts}).
   * @linux writeq
   */
  write64(pa: number, v: bigint): void {
    if (!(pa >= 0 && pa <= this.last64) || !Number.isInteger(pa)) throw this.rangeError(pa, 8);
    const u = BigInt.asUintN(64, v);
    this.write64Parts(pa, Number(u & 0xffffffffn), Number(u >> 32n));
  }

  // --- bulk -----------------------------------------------------------------------------------------------------

  /** Byte offset of `pa` within {@link bytesOf}(slot). */
  private byteIndex(slot: number, pa: number): number {
    return this.byteBase(slot) + ((pa >>> 0) & BYTE_MASK);
  }

  /**
   * Copy `len` bytes starting at `pa` out of memory.
   * @linux memcpy_fromio / memcpy from a kernel mapping
   */
  readBytes(pa: number, len: number): Uint8Array {
    this.checkRange(pa, len);
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const a = pa + done;
      const n = Math.min(FRAME_SIZE - ((a >>> 0) & BYTE_MASK), len - done);
      const slot = this.slotR(a);
      if (slot !== 0) {
        const b = this.byteIndex(slot, a);
        out.set(this.bytesOf(slot).subarray(b, b + n), done);
      }
      done += n;
    }
    return out;
  }

  /**
   * Copy `bytes` into memory at `pa`.
   * @linux memcpy_toio / memcpy to a kernel mapping
   */
  writeBytes(pa: number, bytes: Uint8Array): void {
    const len = bytes.length;
    this.checkRange(pa, len);
    let done = 0;
    while (done < len) {
      const a = pa + done;
      const n = Math.min(FRAME_SIZE - ((a >>> 0) & BYTE_MASK), len - done);
      const slot = this.slotW(a);
      this.bytesOf(slot).set(bytes.subarray(done, done + n), this.byteIndex(slot, a));
      done += n;
    }
  }

  /**
   * Set `len` bytes at `pa` to `byte`. Zero-filling frames never written allocates nothing.
   * @linux memset
   */
  fill(pa: number, len: number, byte: number): void {
    this.checkRange(pa, len);
    checkByte(byte);
    let done = 0;
    while (done < len) {
      const a = pa + done;
      const n = Math.min(FRAME_SIZE - ((a >>> 0) & BYTE_MASK), len - done);
      const slot = byte === 0 ? this.slotR(a) : this.slotW(a);
      if (slot !== 0) {
        const b = this.byteIndex(slot, a);
        this.bytesOf(slot).fill(byte, b, b + n);
      }
      done += n;
    }
  }

  /**
   * Copy `len` bytes from `src` to `dst`; overlapping ranges are handled like memmove.
   * @linux memmove
   */
  copy(dst: number, src: number, len: number): void {
    this.checkRange(src, len);
    this.checkRange(dst, len);
    if (len === 0 || dst === src) return;
    // Copy in chunks that stay inside one source and one destination frame. When dst is above an overlapping src,
    // walk backwards so no source byte is overwritten before it is read.
    const backwards = dst > src && dst < src + len;
    let remaining = len;
    while (remaining > 0) {
      let n: number;
      let s: number;
      let d: number;
      if (backwards) {
        const sEnd = src + remaining;
        const dEnd = dst + remaining;
        n = Math.min(((sEnd - 1) & BYTE_MASK) + 1, ((dEnd - 1) & BYTE_MASK) + 1, remaining);
        s = sEnd - n;
        d = dEnd - n;
      } else {
        const doneBytes = len - remaining;
        s = src + doneBytes;
        d = dst + doneBytes;
        n = Math.min(FRAME_SIZE - (s & BYTE_MASK), FRAME_SIZE - (d & BYTE_MASK), remaining);
      }
      const ss = this.slotR(s);
      if (ss === 0) {
        const ds = this.slotR(d);
        if (ds !== 0) {
          const b = this.byteIndex(ds, d);
          this.bytesOf(ds).fill(0, b, b + n);
        }
      } else {
        const ds = this.slotW(d);
        const sb = this.byteIndex(ss, s);
        // TypedArray.set copies correctly when source and target share a buffer.
        this.bytesOf(ds).set(this.bytesOf(ss).subarray(sb, sb + n), this.byteIndex(ds, d));
      }
      remaining -= n;
    }
  }
}
