/**
 * The mock IOMMU's IOTLB: a set-associative cache of translations kept in typed arrays, keyed by a small integer
 * hash of (tag, page). A tag is `DID << 16 | S1ID` (domain ID of the table at TTB, stage-1 cache ID of a nested
 * stage-1 or 0). One entry caches one 2 KiB input page: the PA of that page, how many bytes from its start stay
 * contiguous (to the end of the leaf), and the permissions of the leaf. No `Map`, no objects, no allocation.
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
  private readonly setMask: number;
  /** Input page number of each entry; -1 = invalid. */
  readonly vpn: Float64Array;
  /** Tag of each entry. */
  readonly tag: Int32Array;
  /** PA of the cached 2 KiB page. */
  readonly pa: Float64Array;
  /** Bytes from the page's start that stay contiguous in PA. */
  readonly span: Int32Array;
  /** TLB_PERM bits. */
  readonly perm: Int32Array;
  /** Per set: the way to replace next. */
  private readonly victim: Uint8Array;

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
    const sets = n / w;
    this.setMask = sets - 1;
    this.vpn = new Float64Array(n).fill(-1);
    this.tag = new Int32Array(n);
    this.pa = new Float64Array(n);
    this.span = new Int32Array(n);
    this.perm = new Int32Array(n);
    this.victim = new Uint8Array(sets);
  }

  /** First entry of the set of (tag, vpn). */
  private setOf(tag: number, vpn: number): number {
    return (((vpn | 0) ^ Math.imul(tag, 0x45d9f3b)) & this.setMask) * this.ways;
  }

  /**
   * The entry caching (tag, vpn), or -1.
   * @linux an IOTLB lookup
   */
  lookup(tag: number, vpn: number): number {
    const e = this.setOf(tag, vpn);
    if (this.vpn[e] === vpn && this.tag[e] === tag) return e;
    if (this.ways === 2 && this.vpn[e + 1] === vpn && this.tag[e + 1] === tag) return e + 1;
    return -1;
  }

  /**
   * Cache a translation (replacing the entry for the same key, else the set's victim).
   * @linux an IOTLB fill after a page walk
   */
  insert(tag: number, vpn: number, pa: number, span: number, perm: number): void {
    const s = this.setOf(tag, vpn);
    let e = s;
    if (this.ways === 2) {
      if (this.vpn[s] === vpn && this.tag[s] === tag) e = s;
      else if (this.vpn[s + 1] === vpn && this.tag[s + 1] === tag) e = s + 1;
      else if (this.vpn[s] === -1) e = s;
      else if (this.vpn[s + 1] === -1) e = s + 1;
      else {
        const set = s >> 1;
        e = s + this.victim[set]!;
        this.victim[set] = this.victim[set]! ^ 1;
      }
    }
    this.vpn[e] = vpn;
    this.tag[e] = tag;
    this.pa[e] = pa;
    this.span[e] = span;
    this.perm[e] = perm;
  }

  /** Drop one entry. */
  drop(e: number): void {
    this.vpn[e] = -1;
  }

  /** Invalidate everything; returns the entries dropped. @linux a global IOTLB invalidation */
  invalidateAll(): number {
    let n = 0;
    for (let e = 0; e < this.entries; e++) {
      if (this.vpn[e] !== -1) {
        this.vpn[e] = -1;
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
    let n = 0;
    for (let e = 0; e < this.entries; e++) {
      const v = this.vpn[e]!;
      if (v !== -1 && (this.tag[e]! & mask) === (tag & mask) && v >= lo && v <= hi) {
        this.vpn[e] = -1;
        n++;
      }
    }
    return n;
  }

  /** Valid entries (for tests and reports). */
  get used(): number {
    let n = 0;
    for (let e = 0; e < this.entries; e++) if (this.vpn[e] !== -1) n++;
    return n;
  }
}
