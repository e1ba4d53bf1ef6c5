/**
 * The AMD-Vi unit's caches, as typed-array tables on core's set-associative index (platform/hwcache.ts):
 *
 * - {@link AmdDteCache}: device table entries keyed by DeviceID, holding the raw 256-bit entry (for strict-mode
 *   comparison);
 * - {@link AmdIotlb}: translations keyed by (DomainID, PASID or none, 4 KiB page), with the leaf's range.
 *
 * Entries leave only through INVALIDATE_DEVTAB_ENTRY, INVALIDATE_IOMMU_PAGES and INVALIDATE_IOMMU_ALL (or by
 * replacement).
 * @linux the DTE cache and IOTLB that amd iommu.c's iommu_flush_dte / domain_flush_pages / iommu_flush_all target
 */
import { type CacheGeometry, CacheSetIndex, cacheHash } from "@iommu-sim/core";

/** 32-bit words of a cached DTE. */
export const DTE_WORDS = 8;

/**
 * A cache of device table entries.
 * @linux the DTE cache INVALIDATE_DEVTAB_ENTRY targets
 */
export class AmdDteCache {
  private readonly ix: CacheSetIndex;
  /** DeviceID of each entry; -1 = invalid. */
  readonly devid: Int32Array;
  /** The raw entry. */
  readonly raw: Uint32Array;
  /** Strict mode: a stale use of this entry was already reported. */
  readonly reported: Uint8Array;
  /** Decoded at fill time (the model's DTE_F_* bits, Mode and GLX), so a hit reads no bit fields. */
  readonly flags: Int32Array;
  readonly did: Int32Array;
  /** Host page-table root and GCR3 table root. */
  readonly root: Float64Array;
  readonly gcr3: Float64Array;

  constructor(g: CacheGeometry) {
    this.ix = new CacheSetIndex(g);
    const n = this.ix.entries;
    this.devid = new Int32Array(n).fill(-1);
    this.raw = new Uint32Array(n * DTE_WORDS);
    this.reported = new Uint8Array(n);
    this.flags = new Int32Array(n);
    this.did = new Int32Array(n);
    this.root = new Float64Array(n);
    this.gcr3 = new Float64Array(n);
  }

  /** The entry caching `devid`, or -1. */
  lookup(devid: number): number {
    const ix = this.ix;
    const s = ix.first(cacheHash(devid, 0));
    for (let w = 0; w < ix.ways; w++) {
      if (this.devid[s + w] === devid) {
        ix.touch(s + w);
        return s + w;
      }
    }
    return -1;
  }

  /** Claim an entry for `devid` and copy `words` into it. */
  fill(devid: number, words: Uint32Array): number {
    const ix = this.ix;
    const s = ix.first(cacheHash(devid, 0));
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
  /** Domain ID; -1 = invalid. */
  readonly did: Int32Array;
  /** PASID (-1: none). */
  readonly pasid: Int32Array;
  /** 4 KiB page number of the IOVA looked up. */
  readonly vpn: Float64Array;
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
    this.did = new Int32Array(n).fill(-1);
    this.pasid = new Int32Array(n);
    this.vpn = new Float64Array(n);
    this.leafIova = new Float64Array(n);
    this.sizeLg2 = new Uint8Array(n);
    this.pa = new Float64Array(n);
    this.perm = new Uint8Array(n);
    this.reported = new Uint8Array(n);
  }

  private hash(did: number, pasid: number, vpn: number): number {
    // vpn | 0 keeps the page number's low 32 bits: enough to spread sets, and cheaper than a float modulo.
    return cacheHash(did ^ (pasid << 16), vpn | 0);
  }

  /** The entry for (did, pasid, vpn), or -1. */
  lookup(did: number, pasid: number, vpn: number): number {
    const ix = this.ix;
    const s = ix.first(this.hash(did, pasid, vpn));
    for (let w = 0; w < ix.ways; w++) {
      const e = s + w;
      if (this.did[e] === did && this.pasid[e] === pasid && this.vpn[e] === vpn) {
        ix.touch(e);
        return e;
      }
    }
    return -1;
  }

  /** Fill an entry. */
  fill(did: number, pasid: number, vpn: number, leafIova: number, sizeLg2: number, pa: number, perm: number): void {
    const ix = this.ix;
    const s = ix.first(this.hash(did, pasid, vpn));
    let e = -1;
    for (let w = 0; w < ix.ways; w++) {
      if (this.did[s + w] === did && this.pasid[s + w] === pasid && this.vpn[s + w] === vpn) e = s + w;
    }
    if (e < 0) e = ix.pick(s, this.did);
    this.did[e] = did;
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
      n++;
    }
    return n;
  }

  /** Valid entries. */
  get used(): number {
    return this.ix.countValid(this.did);
  }
}
