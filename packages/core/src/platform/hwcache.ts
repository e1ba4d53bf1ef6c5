/**
 * Building blocks of hardware-model caches (TLBs, configuration caches, paging-structure caches): set-associative
 * typed-array tables indexed by a small integer hash of the key, round-robin or LRU replacement inside a set, and
 * the strict-mode "stale hit" report every model files the same way. No `Map`, no object per entry, no allocation
 * on lookup or fill: a model keeps its entry fields in its own typed arrays and asks {@link CacheSetIndex} where
 * an entry lives and which one to evict.
 *
 * The one rule: an entry is dropped only by the invalidation the architecture defines for it (or by replacement);
 * the strict mode re-checks every hit against memory and reports an entry that outlived a table change.
 * @linux none: the IMPLEMENTATION DEFINED caches of IOMMU hardware (SMMU TLB/config cache, VT-d IOTLB/context/PASID
 * caches, AMD IOTLB/DTE cache) that the drivers' invalidation commands target
 */
import type { Diagnostics } from "../kernel/diagnostics.js";

/**
 * Replacement policy inside a set.
 * @linux none: a property of the implementation (IOMMU caches are IMPLEMENTATION DEFINED)
 */
export type Replacement = "round-robin" | "lru";

/**
 * Geometry of one cache.
 * @linux none: IMPLEMENTATION DEFINED cache geometry
 */
export interface CacheGeometry {
  /** Total entries (rounded up to a power of two, at least `ways`). */
  entries: number;
  /** Associativity (rounded down to a power of two, at most `entries`). */
  ways: number;
  replacement: Replacement;
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p <<= 1;
  return p;
}

function pow2AtMost(n: number): number {
  let p = 1;
  while (p * 2 <= n) p <<= 1;
  return p;
}

/**
 * Set selection and victim choice of a set-associative cache: entry `e` of a cache lives in the set
 * `first(hash)` .. `first(hash) + ways - 1`; `pick` chooses the entry to fill.
 * @linux none: the set-associative organisation of an IOMMU TLB
 */
export class CacheSetIndex {
  readonly entries: number;
  readonly ways: number;
  readonly setMask: number;
  readonly lru: boolean;
  /** Per entry: last use (LRU). */
  readonly stamp: Float64Array;
  /** Per set: next way to replace (round-robin). */
  readonly victim: Uint8Array;
  /** log2 of `ways` (a power of two): set number = first entry >> wayShift. */
  private readonly wayShift: number;
  private clock = 0;

  constructor(g: CacheGeometry) {
    const entries = pow2AtLeast(Math.max(1, g.entries));
    const ways = Math.min(entries, pow2AtMost(Math.max(1, g.ways)));
    this.entries = entries;
    this.ways = ways;
    this.setMask = entries / ways - 1;
    this.lru = g.replacement === "lru";
    this.stamp = new Float64Array(entries);
    this.victim = new Uint8Array(entries / ways);
    this.wayShift = Math.round(Math.log2(ways));
  }

  /** First entry of the set of `hash`. */
  first(hash: number): number {
    return (hash & this.setMask) * this.ways;
  }

  /** Record a use of entry `e` (LRU). */
  touch(e: number): void {
    if (this.lru) this.stamp[e] = ++this.clock;
  }

  /**
   * Claim the entry for the two-part key (k1, k2) in the set starting at `s` (a configuration-cache fill): the
   * entry already holding the key if any, else the one {@link CacheSetIndex.pick} chooses (free entries have
   * `key1 === -1`). Writes both keys and records the use; the caller fills the rest of the entry. Used on a miss
   * only, never on a lookup.
   * @linux none: hardware model helper
   */
  claim2(s: number, key1: Int32Array, k1: number, key2: Int32Array, k2: number): number {
    let e = -1;
    for (let w = 0; w < this.ways; w++) if (key1[s + w] === k1 && key2[s + w] === k2) e = s + w;
    if (e < 0) e = this.pick(s, key1);
    key1[e] = k1;
    key2[e] = k2;
    this.touch(e);
    return e;
  }

  /**
   * Valid entries of a cache whose entry `e` is free when its key `keys[e * stride]` is negative (-1): for a
   * cache's occupancy report, never on a lookup path.
   * @linux none: hardware model helper
   */
  countValid(keys: ArrayLike<number>, stride = 1): number {
    let n = 0;
    for (let e = 0; e < this.entries; e++) if (keys[e * stride]! >= 0) n++;
    return n;
  }

  /** The entry to fill in the set starting at `s`, preferring a free one (`keys[e] === -1`). */
  pick(s: number, keys: Float64Array | Int32Array): number {
    for (let w = 0; w < this.ways; w++) if (keys[s + w] === -1) return s + w;
    return this.evict(s);
  }

  /**
   * {@link pick} for a cache packing `stride` words per entry in one array, entry `e` free when
   * `keys[e * stride] === -1` (no copy of the keys into a per-entry array first).
   */
  pickStrided(s: number, keys: Float64Array | Int32Array, stride: number): number {
    for (let w = 0; w < this.ways; w++) if (keys[(s + w) * stride] === -1) return s + w;
    return this.evict(s);
  }

  /**
   * The entry to replace in the full set starting at `s`: least recently used, or round-robin. Called directly by a
   * cache that knows it has no free entry (it counts them), to skip {@link pickStrided}'s scan on every fill.
   */
  evict(s: number): number {
    if (this.lru) {
      let best = s;
      for (let w = 1; w < this.ways; w++) if (this.stamp[s + w]! < this.stamp[best]!) best = s + w;
      return best;
    }
    // Shifts and a mask, not a division and a remainder: ways is a power of two, and this runs on every fill.
    const set = s >>> this.wayShift;
    const v = this.victim[set]!;
    this.victim[set] = (v + 1) & (this.ways - 1);
    return s + v;
  }
}

/**
 * A 32-bit mix of two integers, for set selection (keys above 2^32 fold their high part into `b` by the caller).
 * @linux none: the index hash of a set-associative cache
 */
export function cacheHash(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35);
  h ^= h >>> 15;
  return Math.imul(h, 0x27d4eb2d) ^ (h >>> 13);
}

/**
 * The strict stale-cache diagnostic of a hardware model: a cache hit that no longer matches the tables in memory
 * (an invalidation the driver forgot) becomes a warning in the machine's diagnostics naming the unit and the key,
 * counted in `count`. Each model reports each entry once (it keeps its own "reported" flag per entry).
 * @linux none: the simulation's check of the invalidation rules the IOMMU architectures state
 */
export class StaleCacheReporter {
  /** Stale hits reported so far. */
  count = 0;

  constructor(
    private readonly diag: Diagnostics,
    /** The unit's name, prefixed to every message. */
    readonly unit: string,
  ) {}

  /**
   * Report one stale entry: `what` names the cache ("TLB entry", "context-cache entry"), `culprit` the key, and
   * `detail` what the cache says against what memory says, with the invalidation that was probably missing.
   */
  report(what: string, culprit: string, detail: string): void {
    this.count++;
    this.diag.report("warning", `${this.unit}: stale ${what}: ${detail}`, { culprit: `${this.unit} ${culprit}` });
  }
}
