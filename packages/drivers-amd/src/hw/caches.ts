/**
 * The AMD-Vi unit's caches, as typed-array tables on core's set-associative index (platform/hwcache.ts):
 *
 * - {@link AmdDteCache}: device table entries keyed by DeviceID, holding the raw 256-bit entry (for strict-mode
 *   comparison);
 * - {@link AmdIotlb}: translations keyed by (DomainID, PASID or none, 4 KiB page), with the leaf's range;
 * - {@link AmdPdc}: the page-directory cache, keyed by (DomainID, PASID or none, 2 MiB region), holding the table
 *   the region's leaves are read from (what the directory entries above it said), so a miss reads one entry.
 *
 * Entries leave only through INVALIDATE_DEVTAB_ENTRY, INVALIDATE_IOMMU_PAGES (PDE=1 for the page-directory cache)
 * and INVALIDATE_IOMMU_ALL (or by replacement).
 * @linux the DTE cache and IOTLB that amd iommu.c's iommu_flush_dte / domain_flush_pages / iommu_flush_all target
 */
import { type CacheGeometry, CacheSetIndex } from "@iommu-sim/core";

/**
 * Set selection of the three caches: the key's low part (page, region or DeviceID) mixed with its tag, as a
 * hardware TLB indexes by low page bits; kept in this file so the hot path folds it (no imported binding).
 */
const HASH_MUL = 0x45d9f3b;

/** One number for (domain ID, PASID or -1): exact in a double (16 + 21 bits). */
function iotlbTag(did: number, pasid: number): number {
  return did * 2097152 + pasid + 1;
}
function mix(tag: number, x: number): number {
  return x ^ Math.imul(tag, HASH_MUL);
}

/** 32-bit words of a cached DTE. */
export const DTE_WORDS = 8;

/**
 * A cache of device table entries.
 * @linux the DTE cache INVALIDATE_DEVTAB_ENTRY targets
 */
export class AmdDteCache {
  private readonly ix: CacheSetIndex;
  private readonly setMask: number;
  private readonly ways: number;
  private readonly lru: boolean;
  /** DeviceID of each entry; -1 = invalid. */
  readonly devid: Int32Array;
  /** The raw entry. */
  readonly raw: Uint32Array;
  /** Strict mode: a stale use of this entry was already reported. */
  readonly reported: Uint8Array;
  /** Decoded at fill time (the model's DTE_F_* bits, Mode and GLX), so a hit reads no bit fields. */
  readonly flags: Int32Array;
  readonly did: Int32Array;
  /**
   * The domain ID when the entry sends requests without a PASID straight to the IOTLB (V, TV, a host table, no GV),
   * else -1: the model's hot path reads this one word.
   */
  readonly fast: Int32Array;
  /** Host page-table root and GCR3 table root. */
  readonly root: Float64Array;
  readonly gcr3: Float64Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.setMask = this.ix.setMask;
    this.ways = this.ix.ways;
    this.lru = this.ix.lru;
    this.devid = new Int32Array(n).fill(-1);
    this.raw = new Uint32Array(n * DTE_WORDS);
    this.reported = new Uint8Array(n);
    this.flags = new Int32Array(n);
    this.did = new Int32Array(n);
    this.fast = new Int32Array(n).fill(-1);
    this.root = new Float64Array(n);
    this.gcr3 = new Float64Array(n);
  }

  /** The entry caching `devid`, or -1. */
  lookup(devid: number): number {
    const s = (mix(0, devid) & this.setMask) * this.ways;
    const end = s + this.ways;
    for (let e = s; e < end; e++) {
      if (this.devid[e] === devid) {
        if (this.lru) this.ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Claim an entry for `devid` and copy `words` into it. */
  fill(devid: number, words: Uint32Array): number {
    const ix = this.ix;
    const s = (mix(0, devid) & this.setMask) * this.ways;
    let e = -1;
    for (let w = 0; w < ix.ways; w++) if (this.devid[s + w] === devid) e = s + w;
    if (e < 0) e = ix.pick(s, this.devid);
    this.devid[e] = devid;
    this.reported[e] = 0;
    for (let i = 0; i < DTE_WORDS; i++) this.raw[e * DTE_WORDS + i] = words[i]!;
    ix.touch(e);
    return e;
  }

  /** Drop `devid` (-1: every entry). Returns how many. @linux INVALIDATE_DEVTAB_ENTRY / INVALIDATE_IOMMU_ALL */
  invalidate(devid: number): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.devid[e]! < 0 || (devid >= 0 && this.devid[e] !== devid)) continue;
      this.devid[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.devid);
  }
}

/**
 * The IOTLB: one entry per 4 KiB page looked up, tagged with the domain ID and the PASID (-1: a request without
 * one, GN=0), holding the page's leaf range.
 * @linux the IOMMU TLB INVALIDATE_IOMMU_PAGES targets
 */
export class AmdIotlb {
  private readonly ix: CacheSetIndex;
  private readonly setMask: number;
  private readonly ways: number;
  private readonly lru: boolean;
  /** Domain ID; -1 = invalid. */
  readonly did: Int32Array;
  /** PASID (-1: none). */
  readonly pasid: Int32Array;
  /** 4 KiB page number of the IOVA looked up. */
  readonly vpn: Float64Array;
  /** Domain ID and PASID as one key (`iotlbTag`), compared on lookup. */
  readonly tag: Float64Array;
  /** Leaf range: base IOVA and log2 size. */
  readonly leafIova: Float64Array;
  readonly sizeLg2: Uint8Array;
  /** Physical base of the leaf. */
  readonly pa: Float64Array;
  readonly perm: Uint8Array;
  readonly reported: Uint8Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.setMask = this.ix.setMask;
    this.ways = this.ix.ways;
    this.lru = this.ix.lru;
    this.did = new Int32Array(n).fill(-1);
    this.pasid = new Int32Array(n);
    this.vpn = new Float64Array(n);
    this.tag = new Float64Array(n).fill(-1);
    this.leafIova = new Float64Array(n);
    this.sizeLg2 = new Uint8Array(n);
    this.pa = new Float64Array(n);
    this.perm = new Uint8Array(n);
    this.reported = new Uint8Array(n);
  }

  private set(did: number, pasid: number, vpn: number): number {
    return (mix(did ^ (pasid << 16), vpn) & this.setMask) * this.ways;
  }

  /** The entry for (did, pasid, vpn), or -1. */
  lookup(did: number, pasid: number, vpn: number): number {
    const s = this.set(did, pasid, vpn);
    const end = s + this.ways;
    const tag = iotlbTag(did, pasid);
    for (let e = s; e < end; e++) {
      if (this.vpn[e] === vpn && this.tag[e] === tag) {
        if (this.lru) this.ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /**
   * Fill an entry for a key {@link lookup} just missed (so no entry of the set holds it): a free or the replaced one;
   * or refill entry `into`, the one holding the key.
   */
  fillMiss(
    did: number,
    pasid: number,
    vpn: number,
    leafIova: number,
    sizeLg2: number,
    pa: number,
    perm: number,
    /** The entry holding the key when the caller chose to refill it (a hit it walked again), else -1. */
    into = -1,
  ): void {
    const ix = this.ix;
    const e = into >= 0 ? into : ix.pick(this.set(did, pasid, vpn), this.did);
    this.did[e] = did;
    this.tag[e] = iotlbTag(did, pasid);
    this.pasid[e] = pasid;
    this.vpn[e] = vpn;
    this.leafIova[e] = leafIova;
    this.sizeLg2[e] = sizeLg2;
    this.pa[e] = pa;
    this.perm[e] = perm;
    this.reported[e] = 0;
    ix.touch(e);
  }

  /**
   * Drop every guest (PASID-tagged) entry of `did`, whatever its address: they combine a guest translation with a
   * host one, so a host (GN=0) invalidation of the domain may have changed them.
   */
  invalidateGuest(did: number): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      if (this.did[e] !== did || this.pasid[e]! < 0) continue;
      this.did[e] = -1;
      this.tag[e] = -1;
      n++;
    }
    return n;
  }

  /**
   * Drop entries of `did` (-1: all) whose PASID matches (`pasid` -2: any) and whose leaf meets [start, end].
   * Returns how many. @linux INVALIDATE_IOMMU_PAGES (GN selects PASID entries) / INVALIDATE_IOMMU_ALL
   */
  invalidate(did: number, pasid: number, start: number, end: number): number {
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      const d = this.did[e]!;
      if (d < 0 || (did >= 0 && d !== did)) continue;
      if (pasid !== -2 && this.pasid[e] !== pasid) continue;
      const lo = this.leafIova[e]!;
      const hi = lo + 2 ** this.sizeLg2[e]! - 1;
      if (hi < start || lo > end) continue;
      this.did[e] = -1;
      this.tag[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.did);
  }
}

/** log2 of the input region one page-directory-cache entry covers (the reach of one last-level table: 2 MiB). */
export const PDC_REGION_LG2 = 21;

/**
 * The page-directory cache: for a (DomainID, PASID or none, 2 MiB input region), the table the walk read the
 * region's leaf from, its level, and the permissions the directory entries above it granted. The path to that table
 * depends only on input bits at or above bit 21 (skipped levels included), so one entry serves the whole region.
 * Entries leave only through INVALIDATE_IOMMU_PAGES with PDE=1 whose range meets the region (matching the domain
 * and, by GN, the PASID), INVALIDATE_IOMMU_ALL, or replacement; never by INVALIDATE_DEVTAB_ENTRY or PDE=0.
 * @linux the page directory cache INVALIDATE_IOMMU_PAGES with PDE=1 targets (build_inv_address sets PDE always)
 */
export class AmdPdc {
  private readonly ix: CacheSetIndex;
  private readonly setMask: number;
  private readonly ways: number;
  private readonly lru: boolean;
  /** Domain ID; -1 = invalid. */
  readonly did: Int32Array;
  /** PASID (-1: none). */
  readonly pasid: Int32Array;
  /** 2 MiB region number of the input address. */
  readonly region: Float64Array;
  /** The cached table's address, level and the directory entries' permissions (AMD_PERM). */
  readonly table: Float64Array;
  readonly level: Uint8Array;
  readonly perm: Uint8Array;
  /** Strict mode: a stale use of this entry was already reported. */
  readonly reported: Uint8Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.setMask = this.ix.setMask;
    this.ways = this.ix.ways;
    this.lru = this.ix.lru;
    this.did = new Int32Array(n).fill(-1);
    this.pasid = new Int32Array(n);
    this.region = new Float64Array(n);
    this.table = new Float64Array(n);
    this.level = new Uint8Array(n);
    this.perm = new Uint8Array(n);
    this.reported = new Uint8Array(n);
  }

  /** Total entries. */
  get entries(): number {
    return this.ix.entries;
  }

  /** The first entry of the set that (did, pasid, region) maps to: computed once for a lookup and its fill. */
  set(did: number, pasid: number, region: number): number {
    return (mix(did ^ (pasid << 16), region) & this.setMask) * this.ways;
  }

  /** The entry for (did, pasid, region), or -1. @linux a page-directory-cache lookup */
  lookup(did: number, pasid: number, region: number): number {
    return this.lookupIn(this.set(did, pasid, region), did, pasid, region);
  }

  /** {@link lookup} in set `s` (from {@link set} of the same key). @linux a page-directory-cache lookup */
  lookupIn(s: number, did: number, pasid: number, region: number): number {
    const end = s + this.ways;
    for (let e = s; e < end; e++) {
      if (this.region[e] === region && this.did[e] === did && this.pasid[e] === pasid) {
        if (this.lru) this.ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /**
   * Cache the table of a region {@link lookup} just missed (so no entry of the set holds it).
   * @linux a page-directory-cache fill after a walk
   */
  fillMiss(did: number, pasid: number, region: number, table: number, level: number, perm: number): void {
    this.fillIn(this.set(did, pasid, region), did, pasid, region, table, level, perm);
  }

  /** {@link fillMiss} in set `s` (from {@link set} of the same key). @linux a page-directory-cache fill */
  fillIn(s: number, did: number, pasid: number, region: number, table: number, level: number, perm: number): void {
    const ix = this.ix;
    const e = ix.pick(s, this.did);
    this.did[e] = did;
    this.pasid[e] = pasid;
    this.region[e] = region;
    this.table[e] = table;
    this.level[e] = level;
    this.perm[e] = perm;
    this.reported[e] = 0;
    ix.touch(e);
  }

  /**
   * Drop entries of `did` (-1: all) whose PASID matches (`pasid` -2: any) and whose region meets [start, end].
   * Returns how many. @linux INVALIDATE_IOMMU_PAGES with PDE=1 / INVALIDATE_IOMMU_ALL
   */
  invalidate(did: number, pasid: number, start: number, end: number): number {
    const size = 2 ** PDC_REGION_LG2;
    let n = 0;
    for (let e = 0; e < this.ix.entries; e++) {
      const d = this.did[e]!;
      if (d < 0 || (did >= 0 && d !== did)) continue;
      if (pasid !== -2 && this.pasid[e] !== pasid) continue;
      const lo = this.region[e]! * size;
      if (lo + size - 1 < start || lo > end) continue;
      this.did[e] = -1;
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.did);
  }
}
