/**
 * What iommufd needs of the calling process (`current`): its address space for pinning and copying, its
 * credentials and limits for the capability and RLIMIT_MEMLOCK checks, its fd table, and the two locked-memory
 * counters Linux charges pins to. {@link userOfProcess} adapts a core `Process` (core/src/user) to this interface:
 * pins go through core's GUP (`pinUserPagesFast` on the pages' own mm, what `pin_user_pages_remote` does for
 * another mm), file pins through `memfdPinFolios`, limits come from `proc.rlimits`.
 * @linux current, current->mm, current_user(), capable() as drivers/iommu/iommufd/pages.c uses them
 */

import {
  type File,
  KernelError,
  kerr,
  type MmStruct,
  memfdPinFolios,
  mmdrop,
  mmgrab,
  type Process,
  pinUserPagesFast,
  shmemInodeOf,
  unpinUserPageRangeDirtyLock,
  unpinUserPages,
} from "@iommu-sim/core";

/** The CPU page size iommufd pins in. @linux PAGE_SIZE */
export const PAGE_SIZE = 4096;
/** @linux PAGE_SHIFT */
export const PAGE_SHIFT = 12;

/** Locked-memory counters of a user or an mm, in pages. @linux user_struct.locked_vm / mm_struct.pinned_vm */
export interface LockedVmCounters {
  lockedVm: number;
  pinnedVm?: number;
}

/**
 * The calling process as iommufd sees it (the source of an `iopt_pages`: task, mm and user).
 * @linux struct task_struct / mm_struct / user_struct of current (iopt_pages.source_task/source_mm/source_user)
 */
export interface IommufdUser {
  /** The core process, when the caller is one (anonymous fds are installed in its table). @linux current */
  readonly process?: Process;
  /** Identity of the address space (pages remember which mm they pin from). @linux mm_struct */
  readonly mm: object;
  /** The user's counter (RLIMIT_MODE 0). @linux user_struct.locked_vm */
  readonly userAcct: LockedVmCounters;
  /** The mm's counters: locked_vm (RLIMIT_MODE 1) and pinned_vm (every mode). @linux mm->locked_vm, mm->pinned_vm */
  readonly mmAcct: LockedVmCounters;
  /** RLIMIT_MEMLOCK in bytes (Infinity when unlimited). @linux task_rlimit(task, RLIMIT_MEMLOCK) */
  memlockLimit(): number;
  /** @linux capable */
  capable(cap: "CAP_IPC_LOCK" | "CAP_SYS_RESOURCE" | string): boolean;
  /**
   * Pin `npages` pages from the page-aligned `va` (faulting them in) and return their physical addresses, written
   * into `pages` from index 0 when given (a buffer reused across calls). EFAULT outside a mapping (nothing stays
   * pinned then).
   * @linux pin_user_pages_fast / pin_user_pages_remote(FOLL_LONGTERM)
   */
  pin(va: number, npages: number, write: boolean, pages?: number[]): number[];
  /** @linux unpin_user_pages */
  unpin(pas: readonly number[]): void;
  /**
   * Unpin `npages` physically contiguous pages from `pa` (optional: {@link IommufdUser.unpin} of each page
   * otherwise).
   * @linux unpin_user_page_range_dirty_lock
   */
  unpinRange?(pa: number, npages: number): void;
  /** @linux copy_from_user */
  read(va: bigint, length: number): Uint8Array;
  /** @linux copy_to_user */
  write(va: bigint, bytes: Uint8Array): void;
  /** The file behind an fd of this process (no reference taken). @linux fget */
  fileOf?(fd: number): unknown;
  /**
   * Pin `npages` pages of a memfd from the page-aligned byte `offset`; EINVAL for a file that is not a memfd.
   * @linux memfd_pin_folios
   */
  pinFile?(file: unknown, offset: number, npages: number): number[];
  /** Keep the mm struct alive while pages account against it. @linux mmgrab */
  grab?(): void;
  /** Drop {@link IommufdUser.grab}. @linux mmdrop */
  drop?(): void;
}

/** Whether `x` already implements {@link IommufdUser}. */
export function isIommufdUser(x: unknown): x is IommufdUser {
  return typeof x === "object" && x !== null && typeof (x as IommufdUser).pin === "function" && "userAcct" in x;
}

const adapted = new WeakMap<object, IommufdUser>();

function pinFilePages(file: File, offset: number, npages: number): number[] {
  const out: number[] = [];
  try {
    // One pin per page (memfd_pin_folios pins whole folios; iommufd then works in pages of them).
    for (let i = 0; i < npages; i++) {
      const at = offset + i * PAGE_SIZE;
      const r = memfdPinFolios(file, at, at + PAGE_SIZE - 1, 1);
      const head = r.folios[0];
      if (head === undefined) throw kerr("EINVAL", `nothing to pin at ${at} of ${file.name}`);
      out.push(head + r.offset);
    }
  } catch (e) {
    const inode = shmemInodeOf(file);
    if (inode && out.length) unpinUserPages(inode.pages, out);
    throw e;
  }
  return out;
}

/**
 * Adapt a core `Process` to {@link IommufdUser}. Objects that already implement the interface are returned as
 * they are; the adapter of a process is made once.
 * @linux current
 */
export function userOfProcess(p: unknown): IommufdUser {
  if (isIommufdUser(p)) return p;
  if (typeof p !== "object" || p === null || !("mm" in p) || !("rlimits" in p)) {
    throw new KernelError("EFAULT", "no calling process");
  }
  const hit = adapted.get(p);
  if (hit) return hit;
  const proc = p as Process;
  const mm: MmStruct = proc.mm;
  const u: IommufdUser = {
    process: proc,
    mm,
    userAcct: proc.cred.user,
    mmAcct: mm,
    memlockLimit: () => proc.rlimits.RLIMIT_MEMLOCK,
    capable: (cap) => proc.cred.has(cap),
    pin: (va, npages, write, pages) => pinUserPagesFast(mm, BigInt(va), npages, { write, longterm: true }, pages),
    unpin: (pas) => unpinUserPages(mm, pas),
    unpinRange: (pa, npages) => unpinUserPageRangeDirtyLock(mm, pa, npages, false),
    read: (va, length) => mm.read(va, length),
    write: (va, bytes) => mm.write(va, bytes),
    fileOf: (fd) => proc.files.lookup(fd),
    pinFile: (file, offset, npages) => pinFilePages(file as File, offset, npages),
    grab: () => mmgrab(mm),
    drop: () => mmdrop(mm),
  };
  adapted.set(p, u);
  return u;
}
