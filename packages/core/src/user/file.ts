/**
 * `struct file` and `struct file_operations`: an open file with a reference count, released on the last `fput`.
 * Mirrors `fs/file_table.c` (alloc_file, fput, __fput), `include/linux/fs.h` and `fs/anon_inodes.c`.
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { kerr } from "../kernel/errno.js";
import { Kref } from "../kernel/kref.js";
import { type Module, modulePut, tryModuleGet } from "../kernel/module.js";
import type { RefTracker } from "../kernel/ref-tracker.js";
import type { Cred } from "./cred.js";
import { currentProcess } from "./current.js";
import type { Vma } from "./mm.js";
import type { Process } from "./process.js";

/**
 * The argument of an ioctl as user space passed it: a struct in object form, its bytes, a number (a user address
 * in the caller's memory, or a plain integer for the ioctls that take one), or null (EFAULT for handlers that need
 * one).
 * @linux the `unsigned long arg` of unlocked_ioctl (a user pointer)
 */
export type IoctlArg = object | Uint8Array | number | bigint | null;

/**
 * What a driver implements for its files. Every hook is optional; a missing `ioctl` is ENOTTY, a missing `read` or
 * `write` is EINVAL. `current` is the calling process (also available as `currentProcess()`).
 * @linux struct file_operations
 */
export interface FileOperations {
  /** The module that implements these operations; an open file pins it. @linux file_operations.owner */
  readonly owner?: Module;
  /** Called when a char device is opened; throwing fails the open (no release follows). @linux .open */
  open?(file: File, current: Process): Promise<void> | void;
  /** Called by every close(2) of an fd of this file. @linux .flush */
  flush?(file: File, current: Process): Promise<void> | void;
  /** Called once, when the last reference is dropped. @linux .release */
  release?(file: File): Promise<void> | void;
  /** Resolves to the ioctl's return value (0 when nothing is returned). @linux .unlocked_ioctl */
  // biome-ignore lint/suspicious/noConfusingVoidType: handlers that return nothing (async or not) mean 0.
  ioctl?(file: File, cmd: number, arg: IoctlArg, current: Process): Promise<number | void> | number | void;
  /** Resolves to the bytes read (at most `length`). @linux .read */
  read?(file: File, length: number, current: Process): Promise<Uint8Array> | Uint8Array;
  /** Resolves to the number of bytes consumed. @linux .write */
  write?(file: File, bytes: Uint8Array, current: Process): Promise<number> | number;
  /**
   * Set up a new mapping of the file: `vma` covers [vma.start, vma.end) from file page `vma.pgoff`, with its
   * protection and MAP_SHARED flag; the driver checks them, sets `vma.vmOps` / `vma.privateData` and maps physical
   * memory with `vma.remapPfnRange`. Throw a KernelError to refuse (the mapping is then not created and no
   * `vmOps.close` runs). Synchronous: Linux calls it under the mmap lock.
   * @linux .mmap
   */
  mmap?(file: File, vma: Vma): void;
  /**
   * The readiness mask (EPOLL* bits) of the file now; a file without it polls as always readable and writable
   * (DEFAULT_POLLMASK). Synchronous and side-effect free: the caller waits and polls again.
   * @linux .poll
   */
  poll?(file: File): number;
}

/** There is data to read. @linux EPOLLIN */
export const EPOLLIN = 0x1;
/** Writing will not block. @linux EPOLLOUT */
export const EPOLLOUT = 0x4;
/** Normal data to read. @linux EPOLLRDNORM */
export const EPOLLRDNORM = 0x40;
/** Normal data may be written. @linux EPOLLWRNORM */
export const EPOLLWRNORM = 0x100;
/**
 * What a file without a poll operation reports.
 * @linux DEFAULT_POLLMASK
 */
export const DEFAULT_POLLMASK = EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM;

/**
 * The readiness of `file` (its `poll`, else {@link DEFAULT_POLLMASK}).
 * @linux vfs_poll
 */
export function vfsPoll(file: File): number {
  return file.fops.poll ? file.fops.poll(file) : DEFAULT_POLLMASK;
}

/** Open for reading. @linux O_RDONLY */
export const O_RDONLY = 0;
/** Open for writing. @linux O_WRONLY */
export const O_WRONLY = 1;
/** Open for reading and writing. @linux O_RDWR */
export const O_RDWR = 2;
/** Non-blocking I/O. @linux O_NONBLOCK */
export const O_NONBLOCK = 0o4000;
/** Close on exec (recorded only). @linux O_CLOEXEC */
export const O_CLOEXEC = 0o2000000;
/** The file may be read. @linux FMODE_READ */
export const FMODE_READ = 0x1;
/** The file may be written. @linux FMODE_WRITE */
export const FMODE_WRITE = 0x2;

/**
 * The file mode bits of open flags.
 * @linux OPEN_FMODE
 */
export function openFmode(flags: number): number {
  const acc = flags & 3;
  return (acc === O_RDONLY || acc === O_RDWR ? FMODE_READ : 0) | (acc === O_WRONLY || acc === O_RDWR ? FMODE_WRITE : 0);
}

/**
 * What a file needs from its machine: where to report, where to track references, and where a release that could
 * not be awaited is parked until the next system call returns.
 * @linux the task_work / delayed_fput machinery behind fput
 */
export interface FileContext {
  readonly diag: Diagnostics;
  readonly refs: RefTracker | undefined;
  /** Park a release started from a synchronous path (munmap); awaited before the next syscall returns. */
  deferRelease(p: Promise<void>): void;
}

/**
 * An open file.
 * @linux struct file
 */
export class File {
  /** References: fds, mappings, kernel holders. @linux file->f_count (file_ref_t) */
  readonly ref: Kref;
  /** The driver's per-file state. @linux file->private_data */
  privateData: unknown;
  /** @linux file->f_mode */
  readonly fMode: number;
  /** @linux file->f_flags */
  fFlags: number;
  /** Set once `fops.open` succeeded (release runs only then). @linux FMODE_OPENED */
  opened = false;
  /** Set once the last reference was dropped and release started. */
  released = false;
  /** For shmem-backed files (memfd, shared anonymous maps): the inode holding the pages. @linux file->f_inode */
  inode: unknown;

  constructor(
    readonly ctx: FileContext,
    /** A path ("/dev/iommu") or "anon_inode:[name]" or "memfd:name". */
    readonly name: string,
    /** @linux file->f_op */
    readonly fops: FileOperations,
    privateData: unknown,
    flags: number,
    /** The opener's credentials. @linux file->f_cred */
    readonly cred: Cred | undefined,
  ) {
    this.privateData = privateData;
    this.fFlags = flags;
    this.fMode = openFmode(flags);
    this.ref = new Kref(ctx.diag, `file ${name}`, () => {}, ctx.refs, { initialHolder: "anon" });
  }

  /** The current reference count. @linux file_count */
  get count(): number {
    return this.ref.read();
  }
}

/**
 * Take a reference to a file the caller already holds one on.
 * @linux get_file
 */
export function getFile(file: File, holder = "anon"): File {
  file.ref.get(holder);
  return file;
}

/**
 * Take a reference unless the file is already being released.
 * @linux get_file_rcu / file_ref_get
 */
export function getFileUnlessZero(file: File, holder = "anon"): boolean {
  return file.ref.getUnlessZero(holder);
}

/**
 * Drop a reference; on the last one, release the file (the driver's `release`, then the module pin) and resolve
 * when that is done. An exception from `release` is recorded as a warning, as `__fput` ignores its return value.
 * @linux fput (with the __fput that task_work runs before returning to user space)
 */
export async function fput(file: File, holder = "anon"): Promise<void> {
  if (!file.ref.put(holder)) return;
  await finalFput(file);
}

/**
 * {@link fput} for a system call's own reference: the release to wait for when this was the last reference,
 * undefined otherwise (so the common case costs no asynchronous step).
 * @linux fdput
 */
export function fdput(file: File, holder = "anon"): Promise<void> | undefined {
  if (!file.ref.put(holder)) return undefined;
  return finalFput(file);
}

/**
 * Drop a reference from a path that cannot wait (munmap, fork unwinding): a release that has to sleep is parked
 * with the machine and completes before the current system call returns.
 * @linux fput (deferred to task_work / delayed_fput)
 */
export function fputDeferred(file: File, holder = "anon"): void {
  if (!file.ref.put(holder)) return;
  const p = finalFput(file);
  file.ctx.deferRelease(p);
}

async function finalFput(file: File): Promise<void> {
  file.released = true;
  try {
    if (file.opened && file.fops.release) await file.fops.release(file);
  } catch (e) {
    file.ctx.diag.report("warning", `release of ${file.name} threw: ${e instanceof Error ? e.message : String(e)}`, {
      culprit: file.name,
    });
  } finally {
    if (file.opened) modulePut(file.fops.owner, `file ${file.name}`, file.ctx.diag);
  }
}

/**
 * Options of {@link anonInodeGetFile}: open flags, and where it finds its machine when there is no current process.
 * @linux the flags argument of anon_inode_getfile
 */
export interface AnonInodeOptions {
  /** Open flags (default O_RDWR). */
  flags?: number;
  /** The machine's file context (a process or the machine's user space); default: the current process's. */
  ctx?: FileContext | Process;
}

/**
 * Make an anonymous-inode file with one reference (the caller's), running `fops` with `priv` as private data. The
 * file pins `fops.owner` until released. Throws ENODEV when the module is being unloaded.
 * @linux anon_inode_getfile
 */
export function anonInodeGetFile(name: string, fops: FileOperations, priv: unknown, opts: AnonInodeOptions = {}): File {
  const cur = currentProcess();
  const src = opts.ctx ?? cur;
  if (src === undefined) throw new Error("anonInodeGetFile: no current process; pass opts.ctx");
  const ctx: FileContext = "space" in src ? src.space : src;
  const cred = "cred" in src ? src.cred : cur?.cred;
  const file = new File(ctx, `anon_inode:${name}`, fops, priv, opts.flags ?? O_RDWR, cred);
  if (!tryModuleGetFor(file)) {
    file.ref.put("anon");
    throw kerr("ENODEV", `module of ${name} is going away`);
  }
  file.opened = true;
  return file;
}

/**
 * Pin the module that implements a file's operations; false when it is being unloaded.
 * @linux fops_get
 */
export function tryModuleGetFor(file: File): boolean {
  return tryModuleGet(file.fops.owner, `file ${file.name}`);
}
