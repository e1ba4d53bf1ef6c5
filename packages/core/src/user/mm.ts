/**
 * A process's address space: VMAs, a page table from user page numbers to physical pages, demand faults, and the
 * copy of an address space at fork.
 *
 * - Private anonymous memory is zero-filled and lazily backed: a read of a page never touched maps nothing and
 *   reads zeroes (Linux maps the shared zero page there); the first write allocates a zeroed frame
 *   (site `user_page`). A `hugeAligned` private mapping is 2 MiB aligned and each wholly covered, untouched 2 MiB
 *   block is backed by one order-9 folio on first touch (site `user_thp`, transparent huge page), falling back to
 *   4 KiB frames when none can be had.
 * - Shared mappings (MAP_SHARED anonymous, or of a memfd) map the file's page-cache folios, so every mapping of the
 *   file sees the same bytes. A private mapping of a memfd maps the file's pages for reading and copies a page on
 *   the first write to it (copy-on-write).
 * - Each page-table entry holds one reference on its folio; munmap and exit drop them, and a folio is freed when its
 *   last reference (mappings, page cache, pins) goes.
 *
 * Mirrors `mm/mmap.c` and `mm/vma.c` (do_mmap, get_unmapped_area, do_vmi_munmap, exit_mmap), `mm/memory.c`
 * (handle_mm_fault, do_anonymous_page, do_shared_fault, do_cow_fault / wp_page_copy, zap_page_range), `mm/huge_memory.c`
 * (do_huge_pmd_anonymous_page) and `kernel/fork.c` (dup_mmap, with private anonymous pages copied at fork rather
 * than shared copy-on-write).
 */

import { KernelError, kerr } from "../kernel/errno.js";
import { PAGE_SIZE } from "../platform/memory.js";
import { type File, type FileContext, fputDeferred, getFile } from "./file.js";
import { type Folio, HPAGE_PMD_ORDER, HPAGE_PMD_SIZE, type UserPageRefs } from "./page-refs.js";
import { PteTable } from "./pte-table.js";
import { type ShmemInode, type ShmemMapping, shmemFileSetup, shmemInodeOf } from "./shmem.js";

/** Page can not be accessed. @linux PROT_NONE */
export const PROT_NONE = 0;
/** Page can be read. @linux PROT_READ */
export const PROT_READ = 1;
/** Page can be written. @linux PROT_WRITE */
export const PROT_WRITE = 2;
/** Page can be executed. @linux PROT_EXEC */
export const PROT_EXEC = 4;

/**
 * The end of the user address space (47-bit, x86-64 4-level paging).
 * @linux TASK_SIZE_MAX
 */
export const TASK_SIZE = 2 ** 47 - PAGE_SIZE;
/**
 * Where top-down mmap placement starts.
 * @linux mm->mmap_base
 */
export const MMAP_BASE = 0x7fff_0000_0000;
/**
 * The lowest address mmap hands out.
 * @linux mmap_min_addr
 */
export const MMAP_MIN_ADDR = 0x1_0000;

/**
 * Options of `Process.mmap`.
 * @linux the flags and arguments of mmap(2)
 */
export interface MmapOptions {
  /** MAP_SHARED (default MAP_PRIVATE). Anonymous shared memory is a shmem object shared across fork. */
  shared?: boolean;
  /** Align to 2 MiB and back private anonymous memory with transparent huge pages where a whole block fits. */
  hugeAligned?: boolean;
  /** Map this memfd instead of anonymous memory (MAP_ANONYMOUS when absent). */
  fd?: number;
  /** Byte offset into the file (page aligned). */
  offset?: number | bigint;
  /** PROT_* bits (default PROT_READ | PROT_WRITE). */
  prot?: number;
  /** MAP_FIXED: place the mapping exactly here, replacing what was mapped. */
  fixed?: bigint;
  /** MAP_POPULATE: fault every page in now. */
  populate?: boolean;
}

/**
 * What an address space needs from its machine.
 * @linux the page allocator and scheduler hooks mm/ reaches through globals
 */
export interface MmContext {
  pages: UserPageRefs;
  files: FileContext;
  /** Announce a sleep (might_sleep). */
  mightSleep?(what: string): void;
  /** A scheduling point of the machine's scheduler (where another task may run). */
  schedulingPoint?(): Promise<void>;
}

function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

function pageAlignUp(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}

/**
 * Who supplies the contents of private anonymous pages when they are first populated, instead of zero-filling
 * them: the simulated counterpart of a userfaultfd registered in MISSING mode on every anonymous mapping, with the
 * handler answering each fault by UFFDIO_COPY. While one is registered, an untouched page is never the zero page:
 * a read populates it too, so the handler's bytes are what every access (copy_from_user, GUP, a later DMA through a
 * pin) sees. `pa` is the frame (zeroed, already mapped at `va`) the page now lives in; the handler returns the bytes
 * to put there (exactly one page), or undefined to leave it zero. Pages copied at fork are not offered to it (the
 * child's mm has no handler, as a userfaultfd without UFFD_FEATURE_EVENT_FORK is not inherited).
 * @linux userfaultfd MISSING mode: handle_userfault() from do_anonymous_page, answered with UFFDIO_COPY
 *   (mfill_atomic_copy)
 */
export type MissingPageFill = (va: number, pa: number) => Uint8Array | undefined;

/**
 * A driver's hooks on the mappings of its file, set by its `FileOperations.mmap`.
 * @linux struct vm_operations_struct
 */
export interface VmOperations {
  /** A new mapping copies this one: the child's at fork, or the part a partial munmap split off. @linux .open */
  open?(vma: Vma): void;
  /** The mapping goes away: munmap of all of it, exit, or a failed fork unwinding. @linux .close */
  close?(vma: Vma): void;
}

/**
 * One mapping: a range of the address space with its protection and backing.
 * @linux struct vm_area_struct
 */
export class Vma implements ShmemMapping {
  /** The driver's hooks (driver mappings only). @linux vm_ops */
  vmOps: VmOperations | undefined;
  /** The driver's per-mapping state. @linux vm_private_data */
  privateData: unknown;
  /**
   * For a mapping of physical memory (a driver's MMIO or kernel pages, see {@link remapPfnRange}): the physical
   * address file page 0 maps to; -1 for every other mapping. Such pages have no folio and no reference: they are
   * not counted in RSS, not copied at fork beyond the mapping itself, and cannot be pinned.
   * @linux VM_PFNMAP (with the pfn passed to remap_pfn_range)
   */
  pfnBase = -1;

  constructor(
    readonly mm: MmStruct,
    /** @linux vm_start */
    public start: number,
    /** @linux vm_end */
    public end: number,
    /** PROT_* bits. @linux vm_flags VM_READ/VM_WRITE/VM_EXEC */
    readonly prot: number,
    /** @linux VM_SHARED */
    readonly shared: boolean,
    /** The mapped shmem file (a memfd, or the object behind MAP_SHARED|MAP_ANONYMOUS). @linux vm_file */
    readonly file: File | undefined,
    /** File page index mapped at `start`. @linux vm_pgoff */
    public pgoff: number,
    /** Transparent huge pages allowed (private anonymous, hugeAligned). @linux VM_HUGEPAGE */
    readonly thp: boolean,
  ) {}

  /** The shmem inode of the mapped file. */
  get inode(): ShmemInode | undefined {
    return this.file && shmemInodeOf(this.file);
  }

  /** Whether this maps anonymous private memory. @linux vma_is_anonymous */
  get anonymous(): boolean {
    return this.file === undefined;
  }

  /** Whether this maps physical memory by frame number (no struct page behind it). @linux VM_PFNMAP | VM_IO */
  get pfnmap(): boolean {
    return this.pfnBase >= 0;
  }

  /**
   * Map physical memory from `pa` (page aligned) at file page `pgoff` across the whole mapping, as a driver's
   * `mmap` does for registers or pages it owns. The mapping becomes VM_IO | VM_PFNMAP: faults never allocate, GUP
   * refuses it (EFAULT), and it cannot grow.
   * @linux io_remap_pfn_range / remap_pfn_range (VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP)
   */
  remapPfnRange(pa: number): void {
    if (!Number.isSafeInteger(pa) || pa < 0 || pa % PAGE_SIZE !== 0) {
      throw kerr("EINVAL", `remap_pfn_range of unaligned address ${hex(pa)}`);
    }
    this.pfnBase = pa - this.pgoff * PAGE_SIZE;
  }

  /** The physical address `va` maps to in a PFN map. @linux the pfn a remap_pfn_range PTE holds (follow_pfnmap_start) */
  pfnAddress(va: number): number {
    return this.pfnBase + this.indexOf(va - (va % PAGE_SIZE)) * PAGE_SIZE + (va % PAGE_SIZE);
  }

  /**
   * A new mapping of the same backing over [start, end) (fork's copy or a split-off part), with the driver's state
   * and its own file reference; the caller runs `vmOps.open` once it is inserted.
   * @linux vm_area_dup
   */
  cloneInto(mm: MmStruct, start: number, end: number): Vma {
    const c = new Vma(
      mm,
      start,
      end,
      this.prot,
      this.shared,
      this.file && getFile(this.file),
      this.indexOf(start),
      this.thp,
    );
    c.vmOps = this.vmOps;
    c.privateData = this.privateData;
    if (this.pfnmap) c.pfnBase = this.pfnBase;
    return c;
  }

  /** File page index of the page at `va`. @linux linear_page_index */
  indexOf(va: number): number {
    return this.pgoff + (va - this.start) / PAGE_SIZE;
  }

  /** @inheritdoc @linux unmap_mapping_range */
  zapFromIndex(fromIndex: number): void {
    const inode = this.inode;
    if (inode === undefined) return;
    const first = Math.max(this.start, this.start + (fromIndex - this.pgoff) * PAGE_SIZE);
    this.mm.zapRange(first, this.end, (f) => f.mapping === inode);
  }
}

/**
 * An address space.
 * @linux struct mm_struct
 */
export class MmStruct {
  /** Users of the address space (the owning process, mmget holders). @linux mm_users */
  users = 1;
  /** References to the struct itself (mmgrab holders, the address space's users count as one). @linux mm_count */
  count = 1;
  /** Pages charged by mlock-like users (iommufd's ACCOUNT_MM mode). @linux mm->locked_vm */
  lockedVm = 0;
  /** Pages pinned long-term (iommufd adds what it pins). @linux mm->pinned_vm */
  pinnedVm = 0;
  /**
   * The fill handler of private anonymous pages, if one is registered (see {@link MissingPageFill}).
   * @linux the userfaultfd context of the mm's anonymous VMAs (vma->vm_userfaultfd_ctx with VM_UFFD_MISSING)
   */
  missingPageFill: MissingPageFill | undefined;
  private readonly vmas: Vma[] = [];
  /** User page number -> physical address of the mapped page. @linux the page tables (pgd) */
  private readonly ptes = new PteTable();

  constructor(
    readonly ctx: MmContext,
    /** Pid of the owning process (names pages and pins in reports). @linux mm->owner */
    readonly ownerPid: number,
  ) {}

  /** The machine's user page table. */
  get pages(): UserPageRefs {
    return this.ctx.pages;
  }

  /** Whether the address space is still live (not torn down by exit). */
  get alive(): boolean {
    return this.users > 0;
  }

  /** The mappings, in address order. */
  get mappings(): readonly Vma[] {
    return this.vmas;
  }

  /** Number of mapped page-table entries. @linux mm_counter (MM_ANONPAGES + MM_SHMEMPAGES) */
  get rss(): number {
    return this.ptes.size;
  }

  /**
   * The mapping containing `addr`, or undefined.
   * @linux vma_lookup
   */
  findVma(addr: number): Vma | undefined {
    let lo = 0;
    let hi = this.vmas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = this.vmas[mid]!;
      if (addr < v.start) hi = mid - 1;
      else if (addr >= v.end) lo = mid + 1;
      else return v;
    }
    return undefined;
  }

  /**
   * The physical address `va` is mapped to right now (no fault), or undefined.
   * @linux follow_page / walk_page_range without FOLL_GET
   */
  lookupPhys(va: bigint): number | undefined {
    const a = Number(va);
    const vma = this.findVma(a);
    if (vma?.pfnmap) return vma.pfnAddress(a);
    const pa = this.ptes.get(Math.floor(a / PAGE_SIZE));
    return pa === undefined ? undefined : pa + (a % PAGE_SIZE);
  }

  /**
   * A free range of `len` bytes aligned to `align`, searching down from mmap_base. Throws ENOMEM when none is left.
   * @linux get_unmapped_area (vm_unmapped_area, top-down)
   */
  getUnmappedArea(len: number, align: number): number {
    let hi = MMAP_BASE;
    for (let i = this.vmas.length - 1; i >= -1; i--) {
      const below = i >= 0 ? this.vmas[i]! : undefined;
      if (below !== undefined && below.start >= hi) continue;
      const lowLimit = below === undefined ? MMAP_MIN_ADDR : below.end;
      const cand = Math.floor((hi - len) / align) * align;
      if (cand >= lowLimit && cand >= MMAP_MIN_ADDR) return cand;
      if (below !== undefined) hi = Math.min(hi, below.start);
    }
    throw kerr("ENOMEM", `no free range of ${hex(len)} bytes`);
  }

  /**
   * Create a mapping and return its address. `file` is the mapped memfd (the mapping takes its own reference).
   * @linux do_mmap
   */
  mmap(length: number, opts: MmapOptions, file: File | undefined): number {
    this.assertAlive();
    if (!Number.isSafeInteger(length) || length <= 0) throw kerr("EINVAL", `bad mmap length ${length}`);
    const prot = opts.prot ?? PROT_READ | PROT_WRITE;
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) !== 0) throw kerr("EINVAL", `bad prot ${prot}`);
    const offset = Number(opts.offset ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) {
      throw kerr("EINVAL", `mmap offset ${offset} is not page aligned`);
    }
    const shared = opts.shared ?? false;
    const inode = file && shmemInodeOf(file);
    if (file !== undefined && inode === undefined && file.fops.mmap === undefined) {
      throw kerr("ENODEV", `${file.name} does not support mmap`);
    }
    const huge = opts.hugeAligned === true || inode?.hugetlb === true;
    if (inode?.hugetlb && offset % HPAGE_PMD_SIZE !== 0) throw kerr("EINVAL", "hugetlb offset must be 2 MiB aligned");
    let len = pageAlignUp(length);
    if (inode?.hugetlb) len = Math.ceil(len / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
    if (len > TASK_SIZE) throw kerr("ENOMEM", `mmap length ${hex(len)} too large`);
    const align = huge ? HPAGE_PMD_SIZE : PAGE_SIZE;

    let start: number;
    if (opts.fixed !== undefined) {
      start = Number(opts.fixed);
      if (start % align !== 0 || start < MMAP_MIN_ADDR) throw kerr("EINVAL", `MAP_FIXED address ${hex(start)}`);
      if (start + len > TASK_SIZE) throw kerr("ENOMEM", `MAP_FIXED range past TASK_SIZE`);
    } else {
      start = this.getUnmappedArea(len, align);
    }

    // Anonymous shared memory is a shmem object of its own (shmem_zero_setup); a memfd maps the given file.
    let vmFile: File | undefined;
    let pgoff = offset / PAGE_SIZE;
    if (file !== undefined) {
      vmFile = getFile(file);
    } else if (shared) {
      vmFile = shmemFileSetup(this.ctx.files, this.pages, "dev/zero (deleted)", len);
      pgoff = 0;
    }
    const vma = new Vma(this, start, start + len, prot, shared, vmFile, pgoff, huge && file === undefined && !shared);
    if (file !== undefined && inode === undefined) {
      // A driver's file: its mmap decides (and maps what it maps). On refusal nothing was changed but the file
      // reference the mapping took.
      try {
        file.fops.mmap!(file, vma);
      } catch (e) {
        fputDeferred(vmFile!);
        throw e;
      }
    }
    if (opts.fixed !== undefined) this.unmapRange(start, start + len);
    this.insertVma(vma);
    if (opts.populate) {
      for (let a = start; a < start + len; a += PAGE_SIZE) this.faultPage(vma, a, (prot & PROT_WRITE) !== 0, false);
    }
    return start;
  }

  private insertVma(vma: Vma): void {
    let i = 0;
    while (i < this.vmas.length && this.vmas[i]!.start < vma.start) i++;
    this.vmas.splice(i, 0, vma);
    vma.inode?.mappings.add(vma);
  }

  private removeVma(vma: Vma): void {
    const i = this.vmas.indexOf(vma);
    if (i >= 0) this.vmas.splice(i, 1);
    vma.inode?.mappings.delete(vma);
    vma.vmOps?.close?.(vma);
    if (vma.file) fputDeferred(vma.file);
  }

  /**
   * Remove the mappings of [start, start + length): page references are dropped (pinned pages live on until
   * unpinned). An unmapped range is not an error. EINVAL for an unaligned start or an empty or out-of-range length.
   * @linux do_vmi_munmap
   */
  munmap(start: number, length: number): void {
    if (start % PAGE_SIZE !== 0 || !Number.isSafeInteger(length) || length <= 0 || start + length > TASK_SIZE) {
      throw kerr("EINVAL", `munmap(${hex(start)}, ${hex(length)})`);
    }
    if (!this.alive) return;
    this.unmapRange(start, start + pageAlignUp(length));
  }

  private unmapRange(start: number, end: number): void {
    for (const vma of [...this.vmas]) {
      if (vma.end <= start || vma.start >= end) continue;
      const cutStart = Math.max(start, vma.start);
      const cutEnd = Math.min(end, vma.end);
      this.zapRange(cutStart, cutEnd);
      const keepLeft = vma.start < cutStart;
      const keepRight = vma.end > cutEnd;
      if (keepLeft && keepRight) {
        // Split: the right part is a new VMA with its own file reference (and the driver's open).
        const right = vma.cloneInto(this, cutEnd, vma.end);
        vma.end = cutStart;
        this.insertVma(right);
        right.vmOps?.open?.(right);
      } else if (keepLeft) {
        vma.end = cutStart;
      } else if (keepRight) {
        vma.pgoff = vma.indexOf(cutEnd);
        vma.start = cutEnd;
      } else {
        this.removeVma(vma);
      }
    }
  }

  /**
   * Drop the page-table entries of [start, end) (only those whose folio passes `filter`), putting each page's
   * reference.
   * @linux zap_page_range_single
   */
  zapRange(start: number, end: number, filter?: (f: Folio) => boolean): void {
    const first = start / PAGE_SIZE;
    const last = end / PAGE_SIZE;
    const zap = (vpn: number, pa: number) => {
      const f = this.pages.folioOf(pa);
      if (f === undefined) return;
      if (filter !== undefined && !filter(f)) return;
      this.ptes.delete(vpn);
      f.mapcount--;
      this.pages.put(f);
    };
    if (last - first > this.ptes.size) {
      for (const [vpn, pa] of this.ptes.entries()) if (vpn >= first && vpn < last) zap(vpn, pa);
    } else {
      for (let vpn = first; vpn < last; vpn++) {
        const pa = this.ptes.get(vpn);
        if (pa !== undefined) zap(vpn, pa);
      }
    }
  }

  private setPte(vpn: number, f: Folio, pa: number): void {
    this.ptes.set(vpn, pa);
    f.mapcount++;
  }

  /**
   * @internal The page-table leaf covering virtual page `vpn` (see `PteTable.leafAt`): GUP-fast reads present
   * entries in place and leaves everything else to {@link MmStruct.faultPage}.
   * @linux pte_offset_map as gup_fast_pte_range uses it
   */
  pteLeaf(vpn: number): Float64Array | undefined {
    return this.ptes.leafAt(vpn);
  }

  /**
   * Make the page at `va` (inside `vma`) present and return its physical address. `write` breaks copy-on-write
   * and allocates; a read of an untouched private anonymous page returns -1 (the zero page) unless `needPage`.
   * `unshare` breaks copy-on-write of a private file page without a write (the page stays read-only to the
   * process, but is its own copy from now on).
   * @linux handle_mm_fault (FAULT_FLAG_WRITE, FAULT_FLAG_UNSHARE)
   */
  faultPage(vma: Vma, va: number, write: boolean, needPage: boolean, unshare = false): number {
    if (vma.pfnmap) return vma.pfnAddress(va - (va % PAGE_SIZE));
    const vpn = Math.floor(va / PAGE_SIZE);
    const cur = this.ptes.get(vpn);
    if (cur !== undefined) {
      // A present page of a private anonymous mapping is the process's own (fork copies at once): nothing to break.
      if ((!write && !unshare) || vma.shared || vma.inode === undefined) return cur;
      const f = this.pages.folioOf(cur)!;
      if (f.mapping === undefined) return cur;
      // Private mapping of a file page: copy it on the first write.
      const copy = this.pages.alloc(0, "user_page", `anon of pid ${this.ownerPid}`);
      this.pages.allocator.memory.copy(copy.pa, cur, PAGE_SIZE);
      this.ptes.delete(vpn);
      f.mapcount--;
      this.pages.put(f);
      this.setPte(vpn, copy, copy.pa);
      return copy.pa;
    }
    const inode = vma.inode;
    if (inode !== undefined) {
      const index = vma.indexOf(vpn * PAGE_SIZE);
      if (!vma.shared && (write || unshare)) {
        // do_cow_fault: a private copy of the file page.
        const src = inode.getFolio(index);
        const copy = this.pages.alloc(0, "user_page", `anon of pid ${this.ownerPid}`);
        this.pages.allocator.memory.copy(copy.pa, src.pa + (index - src.index) * PAGE_SIZE, PAGE_SIZE);
        this.setPte(vpn, copy, copy.pa);
        return copy.pa;
      }
      const f = inode.getFolio(index);
      const pa = f.pa + (index - f.index) * PAGE_SIZE;
      this.pages.get(f);
      this.setPte(vpn, f, pa);
      if (write) f.dirty = true;
      return pa;
    }
    const fill = this.missingPageFill;
    if (fill !== undefined) {
      // userfaultfd MISSING: the handler fills a fresh small page (no THP, no zero page), mapped before it runs.
      const f = this.pages.alloc(0, "user_page", `anon of pid ${this.ownerPid}`);
      this.setPte(vpn, f, f.pa);
      const bytes = fill(vpn * PAGE_SIZE, f.pa);
      if (bytes !== undefined) {
        if (bytes.byteLength !== PAGE_SIZE) throw new Error(`missing-page fill of ${hex(va)}: not one page`);
        this.pages.allocator.memory.writeBytes(f.pa, bytes);
      }
      return f.pa;
    }
    if (!write && !needPage) return -1;
    if (vma.thp) {
      const pa = this.tryThp(vma, va);
      if (pa >= 0) return pa;
    }
    const f = this.pages.alloc(0, "user_page", `anon of pid ${this.ownerPid}`);
    this.setPte(vpn, f, f.pa);
    return f.pa;
  }

  /** Back the whole 2 MiB block around `va` with one order-9 folio; -1 when it does not fit or cannot be had. */
  private tryThp(vma: Vma, va: number): number {
    const hstart = Math.floor(va / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
    if (hstart < vma.start || hstart + HPAGE_PMD_SIZE > vma.end) return -1;
    const first = hstart / PAGE_SIZE;
    const n = 1 << HPAGE_PMD_ORDER;
    for (let i = 0; i < n; i++) if (this.ptes.has(first + i)) return -1;
    let f: Folio;
    try {
      f = this.pages.alloc(HPAGE_PMD_ORDER, "user_thp", `anon of pid ${this.ownerPid}`);
    } catch (e) {
      if (e instanceof KernelError && e.code === "ENOMEM") return -1; // fall back to small pages
      throw e;
    }
    this.pages.get(f, n - 1); // one reference per PTE (the allocation's reference is the first PTE's)
    for (let i = 0; i < n; i++) this.setPte(first + i, f, f.pa + i * PAGE_SIZE);
    return f.pa + (va - hstart);
  }

  /**
   * Copy `length` bytes out of user memory. EFAULT for an unmapped or unreadable page.
   * @linux copy_from_user / access_remote_vm
   */
  read(va: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.access(va, length, false, (pa, done, n) => {
      if (pa >= 0) out.set(this.pages.allocator.memory.readBytes(pa, n), done);
    });
    return out;
  }

  /**
   * Copy `bytes` into user memory. EFAULT for an unmapped or read-only page (nothing is written then).
   * @linux copy_to_user / access_remote_vm(FOLL_WRITE)
   */
  write(va: bigint, bytes: Uint8Array): void {
    this.access(va, bytes.byteLength, true, (pa, done, n) => {
      this.pages.allocator.memory.writeBytes(pa, bytes.subarray(done, done + n));
    });
  }

  private access(va: bigint, length: number, write: boolean, fn: (pa: number, done: number, n: number) => void): void {
    this.assertAlive("EFAULT");
    if (!Number.isSafeInteger(length) || length < 0) throw kerr("EINVAL", `bad length ${length}`);
    if (length === 0) return;
    if (va < 0n || va + BigInt(length) > BigInt(TASK_SIZE)) throw kerr("EFAULT", `bad user address ${hex(va)}`);
    const start = Number(va);
    const need = write ? PROT_WRITE : PROT_READ;
    // Check the whole range first so a faulting access changes nothing.
    for (let a = start - (start % PAGE_SIZE); a < start + length; a += PAGE_SIZE) {
      const vma = this.findVma(a);
      if (vma === undefined || (vma.prot & need) === 0) {
        throw kerr("EFAULT", `${write ? "write to" : "read of"} ${hex(Math.max(a, start))} is not allowed`);
      }
    }
    let done = 0;
    while (done < length) {
      const a = start + done;
      const inPage = a % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, length - done);
      const vma = this.findVma(a)!;
      const pa = this.faultPage(vma, a, write, false);
      fn(pa < 0 ? -1 : pa + inPage, done, n);
      done += n;
    }
  }

  /**
   * Tear the address space down: unmap everything, dropping page and file references.
   * @linux exit_mmap
   */
  exitMmap(): void {
    for (const vma of [...this.vmas]) {
      this.zapRange(vma.start, vma.end);
      this.removeVma(vma);
    }
  }

  /**
   * Build `child` as a copy of this address space: shared mappings and file pages are shared (one more reference
   * each), private anonymous pages are copied now. Throws ENOMEM (the child is left torn down).
   * @linux dup_mmap (copy_page_range with eager copies instead of COW)
   */
  dupInto(child: MmStruct): void {
    try {
      for (const vma of this.vmas) {
        const c = vma.cloneInto(child, vma.start, vma.end);
        child.insertVma(c);
        c.vmOps?.open?.(c);
      }
      for (const [vpn, pa] of this.ptes.entries()) {
        const f = this.pages.folioOf(pa)!;
        const vma = this.findVma(vpn * PAGE_SIZE)!;
        if (vma.shared || f.mapping !== undefined) {
          this.pages.get(f);
          child.setPte(vpn, f, pa);
        } else {
          const copy = this.pages.alloc(0, "user_page", `anon of pid ${child.ownerPid}`);
          this.pages.allocator.memory.copy(copy.pa, pa, PAGE_SIZE);
          child.setPte(vpn, copy, copy.pa);
        }
      }
    } catch (e) {
      child.exitMmap();
      child.users = 0;
      throw e;
    }
  }

  /** Throw (EFAULT by default) when the address space was torn down. */
  assertAlive(code: "EFAULT" | "ESRCH" = "ESRCH"): void {
    if (!this.alive) throw kerr(code, `address space of pid ${this.ownerPid} is gone`);
  }
}

/**
 * Take a user of a live address space; false once it was torn down.
 * @linux mmget_not_zero
 */
export function mmgetNotZero(mm: MmStruct): boolean {
  if (mm.users <= 0) return false;
  mm.users++;
  return true;
}

/**
 * Drop a user; the last one tears the address space down.
 * @linux mmput
 */
export function mmput(mm: MmStruct): void {
  if (mm.users <= 0) throw new Error(`mmput of a dead mm (pid ${mm.ownerPid})`);
  if (--mm.users === 0) mm.exitMmap();
}

/**
 * Keep the mm_struct (not its address space) alive, as iommufd does for the mm it accounts against.
 * @linux mmgrab
 */
export function mmgrab(mm: MmStruct): void {
  mm.count++;
}

/**
 * Drop a reference taken with {@link mmgrab}.
 * @linux mmdrop
 */
export function mmdrop(mm: MmStruct): void {
  if (mm.count <= 0) throw new Error(`mmdrop underflow (pid ${mm.ownerPid})`);
  mm.count--;
}

/**
 * Copy `length` bytes from user memory of `mm`. EFAULT for unmapped or unreadable memory.
 * @linux copy_from_user
 */
export function copyFromUser(mm: MmStruct, uptr: bigint, length: number): Uint8Array {
  return mm.read(uptr, length);
}

/**
 * Copy `bytes` to user memory of `mm`. EFAULT for unmapped or read-only memory.
 * @linux copy_to_user
 */
export function copyToUser(mm: MmStruct, uptr: bigint, bytes: Uint8Array): void {
  mm.write(uptr, bytes);
}
