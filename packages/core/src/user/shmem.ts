/**
 * Shared memory files: memfd and shared anonymous mappings. Their pages belong to the file (the page cache holds
 * one reference on each folio), not to any mapping, so every MAP_SHARED mapping of the file sees the same frames,
 * and the pages are dropped when the file is truncated or its last reference goes.
 * Mirrors `mm/shmem.c` (shmem_get_folio, shmem_truncate_range, shmem_evict_inode, shmem_zero_setup),
 * `mm/memfd.c` (memfd_create) and the hugetlbfs backing of `MFD_HUGETLB`.
 */
import { kerr } from "../kernel/errno.js";
import { PAGE_SIZE } from "../platform/memory.js";
import { File, type FileContext, type FileOperations, O_RDWR } from "./file.js";
import { type Folio, HPAGE_PMD_ORDER, HPAGE_PMD_SIZE, type UserPageRefs } from "./page-refs.js";

/**
 * A mapping of a shmem inode, told to drop its page-table entries for truncated pages.
 * @linux a vm_area_struct on address_space.i_mmap
 */
export interface ShmemMapping {
  /** Zap every PTE of the mapping that maps a page of the file at index >= `fromIndex`. */
  zapFromIndex(fromIndex: number): void;
}

/**
 * The pages of one shmem file, by page index.
 * @linux struct shmem_inode_info with its address_space (i_mapping)
 */
export class ShmemInode {
  /** File size in bytes. @linux inode->i_size */
  size: number;
  /** Folios by the page index of their first page. @linux the page cache xarray (i_pages) */
  readonly folios = new Map<number, Folio>();
  /** Live mappings of the file. @linux address_space.i_mmap */
  readonly mappings = new Set<ShmemMapping>();
  /**
   * Who supplies the contents of a folio when it enters the page cache, instead of zeroes: called once per new
   * folio with its first page index and physical address (the folio is `folioPages` pages, zeroed); returns the
   * bytes to put there (at most the folio's size) or undefined. The counterpart of a userfaultfd registered in
   * MISSING mode on a shmem mapping, answered with UFFDIO_COPY into the page cache.
   * @linux userfaultfd on shmem: handle_userfault() from shmem_get_folio_gfp, filled by shmem_mfill_atomic_pte
   */
  missingFill: ((index: number, pa: number) => Uint8Array | undefined) | undefined;

  constructor(
    readonly pages: UserPageRefs,
    readonly name: string,
    size: number,
    /** Backed by 2 MiB folios (MFD_HUGETLB). */
    readonly hugetlb: boolean,
  ) {
    this.size = size;
  }

  /** Pages per folio of this file (1, or 512 for hugetlb). */
  get folioPages(): number {
    return this.hugetlb ? 1 << HPAGE_PMD_ORDER : 1;
  }

  /**
   * The folio holding page `index`, allocated (zeroed) on first use. Throws EFAULT past the end of the file (the
   * SIGBUS of a real access), ENOMEM when no page can be had.
   * @linux shmem_get_folio(SGP_CACHE) / hugetlb_fault
   */
  getFolio(index: number): Folio {
    if (index * PAGE_SIZE >= this.size) throw kerr("EFAULT", `${this.name}: page ${index} is past the end of the file`);
    const head = index - (index % this.folioPages);
    let f = this.folios.get(head);
    if (f === undefined) {
      f = this.hugetlb
        ? this.pages.alloc(HPAGE_PMD_ORDER, "hugetlb_page", this.name)
        : this.pages.alloc(0, "shmem_page", this.name);
      f.mapping = this;
      f.index = head;
      this.folios.set(head, f);
      const bytes = this.missingFill?.(head, f.pa);
      if (bytes !== undefined) this.pages.allocator.memory.writeBytes(f.pa, bytes);
    }
    return f;
  }

  /** The folio holding page `index` if it is in the page cache. @linux filemap_get_folio */
  peekFolio(index: number): Folio | undefined {
    return this.folios.get(index - (index % this.folioPages));
  }

  /**
   * Set the file size. Growing adds holes; shrinking unmaps and drops the page cache's reference on every folio
   * wholly past the new end (pinned ones live on until unpinned) and zeroes the tail of a partial one. Hugetlb
   * sizes must be multiples of 2 MiB (EINVAL).
   * @linux shmem_setattr -> shmem_truncate_range / hugetlb_vmtruncate
   */
  setSize(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw kerr("EINVAL", `bad size ${size}`);
    if (this.hugetlb && size % HPAGE_PMD_SIZE !== 0) throw kerr("EINVAL", "hugetlb size must be a multiple of 2 MiB");
    if (size < this.size) this.truncate(size);
    this.size = size;
  }

  private truncate(size: number): void {
    const firstGone = Math.ceil(size / PAGE_SIZE);
    for (const m of this.mappings) m.zapFromIndex(firstGone);
    for (const [head, f] of [...this.folios]) {
      if (head >= firstGone) {
        this.folios.delete(head);
        f.mapping = undefined;
        this.pages.put(f);
      }
    }
    // A partial last page keeps its head but loses the bytes past the end.
    const tail = size % PAGE_SIZE;
    if (tail !== 0) {
      const f = this.peekFolio(firstGone - 1);
      if (f !== undefined) {
        const pa = f.pa + (firstGone - 1 - f.index) * PAGE_SIZE;
        this.pages.allocator.memory.fill(pa + tail, PAGE_SIZE - tail, 0);
      }
    }
  }

  /**
   * Drop every page (the last reference to the file went away).
   * @linux shmem_evict_inode
   */
  evict(): void {
    this.truncate(0);
    this.size = 0;
  }
}

/** The private data of a memfd file: its inode and the file position. */
interface ShmemFileState {
  inode: ShmemInode;
  pos: number;
}

/**
 * File operations of shmem files: read and write at the file position, release evicts the pages.
 * @linux shmem_file_operations
 */
export const shmemFileOperations: FileOperations = {
  read(file, length) {
    const s = file.privateData as ShmemFileState;
    const n = Math.max(0, Math.min(length, s.inode.size - s.pos));
    const out = shmemRead(s.inode, s.pos, n);
    s.pos += n;
    return out;
  },
  write(file, bytes) {
    const s = file.privateData as ShmemFileState;
    const end = s.pos + bytes.byteLength;
    if (s.inode.hugetlb) throw kerr("EINVAL", "hugetlbfs files cannot be written with write()");
    if (end > s.inode.size) s.inode.setSize(end);
    shmemWrite(s.inode, s.pos, bytes);
    s.pos = end;
    return bytes.byteLength;
  },
  release(file) {
    (file.privateData as ShmemFileState).inode.evict();
  },
};

function shmemRead(inode: ShmemInode, pos: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let done = 0;
  while (done < n) {
    const off = pos + done;
    const index = Math.floor(off / PAGE_SIZE);
    const inPage = off % PAGE_SIZE;
    const chunk = Math.min(PAGE_SIZE - inPage, n - done);
    const f = inode.peekFolio(index);
    // A hole reads as zeroes without allocating (shmem_file_read_iter uses ZERO_PAGE).
    if (f !== undefined) {
      const pa = f.pa + (index - f.index) * PAGE_SIZE + inPage;
      out.set(inode.pages.allocator.memory.readBytes(pa, chunk), done);
    }
    done += chunk;
  }
  return out;
}

function shmemWrite(inode: ShmemInode, pos: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const off = pos + done;
    const index = Math.floor(off / PAGE_SIZE);
    const inPage = off % PAGE_SIZE;
    const chunk = Math.min(PAGE_SIZE - inPage, bytes.byteLength - done);
    const f = inode.getFolio(index);
    f.dirty = true;
    inode.pages.allocator.memory.writeBytes(
      f.pa + (index - f.index) * PAGE_SIZE + inPage,
      bytes.subarray(done, done + chunk),
    );
    done += chunk;
  }
}

/**
 * Make a shmem file of `size` bytes with one reference (the caller's).
 * @linux shmem_file_setup / hugetlb_file_setup
 */
export function shmemFileSetup(
  ctx: FileContext,
  pages: UserPageRefs,
  name: string,
  size: number,
  opts: { hugetlb?: boolean; cred?: File["cred"] } = {},
): File {
  const inode = new ShmemInode(pages, name, 0, opts.hugetlb ?? false);
  inode.setSize(size);
  const state: ShmemFileState = { inode, pos: 0 };
  const file = new File(ctx, name, shmemFileOperations, state, O_RDWR, opts.cred);
  file.inode = inode;
  file.opened = true;
  return file;
}

/**
 * The shmem inode of a file, or undefined when it is not a shmem file.
 * @linux shmem_file / SHMEM_I(file_inode(file))
 */
export function shmemInodeOf(file: File): ShmemInode | undefined {
  return file.inode instanceof ShmemInode ? file.inode : undefined;
}
