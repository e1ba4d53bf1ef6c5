/**
 * The SMMU's caches, as typed-array tables: set-associative, indexed by a small integer hash of the key, with
 * round-robin or LRU replacement inside a set. No `Map`, no objects per entry, no allocation on lookup or fill.
 *
 * - {@link DescCache}: the configuration cache (STEs keyed by StreamID; CDs keyed by StreamID and SubstreamID),
 *   holding the raw 64-byte descriptor (for strict-mode comparison) and a few decoded words.
 * - {@link SmmuTlb}: translations keyed by (kind, VMID/ASID tag, input page), with the leaf's range and level so
 *   range and level-hinted invalidations match what the architecture says.
 * - {@link WalkCache}: pointers to last-level tables keyed by (kind, tag, input region); a nested stream's entry
 *   holds the table's IPA and, once a walk fetched from it, its PA (a combined stage-1/stage-2 entry).
 * - {@link S2FetchCache}: stage-2 translations of nested stage-1 table fetches, keyed by (VMID, IPA granule).
 *
 * Entries are dropped only by the invalidation commands that cover them (and by replacement).
 * The set-associative organisation, hash and replacement are core's (platform/hwcache.ts), shared with the other
 * vendors' models.
 * @linux the SMMU configuration and TLB caches that CMDQ_OP_CFGI_* and CMDQ_OP_TLBI_* invalidate
 */
import { type CacheGeometry, cacheHash, CacheSetIndex as SetIndex } from "@iommu-sim/core";

export type { CacheGeometry, Replacement } from "@iommu-sim/core";

const mix = cacheHash;
/** Multiplier of the TLB's and walk cache's set hash (odd, well mixed in its high and low bits). */
const TLB_HASH = 0x45d9f3b;

/** 32-bit words kept per descriptor (64 bytes). */
export const DESC_WORDS = 16;
/** Decoded words kept per descriptor. */
export const DESC_INFO = 4;

/**
 * A configuration cache of 64-byte descriptors keyed by (key1, key2): STEs by (StreamID, 0), CDs by (StreamID,
 * SubstreamID).
 * @linux the STE/CD configuration cache invalidated by CMDQ_OP_CFGI_STE / _STE_RANGE / _CD / _CD_ALL
 */
export class DescCache {
  private readonly ix: SetIndex;
  /** Key 1 of each entry; -1 = invalid. */
  readonly key1: Int32Array;
  readonly key2: Int32Array;
  /** Raw descriptor words, DESC_WORDS per entry. */
  readonly words: Uint32Array;
  /** Decoded values, DESC_INFO per entry (meaning chosen by the owner). */
  readonly info: Int32Array;
  /** Float values per entry (a decoded address), 2 per entry. */
  readonly addr: Float64Array;
  /** Strict mode: a stale use of this entry was already reported. */
  readonly reported: Uint8Array;
  /**
   * A generation count, `gen[0]`, bumped by every fill and every invalidation: a result derived from entries of
   * this cache (the model's per-stream fast path) is still valid while it has not moved. Caches built with the same
   * array share one count.
   */
  readonly gen: Float64Array;

  constructor(g: CacheGeometry, gen: Float64Array = new Float64Array(1)) {
    this.gen = gen;
    this.ix = new SetIndex(g);
    const n = this.ix.entries;
    this.key1 = new Int32Array(n).fill(-1);
    this.key2 = new Int32Array(n);
    this.words = new Uint32Array(n * DESC_WORDS);
    this.info = new Int32Array(n * DESC_INFO);
    this.addr = new Float64Array(n * 2);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The entry caching (k1, k2), or -1. @linux a configuration cache lookup */
  lookup(k1: number, k2: number): number {
    const ix = this.ix;
    const s = ix.first(mix(k1, k2));
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (this.key1[e] === k1 && this.key2[e] === k2) {
        ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Record a use of entry `e` found without {@link lookup} (LRU replacement). @linux a configuration cache hit */
  touch(e: number): void {
    this.ix.touch(e);
  }

  /** Claim an entry for (k1, k2) (replacing one in its set); the caller fills words/info. @linux a configuration cache fill */
  fill(k1: number, k2: number): number {
    this.gen[0]!++;
    const ix = this.ix;
    const e = ix.claim2(ix.first(mix(k1, k2)), this.key1, k1, this.key2, k2);
    this.reported[e] = 0;
    return e;
  }

  /** Drop entries with key1 in [lo, hi] (and key2 === k2 unless k2 is -1). Returns how many. @linux CFGI_STE_RANGE / CFGI_CD */
  invalidate(lo: number, hi: number, k2 = -1): number {
    this.gen[0]!++;
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      const k = this.key1[e]!;
      if (k >= 0 && k >= lo && k <= hi && (k2 === -1 || this.key2[e] === k2)) {
        this.key1[e] = -1;
        n++;
      }
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.key1);
  }
}

/**
 * What a TLB or walk-cache entry translates, for tagging and for invalidation scope.
 * @linux the translation regimes the TLBI commands name (NH = non-secure EL1 stage 1, S2, combined, EL2)
 */
export const TLB_KIND = {
  /** Stage 1 only (NS-EL1): tagged by VMID and ASID. */
  S1: 1,
  /** Stage 2 only: tagged by VMID. */
  S2: 2,
  /** Combined stage 1 + stage 2: tagged by VMID and ASID. */
  NESTED: 3,
  /** EL2 (STRW = EL2) stage 1: tagged by ASID. */
  EL2: 4,
} as const;

/** Kind bit-masks for invalidation scopes. */
export const KIND_MASK = {
  NH: (1 << TLB_KIND.S1) | (1 << TLB_KIND.NESTED),
  S2: 1 << TLB_KIND.S2,
  S12: (1 << TLB_KIND.S1) | (1 << TLB_KIND.NESTED) | (1 << TLB_KIND.S2),
  EL2: 1 << TLB_KIND.EL2,
} as const;

/**
 * An invalidation scope: which kinds, VMID (-1 any), ASID (-1 any), input range [lo, hi) (hi = Infinity: all),
 * and the leaf level hint (TTL; -1 none). Reused by the command processor (one object, no allocation per command).
 * @linux the operands of a CMDQ_OP_TLBI_* command (struct arm_smmu_cmdq_ent.tlbi)
 */
export class InvScope {
  kinds = 0;
  vmid = -1;
  asid = -1;
  lo = 0;
  hi = Number.POSITIVE_INFINITY;
  ttl = -1;
  /** Also drop walk-cache entries (LEAF = 0). */
  walk = true;

  /** Reset to "everything of `kinds`". */
  all(kinds: number): this {
    this.kinds = kinds;
    this.vmid = -1;
    this.asid = -1;
    this.lo = 0;
    this.hi = Number.POSITIVE_INFINITY;
    this.ttl = -1;
    this.walk = true;
    return this;
  }
}

/** Doubles of a TLB entry in {@link SmmuTlb.f} (4 per entry): output address of the page's start, contiguous span, leaf's input base. @linux none: the model's TLB entry layout */
export const TLB_F64 = { PA: 0, SPAN: 1, LEAF_BASE: 2 } as const;
/** 32-bit words of a TLB entry in {@link SmmuTlb.i} (8 per entry): tag, kind, PERM bits, page log2, leaf level, leaf log2, StreamID, SubstreamID. @linux none: the model's TLB entry layout */
export const TLB_I32 = { TAG: 0, KIND: 1, PERM: 2, PAGE_LG2: 3, LEVEL: 4, LEAF_LG2: 5, SID: 6, SSID: 7 } as const;
const F_LEAF_BASE = TLB_F64.LEAF_BASE;
const I_KIND = TLB_I32.KIND;
const I_LEVEL = TLB_I32.LEVEL;
const I_LEAF_LG2 = TLB_I32.LEAF_LG2;

/**
 * The part of a TLB set hash that depends on the address space only (kind and tag): a page number below 2^32 is in
 * the set `((seed ^ vpn) & setMask) << wayShift` (see SmmuTlb), so a caller that translates many pages of one address
 * space computes it once.
 * @linux none: the model's TLB set hash
 */
export function tlbSeed(kind: number, tag: number): number {
  return Math.imul((tag ^ (kind << 28)) + 1, TLB_HASH);
}

/**
 * The TLB: translations of one input page each, with the leaf they came from. Packed so a lookup and a fill touch
 * few cache lines: the page numbers alone in {@link vpn} (the ways of a set side by side: a probe that misses reads
 * one line), the rest of entry `e` in `f[e*4 ..]` ({@link TLB_F64}) and `i[e*8 ..]` ({@link TLB_I32}).
 * @linux the SMMU TLB (what arm_smmu_tlb_inv_range_asid / _domain and arm_smmu_tlb_inv_context invalidate)
 */
export class SmmuTlb {
  private readonly ix: SetIndex;
  /** Input page number (input address >> pageLg2); -1 = invalid. */
  readonly vpn: Float64Array;
  /** Doubles per entry: see {@link TLB_F64}. */
  readonly f: Float64Array;
  /** 32-bit words per entry: see {@link TLB_I32} (tag = VMID << 16 | ASID). */
  readonly i: Int32Array;
  /** Strict mode: a stale use was already reported. */
  readonly reported: Uint8Array;
  // The set geometry as plain fields, for the lookup on every translation (read by the model's inline probe too).
  readonly ways: number;
  readonly wayShift: number;
  readonly setMask: number;
  readonly lru: boolean;

  constructor(g: CacheGeometry) {
    this.ix = new SetIndex(g);
    const n = this.ix.entries;
    this.ways = this.ix.ways;
    this.wayShift = Math.log2(this.ix.ways);
    this.setMask = this.ix.setMask;
    this.lru = this.ix.lru;
    this.vpn = new Float64Array(n).fill(-1);
    this.f = new Float64Array(n * 4);
    this.i = new Int32Array(n * 8);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /**
   * First entry of the set of (kind, tag, vpn): the page number's low and high words XORed with a multiplicative
   * hash of the tag, so consecutive pages of one address space fill consecutive sets (one multiply, no mixing
   * rounds: this is on every translation).
   */
  private setOf(kind: number, tag: number, vpn: number): number {
    const hi = vpn < 4294967296 ? 0 : (vpn / 4294967296) | 0;
    const h = Math.imul((tag ^ (kind << 28)) + 1, TLB_HASH) ^ vpn ^ hi;
    return (h & this.setMask) << this.wayShift;
  }

  /** Record a use of entry `e` found without {@link lookup} (LRU replacement). @linux a TLB hit */
  touch(e: number): void {
    this.ix.touch(e);
  }

  /** The entry for (kind, tag, vpn), or -1. @linux a TLB lookup */
  lookup(kind: number, tag: number, vpn: number): number {
    const s = this.setOf(kind, tag, vpn);
    const end = s + this.ways;
    const v = this.vpn;
    const i = this.i;
    for (let e = s; e < end; e++) {
      if (v[e] === vpn && i[e << 3] === tag && i[(e << 3) + I_KIND] === kind) {
        if (this.lru) this.ix.touch(e);
        return e;
      }
    }
    this.missSet = s;
    this.missKind = kind;
    this.missTag = tag;
    this.missVpn = vpn;
    return -1;
  }

  /**
   * The set and key of the last {@link lookup} that missed (not the model's inlined hit probe's: the hit path stays
   * as small as it is); -1: none (reset by every fill). Only a fill creates an entry, so while it is set that entry
   * is known absent and {@link fill} skips its hash and duplicate scan.
   */
  private missSet = -1;
  private missKind = 0;
  private missTag = 0;
  private missVpn = 0;

  /**
   * {@link fill} for a page number below 2^32, in one pass over the set (the key's entry if it is there, else the
   * first free way, else the victim) and without calls for round-robin replacement: the same entry {@link fill}
   * claims (its victim choice written out as core's CacheSetIndex makes it; the SMMU's nested short-path property
   * test compares the caches after both). @linux a TLB fill after a walk
   */
  fillLowVpn(kind: number, tag: number, vpn: number): number {
    const s = ((Math.imul((tag ^ (kind << 28)) + 1, TLB_HASH) ^ vpn) & this.setMask) << this.wayShift;
    const end = s + this.ways;
    const v = this.vpn;
    const i = this.i;
    let e = -1;
    let free = -1;
    for (let x = s; x < end; x++) {
      const y = v[x];
      if (y === vpn && i[x << 3] === tag && i[(x << 3) + I_KIND] === kind) e = x;
      else if (y === -1 && free < 0) free = x;
    }
    if (e < 0) e = free >= 0 ? free : this.ix.evict(s);
    this.missSet = -1;
    v[e] = vpn;
    i[e << 3] = tag;
    i[(e << 3) + I_KIND] = kind;
    this.reported[e] = 0;
    if (this.lru) this.ix.touch(e);
    return e;
  }

  /** Claim the entry for (kind, tag, vpn); the caller fills the rest. @linux a TLB fill after a walk */
  fill(kind: number, tag: number, vpn: number): number {
    const ix = this.ix;
    const v = this.vpn;
    const i = this.i;
    let e = -1;
    if (this.missSet >= 0 && this.missVpn === vpn && this.missTag === tag && this.missKind === kind) {
      e = ix.pick(this.missSet, v);
    } else {
      const s = this.setOf(kind, tag, vpn);
      for (let w = 0; w < ix.ways; w++) {
        const x = s + w;
        if (v[x] === vpn && i[x << 3] === tag && i[(x << 3) + I_KIND] === kind) e = x;
      }
      if (e < 0) e = ix.pick(s, v);
    }
    this.missSet = -1;
    v[e] = vpn;
    i[e << 3] = tag;
    i[(e << 3) + I_KIND] = kind;
    this.reported[e] = 0;
    ix.touch(e);
    return e;
  }

  /** Drop every entry the scope covers; returns how many. @linux CMDQ_OP_TLBI_* */
  invalidate(sc: InvScope): number {
    let n = 0;
    const i = this.i;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.vpn[e] === -1) continue;
      const b = e << 3;
      if ((sc.kinds & (1 << i[b + I_KIND]!)) === 0) continue;
      const t = i[b]!;
      if (sc.vmid >= 0 && t >>> 16 !== sc.vmid) continue;
      if (sc.asid >= 0 && (t & 0xffff) !== sc.asid) continue;
      if (sc.hi !== Number.POSITIVE_INFINITY) {
        const base = this.f[(e << 2) + F_LEAF_BASE]!;
        if (!(base < sc.hi && sc.lo < base + 2 ** i[b + I_LEAF_LG2]!)) continue;
        if (sc.ttl >= 0 && i[b + I_LEVEL] !== sc.ttl) continue;
      }
      this.vpn[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.vpn);
  }
}

/**
 * The walk cache: for an input region covered by one last-level table, that table's address, so a TLB miss reads
 * one descriptor instead of walking from the root.
 *
 * A nested (kind NESTED) entry's table address is an IPA; the entry may also hold the table's PA, the stage-2
 * translation of that IPA (read permission granted) taken when a walk fetched from the table, so that a miss reads
 * the stage-1 descriptor without a stage-2 lookup: an entry combining stage-1 and stage-2 information, as the
 * architecture allows walk caches to hold. The stage-1 part goes with the entry (TLBI_NH_* with LEAF = 0,
 * TLBI_S12_VMALL, TLBI_NSNH_ALL); the PA also goes with every command that drops the table-fetch cache's stage-2
 * entries (TLBI_S2_IPA over the stage-2 leaf that translated the table, of the entry's VMID, whatever its LEAF bit),
 * more than Arm requires for combined entries (TLBI IPAS2 "is not required to apply to caching structures that
 * combine stage 1 and stage 2 translation table entries"; Linux follows TLBI_S2_IPA of a nesting parent with
 * TLBI_NH_ALL), so a stage-2 change is seen exactly when the table-fetch cache would see it.
 * @linux the SMMU's intermediate (walk) cache, invalidated by TLBI with LEAF = 0 (what Linux's tlb_flush_walk
 * issues when it frees tables), and for nesting parents by the TLBI_S2_IPA + TLBI_NH_ALL of
 * arm_smmu_tlb_inv_range_domain
 */
export class WalkCache {
  private readonly ix: SetIndex;
  /** Input region number (input address >> regionLg2); -1 = invalid. */
  readonly region: Float64Array;
  readonly kind: Int8Array;
  readonly tag: Int32Array;
  readonly regionLg2: Int8Array;
  /** The table's address and level. */
  readonly table: Float64Array;
  readonly level: Int8Array;
  /** Kind NESTED: the table's PA (-1: not held), and log2 of the stage-2 leaf it came from (its TLBI range). */
  readonly tablePa: Float64Array;
  readonly tableS2Lg2: Int8Array;
  /** Strict mode: a stale use of the entry's table PA was already reported. */
  readonly reported: Uint8Array;
  // The set geometry as plain fields, for the lookups of every walk.
  private readonly ways: number;
  private readonly wayShift: number;
  private readonly setMask: number;
  private readonly lru: boolean;

  constructor(g: CacheGeometry) {
    this.ix = new SetIndex(g);
    const n = this.ix.entries;
    this.ways = this.ix.ways;
    this.wayShift = Math.log2(this.ix.ways);
    this.setMask = this.ix.setMask;
    this.lru = this.ix.lru;
    this.region = new Float64Array(n).fill(-1);
    this.kind = new Int8Array(n);
    this.tag = new Int32Array(n);
    this.regionLg2 = new Int8Array(n);
    this.table = new Float64Array(n);
    this.level = new Int8Array(n);
    this.tablePa = new Float64Array(n).fill(-1);
    this.tableS2Lg2 = new Int8Array(n);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The entry for (kind, tag, region), or -1. @linux a walk-cache lookup */
  lookup(kind: number, tag: number, region: number): number {
    const s = ((Math.imul((tag ^ (kind << 28)) + 1, TLB_HASH) ^ region) & this.setMask) << this.wayShift;
    const end = s + this.ways;
    const r = this.region;
    for (let e = s; e < end; e++) {
      if (r[e] === region && this.tag[e] === tag && this.kind[e] === kind) {
        if (this.lru) this.ix.touch(e);
        return e;
      }
    }
    this.missSet = s;
    this.missKind = kind;
    this.missTag = tag;
    this.missRegion = region;
    return -1;
  }

  /** The set and key of the last lookup that missed (see {@link SmmuTlb}'s); -1: none. */
  private missSet = -1;
  private missKind = 0;
  private missTag = 0;
  private missRegion = 0;

  /**
   * Cache the table of (kind, tag, region); for kind NESTED, with its PA when `tablePa` >= 0 (see
   * {@link setTablePa}). @linux a walk-cache fill
   */
  insert(
    kind: number,
    tag: number,
    region: number,
    regionLg2: number,
    table: number,
    level: number,
    tablePa = -1,
    tableS2Lg2 = 0,
  ): void {
    const ix = this.ix;
    let e = -1;
    if (this.missSet >= 0 && this.missRegion === region && this.missTag === tag && this.missKind === kind) {
      e = ix.pick(this.missSet, this.region);
    } else {
      const s = ix.first(Math.imul((tag ^ (kind << 28)) + 1, TLB_HASH) ^ region);
      for (let w = 0; w < ix.ways; w++) {
        const x = s + w;
        if (this.region[x] === region && this.tag[x] === tag && this.kind[x] === kind) e = x;
      }
      if (e < 0) e = ix.pick(s, this.region);
    }
    this.missSet = -1;
    this.region[e] = region;
    this.kind[e] = kind;
    this.tag[e] = tag;
    this.regionLg2[e] = regionLg2;
    this.table[e] = table;
    this.level[e] = level;
    this.setTablePa(e, tablePa, tableS2Lg2);
    ix.touch(e);
  }

  /**
   * Entry `e` (kind NESTED) now holds its table's PA `pa` (-1: none), from a stage-2 leaf of `s2Lg2`.
   * @linux a walk-cache fill of the stage-2 part of a combined entry
   */
  setTablePa(e: number, pa: number, s2Lg2: number): void {
    this.tablePa[e] = pa;
    this.tableS2Lg2[e] = s2Lg2;
    this.reported[e] = 0;
  }

  /**
   * Drop every entry the scope covers (when `sc.walk`), and the table PA of every nested entry whose stage-2 leaf a
   * stage-2 scope covers (whatever `sc.walk` says); returns how many entries were dropped.
   * @linux CMDQ_OP_TLBI_* with LEAF = 0; CMDQ_OP_TLBI_S2_IPA for the stage-2 part of combined entries
   */
  invalidate(sc: InvScope): number {
    const s2 = (sc.kinds & (1 << TLB_KIND.S2)) !== 0;
    if (!sc.walk && !s2) return 0;
    const all = sc.hi === Number.POSITIVE_INFINITY;
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.region[e] === -1) continue;
      const t = this.tag[e]!;
      if (sc.vmid >= 0 && t >>> 16 !== sc.vmid) continue;
      const kind = this.kind[e]!;
      if (sc.walk && (sc.kinds & (1 << kind)) !== 0 && (sc.asid < 0 || (t & 0xffff) === sc.asid)) {
        const size = 2 ** this.regionLg2[e]!;
        const base = this.region[e]! * size;
        if (all || (base < sc.hi && sc.lo < base + size)) {
          this.region[e] = -1;
          n++;
          continue;
        }
      }
      if (s2 && kind === TLB_KIND.NESTED && this.tablePa[e]! >= 0) {
        const size = 2 ** this.tableS2Lg2[e]!;
        const base = this.table[e]! - (this.table[e]! % size);
        if (all || (base < sc.hi && sc.lo < base + size)) this.tablePa[e] = -1;
      }
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.region);
  }

  /**
   * First entry of the set of (kind, tag, region), for {@link find} and {@link insertAbsent}.
   * @linux none: the walk cache's set index
   */
  setOf(kind: number, tag: number, region: number): number {
    return ((Math.imul((tag ^ (kind << 28)) + 1, TLB_HASH) ^ region) & this.setMask) << this.wayShift;
  }

  /**
   * {@link lookup} in the set `s` (from {@link setOf}) without its side effects (no use recorded, no miss
   * remembered): for a short path that may give up and leave the lookup to the full path. Record the use of a hit
   * it keeps with {@link hit}.
   * @linux a walk-cache lookup
   */
  find(s: number, kind: number, tag: number, region: number): number {
    const end = s + this.ways;
    const r = this.region;
    for (let e = s; e < end; e++) {
      if (r[e] === region && this.tag[e] === tag && this.kind[e] === kind) return e;
    }
    return -1;
  }

  /** Record a use of entry `e` found by {@link find} (what {@link lookup} records on a hit). @linux a walk-cache hit */
  hit(e: number): void {
    if (this.lru) this.ix.touch(e);
  }

  /**
   * {@link insert} (without a table PA) of a key known absent from its set `s` (a {@link find} there missed and
   * nothing was inserted since): no duplicate scan. @linux a walk-cache fill
   */
  insertAbsent(
    s: number,
    kind: number,
    tag: number,
    region: number,
    regionLg2: number,
    table: number,
    level: number,
  ): void {
    // CacheSetIndex.pick's choice (the first free way, else evict's victim), with the scan over this cache's own
    // Float64Array (pick's keys parameter sees every cache's key array type: its loads are polymorphic).
    const r = this.region;
    const end = s + this.ways;
    let e = s;
    while (e < end && r[e] !== -1) e++;
    if (e === end) e = this.ix.evict(s);
    this.missSet = -1;
    r[e] = region;
    this.kind[e] = kind;
    this.tag[e] = tag;
    this.regionLg2[e] = regionLg2;
    this.table[e] = table;
    this.level[e] = level;
    this.tablePa[e] = -1;
    this.tableS2Lg2[e] = 0;
    this.reported[e] = 0;
    if (this.lru) this.ix.touch(e);
  }
}

/**
 * Stage-2 translations of stage-1 table fetches in nested configurations: for a VMID and the IPA granule a stage-1
 * table (or descriptor) lives in, the PA of that granule (stage 2 granted read access when it was filled). A nested
 * walk that hits reads the stage-1 descriptor without walking stage 2 again. Tagged by VMID only, like every
 * stage-2 entry; dropped by the commands that invalidate stage-2 translations (TLBI_S2_IPA of an IPA in the entry's
 * leaf, TLBI_S12_VMALL of its VMID, TLBI_NSNH_ALL), whatever their LEAF bit says: the entry caches a stage-2 leaf.
 * @linux the stage-2 entries an SMMU may cache for its stage-1 table walks (S2PTW), which arm-smmu-v3.c invalidates
 * with CMDQ_OP_TLBI_S2_IPA and, for nesting parents, CMDQ_OP_TLBI_S12_VMALL (arm_smmu_tlb_inv_range_domain)
 */
export class S2FetchCache {
  private readonly ix: SetIndex;
  /** IPA granule number (IPA >> granLg2); -1 = invalid. */
  readonly ipa: Float64Array;
  readonly vmid: Int32Array;
  /** log2 of the stage-2 granule the entry is keyed by, and of the stage-2 leaf it came from (its TLBI range). */
  readonly granLg2: Int8Array;
  readonly leafLg2: Int8Array;
  /** PA of the granule's first byte. */
  readonly pa: Float64Array;
  /** Strict mode: a stale use of this entry was already reported. */
  readonly reported: Uint8Array;
  /** Strict mode: the walker re-checks every hit against the stage-2 tables. */
  strict = false;
  /**
   * Strict mode: the last hit found stale (-1: none), for its owner to report and reset: the IPA fetched, the PA
   * the entry gave, and what stage 2 gives now (a PA, or minus a fault code).
   */
  staleEntry = -1;
  staleIpa = 0;
  stalePa = 0;
  staleNow = 0;

  constructor(g: CacheGeometry) {
    this.ix = new SetIndex(g);
    const n = this.ix.entries;
    this.ipa = new Float64Array(n).fill(-1);
    this.vmid = new Int32Array(n);
    this.granLg2 = new Int8Array(n);
    this.leafLg2 = new Int8Array(n);
    this.pa = new Float64Array(n);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The entry for (VMID, IPA granule number) with granule `granLg2`, or -1. @linux an S2PTW cache lookup */
  lookup(vmid: number, gpn: number, granLg2: number): number {
    const ix = this.ix;
    const s = ix.first(Math.imul(vmid + 1, TLB_HASH) ^ gpn);
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (this.ipa[e] === gpn && this.vmid[e] === vmid && this.granLg2[e] === granLg2) {
        ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Cache granule `gpn` of VMID `vmid` at `pa`, from a stage-2 leaf of `leafLg2`. @linux an S2PTW cache fill */
  insert(vmid: number, gpn: number, granLg2: number, leafLg2: number, pa: number): void {
    const ix = this.ix;
    const s = ix.first(Math.imul(vmid + 1, TLB_HASH) ^ gpn);
    const e = ix.pick(s, this.ipa);
    this.ipa[e] = gpn;
    this.vmid[e] = vmid;
    this.granLg2[e] = granLg2;
    this.leafLg2[e] = leafLg2;
    this.pa[e] = pa;
    this.reported[e] = 0;
    ix.touch(e);
  }

  /**
   * Drop every entry the scope covers: scopes naming stage 2 (TLBI_S2_IPA, TLBI_S12_VMALL, TLBI_NSNH_ALL) by VMID
   * and, for ranges, by overlap with the stage-2 leaf the entry came from. Returns how many.
   * @linux CMDQ_OP_TLBI_S2_IPA / _S12_VMALL / _NSNH_ALL
   */
  invalidate(sc: InvScope): number {
    if ((sc.kinds & (1 << TLB_KIND.S2)) === 0) return 0;
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.ipa[e] === -1) continue;
      if (sc.vmid >= 0 && this.vmid[e] !== sc.vmid) continue;
      if (sc.hi !== Number.POSITIVE_INFINITY) {
        const size = 2 ** this.leafLg2[e]!;
        const ipa = this.ipa[e]! * 2 ** this.granLg2[e]!;
        const base = ipa - (ipa % size);
        if (!(base < sc.hi && sc.lo < base + size)) continue;
      }
      this.ipa[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.ipa);
  }
}
