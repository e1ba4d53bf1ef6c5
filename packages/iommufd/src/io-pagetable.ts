/**
 * The io_pagetable of an IOAS: the areas (IOVA ranges mapped to pinned pages), the allowed and reserved IOVA
 * ranges, and the domains every area is mirrored into. Areas are filled into each attached domain; attaching a
 * domain fills it with every area, detaching unfills it. Locks: `domainsRwsem` (the domain list) outside
 * `iovaRwsem` (areas, allowed, reserved), as in Linux.
 * IOVAs are JavaScript numbers: the top of the IOVA space here is 2^53 - 1 ({@link IOPT_IOVA_MAX}), which the uAPI
 * reports as U64_MAX; a fixed IOVA above it is EOVERFLOW (docs/divergences.md).
 * @linux drivers/iommu/iommufd/io_pagetable.c, io_pagetable.h
 */
import {
  type Device,
  IOMMU_RESV,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuResvRegion,
  iommuGetResvRegions,
  iommuMap,
  iommuReadAndClearDirty,
  iommuSetDirtyTracking,
  iommuUnmap,
  kerr,
  kfree,
  minPageSize,
  RwSemaphore,
} from "@iommu-sim/core";
import type { IommufdAccess } from "./access.js";
import type { IommufdCore } from "./core.js";
import {
  type IoptPages,
  ioptPagesAddUsers,
  ioptPagesGet,
  ioptPagesRemoveUsers,
  ioptPutPages,
  PFN_BATCH_ALLOC_SITE,
  type PfnBatch,
} from "./pages.js";
import { PAGE_SIZE } from "./user-glue.js";

/** The last IOVA of the simulated IOVA space. @linux ULONG_MAX */
export const IOPT_IOVA_MAX = Number.MAX_SAFE_INTEGER;

/** Let iommufd pick the IOVA. @linux IOPT_ALLOC_IOVA */
export const IOPT_ALLOC_IOVA = 1 << 0;

/** Fault-injection site of area allocation. @linux the kzalloc of iopt_area_alloc */
export const IOPT_AREA_ALLOC_SITE = "iopt_area_alloc";
/** Fault-injection site of reserved-range allocation. @linux the kzalloc of iopt_reserve_iova */
export const IOPT_RESERVED_ALLOC_SITE = "iopt_reserved_alloc";
/** Fault-injection site of the domain-list slot. @linux the xa_reserve of iopt_table_add_domain */
export const IOPT_DOMAIN_XA_SITE = "iopt_domains_xa";

/**
 * An IOVA range mapped to (part of) an iopt_pages.
 * @linux struct iopt_area
 */
export class IoptArea {
  /** Accesses that pinned through this area. @linux iopt_area.num_accesses */
  numAccesses = 0;
  /** Objects (HW queues) that lock the range against unmap. @linux iopt_area.num_locks */
  numLocks = 0;
  /** Set while an unmap waits for accesses to unpin. @linux iopt_area.prevent_access */
  preventAccess = false;
  /** Whether the area is mirrored into the domains (its pages carry its user count). */
  filled = false;

  constructor(
    readonly iopt: IoPagetable,
    /** @linux iopt_area.node.start */
    public iova: number,
    /** @linux iopt_area.node.last */
    public last: number,
    /** @linux iopt_area.pages (undefined while being unmapped) */
    public pages: IoptPages | undefined,
    /** Byte offset of the area's first byte from the pages' base. @linux pages_node.start * PAGE_SIZE + page_offset */
    public startByte: number,
    /** @linux iopt_area.iommu_prot */
    readonly prot: number,
  ) {}

  /** @linux iopt_area_length */
  get length(): number {
    return this.last - this.iova + 1;
  }
  /** First page index in the pages. @linux iopt_area_index */
  get firstIndex(): number {
    return Math.floor(this.startByte / PAGE_SIZE);
  }
  /** Last page index. @linux iopt_area_last_index */
  get lastIndex(): number {
    return Math.floor((this.startByte + this.length - 1) / PAGE_SIZE);
  }
  /** Offset in the first page. @linux iopt_area.page_offset */
  get pageOffset(): number {
    return this.startByte % PAGE_SIZE;
  }
  /** Page index holding `iova`. @linux iopt_area_iova_to_index */
  iovaToIndex(iova: number): number {
    return Math.floor((this.startByte + iova - this.iova) / PAGE_SIZE);
  }
}

/** A reserved range and who reserved it. @linux struct iopt_reserved */
export interface IoptReserved {
  start: number;
  last: number;
  owner: unknown;
}

/** A range of IOVA. */
export interface IovaSpan {
  start: number;
  last: number;
}

/** One piece of a mapping request. @linux struct iopt_pages_list */
export interface IoptPagesListEntry {
  pages: IoptPages;
  startByte: number;
  length: number;
  area?: IoptArea;
}

/**
 * @linux struct io_pagetable
 */
export class IoPagetable {
  /** Areas sorted by IOVA. @linux io_pagetable.area_itree */
  readonly areas: IoptArea[] = [];
  /** Allowed ranges (empty = everything), sorted. @linux io_pagetable.allowed_itree */
  allowed: IovaSpan[] = [];
  /** Reserved ranges, sorted by start. @linux io_pagetable.reserved_itree */
  readonly reserved: IoptReserved[] = [];
  /** Domains mirrored from the areas, in attach order. @linux io_pagetable.domains */
  readonly domains: IommuDomain[] = [];
  /** In-kernel accesses attached to this IOAS. @linux io_pagetable.access_list */
  readonly accesses = new Map<number, IommufdAccess>();
  private nextAccessId = 1;
  /** @linux io_pagetable.iova_alignment */
  iovaAlignment = 1;
  /** @linux io_pagetable.disable_large_pages */
  disableLargePages = false;
  /** @linux io_pagetable.iova_rwsem */
  readonly iovaRwsem: RwSemaphore;
  /** @linux io_pagetable.domains_rwsem */
  readonly domainsRwsem: RwSemaphore;

  /** @linux iopt_init_table */
  constructor(readonly core: IommufdCore) {
    this.iovaRwsem = new RwSemaphore(core.sched, "iopt.iova_rwsem");
    this.domainsRwsem = new RwSemaphore(core.sched, "iopt.domains_rwsem");
  }

  /** Index of the first area whose last >= iova. */
  private lowerBound(iova: number): number {
    let lo = 0;
    let hi = this.areas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.areas[mid]!.last < iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The first area intersecting [start, last]. @linux iopt_area_iter_first */
  areaIterFirst(start: number, last: number): IoptArea | undefined {
    const a = this.areas[this.lowerBound(start)];
    return a && a.iova <= last ? a : undefined;
  }

  /** Areas intersecting [start, last], in order. */
  areasIn(start: number, last: number): IoptArea[] {
    const out: IoptArea[] = [];
    for (let i = this.lowerBound(start); i < this.areas.length; i++) {
      const a = this.areas[i]!;
      if (a.iova > last) break;
      out.push(a);
    }
    return out;
  }

  /** Insert an area keeping the order. */
  insertArea(area: IoptArea): void {
    this.areas.splice(this.lowerBound(area.iova), 0, area);
  }

  /** Remove an area. */
  removeArea(area: IoptArea): void {
    const i = this.areas.indexOf(area);
    if (i >= 0) this.areas.splice(i, 1);
  }

  /** Whether a reserved range intersects [start, last]. */
  reservedIntersects(start: number, last: number): boolean {
    return this.reserved.some((r) => r.start <= last && r.last >= start);
  }

  /** Register an access; returns its list ID. @linux xa_alloc(&iopt->access_list) */
  addAccessEntry(access: IommufdAccess): number {
    const id = this.nextAccessId++;
    this.accesses.set(id, access);
    return id;
  }
}

/** Merge sorted (possibly overlapping) spans into disjoint used spans. */
function mergeSpans(spans: IovaSpan[]): IovaSpan[] {
  const s = [...spans].sort((a, b) => a.start - b.start);
  const out: IovaSpan[] = [];
  for (const x of s) {
    const top = out[out.length - 1];
    if (top && x.start <= top.last + 1) top.last = Math.max(top.last, x.last);
    else out.push({ start: x.start, last: x.last });
  }
  return out;
}

/** Holes of `used` (disjoint, sorted) within [lo, hi]. @linux interval_tree_for_each_span (is_hole) */
export function holesOf(used: readonly IovaSpan[], lo: number, hi: number): IovaSpan[] {
  const out: IovaSpan[] = [];
  let cur = lo;
  for (const u of used) {
    if (u.last < cur) continue;
    if (u.start > hi) break;
    if (u.start > cur) out.push({ start: cur, last: Math.min(u.start - 1, hi) });
    cur = u.last + 1;
    if (cur > hi) return out;
  }
  if (cur <= hi) out.push({ start: cur, last: hi });
  return out;
}

/**
 * The usable IOVA ranges: the holes between the reserved ranges over the whole IOVA space (iova_rwsem held).
 * @linux interval_tree_for_each_span(&span, &iopt->reserved_itree, 0, ULONG_MAX) with span.is_hole
 */
export function ioptReservedHoles(iopt: IoPagetable): IovaSpan[] {
  return holesOf(mergeSpans(iopt.reserved), 0, IOPT_IOVA_MAX);
}

function roundupPowOfTwo(x: number): number {
  let p = 1;
  while (p < x) p *= 2;
  return p;
}
function lowestSetBit(x: number): number {
  if (x === 0) return 2 ** 52;
  let p = 1;
  while (Math.floor(x / p) % 2 === 0) p *= 2;
  return p;
}

/**
 * Align `start` up to `align`, keep the source's page offset, and check that `length` bytes fit before `last`;
 * returns the IOVA or -1.
 * @linux __alloc_iova_check_range
 */
function checkRange(start: number, last: number, length: number, align: number, pageOffset: number): number {
  let aligned = Math.ceil(start / align) * align;
  if (!Number.isSafeInteger(aligned)) return -1;
  const low = aligned % PAGE_SIZE;
  aligned = aligned - low + (low | pageOffset);
  if (aligned >= last || last - aligned < length - 1) return -1;
  return aligned;
}

/**
 * Find a free IOVA for `length` bytes whose source starts at `uptr`: aligned to the IOAS's alignment and to the
 * source's own alignment (for huge pages), inside an allowed range, outside reserved ranges and areas, never at
 * IOVA 0. ENOSPC when nothing fits; EOVERFLOW for a zero or huge length.
 * @linux iopt_alloc_iova
 */
export function ioptAllocIova(iopt: IoPagetable, uptr: number, length: number): number {
  if (length === 0 || length >= IOPT_IOVA_MAX / 2) throw kerr("EOVERFLOW", "bad length");
  const pageOffset = uptr % PAGE_SIZE;
  let align = uptr ? Math.min(roundupPowOfTwo(length), lowestSetBit(uptr)) : roundupPowOfTwo(length);
  if (align < iopt.iovaAlignment) align = iopt.iovaAlignment;
  const lo = PAGE_SIZE;
  const hi = IOPT_IOVA_MAX - PAGE_SIZE;
  const allowed = iopt.allowed.length === 0 ? [{ start: lo, last: hi }] : mergeSpans(iopt.allowed);
  const used = mergeSpans([
    ...iopt.reserved.map((r) => ({ start: r.start, last: r.last })),
    ...iopt.areas.map((a) => ({ start: a.iova, last: a.last })),
  ]);
  for (const al of allowed) {
    const s = Math.max(al.start, lo);
    const e = Math.min(al.last, hi);
    if (s > e || e - s < length - 1) continue;
    if (checkRange(s, e, length, align, pageOffset) < 0) continue;
    for (const hole of holesOf(used, s, e)) {
      const at = checkRange(hole.start, hole.last, length, align, pageOffset);
      if (at >= 0) return at;
    }
  }
  throw kerr("ENOSPC", `no IOVA space for ${length} bytes`);
}

/**
 * Check a fixed IOVA: aligned (EINVAL), not wrapping (EOVERFLOW), clear of reserved ranges (EADDRINUSE) and of
 * areas (EEXIST).
 * @linux iopt_check_iova
 */
export function ioptCheckIova(iopt: IoPagetable, iova: number, length: number): void {
  if (iova % iopt.iovaAlignment) throw kerr("EINVAL", `IOVA 0x${iova.toString(16)} is not aligned`);
  const last = iova + length - 1;
  if (!Number.isSafeInteger(last)) throw kerr("EOVERFLOW", "IOVA range wraps");
  if (iopt.reservedIntersects(iova, last)) throw kerr("EADDRINUSE", "IOVA range is reserved");
  if (iopt.areaIterFirst(iova, last)) throw kerr("EEXIST", "IOVA range is already mapped");
}

/**
 * Map one area's bytes into one domain: each physically contiguous PFN run in one driver call (one call per page
 * when large pages are disabled). A failure unmaps what this call mapped.
 * @linux iopt_area_fill_domain / batch_to_domain
 */
function mapAreaInDomain(area: IoptArea, domain: IommuDomain, large: boolean, batch?: PfnBatch): void {
  const pages = area.pages!;
  const start = area.startByte;
  const end = start + area.length;
  const lastIdx = Math.floor((end - 1) / PAGE_SIZE);
  let idx = Math.floor(start / PAGE_SIZE);
  let iova = area.iova;
  let run = 0;
  try {
    while (idx <= lastIdx) {
      // The runs gathered while pinning (batch_to_domain), else the stored PFNs, scanned for contiguous runs.
      const fromBatch = large && batch !== undefined;
      const n = fromBatch ? batch.npages[run]! : large ? pages.contiguousPages(idx, lastIdx) : 1;
      const pa = fromBatch ? batch.pas[run++]! : pages.pa(idx);
      const from = Math.max(idx * PAGE_SIZE, start);
      const to = Math.min((idx + n) * PAGE_SIZE, end);
      iommuMap(domain, iova, pa + (from - idx * PAGE_SIZE), to - from, area.prot);
      iova += to - from;
      idx += n;
    }
  } catch (e) {
    const mapped = iova - area.iova;
    if (mapped > 0) iommuUnmap(domain, area.iova, mapped);
    throw e;
  }
}

function unmapAreaFromDomain(area: IoptArea, domain: IommuDomain): void {
  const n = iommuUnmap(domain, area.iova, area.length);
  domain.diag?.warnOn(n !== area.length, `unmap of ${area.length} bytes at 0x${area.iova.toString(16)} unmapped ${n}`);
}

/**
 * Pin an area's pages (first domain) and map it into every domain of the list; unwinds on failure.
 * @linux iopt_area_fill_domains
 */
export function ioptAreaFillDomains(area: IoptArea, domains: readonly IommuDomain[]): void {
  if (domains.length === 0 || area.filled) return;
  const pages = area.pages!;
  const batch: PfnBatch = { pas: [], npages: [] };
  const whole = ioptPagesAddUsers(pages, area.firstIndex, area.lastIndex, "domain", batch);
  const done: IommuDomain[] = [];
  try {
    for (const d of domains) {
      mapAreaInDomain(area, d, !area.iopt.disableLargePages, whole ? batch : undefined);
      done.push(d);
    }
  } catch (e) {
    for (const d of done) unmapAreaFromDomain(area, d);
    ioptPagesRemoveUsers(pages, area.firstIndex, area.lastIndex);
    throw e;
  }
  area.filled = true;
}

/**
 * Unmap an area from every domain and drop its pin.
 * @linux iopt_area_unfill_domains
 */
export function ioptAreaUnfillDomains(area: IoptArea, pages: IoptPages, domains: readonly IommuDomain[]): void {
  if (!area.filled) return;
  for (const d of domains) unmapAreaFromDomain(area, d);
  ioptPagesRemoveUsers(pages, area.firstIndex, area.lastIndex);
  area.filled = false;
}

/**
 * Map a list of page ranges contiguously at a fixed or allocated IOVA, then fill every domain. Returns the IOVA.
 * EPERM for a writable mapping of read-only pages.
 * @linux iopt_map_pages (iopt_alloc_area_pages + iopt_fill_domains_pages)
 */
export async function ioptMapPages(
  iopt: IoPagetable,
  list: IoptPagesListEntry[],
  length: number,
  iova: number,
  prot: number,
  flags: number,
): Promise<number> {
  await iopt.domainsRwsem.downRead();
  try {
    await iopt.iovaRwsem.downWrite();
    let dst: number;
    try {
      for (const _elm of list) iopt.core.faults.check(IOPT_AREA_ALLOC_SITE);
      if (length % iopt.iovaAlignment || !length) throw kerr("EINVAL", `length ${length} is not aligned`);
      if (flags & IOPT_ALLOC_IOVA) {
        const first = list[0]!;
        dst = ioptAllocIova(iopt, first.pages.base + first.startByte, length);
      } else {
        if (!Number.isSafeInteger(iova + length - 1)) throw kerr("EOVERFLOW", "IOVA range wraps");
        ioptCheckIova(iopt, iova, length);
        dst = iova;
      }
      let at = dst;
      for (const elm of list) {
        if (prot & IOMMU_WRITE && !elm.pages.writable) throw kerr("EPERM", "read-only pages mapped writable");
        if ((elm.startByte % PAGE_SIZE) % iopt.iovaAlignment) throw kerr("EINVAL", "page offset is not aligned");
        at += elm.length;
      }
      at = dst;
      for (const elm of list) {
        ioptPagesGet(elm.pages);
        const area = new IoptArea(iopt, at, at + elm.length - 1, elm.pages, elm.startByte, prot);
        iopt.insertArea(area);
        elm.area = area;
        at += elm.length;
      }
    } finally {
      iopt.iovaRwsem.upWrite();
    }
    // Fill outside the iova lock, as Linux does: the areas exist but are not yet filled.
    const filled: IoptArea[] = [];
    try {
      for (const elm of list) {
        ioptAreaFillDomains(elm.area!, iopt.domains);
        filled.push(elm.area!);
      }
    } catch (e) {
      await iopt.iovaRwsem.downWrite();
      for (const elm of list) {
        const area = elm.area!;
        if (filled.includes(area)) ioptAreaUnfillDomains(area, area.pages!, iopt.domains);
        iopt.removeArea(area);
        ioptPutPages(area.pages!);
        area.pages = undefined;
        kfree(iopt.core.diag, area, "iopt_area");
      }
      iopt.iovaRwsem.upWrite();
      throw e;
    }
    return dst;
  } finally {
    iopt.domainsRwsem.upRead();
  }
}

/**
 * The pages behind [iova, iova + length) as a list (each with a reference); ENOENT when a hole or an area being
 * unmapped is in the way, EINVAL for a zero length, EOVERFLOW when it wraps.
 * @linux iopt_get_pages
 */
export async function ioptGetPages(iopt: IoPagetable, iova: number, length: number): Promise<IoptPagesListEntry[]> {
  if (!length) throw kerr("EINVAL", "zero length");
  const last = iova + length - 1;
  if (!Number.isSafeInteger(last)) throw kerr("EOVERFLOW", "IOVA range wraps");
  await iopt.iovaRwsem.downRead();
  try {
    const out: IoptPagesListEntry[] = [];
    let cur = iova;
    for (const area of iopt.areasIn(iova, last)) {
      if (area.iova > cur || !area.pages) break;
      const end = Math.min(last, area.last);
      iopt.core.faults.check(IOPT_AREA_ALLOC_SITE);
      ioptPagesGet(area.pages);
      out.push({ pages: area.pages, startByte: area.startByte + (cur - area.iova), length: end - cur + 1 });
      cur = end + 1;
      if (cur > last) break;
    }
    if (cur <= last) {
      for (const e of out) ioptPutPages(e.pages);
      throw kerr("ENOENT", "IOVA range is not fully mapped");
    }
    return out;
  } finally {
    iopt.iovaRwsem.upRead();
  }
}

/** Drop the references of a pages list. @linux iopt_free_pages_list */
export function ioptFreePagesList(list: IoptPagesListEntry[]): void {
  for (const e of list) ioptPutPages(e.pages);
  list.length = 0;
}

/**
 * Unmap every area inside [start, last]: ENOENT when an area sticks out of the range, EBUSY when an area is locked
 * or being unmapped concurrently. Accesses that pinned an area are told to unpin first. Returns the bytes
 * unmapped; a range with nothing mapped is not an error (0 bytes), only IOMMU_IOAS_UNMAP turns that into ENOENT.
 * @linux iopt_unmap_iova_range
 */
export function ioptUnmapIovaRange(iopt: IoPagetable, start: number, last: number): Promise<number> {
  try {
    const r = ioptUnmapIovaRangeOrWait(iopt, start, last);
    return typeof r === "number" ? Promise.resolve(r) : r;
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * {@link ioptUnmapIovaRange} without an asynchronous step when nothing sleeps (both locks uncontended, no access
 * to notify): returns the bytes unmapped then, otherwise a promise of them. Errors of that synchronous pass throw.
 * @linux iopt_unmap_iova_range
 */
export function ioptUnmapIovaRangeOrWait(iopt: IoPagetable, start: number, last: number): number | Promise<number> {
  // domains_rwsem for read, then iova_rwsem for write; uncontended they are taken without an asynchronous step.
  const wd = iopt.domainsRwsem.downReadOrWait();
  if (wd) return unmapIovaRangeSlow(iopt, start, last, 1, wd, 0, 0);
  const wi = iopt.iovaRwsem.downWriteOrWait();
  if (wi) return unmapIovaRangeSlow(iopt, start, last, 2, wi, 0, 0);
  const pass = unmapPassLocked(iopt, start, last);
  if (!pass.notify) return pass.unmapped;
  return unmapIovaRangeSlow(iopt, start, last, 0, undefined, pass.unmapped, 0, pass.notify);
}

/** One pass of {@link ioptUnmapIovaRange} under both locks (released here): what it unmapped, or the area to notify. */
function unmapPassLocked(
  iopt: IoPagetable,
  start: number,
  last: number,
): { unmapped: number; notify: IoptArea | undefined } {
  let unmapped = 0;
  let notify: IoptArea | undefined;
  try {
    let area = iopt.areaIterFirst(start, last);
    while (area) {
      if (!area.pages) throw kerr("EBUSY", "area is being unmapped");
      if (area.numLocks) throw kerr("EBUSY", "area is locked");
      if (area.iova < start || area.last > last) throw kerr("ENOENT", "unmap would split an area");
      if (area.numAccesses) {
        area.preventAccess = true;
        notify = area;
        break;
      }
      const pages = area.pages;
      area.pages = undefined;
      ioptAreaUnfillDomains(area, pages, iopt.domains);
      iopt.removeArea(area);
      ioptPutPages(pages);
      kfree(iopt.core.diag, area, "iopt_area");
      unmapped += area.last - area.iova + 1;
      area = iopt.areaIterFirst(start, last);
    }
  } finally {
    iopt.iovaRwsem.upWrite();
    iopt.domainsRwsem.upRead();
  }
  return { unmapped, notify };
}

/**
 * The sleeping form of {@link ioptUnmapIovaRange}: `stage` says which lock acquisition `pending` completes (1: the
 * domains lock, 2: the IOVA lock, 0: none); `notify`, an area whose accesses must unpin before the next pass.
 */
async function unmapIovaRangeSlow(
  iopt: IoPagetable,
  start: number,
  last: number,
  stage: number,
  pending: Promise<void> | undefined,
  unmapped: number,
  tries: number,
  notify?: IoptArea,
): Promise<number> {
  for (;;) {
    if (notify) {
      const { iommufdAccessNotifyUnmap } = await import("./access.js");
      start = Math.max(start, notify.iova);
      await iommufdAccessNotifyUnmap(iopt, notify.iova, notify.length);
      if (iopt.core.diag.warnOn(++tries > 100, "an access does not respond to unmap requests")) {
        throw kerr("EDEADLK", "access did not unpin");
      }
    }
    if (pending) await pending;
    pending = undefined;
    if (stage < 1) await iopt.domainsRwsem.downRead();
    if (stage < 2) await iopt.iovaRwsem.downWrite();
    stage = 0;
    const pass = unmapPassLocked(iopt, start, last);
    unmapped += pass.unmapped;
    notify = pass.notify;
    if (!notify) return unmapped;
  }
}

/**
 * Unmap [iova, iova + length). EINVAL for a zero length, EOVERFLOW when it wraps.
 * @linux iopt_unmap_iova
 */
export async function ioptUnmapIova(iopt: IoPagetable, iova: number, length: number): Promise<number> {
  if (!length) throw kerr("EINVAL", "zero length");
  const last = iova + length - 1;
  if (!Number.isSafeInteger(last)) throw kerr("EOVERFLOW", "IOVA range wraps");
  return ioptUnmapIovaRange(iopt, iova, last);
}

/**
 * Unmap everything; an empty IOAS is not an error.
 * @linux iopt_unmap_all
 */
export function ioptUnmapAll(iopt: IoPagetable): Promise<number> {
  return ioptUnmapIovaRange(iopt, 0, IOPT_IOVA_MAX);
}

/**
 * {@link ioptUnmapAll} without an asynchronous step when nothing sleeps (see {@link ioptUnmapIovaRangeOrWait}).
 * @linux iopt_unmap_all
 */
export function ioptUnmapAllOrWait(iopt: IoPagetable): number | Promise<number> {
  return ioptUnmapIovaRangeOrWait(iopt, 0, IOPT_IOVA_MAX);
}

/**
 * Replace the allowed ranges; EADDRINUSE (and no change) when a reserved range falls outside them.
 * @linux iopt_set_allow_iova
 */
export async function ioptSetAllowIova(iopt: IoPagetable, allowed: IovaSpan[]): Promise<void> {
  await iopt.iovaRwsem.downWrite();
  try {
    if (allowed.length) {
      for (const r of iopt.reserved) {
        if (allowed.some((a) => a.start <= r.last && a.last >= r.start)) {
          throw kerr("EADDRINUSE", "an allowed range covers a reserved range");
        }
      }
    }
    iopt.allowed = [...allowed].sort((a, b) => a.start - b.start);
  } finally {
    iopt.iovaRwsem.upWrite();
  }
}

/**
 * Reserve [start, last] for `owner`: EADDRINUSE when an area or an allowed range intersects it. An end past the
 * simulated IOVA space is clamped to its top ({@link IOPT_IOVA_MAX}); a range wholly past it reserves nothing.
 * @linux iopt_reserve_iova (iova_rwsem held for write)
 */
export function ioptReserveIova(iopt: IoPagetable, start: number, last: number, owner: unknown): void {
  if (start > IOPT_IOVA_MAX) return;
  if (last > IOPT_IOVA_MAX) last = IOPT_IOVA_MAX;
  if (iopt.areaIterFirst(start, last)) throw kerr("EADDRINUSE", "reserved range is mapped");
  if (iopt.allowed.some((a) => a.start <= last && a.last >= start)) throw kerr("EADDRINUSE", "range is allowed");
  iopt.core.faults.check(IOPT_RESERVED_ALLOC_SITE);
  const r = { start, last, owner };
  let i = 0;
  while (i < iopt.reserved.length && iopt.reserved[i]!.start <= start) i++;
  iopt.reserved.splice(i, 0, r);
}

/**
 * Drop every reserved range of `owner` (iova_rwsem held for write).
 * @linux __iopt_remove_reserved_iova
 */
export function ioptRemoveReservedIovaLocked(iopt: IoPagetable, owner: unknown): void {
  for (let i = iopt.reserved.length - 1; i >= 0; i--) if (iopt.reserved[i]!.owner === owner) iopt.reserved.splice(i, 1);
}

/**
 * Drop every reserved range of `owner`.
 * @linux iopt_remove_reserved_iova
 */
export async function ioptRemoveReservedIova(iopt: IoPagetable, owner: unknown): Promise<void> {
  await iopt.iovaRwsem.downWrite();
  ioptRemoveReservedIovaLocked(iopt, owner);
  iopt.iovaRwsem.upWrite();
}

/**
 * Reserve the device's reserved regions (except relaxable direct ones) in the IOAS, owned by the device; MSI
 * windows are reported as the software MSI start. Undone on failure.
 * @linux iopt_table_enforce_dev_resv_regions
 */
export async function ioptTableEnforceDevResvRegions(
  iopt: IoPagetable,
  dev: Device,
): Promise<{ swMsiStart: number | undefined }> {
  const regions: IommuResvRegion[] = iommuGetResvRegions(dev);
  let swMsiStart: number | undefined;
  await iopt.iovaRwsem.downWrite();
  try {
    for (const r of regions) {
      if (r.type === IOMMU_RESV.DIRECT_RELAXABLE) continue;
      if (r.type === IOMMU_RESV.SW_MSI) swMsiStart = r.start;
      ioptReserveIova(iopt, r.start, r.start + r.length - 1, dev);
    }
  } catch (e) {
    ioptRemoveReservedIovaLocked(iopt, dev);
    throw e;
  } finally {
    iopt.iovaRwsem.upWrite();
  }
  return { swMsiStart };
}

/** The alignment the domains and accesses need. @linux iopt_calculate_iova_alignment */
function calculateIovaAlignment(iopt: IoPagetable, extra?: IommuDomain): number {
  let a = 1;
  const doms = extra ? [...iopt.domains, extra] : iopt.domains;
  for (const d of doms) a = Math.max(a, minPageSize(d.pgsizeBitmap));
  for (const acc of iopt.accesses.values()) a = Math.max(a, acc.iovaAlignment);
  if (iopt.disableLargePages) a = Math.max(a, PAGE_SIZE);
  return a;
}

/** EADDRINUSE when an existing area is not aligned to `align`. @linux iopt_check_iova_alignment */
function checkIovaAlignment(iopt: IoPagetable, align: number): void {
  for (const a of iopt.areas) {
    if (a.iova % align || a.length % align || a.pageOffset % align) {
      throw kerr("EADDRINUSE", `area at 0x${a.iova.toString(16)} is not aligned to ${align}`);
    }
  }
}

/** Recompute the IOAS alignment (locks held). @linux iopt_calculate_iova_alignment */
export function ioptRecalcAlignment(iopt: IoPagetable, extra?: IommuDomain): void {
  const a = calculateIovaAlignment(iopt, extra);
  if (a > iopt.iovaAlignment) checkIovaAlignment(iopt, a);
  iopt.iovaAlignment = a;
}

/**
 * Add a domain: reserve what lies outside its aperture, check alignment, fill it with every area.
 * @linux iopt_table_add_domain
 */
export async function ioptTableAddDomain(iopt: IoPagetable, domain: IommuDomain): Promise<void> {
  await iopt.domainsRwsem.downWrite();
  await iopt.iovaRwsem.downWrite();
  try {
    if (iopt.core.diag.warnOn(iopt.domains.includes(domain), "domain added twice")) throw kerr("EEXIST");
    const g = domain.geometry;
    try {
      if (g.apertureStart > 0) ioptReserveIova(iopt, 0, g.apertureStart - 1, domain);
      if (g.apertureEnd < IOPT_IOVA_MAX) ioptReserveIova(iopt, g.apertureEnd + 1, IOPT_IOVA_MAX, domain);
      ioptRecalcAlignment(iopt, domain);
      iopt.core.faults.check(IOPT_DOMAIN_XA_SITE);
      const filled: IoptArea[] = [];
      try {
        for (const area of iopt.areas) {
          if (!area.pages) continue;
          if (area.filled) {
            // The PFNs come from the pin already held, through a batch as in Linux's pfn_reader.
            iopt.core.faults.check(PFN_BATCH_ALLOC_SITE);
            mapAreaInDomain(area, domain, !iopt.disableLargePages);
          } else ioptAreaFillDomains(area, [domain]);
          filled.push(area);
        }
      } catch (e) {
        for (const area of filled) {
          if (iopt.domains.length === 0) ioptAreaUnfillDomains(area, area.pages!, [domain]);
          else unmapAreaFromDomain(area, domain);
        }
        throw e;
      }
      iopt.domains.push(domain);
    } catch (e) {
      ioptRemoveReservedIovaLocked(iopt, domain);
      ioptRecalcAlignment(iopt);
      throw e;
    }
  } finally {
    iopt.iovaRwsem.upWrite();
    iopt.domainsRwsem.upWrite();
  }
}

/**
 * Remove a domain: unmap every area from it (the last domain also drops the areas' pins), drop its reserved
 * ranges, recompute the alignment.
 * @linux iopt_table_remove_domain
 */
export async function ioptTableRemoveDomain(iopt: IoPagetable, domain: IommuDomain): Promise<void> {
  await iopt.domainsRwsem.downWrite();
  await iopt.iovaRwsem.downWrite();
  try {
    const i = iopt.domains.indexOf(domain);
    if (iopt.core.diag.warnOn(i < 0, "removing a domain that is not in the IOAS")) return;
    iopt.domains.splice(i, 1);
    for (const area of iopt.areas) {
      if (!area.pages || !area.filled) continue;
      if (iopt.domains.length === 0) ioptAreaUnfillDomains(area, area.pages, [domain]);
      else unmapAreaFromDomain(area, domain);
    }
    ioptRemoveReservedIovaLocked(iopt, domain);
    iopt.iovaAlignment = calculateIovaAlignment(iopt);
  } finally {
    iopt.iovaRwsem.upWrite();
    iopt.domainsRwsem.upWrite();
  }
}

/**
 * Stop using huge pages: only while no domain holds mappings (EINVAL otherwise).
 * @linux iopt_disable_large_pages
 */
export async function ioptDisableLargePages(iopt: IoPagetable): Promise<void> {
  await iopt.domainsRwsem.downWrite();
  await iopt.iovaRwsem.downWrite();
  try {
    if (iopt.disableLargePages) return;
    if (iopt.domains.length && iopt.areas.length) throw kerr("EINVAL", "domains already hold mappings");
    iopt.disableLargePages = true;
    try {
      ioptRecalcAlignment(iopt);
    } catch (e) {
      iopt.disableLargePages = false;
      throw e;
    }
  } finally {
    iopt.iovaRwsem.upWrite();
    iopt.domainsRwsem.upWrite();
  }
}

/**
 * Split an area in two at `iova` (which becomes the last IOVA of the left part), both parts sharing the pages; the
 * domains are untouched since the pages do not change. Nothing to do at either end of the area. EBUSY while the
 * area is being unmapped; EINVAL when the cut is not aligned, an access pinned through the area, or a domain may
 * have mapped it with large pages. Caller holds iova_rwsem for write.
 * @linux iopt_area_split
 */
export function ioptAreaSplit(area: IoptArea, iova: number): void {
  const iopt = area.iopt;
  iopt.iovaRwsem.assertWriteHeld();
  if (iova === area.iova || iova === area.last) return;
  const pages = area.pages;
  if (!pages || area.preventAccess) throw kerr("EBUSY", "area is being unmapped");
  const newStart = iova + 1;
  const align = iopt.iovaAlignment;
  const newStartByte = area.startByte + (newStart - area.iova);
  if (newStart % align || newStartByte % align) throw kerr("EINVAL", "cut is not aligned");
  // The two kzallocs of struct iopt_area.
  iopt.core.faults.check(IOPT_AREA_ALLOC_SITE);
  iopt.core.faults.check(IOPT_AREA_ALLOC_SITE);
  // Existing accesses cannot be split; neither can what a domain may have mapped with large pages.
  if (area.numAccesses) throw kerr("EINVAL", "an access pinned through the area");
  if (area.filled && !iopt.disableLargePages) throw kerr("EINVAL", "the area may be mapped with large pages");
  const lhs = new IoptArea(iopt, area.iova, iova, pages, area.startByte, area.prot);
  const rhs = new IoptArea(iopt, newStart, area.last, pages, newStartByte, area.prot);
  lhs.filled = rhs.filled = area.filled;
  ioptPagesGet(pages);
  // A cut inside a page leaves that page under both halves: each half holds its own user count on it.
  if (area.filled && lhs.lastIndex === rhs.firstIndex) ioptPagesAddUsers(pages, rhs.firstIndex, rhs.firstIndex);
  iopt.removeArea(area);
  iopt.insertArea(lhs);
  iopt.insertArea(rhs);
  area.pages = undefined;
  kfree(iopt.core.diag, area, "iopt_area");
}

/**
 * Make each IOVA in `iovas` the last IOVA of an area (splitting the area that contains it), so a later unmap can
 * stop there: the VFIO type1 (v1) unmap of part of a mapping. Stops at the first error.
 * @linux iopt_cut_iova
 */
export async function ioptCutIova(iopt: IoPagetable, iovas: readonly number[]): Promise<void> {
  await iopt.iovaRwsem.downWrite();
  try {
    for (const iova of iovas) {
      const area = iopt.areaIterFirst(iova, iova);
      if (!area) continue;
      ioptAreaSplit(area, iova);
    }
  } finally {
    iopt.iovaRwsem.upWrite();
  }
}

/**
 * Use huge pages again.
 * @linux iopt_enable_large_pages
 */
export async function ioptEnableLargePages(iopt: IoPagetable): Promise<void> {
  await iopt.domainsRwsem.downWrite();
  await iopt.iovaRwsem.downWrite();
  iopt.disableLargePages = false;
  iopt.iovaAlignment = calculateIovaAlignment(iopt);
  iopt.iovaRwsem.upWrite();
  iopt.domainsRwsem.upWrite();
}

/**
 * Turn dirty tracking of a domain on or off; turning it on first clears stale dirty bits of every area.
 * @linux iopt_set_dirty_tracking
 */
export async function ioptSetDirtyTracking(iopt: IoPagetable, domain: IommuDomain, enable: boolean): Promise<void> {
  if (!domain.dirtyOps) throw kerr("EOPNOTSUPP", "domain cannot track dirty pages");
  await iopt.iovaRwsem.downRead();
  try {
    await iommuSetDirtyTracking(domain, enable);
    if (enable) {
      // Linux clears stale bits before enabling, with a NULL bitmap the driver accepts while tracking is off;
      // our driver hook cannot tell a NULL bitmap, so the clear runs right after enabling (no DMA can run
      // between the two: nothing here yields).
      try {
        for (const area of iopt.areas) {
          if (!area.pages) continue;
          iommuReadAndClearDirty(domain, area.iova, area.length, 0, () => {});
        }
      } catch (e) {
        await iommuSetDirtyTracking(domain, false);
        throw e;
      }
    }
  } finally {
    iopt.iovaRwsem.upRead();
  }
}

/**
 * Report dirty IOVA of [iova, iova + length) that is mapped into `sink`, area by area, clearing unless
 * NO_CLEAR.
 * @linux iopt_read_and_clear_dirty_data / iommu_read_and_clear_dirty
 */
export async function ioptReadAndClearDirtyData(
  iopt: IoPagetable,
  domain: IommuDomain,
  flags: number,
  iova: number,
  length: number,
  sink: (iova: number, length: number) => void,
): Promise<void> {
  if (!domain.dirtyOps) throw kerr("EOPNOTSUPP", "domain cannot track dirty pages");
  await iopt.iovaRwsem.downRead();
  try {
    const last = iova + length - 1;
    for (const area of iopt.areasIn(iova, last)) {
      if (!area.pages) continue;
      const s = Math.max(iova, area.iova);
      const e = Math.min(last, area.last);
      iommuReadAndClearDirty(domain, s, e - s + 1, flags, sink);
    }
  } finally {
    iopt.iovaRwsem.upRead();
  }
}

/**
 * Tear the table down: it must be empty by now.
 * @linux iopt_destroy_table
 */
export function ioptDestroyTable(iopt: IoPagetable): void {
  const diag = iopt.core.diag;
  ioptRemoveReservedIovaLocked(iopt, iopt);
  diag.warnOn(iopt.areas.length !== 0, "iopt destroyed with areas");
  diag.warnOn(iopt.domains.length !== 0, "iopt destroyed with domains");
  diag.warnOn(iopt.accesses.size !== 0, "iopt destroyed with accesses");
  iopt.allowed = [];
  iopt.reserved.length = 0;
}
