/**
 * A buddy allocator of physical pages over the machine's RAM range.
 *
 * Free blocks of each order (0..MAX_PAGE_ORDER) are kept in per-order sets keyed by their physical address, so
 * allocation pops a block of the smallest sufficient order and splits it, and freeing merges a block with its buddy
 * while the buddy is free — no scan of the range. The aligned middle of the range is handed out lazily as
 * MAX_PAGE_ORDER blocks from a cursor, so a huge RAM range costs nothing up front.
 *
 * Allocated pages are zeroed; freed pages are poisoned with POISON_FREE (0x6b) so a stale page-table walker reads
 * garbage rather than the old, plausible entries. Misuse of `freePages` (never allocated, wrong order, twice) is
 * reported to the machine's diagnostics, naming the address and the allocation site, and does not crash.
 *
 * Mirrors `mm/page_alloc.c` (buddy allocator) with the checks of `CONFIG_DEBUG_PAGEALLOC`/`page_poisoning`.
 */
import { Diagnostics } from "../kernel/diagnostics.js";
import { KernelError } from "../kernel/errno.js";
import { FaultInjector } from "../kernel/fault-inject.js";
import { PAGE_SIZE, type PhysicalMemory } from "./memory.js";

/**
 * The largest order a single allocation may have (4 MiB blocks of 4 KiB pages).
 * @linux MAX_PAGE_ORDER
 */
export const MAX_PAGE_ORDER = 10;
/**
 * The byte freed pages are filled with.
 * @linux POISON_FREE
 */
export const POISON_FREE = 0x6b;
/** How many recent frees are remembered to name the first free in a double-free report. */
const RECENT_FREES = 4096;
/**
 * Free order-0 pages kept on the per-CPU list before a batch of the coldest goes back to the buddy lists.
 * @linux per_cpu_pages.high
 */
export const PCP_HIGH = 64;
/**
 * Order-0 pages moved at a time between the per-CPU list and the buddy lists.
 * @linux per_cpu_pages.batch
 */
export const PCP_BATCH = 16;

/**
 * Options of {@link PageAllocator}.
 * @linux the zone span (zone_start_pfn, spanned_pages) and page_poisoning/page_owner debug switches
 */
export interface PageAllocatorOptions {
  /** Fault injector asked at every allocation (`faults.check(site)`); defaults to the memory's. */
  faults?: FaultInjector;
  /** Where misuse and leaks are reported; defaults to the memory's, else a private log. */
  diag?: Diagnostics;
  /** First byte of the RAM range (rounded up to a page). Default 0. */
  base?: number;
  /** End of the RAM range, exclusive (rounded down to a page). Default `memory.size`. */
  limit?: number;
  /**
   * Capture the stack of every free so a double free can show where the first free happened (capturing a stack
   * costs microseconds, more than the rest of a free). Default false: capture only when asked for, here or through
   * `createMachine({ trackFreeStacks: true })`; a double-free report turns it on for the frees after it.
   * @linux page_owner=on (CONFIG_PAGE_OWNER), which records free stacks only when enabled
   */
  recordFreeStacks?: boolean;
}

/** One live allocation. */
interface Allocation {
  order: number;
  site: string;
}

/** One recent free, kept to explain a later double free. */
interface FreedBlock {
  order: number;
  site: string;
  task: string;
  /** Captured unformatted: V8 renders `.stack` only when read, which keeps frees cheap. */
  where: Error | undefined;
}

/** The caller frames of a captured `Error`, formatted like `captureStack`. */
function stackOf(e: Error, skip: number): string {
  return (e.stack ?? "")
    .split("\n")
    .slice(1 + skip)
    .map((l) => l.trim())
    .join("\n");
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function pages(n: number): string {
  return n === 1 ? "1 page" : `${n} pages`;
}

/**
 * The machine's page allocator.
 * @linux the buddy allocator of mm/page_alloc.c (alloc_pages / __free_pages)
 */
export class PageAllocator {
  readonly memory: PhysicalMemory;
  readonly faults: FaultInjector | undefined;
  readonly diag: Diagnostics;
  /** First byte of the managed range. */
  readonly base: number;
  /** End of the managed range (exclusive). */
  readonly limit: number;
  /** Pages in the managed range. */
  readonly totalPages: number;

  /** Free blocks by order: a stack of block addresses per order (LIFO reuse, like the kernel's free lists). */
  private readonly freeLists: number[][] = [];
  /**
   * Free order-0 pages not merged back into the buddy lists (hot, reused first): an order-0 free and the next
   * allocation skip splitting and merging up to MAX_PAGE_ORDER. Oldest first; at most {@link PCP_HIGH}.
   * @linux per_cpu_pages.lists (free_unref_page / rmqueue_pcplist)
   */
  private readonly pcp: number[] = [];
  /**
   * Every free block head -> `index * 16 + order` (its place in `freeLists[order]`): the PageBuddy flag and
   * page order of the kernel, letting a buddy be found and unlinked in O(1).
   */
  private readonly freeIndex = new Map<number, number>();
  /** Start of the not-yet-split aligned middle of the range, handed out as MAX_PAGE_ORDER blocks. */
  private wilderness: number;
  private readonly wildernessEnd: number;
  private readonly allocations = new Map<number, Allocation>();
  private readonly pagesBySite = new Map<string, number>();
  private readonly recentFrees = new Map<number, FreedBlock>();
  private allocated = 0;
  private installed = false;
  private recordFreeStacks: boolean;

  /**
   * @param memory the physical memory the pages live in
   * @param opts options, or (the older form) the fault injector, followed by the diagnostics
   */
  constructor(memory: PhysicalMemory, opts?: PageAllocatorOptions | FaultInjector, diag?: Diagnostics) {
    const o: PageAllocatorOptions = opts instanceof FaultInjector ? { faults: opts } : (opts ?? {});
    if (diag !== undefined && o.diag === undefined) o.diag = diag;
    this.memory = memory;
    this.faults = o.faults ?? memory.faults;
    this.diag = o.diag ?? memory.diag ?? new Diagnostics();
    const base = Math.ceil((o.base ?? 0) / PAGE_SIZE) * PAGE_SIZE;
    const limit = Math.floor((o.limit ?? memory.size) / PAGE_SIZE) * PAGE_SIZE;
    if (!Number.isInteger(base) || !Number.isInteger(limit) || base < 0 || limit > memory.size || base > limit) {
      throw new RangeError(
        `page allocator range [${hex(base)}, ${hex(limit)}) is not inside memory of size ${hex(memory.size)}`,
      );
    }
    this.base = base;
    this.limit = limit;
    this.recordFreeStacks = o.recordFreeStacks ?? false;
    this.totalPages = (limit - base) / PAGE_SIZE;
    for (let i = 0; i <= MAX_PAGE_ORDER; i++) this.freeLists.push([]);

    // The unaligned head and tail go to the free lists as the largest aligned blocks that fit; the aligned middle is
    // carved lazily.
    const maxBlock = PAGE_SIZE * 2 ** MAX_PAGE_ORDER;
    let mid = Math.ceil(base / maxBlock) * maxBlock;
    let midEnd = Math.floor(limit / maxBlock) * maxBlock;
    if (mid >= midEnd) {
      mid = midEnd = limit;
    }
    this.seed(base, mid);
    this.seed(midEnd, limit);
    this.wilderness = mid;
    this.wildernessEnd = midEnd;
  }

  /** Put [start, end) on the free lists as maximal naturally aligned blocks. */
  private seed(start: number, end: number): void {
    let a = start;
    while (a < end) {
      let order = MAX_PAGE_ORDER;
      while (order > 0 && (a % (PAGE_SIZE * 2 ** order) !== 0 || a + PAGE_SIZE * 2 ** order > end)) order--;
      this.addFree(a, order);
      a += PAGE_SIZE * 2 ** order;
    }
  }

  /** Pages currently allocated. */
  get allocatedPages(): number {
    return this.allocated;
  }

  /** Pages currently free. */
  get freePagesCount(): number {
    return this.totalPages - this.allocated;
  }

  /** Free order-0 pages waiting on the per-CPU list (at most {@link PCP_HIGH}). @linux per_cpu_pages.count */
  get pcpPages(): number {
    return this.pcp.length;
  }

  /** Pages currently allocated, by allocation site. */
  get pagesPerSite(): ReadonlyMap<string, number> {
    return this.pagesBySite;
  }

  /** Pages currently allocated from `site`. */
  siteCount(site: string): number {
    return this.pagesBySite.get(site) ?? 0;
  }

  /** The live allocation starting at `pa`, if any. */
  allocationAt(pa: number): { order: number; site: string } | undefined {
    const a = this.allocations.get(pa);
    return a && { order: a.order, site: a.site };
  }

  /**
   * Allocate `2^order` physically contiguous, zeroed pages aligned to their size, and return the physical address.
   * Throws `ENOMEM` when the fault injector fails `site` or no block is left; nothing changes then.
   * @linux alloc_pages
   */
  allocPages(order: number, site = "alloc_pages"): number {
    if (!Number.isInteger(order) || order < 0 || order > MAX_PAGE_ORDER) {
      this.diag.report("warning", `alloc_pages: order ${order} outside 0..${MAX_PAGE_ORDER} (site ${site})`, {
        culprit: site,
      });
      throw new KernelError("ENOMEM", `order ${order} too large at ${site}`);
    }
    this.faults?.check(site);
    let pa = order === 0 ? this.takePcp() : this.takeBlock(order);
    if (pa < 0 && this.pcp.length > 0) {
      // What the per-CPU list holds may complete a larger block: give it back and retry (drain_all_pages).
      this.drainPcp(this.pcp.length);
      pa = this.takeBlock(order);
    }
    if (pa < 0) throw new KernelError("ENOMEM", `out of pages for order ${order} at ${site}`);
    const n = 2 ** order;
    this.allocations.set(pa, { order, site });
    this.recentFrees.delete(pa);
    this.allocated += n;
    this.pagesBySite.set(site, (this.pagesBySite.get(site) ?? 0) + n);
    this.memory.fill(pa, PAGE_SIZE * n, 0);
    return pa;
  }

  /** An order-0 page from the per-CPU list, refilled with a batch from the buddy lists when empty; -1 when none. */
  private takePcp(): number {
    const pcp = this.pcp;
    if (pcp.length === 0) {
      // Refill coldest-last, so the lowest address of the batch is handed out first.
      for (let i = 0; i < PCP_BATCH; i++) {
        const pa = this.takeBlock(0);
        if (pa < 0) break;
        pcp.push(pa);
      }
      pcp.reverse();
      if (pcp.length === 0) return -1;
    }
    return pcp.pop()!;
  }

  /** Give the `n` coldest pages of the per-CPU list back to the buddy lists. @linux free_pcppages_bulk */
  private drainPcp(n: number): void {
    const cold = this.pcp.splice(0, n);
    for (const pa of cold) this.putBlock(pa, 0);
  }

  /** Remove a free block of exactly `order`, splitting larger ones; -1 when none is left. */
  private takeBlock(order: number): number {
    let k = order;
    while (k <= MAX_PAGE_ORDER && this.freeLists[k]!.length === 0) k++;
    let pa: number;
    if (k > MAX_PAGE_ORDER) {
      if (this.wilderness >= this.wildernessEnd) return -1;
      k = MAX_PAGE_ORDER;
      pa = this.wilderness;
      this.wilderness += PAGE_SIZE * 2 ** MAX_PAGE_ORDER;
    } else {
      pa = this.freeLists[k]!.pop()!;
      this.freeIndex.delete(pa);
    }
    // Split: keep the low half, give the high halves back.
    while (k > order) {
      k--;
      this.addFree(pa + PAGE_SIZE * 2 ** k, k);
    }
    return pa;
  }

  /**
   * Free the `2^order` pages at `pa`, poisoning them with POISON_FREE. Freeing an address that is not the start of a
   * live allocation, twice, or with the wrong order is reported as a diagnostic naming the allocation site.
   * @linux __free_pages
   */
  freePages(pa: number, order: number): void {
    const a = this.allocations.get(pa);
    if (a === undefined) {
      this.reportBadFree(pa, order);
      return;
    }
    if (a.order !== order) {
      // Freeing with the wrong order would corrupt the buddy lists; free what was allocated and say so.
      this.diag.report(
        "warning",
        `__free_pages(${hex(pa)}, order ${order}): allocated with order ${a.order} at ${a.site}`,
        { culprit: a.site, skipFrames: 1 },
      );
    }
    const n = 2 ** a.order;
    this.allocations.delete(pa);
    this.allocated -= n;
    const left = (this.pagesBySite.get(a.site) ?? n) - n;
    if (left > 0) this.pagesBySite.set(a.site, left);
    else this.pagesBySite.delete(a.site);
    this.memory.fill(pa, PAGE_SIZE * n, POISON_FREE);
    this.rememberFree(pa, a);
    if (a.order === 0) {
      this.pcp.push(pa);
      if (this.pcp.length > PCP_HIGH) this.drainPcp(PCP_BATCH);
    } else {
      this.putBlock(pa, a.order);
    }
  }

  private rememberFree(pa: number, a: Allocation): void {
    if (this.recentFrees.size >= RECENT_FREES) {
      const oldest = this.recentFrees.keys().next().value as number;
      this.recentFrees.delete(oldest);
    }
    this.recentFrees.set(pa, {
      order: a.order,
      site: a.site,
      task: this.diag.currentTask(),
      where: this.recordFreeStacks ? new Error() : undefined,
    });
  }

  /** Return a block to the free lists, merging with free buddies. */
  private putBlock(pa: number, order: number): void {
    let block = pa;
    let k = order;
    while (k < MAX_PAGE_ORDER) {
      const size = PAGE_SIZE * 2 ** k;
      // Blocks are naturally aligned, so the buddy is the other half of the enclosing 2*size block.
      const buddy = ((block / size) & 1) === 0 ? block + size : block - size;
      const e = this.freeIndex.get(buddy);
      if (e === undefined || (e & 15) !== k) break;
      this.unlinkFree(buddy, k, (e - k) / 16);
      block = Math.min(block, buddy);
      k++;
    }
    this.addFree(block, k);
  }

  private addFree(pa: number, order: number): void {
    const list = this.freeLists[order]!;
    this.freeIndex.set(pa, list.length * 16 + order);
    list.push(pa);
  }

  /** Remove the free block `pa` at position `index` of `freeLists[order]` (swap with the last). */
  private unlinkFree(pa: number, order: number, index: number): void {
    const list = this.freeLists[order]!;
    const last = list.pop()!;
    if (last !== pa) {
      list[index] = last;
      this.freeIndex.set(last, index * 16 + order);
    }
    this.freeIndex.delete(pa);
  }

  private reportBadFree(pa: number, order: number): void {
    const call = `__free_pages(${hex(pa)}, order ${order})`;
    // Inside a live allocation? Check each possible enclosing block start (one lookup per order).
    for (let k = 0; k <= MAX_PAGE_ORDER; k++) {
      const start = pa - (pa % (PAGE_SIZE * 2 ** k));
      const a = this.allocations.get(start);
      if (a !== undefined && a.order >= k && start !== pa) {
        this.diag.report(
          "warning",
          `${call}: not the start of the order-${a.order} allocation at ${hex(start)} from ${a.site}`,
          { culprit: a.site, skipFrames: 2 },
        );
        return;
      }
    }
    const f = this.recentFrees.get(pa);
    if (f !== undefined) {
      this.diag.report("double-free", `double free: ${call}, allocated with order ${f.order} at ${f.site}`, {
        culprit: f.site,
        related: [
          {
            label: "first freed at",
            task: f.task,
            stack: f.where
              ? stackOf(f.where, 2)
              : "(not recorded: createMachine({ trackFreeStacks: true }) or recordFreeStacks records it)",
          },
        ],
        skipFrames: 2,
      });
      // The report asked for free stacks: record them from now on.
      this.recordFreeStacks = true;
      return;
    }
    const where = pa >= this.base && pa < this.limit ? "was never allocated" : "is outside the RAM range";
    this.diag.report("double-free", `bad free: ${call} ${where}`, { culprit: "unknown", skipFrames: 2 });
  }

  /**
   * Allocate one zeroed page.
   * @linux get_zeroed_page
   */
  getZeroedPage(site = "get_zeroed_page"): number {
    return this.allocPages(0, site);
  }

  /**
   * Free one page.
   * @linux free_page
   */
  freePage(pa: number): void {
    this.freePages(pa, 0);
  }

  /** Live allocations grouped by site, for leak reports: site -> [pages, [pa, order][]]. */
  leaks(): { site: string; pages: number; blocks: { pa: number; order: number }[] }[] {
    const bySite = new Map<string, { site: string; pages: number; blocks: { pa: number; order: number }[] }>();
    for (const [pa, a] of this.allocations) {
      let e = bySite.get(a.site);
      if (e === undefined) {
        e = { site: a.site, pages: 0, blocks: [] };
        bySite.set(a.site, e);
      }
      e.pages += 2 ** a.order;
      e.blocks.push({ pa, order: a.order });
    }
    return [...bySite.values()];
  }

  /**
   * Register the teardown check that lists pages still allocated, one line per site
   * ("3 pages from arm_smmu_strtab still allocated (0x1000 order 0, ...)"). Idempotent.
   * @linux kmemleak's report of unreferenced objects
   */
  install(): this {
    if (this.installed) return this;
    this.installed = true;
    this.diag.addTeardownCheck("pages", () =>
      this.leaks().map((l) => {
        const shown = l.blocks.slice(0, 4).map((b) => `${hex(b.pa)} order ${b.order}`);
        const more = l.blocks.length > 4 ? `, +${l.blocks.length - 4} more` : "";
        return `${pages(l.pages)} from ${l.site} still allocated (${shown.join(", ")}${more})`;
      }),
    );
    return this;
  }
}
