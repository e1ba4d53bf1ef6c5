/**
 * The pinned user pages behind IOAS areas: one `IoptPages` per mapping request, shared by every area that maps
 * some of it (IOAS_COPY shares them across IOASes). A page is pinned once, while any user needs it: an area filled
 * into at least one domain, or an access that pinned it. Pins are charged to the user's or the mm's locked memory
 * (IOMMU_OPTION RLIMIT_MODE) unless the caller has CAP_IPC_LOCK.
 * @linux struct iopt_pages and drivers/iommu/iommufd/pages.c (iopt_alloc_user_pages, iopt_pages_fill_xarray,
 * pfn_reader, iopt_pages_update_pinned, incr_user_locked_vm)
 */
import { type File, fputDeferred, getFile, kerr, kfree, Mutex, Refcount, shmemInodeOf } from "@iommu-sim/core";
import { type IommufdCore, PFN_CHUNK_CACHE_MAX } from "./core.js";
import { IOPT_PAGES_ACCOUNT_MM, IOPT_PAGES_ACCOUNT_NONE, IOPT_PAGES_ACCOUNT_USER } from "./ctx.js";
import { type IommufdUser, PAGE_SIZE } from "./user-glue.js";

/** Fault-injection site of the pages allocation. @linux the kzalloc of iopt_alloc_pages */
export const IOPT_PAGES_ALLOC_SITE = "iopt_pages_alloc";
/** Fault-injection site before each pin of a run of user pages (fails with EFAULT). @linux iommufd_should_fail in pfn_reader_user_pin */
export const IOPT_PAGES_PIN_SITE = "pfn_reader_user_pin";
/** Fault-injection site of the PFN batch of a domain fill (ENOMEM). @linux temp_kmalloc in batch_init (pfn_reader_init) */
export const PFN_BATCH_ALLOC_SITE = "pfn_batch_init";
/** Fault-injection site of the page-pointer array of a domain fill's first pin (ENOMEM). @linux temp_kmalloc in pfn_reader_user_pin */
export const PFN_READER_UPAGES_SITE = "pfn_reader_user_upages";
/**
 * Fault-injection site of storing an access's PFNs (EINVAL): stands in for the xarray node allocation, which Linux
 * fails through its own point because xas_nomem retries.
 * @linux iommufd_should_fail in pages_to_xarray (iopt_pages_fill_xarray)
 */
export const PAGES_TO_XARRAY_SITE = "pages_to_xarray";
/** Fault-injection site of charging newly pinned pages (ENOMEM). @linux iommufd_should_fail in pfn_reader_user_update_pinned */
export const UPDATE_PINNED_SITE = "pfn_reader_user_update_pinned";

/** The largest length a mapping may have. @linux SIZE_MAX - PAGE_SIZE in iopt_alloc_pages */
export const IOPT_MAX_LENGTH = Number.MAX_SAFE_INTEGER - PAGE_SIZE;

/**
 * Pages pinned per call of the pinning loop: a run of user pages is pinned at most this many at a time, so pinning
 * a huge range stops at the first unmapped page, having allocated for one run only.
 * @linux TEMP_MEMORY_LIMIT / sizeof(struct page *) (the upages array of pfn_reader_user)
 */
export const PIN_BATCH_PAGES = 65536 / 8;

/** What backs the pages. @linux enum iopt_address_type */
export type IoptAddressType = "user" | "file";

/**
 * The physically contiguous PFN runs of a range of pages, in page order, gathered while pinning them: a domain
 * fill maps each run with one call instead of scanning the stored PFNs again.
 * @linux struct pfn_batch (pfns[] and npfns[], filled by batch_from_pages, mapped by batch_to_domain)
 */
export interface PfnBatch {
  /** Physical address of each run's first page. @linux pfn_batch.pfns */
  pas: number[];
  /** Pages in each run. @linux pfn_batch.npfns */
  npages: number[];
}

const NOT_PINNED = -1;
const CHUNK_PAGES = 512;

/**
 * One node of the sparse PFN store: the PFNs and user counts of 512 consecutive page indexes. An emptied node
 * (no PFN stored, so no users either) goes back to the core's cache as it is, clean for the next user.
 */
class PfnChunk {
  readonly pas = new Float64Array(CHUNK_PAGES).fill(NOT_PINNED);
  readonly users = new Uint32Array(CHUNK_PAGES);
  /** Entries holding a PFN; the chunk is dropped at 0. */
  stored = 0;
}

/**
 * Pinned (or pinnable) pages of one user range or file range. PFNs and per-page user counts are kept sparse, in
 * chunks created when a page in them is first pinned and dropped when the last is unpinned: memory follows what is
 * pinned, never the requested length.
 * @linux struct iopt_pages
 */
export class IoptPages {
  /** References from areas and in-flight copies. @linux iopt_pages.kref */
  readonly kref: Refcount;
  /** @linux iopt_pages.mutex */
  readonly mutex: Mutex;
  /** Pinned PFNs by chunk of page indexes. @linux iopt_pages.pinned_pfns (and the storage domain) */
  private readonly chunks = new Map<number, PfnChunk>();
  /** @linux iopt_pages.npinned */
  npinned = 0;
  /** @linux iopt_pages.last_npinned */
  lastNpinned = 0;
  /** @linux iopt_pages.source_user / source_mm */
  source: IommufdUser;
  freed = false;

  constructor(
    readonly core: IommufdCore,
    /** @linux iopt_pages.type */
    readonly type: IoptAddressType,
    /** Page-aligned start: a user VA, or a byte offset in the file. @linux iopt_pages.uptr / start */
    readonly base: number,
    /** @linux iopt_pages.npages */
    readonly npages: number,
    /** @linux iopt_pages.writable */
    readonly writable: boolean,
    source: IommufdUser,
    /** @linux iopt_pages.account_mode */
    public accountMode: number,
    /** The memfd, for file pages. @linux iopt_pages.file */
    readonly file: unknown = undefined,
  ) {
    this.kref = new Refcount(core.diag, "iopt_pages", 1);
    this.mutex = new Mutex(core.sched, "iopt_pages.mutex");
    this.source = source;
  }

  /** Physical address of a pinned page (-1 when not pinned). */
  pa(index: number): number {
    const c = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    return c === undefined ? NOT_PINNED : c.pas[index % CHUNK_PAGES]!;
  }

  /** Users of a page: filled areas count once, each access pin counts. @linux domains_itree / access_itree */
  users(index: number): number {
    const c = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    return c === undefined ? 0 : c.users[index % CHUNK_PAGES]!;
  }

  /** Number of chunks holding pins (for tests: memory follows the pins). */
  get storedChunks(): number {
    return this.chunks.size;
  }

  /** @internal The first index in [i, last] whose page has no users, or last + 1. Scans a chunk at a time. */
  firstUnused(i: number, last: number): number {
    while (i <= last) {
      const key = Math.floor(i / CHUNK_PAGES);
      const c = this.chunks.get(key);
      if (c === undefined) return i;
      const end = Math.min(last, key * CHUNK_PAGES + CHUNK_PAGES - 1);
      for (let off = i - key * CHUNK_PAGES; i <= end; i++, off++) if (c.users[off] === 0) return i;
    }
    return i;
  }

  /** @internal The last index of the run of pages without users that starts at `i`, at most `maxLast`. */
  unusedRunEnd(i: number, maxLast: number): number {
    let j = i;
    while (j < maxLast) {
      const key = Math.floor((j + 1) / CHUNK_PAGES);
      const end = Math.min(maxLast, key * CHUNK_PAGES + CHUNK_PAGES - 1);
      const c = this.chunks.get(key);
      if (c !== undefined) {
        for (let k = j + 1, off = k - key * CHUNK_PAGES; k <= end; k++, off++) if (c.users[off] !== 0) return k - 1;
      }
      j = end;
    }
    return j;
  }

  /**
   * @internal The number of pages from `idx` (at most to `last`) whose PFNs follow each other: a contiguous PFN
   * run, mapped with one driver call. @linux batch_add_pfn merging into one pfn_batch entry
   */
  contiguousPages(idx: number, last: number): number {
    const first = this.pa(idx);
    let k = idx + 1;
    while (k <= last) {
      const key = Math.floor(k / CHUNK_PAGES);
      const c = this.chunks.get(key);
      if (c === undefined) break;
      const end = Math.min(last, key * CHUNK_PAGES + CHUNK_PAGES - 1);
      const pas = c.pas;
      let off = k - key * CHUNK_PAGES;
      let want = first + (k - idx) * PAGE_SIZE;
      for (; k <= end; k++, off++, want += PAGE_SIZE) if (pas[off] !== want) return k - idx;
    }
    return k - idx;
  }

  /**
   * @internal Record the PFNs of `count` freshly pinned pages from `first`, each with `users` users (0, or 1 for
   * the caller's own, saving a second pass).
   */
  storePas(first: number, pas: readonly number[], count = pas.length, users = 0, batch?: PfnBatch): void {
    // The batch's last run (-1: none yet), extended while the PFNs follow it (batch_add_pfn); its length is kept
    // in `runLen` and written back when the next run starts and at the end.
    let runs = batch === undefined ? -1 : batch.pas.length - 1;
    let runLen = runs < 0 ? 0 : batch!.npages[runs]!;
    let next = runs < 0 ? NOT_PINNED : batch!.pas[runs]! + runLen * PAGE_SIZE;
    let n = 0;
    while (n < count) {
      const i = first + n;
      const key = Math.floor(i / CHUNK_PAGES);
      let c = this.chunks.get(key);
      if (c === undefined) {
        c = (this.core.pfnChunkCache.pop() as PfnChunk | undefined) ?? new PfnChunk();
        this.chunks.set(key, c);
      }
      const end = Math.min(count, n + (key * CHUNK_PAGES + CHUNK_PAGES - i));
      const cpas = c.pas;
      const cusers = c.users;
      let stored = 0;
      for (let off = i - key * CHUNK_PAGES; n < end; n++, off++) {
        const pa = pas[n]!;
        if (cpas[off] === NOT_PINNED) stored++;
        cpas[off] = pa;
        cusers[off] = users;
        if (batch === undefined) continue;
        if (pa === next) {
          runLen++;
        } else {
          if (runs >= 0) batch.npages[runs] = runLen;
          batch.pas.push(pa);
          batch.npages.push(1);
          runs++;
          runLen = 1;
        }
        next = pa + PAGE_SIZE;
      }
      c.stored += stored;
    }
    if (runs >= 0) batch!.npages[runs] = runLen;
  }

  /**
   * @internal Forget the PFNs of pages [a, b] (no users but a caller's own being unwound), calling
   * `unpin(pa, n)` for each run of physically contiguous pages; drops emptied chunks.
   */
  clearPas(a: number, b: number, unpin: (pa: number, n: number) => void): void {
    let runPa = NOT_PINNED;
    let runLen = 0;
    let i = a;
    while (i <= b) {
      const key = Math.floor(i / CHUNK_PAGES);
      const end = Math.min(b, key * CHUNK_PAGES + CHUNK_PAGES - 1);
      const c = this.chunks.get(key);
      if (c !== undefined) {
        for (let off = i - key * CHUNK_PAGES; i <= end; i++, off++) {
          const pa = c.pas[off]!;
          if (pa === NOT_PINNED) continue;
          c.pas[off] = NOT_PINNED;
          c.users[off] = 0;
          c.stored--;
          if (runLen !== 0 && pa === runPa + runLen * PAGE_SIZE) {
            runLen++;
            continue;
          }
          if (runLen !== 0) unpin(runPa, runLen);
          runPa = pa;
          runLen = 1;
        }
        if (c.stored === 0) this.dropChunk(key, c);
      }
      i = end + 1;
    }
    if (runLen !== 0) unpin(runPa, runLen);
  }

  /** @internal Add one user to each page of [first, last] (all stored). */
  addUsers(first: number, last: number): void {
    let i = first;
    while (i <= last) {
      const c = this.chunks.get(Math.floor(i / CHUNK_PAGES))!;
      const end = Math.min(last, Math.floor(i / CHUNK_PAGES) * CHUNK_PAGES + CHUNK_PAGES - 1);
      for (let off = i % CHUNK_PAGES, k = i; k <= end; k++, off++) c.users[off]!++;
      i = end + 1;
    }
  }

  /**
   * @internal Drop one user of each page of [first, last]; each page left without users loses its PFN, and
   * `unpin(pa, n)` is called for each physically contiguous run of them (one pass). WARNs on an underflow (the
   * page is skipped). Returns the pages freed.
   */
  dropUsers(first: number, last: number, unpin: (pa: number, n: number) => void): number {
    const diag = this.core.diag;
    let freed = 0;
    let runPa = NOT_PINNED;
    let runLen = 0;
    /** The address that would extend the current run (none while there is no run: PFNs are never negative). */
    let runNext = NOT_PINNED;
    let i = first;
    while (i <= last) {
      const key = Math.floor(i / CHUNK_PAGES);
      const end = Math.min(last, key * CHUNK_PAGES + CHUNK_PAGES - 1);
      const c = this.chunks.get(key);
      if (c === undefined) {
        diag.warnOn(true, "iopt_pages: user count underflow");
        i = end + 1;
        continue;
      }
      const users = c.users;
      const pas = c.pas;
      let cleared = 0;
      for (let off = i - key * CHUNK_PAGES; i <= end; i++, off++) {
        const n = users[off]!;
        if (n === 0) {
          diag.warnOn(true, "iopt_pages: user count underflow");
          continue;
        }
        users[off] = n - 1;
        if (n !== 1) continue;
        freed++;
        const pa = pas[off]!;
        if (pa === NOT_PINNED) continue;
        pas[off] = NOT_PINNED;
        cleared++;
        if (pa === runNext) {
          runLen++;
          runNext += PAGE_SIZE;
          continue;
        }
        if (runLen !== 0) unpin(runPa, runLen);
        runPa = pa;
        runLen = 1;
        runNext = pa + PAGE_SIZE;
      }
      c.stored -= cleared;
      if (c.stored === 0) this.dropChunk(key, c);
    }
    if (runLen !== 0) unpin(runPa, runLen);
    return freed;
  }

  /** Drop an emptied chunk, keeping it in the core's cache for reuse. */
  private dropChunk(key: number, c: PfnChunk): void {
    this.chunks.delete(key);
    const cache = this.core.pfnChunkCache;
    if (cache.length < PFN_CHUNK_CACHE_MAX) cache.push(c);
  }
}

/**
 * Allocate the pages object for `length` bytes at user VA `uptr`. EINVAL for a zero or huge length, EOVERFLOW
 * when the range wraps, ENOMEM under fault injection.
 * @linux iopt_alloc_user_pages
 */
export function ioptAllocUserPages(
  core: IommufdCore,
  user: IommufdUser,
  uptr: number,
  length: number,
  writable: boolean,
  accountMode: number,
): { pages: IoptPages; startByte: number } {
  if (length === 0 || length > IOPT_MAX_LENGTH) throw kerr("EINVAL", `bad length ${length}`);
  if (!Number.isSafeInteger(uptr + length)) throw kerr("EOVERFLOW", "user range wraps");
  return allocPages(core, user, "user", uptr, length, writable, accountMode, undefined);
}

/**
 * Allocate the pages object for `length` bytes at byte `start` of a memfd.
 * @linux iopt_alloc_file_pages
 */
export function ioptAllocFilePages(
  core: IommufdCore,
  user: IommufdUser,
  file: unknown,
  start: number,
  length: number,
  writable: boolean,
  accountMode: number,
): { pages: IoptPages; startByte: number } {
  if (length === 0 || length > IOPT_MAX_LENGTH) throw kerr("EINVAL", `bad length ${length}`);
  if (!Number.isSafeInteger(start + length)) throw kerr("EOVERFLOW", "file range wraps");
  // Only memfd (shmem / hugetlbfs) pages can be pinned by file offset.
  if (!shmemInodeOf(file as File)) throw kerr("EINVAL", "not a memfd");
  const r = allocPages(core, user, "file", start, length, writable, accountMode, file);
  getFile(file as File, "iopt_pages");
  return r;
}

function allocPages(
  core: IommufdCore,
  user: IommufdUser,
  type: IoptAddressType,
  addr: number,
  length: number,
  writable: boolean,
  accountMode: number,
  file: unknown,
): { pages: IoptPages; startByte: number } {
  core.faults.check(IOPT_PAGES_ALLOC_SITE);
  const startByte = addr % PAGE_SIZE;
  const base = addr - startByte;
  const npages = Math.ceil((startByte + length) / PAGE_SIZE);
  // CAP_IPC_LOCK exempts the pins from RLIMIT_MEMLOCK in either mode (pinned_vm still counts them).
  const mode = user.capable("CAP_IPC_LOCK") ? IOPT_PAGES_ACCOUNT_NONE : accountMode;
  const pages = new IoptPages(core, type, base, npages, writable, user, mode, file);
  user.grab?.();
  return { pages, startByte };
}

/**
 * Take a reference on the pages.
 * @linux kref_get(&pages->kref)
 */
export function ioptPagesGet(pages: IoptPages): void {
  pages.kref.inc();
}

/**
 * Drop a reference; the last one frees the pages (which must hold no pins by then).
 * @linux iopt_put_pages
 */
export function ioptPutPages(pages: IoptPages): void {
  if (!pages.kref.decAndTest()) return;
  const diag = pages.core.diag;
  diag.warnOn(pages.npinned !== 0, `iopt_pages freed with ${pages.npinned} pages pinned`);
  pages.freed = true;
  pages.source.drop?.();
  if (pages.file) fputDeferred(pages.file as File, "iopt_pages");
  kfree(diag, pages, "iopt_pages");
}

function memlockPages(user: IommufdUser): number {
  const bytes = user.memlockLimit();
  return bytes === Number.POSITIVE_INFINITY ? bytes : Math.floor(bytes / PAGE_SIZE);
}

/**
 * Charge (positive) or uncharge (negative) `npages` pinned pages to the pages' source: user->locked_vm (mode USER)
 * or mm->locked_vm (mode MM) against RLIMIT_MEMLOCK, and mm->pinned_vm in every mode. ENOMEM when a charge would
 * exceed the limit (nothing charged then); uncharging more than is charged is a WARN.
 * @linux iopt_pages_update_pinned (do_update_pinned) / incr_user_locked_vm / decr_user_locked_vm / update_mm_locked_vm
 */
export function ioptPagesAccount(pages: IoptPages, npages: number): void {
  if (npages === 0) return;
  const u = pages.source;
  const diag = pages.core.diag;
  const acct =
    pages.accountMode === IOPT_PAGES_ACCOUNT_USER
      ? u.userAcct
      : pages.accountMode === IOPT_PAGES_ACCOUNT_MM
        ? u.mmAcct
        : undefined;
  if (acct) {
    if (npages > 0) {
      if (acct.lockedVm + npages > memlockPages(u)) throw kerr("ENOMEM", "RLIMIT_MEMLOCK exceeded");
      acct.lockedVm += npages;
    } else if (!diag.warnOn(acct.lockedVm < -npages, "iommufd: locked_vm uncharge underflow")) {
      acct.lockedVm += npages;
    }
  }
  u.mmAcct.pinnedVm = (u.mmAcct.pinnedVm ?? 0) + npages;
}

function pinRange(pages: IoptPages, first: number, count: number, upages: number[] | undefined): number[] {
  const u = pages.source;
  pages.core.faults.check(IOPT_PAGES_PIN_SITE, "EFAULT");
  if (pages.type === "file") {
    if (!u.pinFile) throw kerr("EOPNOTSUPP", "file pinning is not available");
    return u.pinFile(pages.file, pages.base + first * PAGE_SIZE, count);
  }
  return u.pin(pages.base + first * PAGE_SIZE, count, pages.writable, upages);
}

/** Who is adding users: an area being filled into domains, or an in-kernel access pinning pages. */
export type IoptPagesUser = "domain" | "access";

/**
 * Add a user to pages [first, last]: pages without users get pinned (runs of at most {@link PIN_BATCH_PAGES}, so
 * an unmapped page stops the loop at once) and charged. On failure nothing changed. With `batch` (empty), the
 * contiguous PFN runs of the pages pinned now are gathered into it; the result says whether it covers all of
 * [first, last] (every page was pinned by this call), else the caller reads the stored PFNs.
 * @linux pfn_reader (iopt_area_fill_domains / iopt_area_fill_domain, batch_from_pages) and iopt_pages_fill_xarray
 * (access)
 */
export function ioptPagesAddUsers(
  pages: IoptPages,
  first: number,
  last: number,
  by: IoptPagesUser = "domain",
  batch?: PfnBatch,
): boolean {
  const faults = pages.core.faults;
  const pinnedNow: [number, number][] = [];
  let added = 0;
  try {
    if (by === "domain") faults.check(PFN_BATCH_ALLOC_SITE);
    // The page array every run is pinned into, allocated at the first run (a domain fill's allocation can fail).
    let upages: number[] | undefined;
    let i = pages.firstUnused(first, last);
    while (i <= last) {
      const j = pages.unusedRunEnd(i, Math.min(last, i + PIN_BATCH_PAGES - 1));
      if (upages === undefined) {
        if (by === "domain") faults.check(PFN_READER_UPAGES_SITE);
        upages = [];
      }
      // Stored with this caller's user already counted; an unwind below clears it with the PFN.
      pages.storePas(i, pinRange(pages, i, j - i + 1, upages), j - i + 1, 1, batch);
      pinnedNow.push([i, j]);
      added += j - i + 1;
      pages.core.pinnedPages += j - i + 1;
      i = pages.firstUnused(j + 1, last);
    }
    if (by === "access") faults.check(PAGES_TO_XARRAY_SITE, "EINVAL");
    if (added) {
      faults.check(UPDATE_PINNED_SITE);
      ioptPagesAccount(pages, added);
    }
  } catch (e) {
    for (const [a, b] of pinnedNow) unpinRange(pages, a, b);
    throw e;
  }
  pages.npinned += added;
  pages.lastNpinned = pages.npinned;
  // The pages pinned just now have their user; add it to the others (already pinned by other users).
  let from = first;
  for (const [a, b] of pinnedNow) {
    if (a > from) pages.addUsers(from, a - 1);
    from = b + 1;
  }
  if (from <= last) pages.addUsers(from, last);
  const whole = pinnedNow.length !== 0 && pinnedNow[0]![0] === first && from === last + 1;
  const contiguous = pinnedNow.every((r, k) => k === 0 || r[0] === pinnedNow[k - 1]![1] + 1);
  return whole && contiguous;
}

/** Unpin `n` physically contiguous pages from `pa`. @linux batch_unpin (unpin_user_page_range_dirty_lock) */
function unpinRun(pages: IoptPages, pa: number, n: number): void {
  const src = pages.source;
  if (src.unpinRange) src.unpinRange(pa, n);
  else src.unpin(Array.from({ length: n }, (_, k) => pa + k * PAGE_SIZE));
  pages.core.pinnedPages -= n;
}

/** Unpin pages [a, b] (all pinned, none with users), a physically contiguous run per call. */
function unpinRange(pages: IoptPages, a: number, b: number): void {
  pages.clearPas(a, b, (pa, n) => unpinRun(pages, pa, n));
}

/**
 * Drop a user of pages [first, last]: pages left without users are unpinned and uncharged.
 * @linux iopt_pages_unfill / iopt_pages_remove_access / unpin_user_pages
 */
export function ioptPagesRemoveUsers(pages: IoptPages, first: number, last: number): void {
  const removed = pages.dropUsers(first, last, (pa, n) => unpinRun(pages, pa, n));
  pages.npinned -= removed;
  pages.lastNpinned = pages.npinned;
  ioptPagesAccount(pages, -removed);
}

/**
 * Copy bytes to or from the pages' memory at byte `offset` (from the page-aligned base): through the pin when
 * the page is pinned, through the source process otherwise.
 * @linux iopt_pages_rw_access
 */
export function ioptPagesRw(pages: IoptPages, offset: number, data: Uint8Array, write: boolean): void {
  if (write && !pages.writable) throw kerr("EPERM", "pages are not writable");
  const mem = pages.core.machine.memory;
  let done = 0;
  while (done < data.length) {
    const at = offset + done;
    const idx = Math.floor(at / PAGE_SIZE);
    const inPage = at % PAGE_SIZE;
    const n = Math.min(PAGE_SIZE - inPage, data.length - done);
    const pa = pages.pa(idx);
    const chunk = data.subarray(done, done + n);
    if (pa !== NOT_PINNED) {
      if (write) mem.writeBytes(pa + inPage, chunk);
      else chunk.set(mem.readBytes(pa + inPage, n));
    } else if (pages.type === "user") {
      const va = BigInt(pages.base + at);
      if (write) pages.source.write(va, chunk);
      else chunk.set(pages.source.read(va, n));
    } else {
      throw kerr("EFAULT", "unpinned file pages cannot be accessed");
    }
    done += n;
  }
}
