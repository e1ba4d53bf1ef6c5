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

/** Decoded int values kept per descriptor-cache entry. */
export const DESC_INFO = 8;
/** Decoded address values kept per descriptor-cache entry. */
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
    const s = ix.first(cacheHash(k1, k2));
    let e = -1;
    for (let w = 0; w < ix.ways; w++) if (this.key1[s + w] === k1 && this.key2[s + w] === k2) e = s + w;
    if (e < 0) e = ix.pick(s, this.key1);
    this.key1[e] = k1;
    this.key2[e] = k2;
    this.did[e] = did;
    this.reported[e] = 0;
    ix.touch(e);
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
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) if (this.key1[e]! >= 0) n++;
    return n;
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
 * The IOTLB.
 * @linux the IOTLB that qi_flush_iotlb / qi_flush_piotlb invalidate
 */
export class VtdIotlb {
  private readonly ix: CacheSetIndex;
  /** Input page number; -1 = invalid. */
  readonly vpn: Float64Array;
  readonly kind: Int8Array;
  readonly did: Int32Array;
  readonly pasid: Int32Array;
  /** Output address of the 4 KiB page's start, and contiguous bytes from there. */
  readonly pa: Float64Array;
  readonly span: Float64Array;
  readonly perm: Int32Array;
  readonly leafBase: Float64Array;
  readonly leafLg2: Int8Array;
  /** Source-id that filled it (for diagnostics). */
  readonly sid: Int32Array;
  readonly reported: Uint8Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.vpn = new Float64Array(n).fill(-1);
    this.kind = new Int8Array(n);
    this.did = new Int32Array(n);
    this.pasid = new Int32Array(n);
    this.pa = new Float64Array(n);
    this.span = new Float64Array(n);
    this.perm = new Int32Array(n);
    this.leafBase = new Float64Array(n);
    this.leafLg2 = new Int8Array(n);
    this.sid = new Int32Array(n);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  private set(kind: number, did: number, pasid: number, vpn: number): number {
    return this.ix.first(cacheHash(did + (kind << 16) + pasid * 131072, vpn | 0) ^ ((vpn / 4294967296) | 0));
  }

  /** The entry for (kind, did, pasid, vpn), or -1. @linux an IOTLB lookup */
  lookup(kind: number, did: number, pasid: number, vpn: number): number {
    const ix = this.ix;
    const s = this.set(kind, did, pasid, vpn);
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (this.vpn[e] === vpn && this.did[e] === did && this.pasid[e] === pasid && this.kind[e] === kind) {
        ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Claim the entry for (kind, did, pasid, vpn). @linux an IOTLB fill after a walk */
  fill(kind: number, did: number, pasid: number, vpn: number): number {
    const ix = this.ix;
    const s = this.set(kind, did, pasid, vpn);
    let e = -1;
    for (let w = 0; w < ix.ways; w++) {
      const x = s + w;
      if (this.vpn[x] === vpn && this.did[x] === did && this.pasid[x] === pasid && this.kind[x] === kind) e = x;
    }
    if (e < 0) e = ix.pick(s, this.vpn);
    this.vpn[e] = vpn;
    this.kind[e] = kind;
    this.did[e] = did;
    this.pasid[e] = pasid;
    this.reported[e] = 0;
    ix.touch(e);
    return e;
  }

  /** Drop every entry the scope covers; returns how many. @linux an IOTLB / PASID-based IOTLB invalidation */
  invalidate(sc: VtdInvScope): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.vpn[e] === -1) continue;
      const k = this.kind[e]!;
      if ((sc.kinds & (1 << k)) === 0) continue;
      if (sc.did >= 0 && this.did[e] !== sc.did) continue;
      if (sc.pasid >= 0 && this.pasid[e] !== sc.pasid) continue;
      if (sc.hi !== Number.POSITIVE_INFINITY && !(sc.nestedAll && k === VTD_KIND.NESTED)) {
        const base = this.leafBase[e]!;
        if (!(base < sc.hi && sc.lo < base + 2 ** this.leafLg2[e]!)) continue;
      }
      this.vpn[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) if (this.vpn[e] !== -1) n++;
    return n;
  }
}

/** log2 of the input region one last-level table covers. */
export const PSC_REGION_LG2 = 21;

/**
 * The paging-structure cache: the last-level table of a 2 MiB input region, so a miss reads one entry.
 * @linux the paging-structure caches invalidated by IOTLB / PASID-based IOTLB descriptors with IH = 0
 */
export class VtdPagingCache {
  private readonly ix: CacheSetIndex;
  readonly region: Float64Array;
  readonly kind: Int8Array;
  readonly did: Int32Array;
  readonly pasid: Int32Array;
  readonly table: Float64Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.region = new Float64Array(n).fill(-1);
    this.kind = new Int8Array(n);
    this.did = new Int32Array(n);
    this.pasid = new Int32Array(n);
    this.table = new Float64Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The entry for the region, or -1. @linux a paging-structure-cache lookup */
  lookup(kind: number, did: number, pasid: number, region: number): number {
    const ix = this.ix;
    const s = ix.first(cacheHash(did + (kind << 16) + pasid * 131072, region | 0));
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (this.region[e] === region && this.did[e] === did && this.pasid[e] === pasid && this.kind[e] === kind) {
        ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Cache the last-level table of a region. @linux a paging-structure-cache fill */
  insert(kind: number, did: number, pasid: number, region: number, table: number): void {
    const ix = this.ix;
    const s = ix.first(cacheHash(did + (kind << 16) + pasid * 131072, region | 0));
    let e = -1;
    for (let w = 0; w < ix.ways; w++) {
      const x = s + w;
      if (this.region[x] === region && this.did[x] === did && this.pasid[x] === pasid && this.kind[x] === kind) e = x;
    }
    if (e < 0) e = ix.pick(s, this.region);
    this.region[e] = region;
    this.kind[e] = kind;
    this.did[e] = did;
    this.pasid[e] = pasid;
    this.table[e] = table;
    ix.touch(e);
  }

  /** Drop entries the scope covers (when `sc.walk`). @linux IOTLB invalidation with IH = 0 */
  invalidate(sc: VtdInvScope): number {
    if (!sc.walk) return 0;
    let n = 0;
    const size = 2 ** PSC_REGION_LG2;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.region[e] === -1) continue;
      const k = this.kind[e]!;
      if ((sc.kinds & (1 << k)) === 0) continue;
      if (sc.did >= 0 && this.did[e] !== sc.did) continue;
      if (sc.pasid >= 0 && this.pasid[e] !== sc.pasid) continue;
      if (sc.hi !== Number.POSITIVE_INFINITY && !(sc.nestedAll && k === VTD_KIND.NESTED)) {
        const base = this.region[e]! * size;
        if (!(base < sc.hi && sc.lo < base + size)) continue;
      }
      this.region[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) if (this.region[e] !== -1) n++;
    return n;
  }
}
