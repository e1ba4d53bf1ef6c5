/**
 * Reference and pin counts of the physical frames that back user memory.
 *
 * A user page is a folio: one allocation of the machine's `PageAllocator` (order 0, or order 9 for a transparent
 * or hugetlb huge page) with a reference count. References are held by each page-table entry mapping one of its
 * pages, by the page cache (for shmem/memfd pages), and by pins. A pin of an order-0 folio adds
 * `GUP_PIN_COUNTING_BIAS` (1024) to the reference count; a pin of a page of a large folio adds one reference and one
 * to the folio's separate pin count, as Linux does. The folio returns to the allocator when its count reaches zero,
 * so a pinned page outlives munmap, exit and truncation until it is unpinned.
 *
 * Mirrors the page/folio refcounting of `include/linux/mm.h` (`folio_get`, `folio_put`, `folio_maybe_dma_pinned`)
 * and the pin accounting of `mm/gup.c` (`try_grab_folio`, `gup_put_folio`).
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { PAGE_SIZE } from "../platform/memory.js";
import type { PageAllocator } from "../platform/page-alloc.js";

/**
 * What one pin adds to the reference count of an order-0 folio.
 * @linux GUP_PIN_COUNTING_BIAS
 */
export const GUP_PIN_COUNTING_BIAS = 1024;

/**
 * The order of a 2 MiB huge page.
 * @linux HPAGE_PMD_ORDER
 */
export const HPAGE_PMD_ORDER = 9;

/**
 * Bytes in a 2 MiB huge page.
 * @linux HPAGE_PMD_SIZE
 */
export const HPAGE_PMD_SIZE = PAGE_SIZE << HPAGE_PMD_ORDER;

/**
 * Who pinned a page, remembered so a leaked pin is reported with its holder.
 * @linux the page_owner / ref_tracker information a debug kernel would print
 */
export interface PinRecord {
  /** Pid of the process whose memory was pinned, when pinned through an address space. */
  pid?: number;
  /** User VA of the page in that process, when pinned through an address space (a number: no bigint per pin). */
  va?: number | bigint;
  /** A memfd pin: the file's name and the page's byte offset. */
  file?: string;
  offset?: number;
  /** FOLL_LONGTERM. */
  longterm: boolean;
}

/**
 * One user folio (the allocation, its counts, and what it belongs to).
 * @linux struct folio
 */
export class Folio {
  /** Reference count, pins included (each order-0 pin counts GUP_PIN_COUNTING_BIAS). @linux folio->_refcount */
  refcount = 1;
  /** Pins of a large folio (order-0 folios count pins in `refcount`). @linux folio->_pincount */
  pincount = 0;
  /** Page-table entries mapping pages of this folio. @linux folio->_mapcount / _large_mapcount */
  mapcount = 0;
  /** Set by `unpin_user_pages_dirty_lock(..., true)` and by user writes through a shared mapping. @linux PG_dirty */
  dirty = false;
  /** The page cache this folio belongs to (a shmem inode), or undefined for anonymous memory. @linux folio->mapping */
  mapping: object | undefined;
  /** Page index in the owning file (shmem folios). @linux folio->index */
  index = 0;
  /**
   * Holder of the first outstanding pin, kept inline (a page is nearly always pinned once), so a pin allocates
   * nothing: `pin0Page` is its page index in the folio and `pin0Va` the page's VA when the record is shared by a
   * run of pages (NaN: the record's own `va`). For reports only.
   */
  pin0: PinRecord | undefined = undefined;
  pin0Page = 0;
  pin0Va = Number.NaN;
  /** Holders of further pins: page index -> pairs of (record, VA or NaN), in pin order. For reports only. */
  morePins: Map<number, (PinRecord | number)[]> | undefined = undefined;

  constructor(
    /** Physical address of the first page. */
    readonly pa: number,
    /** log2 of the number of pages. */
    readonly order: number,
    /** The allocation site (`user_page`, `user_thp`, `shmem_page`, `hugetlb_page`). */
    readonly site: string,
    /** Describes the owner for reports ("anon of pid 3", "memfd:buffer"). */
    public owner: string,
  ) {}

  /** Pages in the folio. @linux folio_nr_pages */
  get nrPages(): number {
    return 1 << this.order;
  }

  /** Whether the folio is larger than one page. @linux folio_test_large */
  get large(): boolean {
    return this.order > 0;
  }

  /** Outstanding pins of the folio. @linux folio_maybe_dma_pinned (made exact) */
  get pinCount(): number {
    return this.large ? this.pincount : Math.floor(this.refcount / GUP_PIN_COUNTING_BIAS);
  }
}

/**
 * A read-only view of a user page's counts, so a test can assert that every pin was released.
 * @linux page_ref_count / folio_maybe_dma_pinned / folio_mapcount
 */
export interface PageRefs {
  /** Physical address of the folio's first page. */
  folio: number;
  order: number;
  refcount: number;
  pinCount: number;
  mapCount: number;
  dirty: boolean;
  site: string;
  owner: string;
}

/** Forget the holder of the last pin of page `key` of `f` (the reports' side of an unpin). */
function dropPinHolder(f: Folio, key: number): void {
  const rs = f.morePins?.get(key);
  if (rs !== undefined) {
    rs.length -= 2;
    if (rs.length === 0) f.morePins!.delete(key);
  } else if (f.pin0 !== undefined && f.pin0Page === key) {
    f.pin0 = undefined;
  }
}

/** A pin's holder as reported: the record, with the page's own VA when the record is shared by a run. */
function holder(record: PinRecord, va: number): PinRecord {
  return Number.isNaN(va) ? record : { ...record, va };
}

/** Each outstanding pin of `f` with its page's physical address and its holder (report time only). */
function forEachPin(f: Folio, fn: (pa: number, record: PinRecord) => void): void {
  if (f.pin0 !== undefined) fn(f.pa + f.pin0Page * PAGE_SIZE, holder(f.pin0, f.pin0Va));
  if (f.morePins === undefined) return;
  for (const [i, rs] of f.morePins) {
    for (let k = 0; k < rs.length; k += 2) fn(f.pa + i * PAGE_SIZE, holder(rs[k] as PinRecord, rs[k + 1] as number));
  }
}

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

/** Frames per leaf of the folio directory. */
const PAGE_DIR_LEAF = 4096;
/** Shared placeholder for directory slots below the highest leaf that hold no frame yet. */
const EMPTY_LEAF: (Folio | undefined)[] = [];

/**
 * The machine's table of live user folios, indexed by the physical address of every page they hold.
 * @linux the struct page array (mem_map) as far as user memory is concerned
 */
export class UserPageRefs {
  /**
   * Folio of each live page by frame number: a two-level array (4096 frames a leaf) found by index, not by hashing
   * (the pin and unpin paths look up every page).
   */
  private readonly byPage: (Folio | undefined)[][] = [];

  private setPage(pfn: number, f: Folio | undefined): void {
    const hi = Math.floor(pfn / PAGE_DIR_LEAF);
    let leaf = this.byPage[hi];
    if (leaf === undefined) {
      if (f === undefined) return;
      while (this.byPage.length < hi) this.byPage.push(EMPTY_LEAF);
      leaf = new Array<Folio | undefined>(PAGE_DIR_LEAF).fill(undefined);
      this.byPage[hi] = leaf;
    } else if (leaf === EMPTY_LEAF) {
      if (f === undefined) return;
      leaf = new Array<Folio | undefined>(PAGE_DIR_LEAF).fill(undefined);
      this.byPage[hi] = leaf;
    }
    leaf[pfn - hi * PAGE_DIR_LEAF] = f;
  }
  private readonly folios = new Set<Folio>();

  constructor(
    readonly allocator: PageAllocator,
    readonly diag: Diagnostics,
  ) {}

  /**
   * Allocate a zeroed folio of `2^order` pages with one reference held by the caller. Throws ENOMEM (also under
   * fault injection at `site`).
   * @linux folio_alloc / vma_alloc_zeroed_movable_folio / shmem_alloc_folio
   */
  alloc(order: number, site: string, owner: string): Folio {
    const pa = this.allocator.allocPages(order, site);
    const f = new Folio(pa, order, site, owner);
    const pfn = pa / PAGE_SIZE;
    for (let i = 0; i < f.nrPages; i++) this.setPage(pfn + i, f);
    this.folios.add(f);
    return f;
  }

  /**
   * The live folio holding the page at `pa` (any address inside the page), or undefined.
   * @linux page_folio(pfn_to_page(pfn))
   */
  folioOf(pa: number): Folio | undefined {
    const pfn = Math.floor(pa / PAGE_SIZE);
    const hi = Math.floor(pfn / PAGE_DIR_LEAF);
    return this.byPage[hi]?.[pfn - hi * PAGE_DIR_LEAF];
  }

  /** The counts of the page at `pa`, or undefined when it is not a live user page. */
  refs(pa: number): PageRefs | undefined {
    const f = this.folioOf(pa);
    if (f === undefined) return undefined;
    return {
      folio: f.pa,
      order: f.order,
      refcount: f.refcount,
      pinCount: f.pinCount,
      mapCount: f.mapcount,
      dirty: f.dirty,
      site: f.site,
      owner: f.owner,
    };
  }

  /** Every live user folio. */
  live(): readonly Folio[] {
    return [...this.folios];
  }

  /** Every outstanding pin, one entry per pinned page and pin. */
  pins(): { pa: number; record: PinRecord }[] {
    const out: { pa: number; record: PinRecord }[] = [];
    for (const f of this.folios) forEachPin(f, (pa, record) => out.push({ pa, record }));
    return out;
  }

  /** Number of outstanding pins over all user pages. */
  get pinnedCount(): number {
    let n = 0;
    for (const f of this.folios) n += f.pinCount;
    return n;
  }

  /**
   * Take `n` references.
   * @linux folio_ref_add / folio_get
   */
  get(f: Folio, n = 1): void {
    if (f.refcount <= 0) {
      this.diag.report("refcount", `folio_get on free user page ${hex(f.pa)} (${f.owner})`, { culprit: f.owner });
      return;
    }
    f.refcount += n;
  }

  /**
   * Drop `n` references; the folio is freed when none is left.
   * @linux folio_put_refs
   */
  put(f: Folio, n = 1): void {
    if (f.refcount < n) {
      this.diag.report("refcount", `folio_put underflow of user page ${hex(f.pa)} (${f.owner})`, {
        culprit: f.owner,
      });
      return;
    }
    f.refcount -= n;
    if (f.refcount === 0) this.free(f);
  }

  /**
   * Pin the page at `pa` (its folio must be live and referenced). `record` names the holder for reports; a caller
   * pinning a run of pages passes one record for the run and each page's `va` (nothing is allocated per page).
   * @linux try_grab_folio with FOLL_PIN
   */
  pin(pa: number, record: PinRecord, va = Number.NaN): Folio {
    const f = this.folioOf(pa);
    if (f === undefined || f.refcount <= 0) throw new Error(`pin of a page that is not a live user page: ${hex(pa)}`);
    let key = 0;
    if (f.order !== 0) {
      f.refcount += 1;
      f.pincount += 1;
      key = Math.floor((pa - f.pa) / PAGE_SIZE);
    } else {
      f.refcount += GUP_PIN_COUNTING_BIAS;
    }
    if (f.pin0 === undefined) {
      f.pin0 = record;
      f.pin0Page = key;
      f.pin0Va = va;
    } else {
      f.morePins ??= new Map();
      const rs = f.morePins.get(key);
      if (rs === undefined) f.morePins.set(key, [record, va]);
      else rs.push(record, va);
    }
    return f;
  }

  /**
   * Drop one pin of the page at `pa`, marking the folio dirty first when asked. Unpinning a page that is not
   * pinned is reported (`refcount` diagnostic) and ignored.
   * @linux gup_put_folio / unpin_user_page
   */
  unpin(pa: number, makeDirty = false): void {
    const f = this.folioOf(pa);
    if (f === undefined || f.pinCount === 0) {
      this.diag.report("refcount", `unpin_user_page of ${hex(pa)}, which is not pinned`, { skipFrames: 1 });
      return;
    }
    dropPinHolder(f, Math.floor((pa - f.pa) / PAGE_SIZE));
    if (makeDirty) f.dirty = true;
    if (f.large) {
      f.pincount -= 1;
      this.put(f, 1);
    } else {
      this.put(f, GUP_PIN_COUNTING_BIAS);
    }
  }

  /**
   * Drop one pin of each of the `npages` physically contiguous pages from `pa`, a folio at a time (one reference
   * drop per order-0 page, one per large folio for all its pages in the range). Each page that is not pinned is
   * reported as {@link UserPageRefs.unpin} reports it.
   * @linux unpin_user_page_range_dirty_lock (gup_put_folio per folio)
   */
  unpinRange(pa: number, npages: number, makeDirty = false): void {
    let i = 0;
    while (i < npages) {
      const at = pa + i * PAGE_SIZE;
      const f = this.folioOf(at);
      if (f !== undefined && f.order === 0 && f.refcount >= GUP_PIN_COUNTING_BIAS) {
        // A pinned order-0 page: what unpin() does, without looking the folio up again.
        dropPinHolder(f, 0);
        if (makeDirty) f.dirty = true;
        this.put(f, GUP_PIN_COUNTING_BIAS);
        i++;
        continue;
      }
      const first = f === undefined ? 0 : Math.floor((at - f.pa) / PAGE_SIZE);
      const n = f === undefined ? 1 : Math.min(npages - i, f.nrPages - first);
      if (f === undefined || !f.large || f.pincount < n) {
        // Not pinned, or a large folio with fewer pins than pages asked: page by page, with unpin()'s checks.
        for (let k = 0; k < n; k++) this.unpin(at + k * PAGE_SIZE, makeDirty);
      } else {
        for (let k = 0; k < n; k++) dropPinHolder(f, first + k);
        if (makeDirty) f.dirty = true;
        f.pincount -= n;
        this.put(f, n);
      }
      i += n;
    }
  }

  private free(f: Folio): void {
    const pfn = f.pa / PAGE_SIZE;
    for (let i = 0; i < f.nrPages; i++) this.setPage(pfn + i, undefined);
    this.folios.delete(f);
    this.allocator.freePages(f.pa, f.order);
  }

  /**
   * Teardown report: one line per user folio still alive, naming who pinned it (process and VA, or memfd and
   * offset).
   * @linux the "BUG: Bad page state" / kmemleak report of a leaked page
   */
  leaks(): string[] {
    const out: string[] = [];
    for (const f of this.folios) {
      const who: string[] = [];
      forEachPin(f, (pa, r) => {
        const where =
          r.pid !== undefined
            ? `pid ${r.pid} at VA ${hex(r.va ?? 0n)}`
            : r.file !== undefined
              ? `${r.file} at offset ${hex(r.offset ?? 0)}`
              : "unknown";
        who.push(`page ${hex(pa)} pinned${r.longterm ? " (longterm)" : ""} by ${where}`);
      });
      out.push(
        `user page ${hex(f.pa)} (order ${f.order}, ${f.owner}) still referenced: refcount ${f.refcount}, ` +
          `${f.pinCount} pin(s), ${f.mapcount} mapping(s)${who.length > 0 ? `; ${who.join("; ")}` : ""}`,
      );
    }
    return out;
  }
}
