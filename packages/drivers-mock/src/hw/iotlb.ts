/**
 * The mock IOMMU's IOTLB: a set-associative cache of translations kept in one typed buffer, keyed by a small integer
 * hash of (tag, page). A tag is `DID << 16 | S1ID` (domain ID of the table at TTB, stage-1 cache ID of a nested
 * stage-1 or 0). One entry caches one 2 KiB input page: the PA of that page, how many bytes from its start stay
 * contiguous (to the end of the leaf), and the permissions of the leaf. No `Map`, no objects, no allocation.
 *
 * Layout: entry `e` is 32 bytes of one `ArrayBuffer`, seen as two views: `f64[e * 4]` the input page number (-1:
 * invalid), `f64[e * 4 + 1]` the page's PA, `i32[e * 8 + 4]` the tag, `i32[e * 8 + 5]` the TLB_PERM bits,
 * `i32[e * 8 + 6]` the span; `i32[e * 8 + 7]` of a set's first entry is the way it replaces next. The two ways of a set are adjacent (64 bytes: one cache line), so a lookup or a fill
 * touches one line. The model's hot path probes these views inline, with the same hash as {@link MockIotlb.setOf}.
 */

/** Permission bits of an IOTLB entry (and of the request's needs). @linux the permission bits an IOTLB entry caches (QEMU IOMMUTLBEntry.perm) */
export const TLB_PERM = {
  /** Reads allowed. */
  R: 1 << 0,
  /** Writes allowed. */
  W: 1 << 1,
  /** Instruction fetches allowed (R and not NX). */
  X: 1 << 2,
  /** Unprivileged accesses allowed (the leaf is not PRIV). */
  U: 1 << 3,
  /** Writes need no dirty-bit update (dirty tracking off, or D already set). */
  DOK: 1 << 4,
} as const;

/** The IOTLB page size (the level-0 leaf): entries are per 2 KiB input page. */
const PAGE_LG2 = 11;

// Private consts for use in this file (V8 folds them into the code; an exported binding is a cell load with a hole
// check at every use), exported below under their public names.
const HASH = 0x45d9f3b;
const F_PA = 1;
const I_TAG = 4;
const I_PERM = 5;
const I_SPAN = 6;
/** Multiplier of the tag in the set hash. */
export const TLB_HASH = HASH;
/** Word offsets of an entry's fields: in `f64` from `e << 2`, in `i32` from `e << 3`. */
export const TLB_F_VPN = 0;
export const TLB_F_PA = F_PA;
export const TLB_I_TAG = I_TAG;
export const TLB_I_PERM = I_PERM;
export const TLB_I_SPAN = I_SPAN;
/** In the first entry of a set: the way to replace next (0 or 1). */
const TLB_I_VICTIM = 7;

/**
 * Build the tag of an IOTLB entry.
 * @linux the ASID/VMID-style tag of a real IOTLB entry (SMMUv3 ASID+VMID, VT-d DID+PASID)
 */
export function tlbTag(did: number, s1id: number): number {
  return ((did & 0xffff) << 16) | (s1id & 0xffff);
}

/**
 * A set-associative IOTLB.
 * @linux the IOTLB of an IOMMU (the hardware the driver's iotlb_sync / flush_iotlb_all invalidates)
 */
export class MockIotlb {
  /** Total entries (a power of two). */
  readonly entries: number;
  /** Ways per set (1 = direct-mapped, or 2). */
  readonly ways: number;
  /** log2 of ways: the first entry of set `s` is `s << wayShift`. */
  readonly wayShift: number;
  /** Sets minus one. */
  readonly setMask: number;
  /** The entries as doubles (page number, PA): see the file comment. */
  readonly f64: Float64Array;
  /** The entries as 32-bit words (tag, perm, span): see the file comment. */
  readonly i32: Int32Array;

  /**
   * @param entries total entries (rounded up to a power of two, at least `ways`)
   * @param ways 1 or 2
   */
  constructor(entries: number, ways: number) {
    const w = ways === 1 ? 1 : 2;
    let n = w;
    while (n < entries) n <<= 1;
    this.entries = n;
    this.ways = w;
    this.wayShift = w - 1;
    const sets = n / w;
    this.setMask = sets - 1;
    const buf = new ArrayBuffer(n * 32);
    this.f64 = new Float64Array(buf);
    this.i32 = new Int32Array(buf);
    for (let e = 0; e < n; e++) this.f64[e << 2] = -1;
  }

  /** First entry of the set of (tag, vpn). */
  setOf(tag: number, vpn: number): number {
    return (((vpn | 0) ^ Math.imul(tag, HASH)) & this.setMask) << this.wayShift;
  }

  private matches(e: number, tag: number, vpn: number): boolean {
    return this.f64[e << 2] === vpn && this.i32[(e << 3) + I_TAG] === tag;
  }

  /**
   * The entry caching (tag, vpn), or -1.
   * @linux an IOTLB lookup
   */
  lookup(tag: number, vpn: number): number {
    const e = this.setOf(tag, vpn);
    if (this.matches(e, tag, vpn)) return e;
    if (this.ways === 2 && this.matches(e + 1, tag, vpn)) return e + 1;
    return -1;
  }

  /** Input page number of entry `e` (-1: invalid). */
  vpnOf(e: number): number {
    return this.f64[e << 2]!;
  }

  /** Tag of entry `e`. */
  tagOf(e: number): number {
    return this.i32[(e << 3) + I_TAG]!;
  }

  /** PA of the 2 KiB page entry `e` caches. */
  paOf(e: number): number {
    return this.f64[(e << 2) + F_PA]!;
  }

  /** Bytes from the start of entry `e`'s page that stay contiguous in PA. */
  spanOf(e: number): number {
    return this.i32[(e << 3) + I_SPAN]!;
  }

  /** TLB_PERM bits of entry `e`. */
  permOf(e: number): number {
    return this.i32[(e << 3) + I_PERM]!;
  }

  /**
   * Cache a translation (replacing the entry for the same key, else the set's victim).
   * @linux an IOTLB fill after a page walk
   */
  insert(tag: number, vpn: number, pa: number, span: number, perm: number): void {
    const e = this.lookup(tag, vpn);
    this.write(e >= 0 ? e : this.victim(this.setOf(tag, vpn)), tag, vpn, pa, span, perm);
  }

  /**
   * The entry of set `s` (its first entry) a new translation replaces: an invalid way first, else the way the set's
   * round-robin bit names (which then moves on).
   * @linux the replacement policy of an IOTLB
   */
  victim(s: number): number {
    const f = this.f64;
    if (this.ways === 1 || f[s << 2] === -1) return s;
    if (f[(s + 1) << 2] === -1) return s + 1;
    const w = this.i32;
    const vw = (s << 3) + TLB_I_VICTIM;
    const v = w[vw]!;
    w[vw] = v ^ 1;
    return s + v;
  }

  /**
   * Fill entry `e` with a translation (the caller chose `e`: the entry of the same key, or a {@link victim}).
   * @linux an IOTLB fill after a page walk
   */
  write(e: number, tag: number, vpn: number, pa: number, span: number, perm: number): void {
    const fi = e << 2;
    const ii = e << 3;
    this.f64[fi] = vpn;
    this.f64[fi + F_PA] = pa;
    this.i32[ii + I_TAG] = tag;
    this.i32[ii + I_PERM] = perm;
    this.i32[ii + I_SPAN] = span;
  }

  /** Drop one entry. */
  drop(e: number): void {
    this.f64[e << 2] = -1;
  }

  /** Invalidate everything; returns the entries dropped. @linux a global IOTLB invalidation */
  invalidateAll(): number {
    const f = this.f64;
    let n = 0;
    for (let e = 0; e < this.entries; e++) {
      if (f[e << 2] !== -1) {
        f[e << 2] = -1;
        n++;
      }
    }
    return n;
  }

  /**
   * Invalidate entries whose tag matches `tag` under `mask` (mask 0xffff0000: every stage-1 ID of a domain),
   * optionally only pages in [first, last] (input addresses). Returns the entries dropped.
   * @linux a domain-selective or page-selective IOTLB invalidation
   */
  invalidate(tag: number, mask: number, first = 0, last = Number.MAX_SAFE_INTEGER): number {
    const lo = Math.floor(first / 2 ** PAGE_LG2);
    const hi = Math.floor(last / 2 ** PAGE_LG2);
    const f = this.f64;
    const w = this.i32;
    let n = 0;
    for (let e = 0; e < this.entries; e++) {
      const v = f[e << 2]!;
      if (v !== -1 && (w[(e << 3) + I_TAG]! & mask) === (tag & mask) && v >= lo && v <= hi) {
        f[e << 2] = -1;
        n++;
      }
    }
    return n;
  }

  /** Valid entries (for tests and reports). */
  get used(): number {
    let n = 0;
    for (let e = 0; e < this.entries; e++) if (this.f64[e << 2] !== -1) n++;
    return n;
  }
}
