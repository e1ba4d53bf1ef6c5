/**
 * What iommufd needs of the calling process (`current`): its address space for pinning and copying, its
 * credentials for the capability checks, and the two locked-memory counters Linux charges pins to. The process
 * model lives in `@iommu-sim/core` (core/src/user, see docs/user-space-contracts.md); {@link userOfProcess} adapts
 * a core `Process` to this interface (pinning with `pinUserPagesFast`, the synchronous GUP), and tests may pass any
 * object implementing it.
 * @linux current, current->mm, current_user(), capable() as drivers/iommu/iommufd/pages.c uses them
 */

import * as coreApi from "@iommu-sim/core";
import { KernelError, kerr } from "@iommu-sim/core";

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
 * The calling process as iommufd sees it.
 * @linux struct task_struct / mm_struct / user_struct of current
 */
export interface IommufdUser {
  /** Identity of the address space (pages remember which mm they pin from). @linux mm_struct */
  readonly mm: object;
  /** The user's counter (RLIMIT_MODE 0). @linux user_struct.locked_vm */
  readonly userAcct: LockedVmCounters;
  /** The mm's counters (RLIMIT_MODE 1 charges locked_vm; mode 0 also adds pinned_vm). @linux mm->locked_vm, mm->pinned_vm */
  readonly mmAcct: LockedVmCounters;
  /** RLIMIT_MEMLOCK in bytes. @linux rlimit(RLIMIT_MEMLOCK) */
  memlockLimit(): number;
  /** @linux capable */
  capable(cap: "CAP_IPC_LOCK" | "CAP_SYS_RESOURCE" | string): boolean;
  /**
   * Pin `npages` pages from the page-aligned `va` (faulting them in) and return their physical addresses. EFAULT
   * outside a mapping (nothing stays pinned then).
   * @linux pin_user_pages_remote(FOLL_LONGTERM)
   */
  pin(va: number, npages: number, write: boolean): number[];
  /** @linux unpin_user_pages */
  unpin(pas: readonly number[]): void;
  /** @linux copy_from_user */
  read(va: bigint, length: number): Uint8Array;
  /** @linux copy_to_user */
  write(va: bigint, bytes: Uint8Array): void;
  /** The file behind an fd of this process, for IOMMU_IOAS_MAP_FILE. @linux fget */
  fileOf?(fd: number): unknown;
  /**
   * Pin `npages` pages of a memfd from the page-aligned byte `offset`; EINVAL for a file that is not a memfd.
   * @linux memfd_pin_folios
   */
  pinFile?(file: unknown, offset: number, npages: number): number[];
}

type AnyFn = (...args: unknown[]) => unknown;
interface ProcessLike {
  mm: { pinnedVm?: number; lockedVm?: number };
  cred?: { has?(cap: string): boolean; user?: { lockedVm: number }; rlimits?: { RLIMIT_MEMLOCK?: number } };
  readMemory(va: bigint, length: number): Uint8Array;
  writeMemory(va: bigint, bytes: Uint8Array): void;
  files?: { get?(fd: number): unknown };
}

function coreFn(name: string): AnyFn | undefined {
  const f = (coreApi as Record<string, unknown>)[name];
  return typeof f === "function" ? (f as AnyFn) : undefined;
}

/** Whether `x` already implements {@link IommufdUser}. */
export function isIommufdUser(x: unknown): x is IommufdUser {
  return typeof x === "object" && x !== null && typeof (x as IommufdUser).pin === "function" && "userAcct" in x;
}

const adapted = new WeakMap<object, IommufdUser>();

/**
 * Adapt a core `Process` (docs/user-space-contracts.md) to {@link IommufdUser}, using core's `pinUserPages` /
 * `unpinUserPages`. Objects that already implement the interface are returned as they are.
 * @linux current
 */
export function userOfProcess(p: unknown): IommufdUser {
  if (isIommufdUser(p)) return p;
  if (typeof p !== "object" || p === null) throw kerr("EFAULT", "no calling process");
  const hit = adapted.get(p);
  if (hit) return hit;
  const proc = p as ProcessLike;
  const pinUserPages = coreFn("pinUserPagesFast");
  const unpinUserPages = coreFn("unpinUserPages");
  const user = proc.cred?.user ?? { lockedVm: 0 };
  const mmAcct = proc.mm as LockedVmCounters;
  if (mmAcct.lockedVm === undefined) mmAcct.lockedVm = 0;
  const u: IommufdUser = {
    mm: proc.mm,
    userAcct: user,
    mmAcct,
    memlockLimit: () => proc.cred?.rlimits?.RLIMIT_MEMLOCK ?? 8 * 1024 * 1024,
    capable: (cap) => proc.cred?.has?.(cap) ?? true,
    pin: (va, npages, write) => {
      if (!pinUserPages) throw new KernelError("EFAULT", "core has no pinUserPages");
      return pinUserPages(proc.mm, BigInt(va), npages, { write, longterm: true }) as number[];
    },
    unpin: (pas) => {
      unpinUserPages?.(proc.mm, [...pas]);
    },
    read: (va, length) => proc.readMemory(va, length),
    write: (va, bytes) => proc.writeMemory(va, bytes),
    fileOf: (fd) => proc.files?.get?.(fd),
  };
  adapted.set(p, u);
  return u;
}
