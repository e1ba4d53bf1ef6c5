import { KernelError } from "./errno.js";
import type { FaultInjector } from "./fault-inject.js";

/**
 * The entry that reserves an index without an object: invisible to `load` and `forEach`, but the slot stays busy
 * (`alloc` skips it, `empty` is false). iommufd stores it while an object is being built and as a tombstone.
 * @linux XA_ZERO_ENTRY
 */
export const XA_ZERO_ENTRY: unique symbol = Symbol("XA_ZERO_ENTRY");

/**
 * The type of {@link XA_ZERO_ENTRY}.
 * @linux xa_is_zero
 */
export type XaZeroEntry = typeof XA_ZERO_ENTRY;

/**
 * An inclusive range of IDs for `alloc`.
 * @linux struct xa_limit
 */
export interface XaLimit {
  readonly min: number;
  readonly max: number;
}

const U32_MAX = 0xffffffff;

/**
 * Build an ID range for `alloc`.
 * @linux XA_LIMIT
 */
export function XA_LIMIT(min: number, max: number): XaLimit {
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || max > U32_MAX) {
    throw new RangeError(`XA_LIMIT(${min}, ${max}): bounds must be integers within [0, 0xffffffff]`);
  }
  return Object.freeze({ min, max });
}

/**
 * IDs 0..INT_MAX (the default of `alloc`, and what iommufd allocates object IDs from).
 * @linux xa_limit_31b
 */
export const xaLimit31b: XaLimit = XA_LIMIT(0, 0x7fffffff);

/**
 * IDs 0..UINT_MAX.
 * @linux xa_limit_32b
 */
export const xaLimit32b: XaLimit = XA_LIMIT(0, U32_MAX);

/**
 * IDs 0..0xffff.
 * @linux xa_limit_16b
 */
export const xaLimit16b: XaLimit = XA_LIMIT(0, 0xffff);

/**
 * The array tracks free slots, so it can allocate IDs (and storing `undefined` reserves instead of erasing).
 * @linux XA_FLAGS_TRACK_FREE
 */
export const XA_FLAGS_TRACK_FREE = 4;
/**
 * Index 0 is never handed out by `alloc`.
 * @linux XA_FLAGS_ZERO_BUSY
 */
export const XA_FLAGS_ZERO_BUSY = 8;
/**
 * An allocating array whose IDs start at 0.
 * @linux XA_FLAGS_ALLOC
 */
export const XA_FLAGS_ALLOC = XA_FLAGS_TRACK_FREE;
/**
 * An allocating array whose IDs start at 1 (the default here, as in iommufd).
 * @linux XA_FLAGS_ALLOC1
 */
export const XA_FLAGS_ALLOC1 = XA_FLAGS_TRACK_FREE | XA_FLAGS_ZERO_BUSY;

// Occupancy index: a 32-ary radix tree over [0, 2^35) (7 levels) with, per inner node, a mask of full children
// (to find the lowest free ID) and a mask of present children (to find the next used ID). Empty subtrees are
// pruned, except the spine down to IDs [0, 32). IDs above U32_MAX are never allocated and are kept in `big` instead.
const LEAF_BITS = 5;
const TOP_LEVEL = 6;
const SPAN: readonly number[] = Array.from({ length: TOP_LEVEL + 1 }, (_, l) => 2 ** (LEAF_BITS * l));

interface Leaf {
  mask: number;
}
interface Inner {
  full: number;
  some: number;
  kids: (Node | undefined)[];
}
type Node = Leaf | Inner;

function newInner(): Inner {
  return { full: 0, some: 0, kids: new Array<Node | undefined>(32) };
}

function ctz(x: number): number {
  return 31 - Math.clz32(x & -x);
}

function digit(id: number, level: number): number {
  return (id >>> (LEAF_BITS * level)) & 31;
}

/** Lowest index >= min not set under `node` (which covers [base, base + 32 * SPAN[level])), or -1. */
function firstFree(node: Node | undefined, level: number, base: number, min: number): number {
  if (node === undefined) return min;
  if (level === 0) {
    const free = ~(node as Leaf).mask & (-1 << (min - base));
    return free === 0 ? -1 : base + ctz(free);
  }
  const inner = node as Inner;
  const span = SPAN[level]!;
  const d0 = Math.floor((min - base) / span);
  let cand = ~inner.full & (-1 << d0);
  while (cand !== 0) {
    const i = ctz(cand);
    const kidBase = base + i * span;
    const r = firstFree(inner.kids[i], level - 1, kidBase, i === d0 ? min : kidBase);
    if (r >= 0) return r;
    cand &= cand - 1;
  }
  return -1;
}

/** Lowest index >= min set under `node`, or -1. */
function firstUsed(node: Node | undefined, level: number, base: number, min: number): number {
  if (node === undefined) return -1;
  if (level === 0) {
    const used = (node as Leaf).mask & (-1 << (min - base));
    return used === 0 ? -1 : base + ctz(used);
  }
  const inner = node as Inner;
  const span = SPAN[level]!;
  const d0 = Math.floor((min - base) / span);
  let cand = inner.some & (-1 << d0);
  while (cand !== 0) {
    const i = ctz(cand);
    const kidBase = base + i * span;
    const r = firstUsed(inner.kids[i], level - 1, kidBase, i === d0 ? min : kidBase);
    if (r >= 0) return r;
    cand &= cand - 1;
  }
  return -1;
}

/** Scratch for the root-to-leaf walks of mark/unmark (synchronous, so one pair serves every array). */
const PATH: Inner[] = new Array<Inner>(TOP_LEVEL);
const DIGITS: number[] = new Array<number>(TOP_LEVEL).fill(0);

function isIndex(id: number): boolean {
  return Number.isSafeInteger(id) && id >= 0;
}

/**
 * A sparse array indexed by unsigned integers, with the allocation semantics iommufd relies on: `alloc` hands out
 * the lowest free ID in a range (from 1 with {@link XA_FLAGS_ALLOC1}, the default), {@link XA_ZERO_ENTRY} reserves a
 * slot invisibly, `cmpxchg` can compare against a reservation. Allocation asks the fault injector first (site
 * `xa_alloc` by default), so fail-nth sweeps cover it. Operations are synchronous (xa_lock is a spinlock).
 * `alloc` costs O(log32 n): an occupancy radix tree finds the lowest free ID without scanning.
 * @linux struct xarray (include/linux/xarray.h, lib/xarray.c)
 */
export class XArray<T extends object | number | string> {
  private readonly entries = new Map<number, T | XaZeroEntry>();
  private root: Inner = newInner();
  private readonly big = new Set<number>();

  /**
   * @param faults consulted on every `alloc` (ENOMEM when it says so).
   * @param site the fault-injection site name of `alloc`.
   * @param flags {@link XA_FLAGS_ALLOC1} (default), {@link XA_FLAGS_ALLOC}, or 0 for a plain array.
   * @linux xa_init_flags
   */
  constructor(
    private readonly faults?: FaultInjector,
    private readonly site = "xa_alloc",
    readonly flags: number = XA_FLAGS_ALLOC1,
  ) {}

  private get trackFree(): boolean {
    return (this.flags & XA_FLAGS_TRACK_FREE) !== 0;
  }

  /**
   * Store `entry` (or reserve the slot, for {@link XA_ZERO_ENTRY} or `undefined`) at the lowest free ID within
   * `limit` and return the ID. Throws EBUSY when the range is full, ENOMEM when the fault injector fails the
   * allocation, EINVAL on an array that does not track free slots.
   * @linux xa_alloc
   */
  alloc(entry: T | XaZeroEntry | undefined, limit: XaLimit = xaLimit31b): number {
    if (!this.trackFree) throw new KernelError("EINVAL", "xa_alloc on an array without XA_FLAGS_TRACK_FREE");
    const min = (this.flags & XA_FLAGS_ZERO_BUSY) !== 0 ? Math.max(limit.min, 1) : limit.min;
    const max = Math.min(limit.max, U32_MAX);
    const id = min > max ? -1 : firstFree(this.root, TOP_LEVEL, 0, min);
    if (id < 0 || id > max) throw new KernelError("EBUSY", `xa_alloc: no free id in [${limit.min}, ${limit.max}]`);
    this.faults?.check(this.site);
    this.put(id, entry ?? XA_ZERO_ENTRY);
    return id;
  }

  /**
   * Store `entry` at `id` and return the previous entry (`undefined` when it was absent or reserved). On an
   * allocating array, storing `undefined` reserves the slot; on a plain array it erases it.
   * @linux xa_store
   */
  store(id: number, entry: T | XaZeroEntry | undefined): T | undefined {
    checkIndex(id);
    const old = this.entries.get(id);
    if (entry === undefined && !this.trackFree) this.remove(id);
    else this.put(id, entry ?? XA_ZERO_ENTRY);
    return old === XA_ZERO_ENTRY ? undefined : old;
  }

  /**
   * Store `entry` (or a reservation) at `id` only if the slot is empty; EBUSY when it is used or reserved.
   * @linux xa_insert
   */
  insert(id: number, entry: T | XaZeroEntry | undefined): void {
    checkIndex(id);
    if (this.entries.has(id)) throw new KernelError("EBUSY", `xa_insert: index ${id} is in use`);
    this.put(id, entry ?? XA_ZERO_ENTRY);
  }

  /**
   * The entry at `id`, or `undefined` when the slot is empty or reserved.
   * @linux xa_load
   */
  load(id: number): T | undefined {
    const e = this.entries.get(id);
    return e === XA_ZERO_ENTRY ? undefined : e;
  }

  /**
   * Empty the slot at `id` (making it free for `alloc` again) and return what it held (`undefined` when it was
   * absent or reserved).
   * @linux xa_erase
   */
  erase(id: number): T | undefined {
    const old = this.entries.get(id);
    if (old !== undefined) this.remove(id);
    return old === XA_ZERO_ENTRY ? undefined : old;
  }

  /**
   * Replace the slot's content with `entry` if it is currently `old` (compared by identity; `old` may be
   * {@link XA_ZERO_ENTRY} to match a reservation, or `undefined` to match an empty slot). `entry` undefined
   * empties the slot. Returns the content found before, with a reservation reported as `undefined` as the kernel
   * does; use {@link cmpxchgRaw} to tell the two apart.
   * @linux xa_cmpxchg
   */
  cmpxchg(id: number, old: T | XaZeroEntry | undefined, entry: T | XaZeroEntry | undefined): T | undefined {
    const curr = this.cmpxchgRaw(id, old, entry);
    return curr === XA_ZERO_ENTRY ? undefined : curr;
  }

  /**
   * {@link cmpxchg} that returns the slot's previous content as stored, {@link XA_ZERO_ENTRY} included.
   * @linux __xa_cmpxchg_raw
   */
  cmpxchgRaw(
    id: number,
    old: T | XaZeroEntry | undefined,
    entry: T | XaZeroEntry | undefined,
  ): T | XaZeroEntry | undefined {
    checkIndex(id);
    const curr = this.entries.get(id);
    if (curr === old) {
      if (entry === undefined) this.remove(id);
      else this.put(id, entry);
    }
    return curr;
  }

  /**
   * Reserve an empty slot (no effect when it is already used).
   * @linux xa_reserve
   */
  reserve(id: number): void {
    this.cmpxchgRaw(id, undefined, XA_ZERO_ENTRY);
  }

  /**
   * Drop a reservation made by {@link reserve} (no effect when the slot holds an entry).
   * @linux xa_release
   */
  release(id: number): void {
    this.cmpxchgRaw(id, XA_ZERO_ENTRY, undefined);
  }

  /**
   * Call `fn` for each entry in index order, skipping reservations; returning `false` stops the walk. Safe
   * against stores and erases during the walk (each step looks up the next used index afresh).
   * @linux xa_for_each
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: the callback returns nothing, or false to stop the walk
  forEach(fn: (id: number, entry: T) => void | false): void {
    let next = 0;
    while (next <= U32_MAX) {
      const id = firstUsed(this.root, TOP_LEVEL, 0, next);
      if (id < 0 || id > U32_MAX) break;
      const e = this.entries.get(id);
      if (e !== undefined && e !== XA_ZERO_ENTRY && fn(id, e) === false) return;
      next = id + 1;
    }
    if (this.big.size === 0) return;
    for (const id of [...this.big].sort((a, b) => a - b)) {
      const e = this.entries.get(id);
      if (e !== undefined && e !== XA_ZERO_ENTRY && fn(id, e) === false) return;
    }
  }

  /**
   * The first entry at an index >= `start` (reservations skipped), as `[id, entry]`.
   * @linux xa_find
   */
  find(start = 0): [number, T] | undefined {
    let found: [number, T] | undefined;
    if (start <= U32_MAX) {
      let next = Math.max(0, start);
      while (next <= U32_MAX) {
        const id = firstUsed(this.root, TOP_LEVEL, 0, next);
        if (id < 0 || id > U32_MAX) break;
        const e = this.entries.get(id);
        if (e !== undefined && e !== XA_ZERO_ENTRY) return [id, e];
        next = id + 1;
      }
    }
    for (const id of this.big) {
      const e = this.entries.get(id);
      if (id >= start && e !== undefined && e !== XA_ZERO_ENTRY && (found === undefined || id < found[0])) {
        found = [id, e];
      }
    }
    return found;
  }

  /**
   * Whether no slot is used; a reserved slot counts as used.
   * @linux xa_empty
   */
  get empty(): boolean {
    return this.entries.size === 0;
  }

  /** Number of used slots, reservations included. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Empty the array. The entries themselves are not freed (their owners do that).
   * @linux xa_destroy
   */
  destroy(): void {
    this.entries.clear();
    this.big.clear();
    this.root = newInner();
  }

  private put(id: number, e: T | XaZeroEntry): void {
    if (!this.entries.has(id)) {
      if (id > U32_MAX) this.big.add(id);
      else this.mark(id);
    }
    this.entries.set(id, e);
  }

  private remove(id: number): void {
    if (!this.entries.delete(id)) return;
    if (id > U32_MAX) this.big.delete(id);
    else this.unmark(id);
  }

  private mark(id: number): void {
    const path = PATH;
    const digits = DIGITS;
    let depth = 0;
    let node: Inner = this.root;
    for (let level = TOP_LEVEL; level >= 1; level--) {
      const d = digit(id, level);
      path[depth] = node;
      digits[depth++] = d;
      let kid = node.kids[d];
      if (kid === undefined) {
        kid = level === 1 ? { mask: 0 } : newInner();
        node.kids[d] = kid;
        node.some |= 1 << d;
      }
      if (level === 1) {
        const leaf = kid as Leaf;
        leaf.mask |= 1 << (id & 31);
        if (leaf.mask !== -1) return;
      } else {
        node = kid as Inner;
      }
    }
    // The leaf filled up: mark it full in its parent, and each ancestor that fills up in turn.
    for (let i = depth - 1; i >= 0; i--) {
      const p = path[i]!;
      p.full |= 1 << digits[i]!;
      if (p.full !== -1) return;
    }
  }

  private unmark(id: number): void {
    const path = PATH;
    const digits = DIGITS;
    let depth = 0;
    let node: Inner = this.root;
    let leaf: Leaf | undefined;
    for (let level = TOP_LEVEL; level >= 1; level--) {
      const d = digit(id, level);
      path[depth] = node;
      digits[depth++] = d;
      const kid = node.kids[d];
      if (kid === undefined) return;
      if (level === 1) leaf = kid as Leaf;
      else node = kid as Inner;
    }
    if (leaf === undefined) return;
    leaf.mask &= ~(1 << (id & 31));
    // The spine down to IDs [0, 32) stays: IDs are handed out from the lowest, so an object churned alone
    // would otherwise rebuild it on every allocation.
    let emptied = leaf.mask === 0 && id >= 32;
    for (let i = depth - 1; i >= 0; i--) {
      const p = path[i]!;
      const bit = 1 << digits[i]!;
      p.full &= ~bit;
      if (emptied) {
        p.kids[digits[i]!] = undefined;
        p.some &= ~bit;
        emptied = p.some === 0 && i > 0;
      }
    }
  }
}

function checkIndex(id: number): void {
  if (!isIndex(id)) throw new RangeError(`xarray index ${id} is not an unsigned integer`);
}
