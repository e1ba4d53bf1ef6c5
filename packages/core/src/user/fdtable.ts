/**
 * The per-process file-descriptor table: the lowest free number first, reserved before the file is installed.
 * Mirrors `fs/file.c` (alloc_fd, get_unused_fd_flags, put_unused_fd, fd_install, fget, file_close_fd) and
 * `fs/open.c` (filp_close).
 */
import { kerr } from "../kernel/errno.js";
import { type File, fput, getFile } from "./file.js";
import type { Process } from "./process.js";

/** A reserved fd whose file is not installed yet. */
const RESERVED = Symbol("reserved fd");

/**
 * The open files of a process, indexed by fd.
 * @linux struct files_struct / struct fdtable
 */
export class FdTable {
  private readonly slots: (File | typeof RESERVED | undefined)[] = [];

  /**
   * Reserve the lowest free fd below `limit` (RLIMIT_NOFILE). Throws EMFILE when none is.
   * @linux alloc_fd
   */
  allocFd(limit: number): number {
    let fd = 0;
    while (fd < this.slots.length && this.slots[fd] !== undefined) fd++;
    if (fd >= limit) throw kerr("EMFILE", `no free fd below ${limit}`);
    this.slots[fd] = RESERVED;
    return fd;
  }

  /**
   * Reserve the lowest free fd at or above `min` and below `limit`. Throws EINVAL for `min` at or past the limit,
   * EMFILE when none is free.
   * @linux alloc_fd(start, end) as fcntl(F_DUPFD) calls it
   */
  allocFdFrom(min: number, limit: number): number {
    if (!Number.isInteger(min) || min < 0 || min >= limit) throw kerr("EINVAL", `F_DUPFD minimum ${min}`);
    let fd = min;
    while (fd < this.slots.length && this.slots[fd] !== undefined) fd++;
    if (fd >= limit) throw kerr("EMFILE", `no free fd in [${min}, ${limit})`);
    this.slots[fd] = RESERVED;
    return fd;
  }

  /**
   * Put `file` (whose reference the table takes over) at `fd`, open or not, and hand back the file that was there
   * (its reference now the caller's, to close). EBUSY when `fd` is reserved by an open in progress.
   * @linux do_dup2 (the swap of fdt->fd[fd] under file_lock)
   */
  replace(fd: number, file: File): File | undefined {
    const old = this.slots[fd];
    if (old === RESERVED) throw kerr("EBUSY", `fd ${fd} is being installed`);
    this.slots[fd] = file;
    return old;
  }

  /**
   * Give back a reserved fd that was never installed.
   * @linux put_unused_fd
   */
  putUnused(fd: number): void {
    if (this.slots[fd] !== RESERVED) throw new Error(`put_unused_fd(${fd}): not a reserved fd`);
    this.release(fd);
  }

  /**
   * Install `file` (whose reference the table takes over) at the reserved `fd`.
   * @linux fd_install
   */
  install(fd: number, file: File): void {
    if (this.slots[fd] !== RESERVED) throw new Error(`fd_install(${fd}): fd was not reserved`);
    this.slots[fd] = file;
  }

  /** The file at `fd`, without taking a reference; undefined for a free, reserved or invalid fd. */
  lookup(fd: number): File | undefined {
    if (!Number.isInteger(fd) || fd < 0) return undefined;
    const f = this.slots[fd];
    return f === RESERVED ? undefined : f;
  }

  /** Same as {@link lookup}. @linux files_lookup_fd_raw */
  get(fd: number): File | undefined {
    return this.lookup(fd);
  }

  /**
   * Remove `fd` from the table and hand its reference to the caller; undefined when it was not open.
   * @linux file_close_fd
   */
  remove(fd: number): File | undefined {
    const f = this.lookup(fd);
    if (f === undefined) return undefined;
    this.release(fd);
    return f;
  }

  private release(fd: number): void {
    this.slots[fd] = undefined;
    while (this.slots.length > 0 && this.slots[this.slots.length - 1] === undefined) this.slots.pop();
  }

  /** Open fds in increasing order, with their files. */
  entries(): [number, File][] {
    const out: [number, File][] = [];
    this.slots.forEach((f, fd) => {
      if (f !== undefined && f !== RESERVED) out.push([fd, f]);
    });
    return out;
  }

  /** Number of open fds. */
  get size(): number {
    return this.entries().length;
  }

  /**
   * A copy for a child process: every file gets one more reference.
   * @linux dup_fd
   */
  dup(): FdTable {
    const t = new FdTable();
    this.slots.forEach((f, fd) => {
      if (f !== undefined && f !== RESERVED) t.slots[fd] = getFile(f);
    });
    return t;
  }
}

/**
 * Reserve the lowest free fd of `process`. Throws EMFILE at RLIMIT_NOFILE.
 * @linux get_unused_fd_flags
 */
export function getUnusedFdFlags(process: Process, _flags = 0): number {
  process.assertAlive();
  return process.files.allocFd(process.rlimits.RLIMIT_NOFILE);
}

/**
 * Give back an fd reserved with {@link getUnusedFdFlags} that will not be installed (an error path).
 * @linux put_unused_fd
 */
export function putUnusedFd(process: Process, fd: number): void {
  process.files.putUnused(fd);
}

/**
 * Install `file` at the fd reserved with {@link getUnusedFdFlags}; the fd table takes over the caller's reference.
 * @linux fd_install
 */
export function fdInstallAt(process: Process, fd: number, file: File): void {
  process.files.install(fd, file);
}

/**
 * Give `file` the lowest free fd of `process` and return it; the fd table takes over the caller's reference.
 * Throws EMFILE at RLIMIT_NOFILE (the caller keeps its reference then).
 * @linux get_unused_fd_flags + fd_install
 */
export function fdInstall(process: Process, file: File): number {
  const fd = getUnusedFdFlags(process);
  fdInstallAt(process, fd, file);
  return fd;
}

/**
 * Take a reference to the file at `fd` of `process`. Throws EBADF when the fd is not open.
 * @linux fget (NULL -> -EBADF at the caller)
 */
export function fget(process: Process, fd: number, holder = "anon"): File {
  const f = process.files.lookup(fd);
  if (f === undefined || !f.ref.getUnlessZero(holder)) throw kerr("EBADF", `fd ${fd} is not open`);
  return f;
}

/**
 * Close a file taken out of an fd table: flush, then drop the table's reference.
 * @linux filp_close
 */
export async function filpClose(file: File, current: Process): Promise<void> {
  try {
    if (file.fops.flush) await file.fops.flush(file, current);
  } finally {
    await fput(file);
  }
}
