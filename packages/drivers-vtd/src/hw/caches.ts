/**
 * The VT-d unit's caches, as typed-array tables on core's set-associative index (platform/hwcache.ts):
 *
 * - {@link VtdDescCache}: the context cache (entries keyed by source-id) and the PASID cache (keyed by source-id
 *   and PASID), each holding the raw entry (for strict-mode comparison), its domain ID (for domain-selective
 *   invalidation) and a few decoded values;
 * - {@link VtdIotlb}: translations keyed by (kind, domain ID, PASID, page), with the leaf's range;
 * - {@link VtdPagingCache}: last-level table pointers keyed by (kind, domain ID, PASID, 2 MiB region).
 *
 * Entries leave only through the invalidation descriptors (or registers) that cover them, and by replacement.
 * @linux the context-cache, PASID-cache, IOTLB and paging-structure caches that qi_flush_context,
 * qi_flush_pasid_cache, qi_flush_iotlb and qi_flush_piotlb invalidate
 */
import { type CacheGeometry, CacheSetIndex, cacheHash } from "@iommu-sim/core";

/** Multiplier of the IOTLB's and paging-structure cache's set hash (odd, well mixed in its high and low bits). */
const TLB_HASH = 0x45d9f3b;

/** Decoded int values kept per descriptor-cache entry. @linux none: the model's decoded context/PASID entry values */
export const DESC_INFO = 8;
/** Decoded address values kept per descriptor-cache entry. @linux none: the model's decoded context/PASID entry addresses */
export const DESC_ADDR = 3;

/**
 * A cache of context or PASID entries keyed by (key1, key2).
 * @linux the context cache (qi_flush_context) / PASID cache (qi_flush_pasid_cache)
 */
export class VtdDescCache {
  private readonly ix: CacheSetIndex;
  /** Key 1 of each entry (source-id); -1 = invalid. */
  readonly key1: Int32Array;
  /** Key 2 (PASID; 0 for the context cache). */
  readonly key2: Int32Array;
  /** Domain ID the entry is tagged with (-1: none, scalable context entries). */
  readonly did: Int32Array;
  /** Raw entry words, `words` per entry. */
  readonly raw: Uint32Array;
  readonly info: Int32Array;
  readonly addr: Float64Array;
  /** Where the entry was fetched from (strict-mode refetch). */
  readonly fetchPa: Float64Array;
  /** Strict mode: a stale use of this entry was already reported. */
  readonly reported: Uint8Array;

  constructor(
    g: CacheGeometry,
    /** 32-bit words of one raw entry. */
    readonly words: number,
  ) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.key1 = new Int32Array(n).fill(-1);
    this.key2 = new Int32Array(n);
    this.did = new Int32Array(n);
    this.raw = new Uint32Array(n * words);
    this.info = new Int32Array(n * DESC_INFO);
    this.addr = new Float64Array(n * DESC_ADDR);
    this.fetchPa = new Float64Array(n);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The entry caching (k1, k2), or -1. @linux a context/PASID-cache lookup */
  lookup(k1: number, k2: number): number {
    const ix = this.ix;
    const s = ix.first(cacheHash(k1, k2));
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (this.key1[e] === k1 && this.key2[e] === k2) {
        ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Claim the entry for (k1, k2); the caller fills it. @linux a context/PASID-cache fill */
  fill(k1: number, k2: number, did: number): number {
    const ix = this.ix;
    const e = ix.claim2(ix.first(cacheHash(k1, k2)), this.key1, k1, this.key2, k2);
    this.did[e] = did;
    this.reported[e] = 0;
    return e;
  }

  /**
   * Drop entries matching: `did` (-1 any; entries tagged -1 match any did), key1 under `k1Mask` equal to `k1`
   * (`k1 = -1`: any), key2 (-1 any). Returns how many.
   * @linux context-cache global/domain/device invalidation; PASID-cache global/domain/PASID invalidation
   */
  invalidate(did: number, k1: number, k1Mask: number, k2: number): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      const k = this.key1[e]!;
      if (k < 0) continue;
      if (did >= 0 && this.did[e]! >= 0 && this.did[e] !== did) continue;
      if (k1 >= 0 && (k & k1Mask) !== (k1 & k1Mask)) continue;
      if (k2 >= 0 && this.key2[e] !== k2) continue;
      this.key1[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.key1);
  }
}

/**
 * What an IOTLB entry translates.
 * @linux the IOTLB entry kinds the invalidation descriptors distinguish (second-stage only vs PASID-granular)
 */
export const VTD_KIND = {
  /** Legacy or PGTT second-stage: tagged by DID; invalidated by IOTLB descriptors. */
  SS: 1,
  /** First-stage only: tagged by DID and PASID; invalidated by PASID-based IOTLB descriptors. */
  FS: 2,
  /** Nested: tagged by DID and PASID; invalidated by either. */
  NESTED: 3,
} as const;

/**
 * An invalidation scope, reused by the descriptor processor.
 * @linux the operands of an IOTLB / PASID-based IOTLB invalidation (granularity, DID, PASID, ADDR, AM, IH)
 */
export class VtdInvScope {
  /** Kind bit-mask (1 << VTD_KIND.x). */
  kinds = 0;
  did = -1;
  pasid = -1;
  lo = 0;
  hi = Number.POSITIVE_INFINITY;
  /** Also drop paging-structure entries (IH = 0). */
  walk = true;
  /** Page-selective scopes also drop every nested entry of the DID (their guest-physical mapping is unknown). */
  nestedAll = false;

  /** Reset to "everything of `kinds`". */
  all(kinds: number): this {
    this.kinds = kinds;
    this.did = -1;
    this.pasid = -1;
    this.lo = 0;
    this.hi = Number.POSITIVE_INFINITY;
    this.walk = true;
    this.nestedAll = false;
    return this;
  }
}

/**
 * The packed IOTLB tag of (kind, DID, PASID or -1): exact below 2^40 (DID < 2^16, PASID < 2^20), so the three come
 * back out of it ({@link keyKind}, {@link keyDid}, {@link keyPasid}) and entries keep only the key.
 * @linux none: the model's encoding of an IOTLB entry's DID/PASID tag
 */
export function iotlbKey(kind: number, did: number, pasid: number): number {
  return kind + 4 * did + 262144 * (pasid + 1);
}

/** The kind of an {@link iotlbKey}. @linux none: decoding the model's tag */
export function keyKind(key: number): number {
  return key % 4;
}

/** The domain ID of an {@link iotlbKey}. @linux none: decoding the model's tag */
export function keyDid(key: number): number {
  return Math.floor(key / 4) % 65536;
}

/** The PASID (-1: none) of an {@link iotlbKey}. @linux none: decoding the model's tag */
export function keyPasid(key: number): number {
  return Math.floor(key / 262144) - 1;
}

/** Doubles of an IOTLB entry's tags (2 per entry, in `tags`): page number (-1 invalid), key. @linux none: the model's IOTLB entry layout */
export const TLB_T = { VPN: 0, KEY: 1 } as const;
/**
 * Doubles of an IOTLB entry's line, at `f[e << 3]`: PA, span, leaf base (the line's first half).
 * @linux none: the model's IOTLB entry layout
 */
export const TLB_F = { PA: 0, SPAN: 1, BASE: 2 } as const;
/**
 * 32-bit words of an IOTLB entry's line, at `i[e << 4]` (the line's second half, the same 64 bytes as
 * {@link TLB_F}): perm, leaf log2, reported. Kind, DID and PASID are in the tag's key.
 * @linux none: the model's IOTLB entry layout
 */
export const TLB_I = { PERM: 8, LG2: 9, REPORTED: 10 } as const;

/**
 * The IOTLB, packed: entry `e`'s tags are `tags[e*2 ..]` (see {@link TLB_T}): the ways of a set sit side by side
 * there, so a probe (a miss compares every way) reads one 64-byte line for four ways; the rest of the entry is one
 * more 64-byte line, seen as doubles `f[e*8 ..]` and as words `i[e*16 ..]` (see {@link TLB_F} / {@link TLB_I}),
 * read on a hit and written on a fill: a hit or a fill touches two lines.
 * @linux the IOTLB that qi_flush_iotlb / qi_flush_piotlb invalidate
 */
export class VtdIotlb {
  private readonly ix: CacheSetIndex;
  readonly tags: Float64Array;
  readonly f: Float64Array;
  readonly i: Int32Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.tags = new Float64Array(n * 2);
    const line = new ArrayBuffer(n * 64);
    this.f = new Float64Array(line);
    this.i = new Int32Array(line);
    for (let e = 0; e < n; e++) this.tags[e * 2 + TLB_T.VPN] = -1;
    this.free = n;
  }

  /** Entries holding no translation: while none is, a fill goes straight to the replacement choice. */
  private free: number;

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /**
   * First entry of the set of (key, vpn): the page number's words XORed with a multiplicative hash of the key, so
   * consecutive pages of one address space fill consecutive sets (one multiply: this is on every translation).
   */
  setOf(key: number, vpn: number): number {
    const hi = vpn < 4294967296 ? 0 : (vpn / 4294967296) | 0;
    return this.ix.first(Math.imul((key | 0) + 1, TLB_HASH) ^ vpn ^ hi);
  }

  /** The entry for (key, vpn), or -1 (the hot path's probe). @linux an IOTLB lookup */
  probe(key: number, vpn: number): number {
    const ways = this.ix.ways;
    const s = this.setOf(key, vpn);
    const t = this.tags;
    for (let w = 0; w < ways; w++) {
      const e = s + w;
      if (t[e << 1] === vpn && t[(e << 1) + 1] === key) {
        this.ix.touch(e);
        return e;
      }
    }
    this.missSet = s;
    this.missKey = key;
    this.missVpn = vpn;
    return -1;
  }

  /**
   * The set, key and page of the last {@link probe} that missed; -1: none (reset by every fill). Only a fill can
   * create that entry, so while it is set the entry is known absent and {@link fill} skips its hash and scan.
   */
  private missSet = -1;
  private missKey = 0;
  private missVpn = 0;

  /** The entry for (kind, did, pasid, vpn), or -1. @linux an IOTLB lookup */
  lookup(kind: number, did: number, pasid: number, vpn: number): number {
    return this.probe(iotlbKey(kind, did, pasid), vpn);
  }

  /**
   * Fill the entry for (key, vpn) (an {@link iotlbKey}): the entry already holding it if any, else the set's free
   * or replaced entry; all of it written here, in its two lines. Returns the entry.
   * @linux an IOTLB fill
   */
  fill(key: number, vpn: number, pa: number, span: number, base: number, perm: number, lg2: number): number {
    let e: number;
    if (this.missSet >= 0 && this.missVpn === vpn && this.missKey === key) {
      e = this.pick(this.missSet);
    } else {
      e = this.claim(key, vpn);
    }
    this.missSet = -1;
    const t = this.tags;
    t[e << 1] = vpn;
    t[(e << 1) + 1] = key;
    const f = this.f;
    f[(e << 3) + TLB_F.PA] = pa;
    f[(e << 3) + TLB_F.SPAN] = span;
    f[(e << 3) + TLB_F.BASE] = base;
    const i = this.i;
    i[(e << 4) + TLB_I.PERM] = perm;
    i[(e << 4) + TLB_I.LG2] = lg2;
    i[(e << 4) + TLB_I.REPORTED] = 0;
    this.ix.touch(e);
    return e;
  }

  /** {@link fill}'s entry when no miss of the same key was just probed: a hash and a scan of the set. */
  private claim(key: number, vpn: number): number {
    const s = this.setOf(key, vpn);
    const t = this.tags;
    for (let w = 0; w < this.ix.ways; w++) {
      const x = s + w;
      if (t[x << 1] === vpn && t[(x << 1) + 1] === key) return x;
    }
    return this.pick(s);
  }

  /** The entry to fill in set `s` (none holding the key): a free one, counted, else the replacement choice. */
  private pick(s: number): number {
    if (this.free === 0) return this.ix.evict(s);
    const e = this.ix.pickStrided(s, this.tags, 2);
    if (this.tags[e << 1] === -1) this.free--;
    return e;
  }

  /** Drop every entry the scope covers; returns how many. @linux an IOTLB / PASID-based IOTLB invalidation */
  invalidate(sc: VtdInvScope): number {
    let n = 0;
    const t = this.tags;
    const f = this.f;
    const i = this.i;
    for (let e = 0; e < this.ix.entries; e++) {
      if (t[e << 1] === -1) continue;
      const key = t[(e << 1) + 1]!;
      const k = keyKind(key);
      if ((sc.kinds & (1 << k)) === 0) continue;
      if (sc.did >= 0 && keyDid(key) !== sc.did) continue;
      if (sc.pasid >= 0 && keyPasid(key) !== sc.pasid) continue;
      if (sc.hi !== Number.POSITIVE_INFINITY && !(sc.nestedAll && k === VTD_KIND.NESTED)) {
        const base = f[(e << 3) + TLB_F.BASE]!;
        if (!(base < sc.hi && sc.lo < base + 2 ** i[(e << 4) + TLB_I.LG2]!)) continue;
      }
      t[e << 1] = -1;
      n++;
    }
    this.free += n;
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.tags, 2);
  }
}

/** log2 of the input region one last-level table covers. @linux none: the reach of one last-level table (2 MiB) */
export const PSC_REGION_LG2 = 21;

/**
 * The paging-structure cache: the last-level table of a 2 MiB input region, so a miss reads one entry. Packed: entry
 * `e` is `f[e*4 ..]` = region (-1 invalid), key ({@link iotlbKey}: kind, DID, PASID), table address.
 * @linux the paging-structure caches invalidated by IOTLB / PASID-based IOTLB descriptors with IH = 0
 */
export class VtdPagingCache {
  private readonly ix: CacheSetIndex;
  private readonly f: Float64Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.f = new Float64Array(n * 4);
    for (let e = 0; e < n; e++) this.f[e * 4] = -1;
    this.free = n;
  }

  /** Entries holding no table: while none is, an insert goes straight to the replacement choice. */
  private free: number;

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The table cached for entry `e` (from {@link lookup}). */
  table(e: number): number {
    return this.f[e * 4 + 2]!;
  }

  /** The set, key and region of the last {@link lookup} that missed (for {@link insertMissed}); -1: none. */
  private missSet = -1;
  private missKey = 0;
  private missRegion = 0;

  /** The entry for the region, or -1. @linux a paging-structure-cache lookup */
  lookup(kind: number, did: number, pasid: number, region: number): number {
    return this.lookupKey(iotlbKey(kind, did, pasid), region);
  }

  /** {@link lookup} by the {@link iotlbKey} of (kind, did, pasid), when the caller has it. */
  lookupKey(key: number, region: number): number {
    const ix = this.ix;
    const s = ix.first(Math.imul((key | 0) + 1, TLB_HASH) ^ region);
    const f = this.f;
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (f[e * 4] === region && f[e * 4 + 1] === key) {
        ix.touch(e);
        return e;
      }
    }
    this.missSet = s;
    this.missKey = key;
    this.missRegion = region;
    return -1;
  }

  /**
   * Cache the last-level table of a region for `key` ({@link iotlbKey}). Right after a {@link lookupKey} of the same
   * key and region missed, with nothing in between that could have filled it (the walk after the miss), the set is
   * known and holds no entry for it: no second hash, no duplicate scan.
   * @linux a paging-structure-cache fill
   */
  insertMissed(key: number, region: number, table: number): void {
    let e: number;
    if (this.missSet >= 0 && region === this.missRegion && key === this.missKey) {
      e = this.pick(this.missSet);
    } else {
      const ix = this.ix;
      const s = ix.first(Math.imul((key | 0) + 1, TLB_HASH) ^ region);
      const f = this.f;
      e = -1;
      for (let w = 0; w < ix.ways; w++) {
        const x = s + w;
        if (f[x * 4] === region && f[x * 4 + 1] === key) e = x;
      }
      if (e < 0) e = this.pick(s);
    }
    this.missSet = -1;
    const f = this.f;
    f[e * 4] = region;
    f[e * 4 + 1] = key;
    f[e * 4 + 2] = table;
    this.ix.touch(e);
  }

  /** The entry to fill in set `s` (none holding the key): a free one, counted, else the replacement choice. */
  private pick(s: number): number {
    if (this.free === 0) return this.ix.evict(s);
    const e = this.ix.pickStrided(s, this.f, 4);
    if (this.f[e * 4] === -1) this.free--;
    return e;
  }

  /** Cache the last-level table of a region. @linux a paging-structure-cache fill */
  insert(kind: number, did: number, pasid: number, region: number, table: number): void {
    this.insertMissed(iotlbKey(kind, did, pasid), region, table);
  }

  /** Drop entries the scope covers (when `sc.walk`). @linux IOTLB invalidation with IH = 0 */
  invalidate(sc: VtdInvScope): number {
    if (!sc.walk) return 0;
    this.missSet = -1;
    let n = 0;
    const size = 2 ** PSC_REGION_LG2;
    const f = this.f;
    for (let e = 0; e < this.ix.entries; e++) {
      if (f[e * 4] === -1) continue;
      const key = f[e * 4 + 1]!;
      const kind = keyKind(key);
      if ((sc.kinds & (1 << kind)) === 0) continue;
      if (sc.did >= 0 && keyDid(key) !== sc.did) continue;
      if (sc.pasid >= 0 && keyPasid(key) !== sc.pasid) continue;
      if (sc.hi !== Number.POSITIVE_INFINITY && !(sc.nestedAll && kind === VTD_KIND.NESTED)) {
        const base = f[e * 4]! * size;
        if (!(base < sc.hi && sc.lo < base + size)) continue;
      }
      f[e * 4] = -1;
      n++;
    }
    this.free += n;
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.f, 4);
  }
}
