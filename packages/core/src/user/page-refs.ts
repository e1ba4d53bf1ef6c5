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
import { PTE_NONE } from "./pte-table.js";

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

/** Frames per leaf of the page array. A folio never spans two leaves: folios are naturally aligned, and smaller. */
const PAGE_DIR_LEAF = 4096;
if (PAGE_DIR_LEAF !== 4096 || PAGE_SIZE !== 4096) throw new Error("pinEntries divides by the literal 4096");
/** Largest folio order a leaf can hold. */
const MAX_FOLIO_ORDER = 12;
/** A frame's slot in its leaf (a subtraction: `%` of a float frame number is a library call on the hot paths). */
function slotOf(pfn: number): number {
  return pfn - Math.floor(pfn / PAGE_DIR_LEAF) * PAGE_DIR_LEAF;
}
/** `PageLeaf.order` of a frame that is not a live user page. */
const NO_FOLIO = -1;

/**
 * One stretch of 4096 frames of the page array: each page's folio and, in typed arrays indexed by frame, the counts
 * the pin and unpin paths touch (a pin of a run of pages walks these arrays in order instead of visiting one
 * object per page).
 * @linux a section of struct page (mem_map): _refcount, and _pincount of a large folio, kept at the head page
 */
class PageLeaf {
  /** The folio each page belongs to. */
  readonly folio: (Folio | undefined)[] = new Array<Folio | undefined>(PAGE_DIR_LEAF).fill(undefined);
  /** Order of each page's folio; NO_FOLIO when the frame is not a live user page. @linux folio_order */
  readonly order = new Int8Array(PAGE_DIR_LEAF).fill(NO_FOLIO);
  /** Reference count, pins included, at the folio's head page. @linux folio->_refcount */
  readonly ref = new Int32Array(PAGE_DIR_LEAF);
  /** Pins of a large folio, at its head page. @linux folio->_pincount */
  readonly pins = new Int32Array(PAGE_DIR_LEAF);
  /**
   * Holder of each page's first outstanding pin (reports only). A record shared by a run of pages leaves the VA
   * to `holderVa` (NaN: the record's own `va`). A large folio's slots are cleared by each page's last unpin; an
   * order-0 page's slot is simply overwritten by its next first pin (its refcount says whether it is pinned).
   */
  readonly holder: (PinRecord | undefined)[] = new Array<PinRecord | undefined>(PAGE_DIR_LEAF).fill(undefined);
  readonly holderVa = new Float64Array(PAGE_DIR_LEAF);
}

/**
 * One user folio (the allocation, its counts, and what it belongs to). The reference and pin counts live in the
 * page array beside the folio's head page (where the pin paths find them by frame number); these accessors read
 * and write them there, and read 0 once the folio is freed.
 * @linux struct folio
 */
export class Folio {
  /** Page-table entries mapping pages of this folio. @linux folio->_mapcount / _large_mapcount */
  mapcount = 0;
  /** Set by `unpin_user_pages_dirty_lock(..., true)` and by user writes through a shared mapping. @linux PG_dirty */
  dirty = false;
  /** The page cache this folio belongs to (a shmem inode), or undefined for anonymous memory. @linux folio->mapping */
  mapping: object | undefined;
  /** Page index in the owning file (shmem folios). @linux folio->index */
  index = 0;
  /** Returned to the allocator: the counts read 0 from now on, whoever reuses the frames. */
  freed = false;

  /** Made by {@link UserPageRefs.alloc} only. @hidden */
  constructor(
    /** Physical address of the first page. */
    readonly pa: number,
    /** log2 of the number of pages. */
    readonly order: number,
    /** The allocation site (`user_page`, `user_thp`, `shmem_page`, `hugetlb_page`). */
    readonly site: string,
    /** Describes the owner for reports ("anon of pid 3", "memfd:buffer"). */
    public owner: string,
    /** @internal The page-array leaf holding the folio's counts. */
    readonly leaf: PageLeaf,
    /** @internal The head page's slot in `leaf`. */
    readonly slot: number,
  ) {}

  /** Reference count, pins included (each order-0 pin counts GUP_PIN_COUNTING_BIAS). @linux folio_ref_count */
  get refcount(): number {
    return this.freed ? 0 : this.leaf.ref[this.slot]!;
  }
  set refcount(n: number) {
    if (!this.freed) this.leaf.ref[this.slot] = n;
  }

  /** Pins of a large folio (order-0 folios count pins in `refcount`). @linux folio->_pincount */
  get pincount(): number {
    return this.freed ? 0 : this.leaf.pins[this.slot]!;
  }
  set pincount(n: number) {
    if (!this.freed) this.leaf.pins[this.slot] = n;
  }

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

/** A pin's holder as reported: the record, with the page's own VA when the record is shared by a run. */
function holder(record: PinRecord, va: number): PinRecord {
  return Number.isNaN(va) ? record : { ...record, va };
}

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

/**
 * The machine's table of live user folios, indexed by the physical address of every page they hold.
 * @linux the struct page array (mem_map) as far as user memory is concerned
 */
export class UserPageRefs {
  /**
   * The page array by frame number, in leaves of 4096 frames found by index, not by hashing (the pin and unpin
   * paths look up every page), the last leaf used kept at hand.
   */
  private readonly byPage: (PageLeaf | undefined)[] = [];
  private lastHi = -1;
  private lastLeaf: PageLeaf | undefined = undefined;
  /**
   * Holders of a page's further pins (a page is nearly always pinned once; its first holder sits in the page
   * array): frame number -> pairs of (record, VA or NaN), in pin order. For reports only.
   */
  private readonly morePins = new Map<number, (PinRecord | number)[]>();
  private readonly folios = new Set<Folio>();

  constructor(
    readonly allocator: PageAllocator,
    readonly diag: Diagnostics,
  ) {}

  /** The leaf holding frame number `pfn`, or undefined when no user page was ever there. */
  private leafOf(pfn: number): PageLeaf | undefined {
    const hi = Math.floor(pfn / PAGE_DIR_LEAF);
    if (hi === this.lastHi) return this.lastLeaf;
    const leaf = this.byPage[hi];
    if (leaf !== undefined) {
      this.lastHi = hi;
      this.lastLeaf = leaf;
    }
    return leaf;
  }

  /** The leaf of `pfn`, created when missing (kept once made: frames are reused). */
  private leafFor(pfn: number): PageLeaf {
    const hi = Math.floor(pfn / PAGE_DIR_LEAF);
    let leaf = this.byPage[hi];
    if (leaf === undefined) {
      while (this.byPage.length < hi) this.byPage.push(undefined);
      leaf = new PageLeaf();
      this.byPage[hi] = leaf;
    }
    return leaf;
  }

  /**
   * Allocate a zeroed folio of `2^order` pages with one reference held by the caller. Throws ENOMEM (also under
   * fault injection at `site`).
   * @linux folio_alloc / vma_alloc_zeroed_movable_folio / shmem_alloc_folio
   */
  alloc(order: number, site: string, owner: string): Folio {
    if (order > MAX_FOLIO_ORDER) throw new Error(`user folio of order ${order}: at most ${MAX_FOLIO_ORDER}`);
    const pa = this.allocator.allocPages(order, site);
    const pfn = pa / PAGE_SIZE;
    const leaf = this.leafFor(pfn);
    const slot = slotOf(pfn);
    const f = new Folio(pa, order, site, owner, leaf, slot);
    leaf.ref[slot] = 1;
    leaf.pins[slot] = 0;
    for (let i = 0; i < f.nrPages; i++) {
      leaf.folio[slot + i] = f;
      leaf.order[slot + i] = order;
    }
    this.folios.add(f);
    return f;
  }

  /**
   * The live folio holding the page at `pa` (any address inside the page), or undefined.
   * @linux page_folio(pfn_to_page(pfn))
   */
  folioOf(pa: number): Folio | undefined {
    const pfn = Math.floor(pa / PAGE_SIZE);
    return this.leafOf(pfn)?.folio[slotOf(pfn)];
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

  /** Each outstanding pin of `f` with its page's physical address and its holder, page by page in pin order. */
  private forEachPin(f: Folio, fn: (pa: number, record: PinRecord) => void): void {
    const leaf = f.leaf;
    const pfn0 = f.pa / PAGE_SIZE;
    // An order-0 page's holder slot is left behind by its last unpin: it names a holder only while pinned.
    if (!f.large && f.pinCount === 0) return;
    for (let k = 0; k < f.nrPages; k++) {
      const pa = f.pa + k * PAGE_SIZE;
      const first = leaf.holder[f.slot + k];
      if (first !== undefined) fn(pa, holder(first, leaf.holderVa[f.slot + k]!));
      const rs = this.morePins.get(pfn0 + k);
      if (rs === undefined) continue;
      for (let i = 0; i < rs.length; i += 2) fn(pa, holder(rs[i] as PinRecord, rs[i + 1] as number));
    }
  }

  /** Every outstanding pin, one entry per pinned page and pin. */
  pins(): { pa: number; record: PinRecord }[] {
    const out: { pa: number; record: PinRecord }[] = [];
    for (const f of this.folios) this.forEachPin(f, (pa, record) => out.push({ pa, record }));
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
    const r = f.refcount;
    if (r < n) {
      this.diag.report("refcount", `folio_put underflow of user page ${hex(f.pa)} (${f.owner})`, {
        culprit: f.owner,
      });
      return;
    }
    f.refcount = r - n;
    if (r === n) this.free(f);
  }

  /**
   * Pin the page at `pa` (its folio must be live and referenced). `record` names the holder for reports; a caller
   * pinning a run of pages passes one record for the run and each page's `va` (nothing is allocated per page).
   * @linux try_grab_folio with FOLL_PIN
   */
  pin(pa: number, record: PinRecord, va = Number.NaN): Folio {
    const pfn = Math.floor(pa / PAGE_SIZE);
    const leaf = this.leafOf(pfn);
    const s = slotOf(pfn);
    const order = leaf === undefined ? NO_FOLIO : leaf.order[s]!;
    // The folio's counts sit at its head page: folios are naturally aligned, and so are leaves.
    const head = order <= 0 ? s : s & ~((1 << order) - 1);
    if (order === NO_FOLIO || leaf!.ref[head]! <= 0) {
      throw new Error(`pin of a page that is not a live user page: ${hex(pa)}`);
    }
    const l = leaf!;
    let first: boolean;
    if (order === 0) {
      first = l.ref[head]! < GUP_PIN_COUNTING_BIAS;
      l.ref[head]! += GUP_PIN_COUNTING_BIAS;
    } else {
      first = l.holder[s] === undefined;
      l.ref[head]! += 1;
      l.pins[head]! += 1;
    }
    if (first) {
      l.holder[s] = record;
      l.holderVa[s] = va;
    } else {
      this.stackPin(pfn, record, va);
    }
    return l.folio[s]!;
  }

  /**
   * @internal GUP-fast's inner loop: pin the pages whose addresses are the page-table entries `ptes[k..end)`
   * (stopping at the first {@link PTE_NONE}), the first of them at user VA `va`, and write their addresses into
   * `out` from index `at`. Order-0 pages are pinned here with the leaf kept at hand; any other page goes through
   * {@link UserPageRefs.pin} (and its checks). Returns the number of pages pinned.
   * @linux gup_fast_pte_range (try_grab_folio_fast per present PTE)
   */
  pinEntries(
    ptes: Float64Array,
    k: number,
    end: number,
    record: PinRecord,
    va: number,
    out: number[],
    at: number,
  ): number {
    // Literal divisors (PAGE_SIZE and PAGE_DIR_LEAF, both 4096): the compiler turns a division by a literal power
    // of two into a multiplication, not one by an imported constant, and this runs once per pinned page.
    // Consecutive entries usually map consecutive frames: the next slot of the same leaf, found without dividing.
    let hi = -1;
    let leaf: PageLeaf | undefined;
    let n = 0;
    let next = -1;
    let s = 0;
    for (; k < end; k++, n++) {
      const pa = ptes[k]!;
      if (pa === PTE_NONE) break;
      if (pa === next && s < 4095) {
        s++;
      } else {
        const pfn = Math.floor(pa / 4096);
        const h = Math.floor(pfn / 4096);
        if (h !== hi) {
          leaf = this.leafOf(pfn);
          hi = h;
        }
        s = pfn - h * 4096;
      }
      next = pa + 4096;
      const r = leaf === undefined || leaf.order[s] !== 0 ? 0 : leaf.ref[s]!;
      if (r <= 0) {
        this.pin(pa, record, va + n * PAGE_SIZE);
      } else {
        const l = leaf!;
        l.ref[s] = r + GUP_PIN_COUNTING_BIAS;
        if (r < GUP_PIN_COUNTING_BIAS) {
          l.holder[s] = record;
          l.holderVa[s] = va + n * PAGE_SIZE;
        } else {
          this.stackPin(hi * 4096 + s, record, va + n * PAGE_SIZE);
        }
      }
      out[at + n] = pa;
    }
    return n;
  }

  /** Remember the holder of a further pin of page `pfn`. */
  private stackPin(pfn: number, record: PinRecord, va: number): void {
    const rs = this.morePins.get(pfn);
    if (rs === undefined) this.morePins.set(pfn, [record, va]);
    else rs.push(record, va);
  }

  /** Forget the holder of the last pin of the page `pfn` (the reports' side of an unpin). */
  private dropPinHolder(pfn: number): void {
    if (this.morePins.size !== 0) {
      const rs = this.morePins.get(pfn);
      if (rs !== undefined) {
        rs.length -= 2;
        if (rs.length === 0) this.morePins.delete(pfn);
        return;
      }
    }
    const leaf = this.leafOf(pfn);
    if (leaf !== undefined) leaf.holder[slotOf(pfn)] = undefined;
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
    this.dropPinHolder(Math.floor(pa / PAGE_SIZE));
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
   * @linux unpin_user_page_range_dirty_lock (gup_folio_range_next + gup_put_folio per folio)
   */
  unpinRange(pa: number, npages: number, makeDirty = false): void {
    const pfn0 = Math.floor(pa / PAGE_SIZE);
    let i = 0;
    while (i < npages) {
      const leaf = this.leafOf(pfn0 + i);
      if (leaf !== undefined) {
        // Pinned order-0 pages, in page-array order: unpin()'s work without visiting each folio.
        const order = leaf.order;
        const ref = leaf.ref;
        let s = slotOf(pfn0 + i);
        const stop = Math.min(npages, i + PAGE_DIR_LEAF - s);
        for (; i < stop; i++, s++) {
          const r = ref[s]!;
          if (order[s] !== 0 || r < GUP_PIN_COUNTING_BIAS) break;
          // The holder slot of an order-0 page counts only while the page is pinned: the last unpin leaves it.
          if (this.morePins.size !== 0) this.dropPinHolder(pfn0 + i);
          if (makeDirty) leaf.folio[s]!.dirty = true;
          ref[s] = r - GUP_PIN_COUNTING_BIAS;
          if (r === GUP_PIN_COUNTING_BIAS) this.free(leaf.folio[s]!);
        }
        if (i === stop) continue;
      }
      // A large folio, or a page that is not pinned (or no user page at all).
      const at = pa + i * PAGE_SIZE;
      const f = this.folioOf(at);
      const first = f === undefined ? 0 : Math.floor((at - f.pa) / PAGE_SIZE);
      const n = f === undefined ? 1 : Math.min(npages - i, f.nrPages - first);
      if (f === undefined || !f.large || f.pincount < n) {
        // Not pinned, or a large folio with fewer pins than pages asked: page by page, with unpin()'s checks.
        for (let k = 0; k < n; k++) this.unpin(at + k * PAGE_SIZE, makeDirty);
      } else {
        for (let k = 0; k < n; k++) this.dropPinHolder(pfn0 + i + k);
        if (makeDirty) f.dirty = true;
        f.pincount -= n;
        this.put(f, n);
      }
      i += n;
    }
  }

  private free(f: Folio): void {
    const leaf = f.leaf;
    for (let i = 0; i < f.nrPages; i++) {
      leaf.folio[f.slot + i] = undefined;
      leaf.order[f.slot + i] = NO_FOLIO;
      leaf.holder[f.slot + i] = undefined;
    }
    leaf.ref[f.slot] = 0;
    leaf.pins[f.slot] = 0;
    f.freed = true;
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
      this.forEachPin(f, (pa, r) => {
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
