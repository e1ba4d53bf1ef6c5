/**
 * Simulated user processes and the machine's user-space bookkeeping (pids, users, char devices, user pages).
 * A `Process` is what a test or a VMM drives: system calls on file descriptors and plain loads and stores to its
 * memory. Mirrors `kernel/fork.c` (copy_process), `kernel/exit.c` (do_exit: exit_mm, then exit_files), `fs/open.c`
 * (do_sys_open, close), `fs/ioctl.c` (vfs_ioctl), `fs/read_write.c` (vfs_read, vfs_write), `mm/memfd.c`
 * (memfd_create) and `mm/mmap.c` (ksys_mmap_pgoff, munmap).
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { kerr } from "../kernel/errno.js";
import { modulePut } from "../kernel/module.js";
import type { RefTracker } from "../kernel/ref-tracker.js";
import type { Scheduler } from "../kernel/sched/scheduler.js";
import type { PageAllocator } from "../platform/page-alloc.js";
import { ChrdevRegistry } from "./chrdev.js";
import {
  type CapabilitySpec,
  Cred,
  capabilitySet,
  defaultRlimits,
  type RlimitResource,
  type Rlimits,
  UserStruct,
} from "./cred.js";
import { runAsProcess } from "./current.js";
import { FdTable, fdInstall, fdInstallAt, fget, filpClose, getUnusedFdFlags, putUnusedFd } from "./fdtable.js";
import {
  File,
  type FileContext,
  FMODE_READ,
  FMODE_WRITE,
  fdput,
  fput,
  fputDeferred,
  type IoctlArg,
  O_RDWR,
  tryModuleGetFor,
} from "./file.js";
import { type MmapOptions, type MmContext, MmStruct, mmput } from "./mm.js";
import { UserPageRefs } from "./page-refs.js";
import { shmemFileSetup, shmemInodeOf } from "./shmem.js";

/**
 * Options of `machine.spawnProcess`.
 * @linux the credentials and limits a new process starts with
 */
export interface SpawnOptions {
  /** User id (default 0). */
  uid?: number;
  /** Effective capabilities: default every capability for uid 0 and none otherwise. */
  capabilities?: CapabilitySpec;
  /** Resource limits to override (bytes for RLIMIT_MEMLOCK). */
  rlimits?: Partial<Rlimits>;
  /** Command name for reports (default "proc"). @linux task_struct.comm */
  comm?: string;
}

/**
 * Options of `Process.memfdCreate`.
 * @linux the flags of memfd_create(2)
 */
export interface MemfdOptions {
  /** Back the file with 2 MiB huge pages (its size must be a multiple of 2 MiB). @linux MFD_HUGETLB */
  hugetlb?: boolean;
}

/**
 * Services the user space of a machine is built on.
 * @linux the global kernel services fs/ and mm/ use
 */
export interface UserSpaceDeps {
  pages: PageAllocator;
  diag: Diagnostics;
  refs?: RefTracker;
  scheduler?: Scheduler;
  chrdevs?: ChrdevRegistry;
}

/**
 * The user-space side of one machine: processes, users, char devices, and the user pages' reference counts.
 * One per machine (`machine.userSpace`, DI token `Tokens.userSpace`).
 * @linux the pid namespace, the uid hash of kernel/user.c, and the struct page array for user memory
 */
export class UserSpace implements FileContext {
  readonly diag: Diagnostics;
  readonly refs: RefTracker | undefined;
  readonly scheduler: Scheduler | undefined;
  readonly chrdevs: ChrdevRegistry;
  /** Reference and pin counts of every user page. */
  readonly pages: UserPageRefs;
  private nextPid = 1;
  private readonly procs = new Map<number, Process>();
  private readonly users = new Map<number, UserStruct>();
  private readonly mms = new Set<MmStruct>();
  private readonly pending = new Set<Promise<void>>();
  private installed = false;

  constructor(deps: UserSpaceDeps) {
    this.diag = deps.diag;
    this.refs = deps.refs;
    this.scheduler = deps.scheduler;
    this.chrdevs = deps.chrdevs ?? new ChrdevRegistry(deps.diag);
    this.pages = new UserPageRefs(deps.pages, deps.diag);
  }

  /**
   * The user_struct of `uid`, made on first use.
   * @linux alloc_uid / find_user
   */
  userFor(uid: number): UserStruct {
    let u = this.users.get(uid);
    if (u === undefined) {
      u = new UserStruct(uid);
      this.users.set(uid, u);
    }
    return u;
  }

  /**
   * Start a process with an empty fd table and address space.
   * @linux copy_process for a fresh exec'd task
   */
  spawn(opts: SpawnOptions = {}): Process {
    const uid = opts.uid ?? 0;
    if (!Number.isInteger(uid) || uid < 0) throw kerr("EINVAL", `bad uid ${uid}`);
    const caps = capabilitySet(opts.capabilities ?? (uid === 0 ? "root" : "none"));
    const cred = new Cred(uid, this.userFor(uid), caps);
    const rlimits = { ...defaultRlimits(), ...opts.rlimits };
    return this.newProcess(opts.comm ?? "proc", cred, rlimits, new FdTable());
  }

  /** @internal a process with a fresh pid and mm. */
  newProcess(comm: string, cred: Cred, rlimits: Rlimits, files: FdTable): Process {
    const pid = this.nextPid++;
    const sched = this.scheduler;
    const ctx: MmContext = { pages: this.pages, files: this };
    if (sched !== undefined) {
      ctx.mightSleep = (what) => sched.mightSleep(what);
      ctx.schedulingPoint = () => sched.preemptionPoint();
    }
    const mm = new MmStruct(ctx, pid);
    this.mms.add(mm);
    const p = new Process(this, pid, comm, cred, rlimits, files, mm);
    this.procs.set(pid, p);
    return p;
  }

  /** @internal called when a process finished exiting. */
  reap(p: Process): void {
    this.procs.delete(p.pid);
  }

  /** Live processes, by pid. */
  processes(): Process[] {
    return [...this.procs.values()];
  }

  /** @inheritdoc */
  deferRelease(p: Promise<void>): void {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Whether deferred releases are waiting for {@link UserSpace.flushDeferred}. @linux task_work_pending */
  get hasDeferred(): boolean {
    return this.pending.size > 0;
  }

  /**
   * Wait for releases started by synchronous paths (munmap of the last mapping of a file).
   * @linux task_work_run / flush_delayed_fput
   */
  async flushDeferred(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /**
   * Exit every live process (machine shutdown), then wait for deferred releases.
   * @linux the SIGKILL of every task at shutdown
   */
  async exitAll(): Promise<void> {
    for (const p of this.processes()) await p.exit();
    await this.flushDeferred();
  }

  /**
   * Register the teardown checks: user pages still referenced (with who pinned them), pinned/locked page counters
   * not back to zero, and char devices left registered. Idempotent.
   * @linux the bad-page and leak reports of a debug kernel
   */
  install(): this {
    if (this.installed) return this;
    this.installed = true;
    this.diag.addTeardownCheck("user pages", () => this.pages.leaks());
    this.diag.addTeardownCheck("user accounting", () => this.accountingLeaks());
    this.diag.addTeardownCheck("char devices", () => this.chrdevs.leaks());
    return this;
  }

  private accountingLeaks(): string[] {
    const out: string[] = [];
    for (const mm of this.mms) {
      if (mm.pinnedVm !== 0) out.push(`mm of pid ${mm.ownerPid}: pinned_vm is ${mm.pinnedVm} pages at teardown`);
      if (mm.lockedVm !== 0) out.push(`mm of pid ${mm.ownerPid}: locked_vm is ${mm.lockedVm} pages at teardown`);
    }
    for (const u of this.users.values()) {
      if (u.lockedVm !== 0) out.push(`user ${u.uid}: locked_vm is ${u.lockedVm} pages at teardown`);
    }
    return out;
  }
}

/**
 * A user process: credentials, an fd table and an address space. File system calls are async (they may sleep in
 * the kernel); loads and stores to memory are synchronous.
 * @linux struct task_struct (a single-threaded process)
 */
export class Process {
  private state: "running" | "exiting" | "exited" = "running";

  constructor(
    /** The machine's user space. */
    readonly space: UserSpace,
    /** @linux task_struct.pid */
    readonly pid: number,
    /** @linux task_struct.comm */
    readonly comm: string,
    /** @linux task_struct.cred */
    readonly cred: Cred,
    /** @linux signal_struct.rlim */
    readonly rlimits: Rlimits,
    /** @linux task_struct.files */
    readonly files: FdTable,
    /** @linux task_struct.mm */
    readonly mm: MmStruct,
  ) {}

  /** Whether `exit()` has run (or is running). */
  get exited(): boolean {
    return this.state !== "running";
  }

  /** Throw ESRCH when the process has exited. */
  assertAlive(): void {
    if (this.state !== "running") throw kerr("ESRCH", `pid ${this.pid} has exited`);
  }

  /** Run a system call as this process, then run deferred releases (task_work) before returning. */
  private async syscall<T>(fn: () => Promise<T>): Promise<T> {
    this.assertAlive();
    return runAsProcess(this, async () => {
      try {
        return await fn();
      } finally {
        if (this.space.hasDeferred) await this.space.flushDeferred();
      }
    });
  }

  /**
   * Open a char device; resolves to the lowest free fd. ENOENT for an unknown path, ENXIO when its module is going
   * away, EMFILE at RLIMIT_NOFILE, or the error of the driver's `open`.
   * @linux do_sys_open -> chrdev_open
   */
  open(path: string, flags = O_RDWR): Promise<number> {
    return this.syscall(async () => {
      const fops = this.space.chrdevs.lookup(path);
      if (fops === undefined) throw kerr("ENOENT", `no such device ${path}`);
      const fd = getUnusedFdFlags(this, flags);
      try {
        const file = new File(this.space, path, fops, undefined, flags, this.cred);
        if (!tryModuleGetFor(file)) {
          file.ref.put("anon");
          throw kerr("ENXIO", `the module of ${path} is going away`);
        }
        try {
          await fops.open?.(file, this);
        } catch (e) {
          modulePut(fops.owner, `file ${file.name}`, this.space.diag);
          file.ref.put("anon");
          throw e;
        }
        file.opened = true;
        fdInstallAt(this, fd, file);
        return fd;
      } catch (e) {
        putUnusedFd(this, fd);
        throw e;
      }
    });
  }

  /**
   * Close `fd`: the fd is freed at once; the file is released when its last reference goes (a kernel holder or
   * another fd may keep it). EBADF for an fd that is not open.
   * @linux close_fd -> filp_close
   */
  close(fd: number): Promise<void> {
    return this.syscall(async () => {
      const file = this.files.remove(fd);
      if (file === undefined) throw kerr("EBADF", `fd ${fd} is not open`);
      await filpClose(file, this);
    });
  }

  /**
   * Duplicate `fd` onto the lowest free fd.
   * @linux dup
   */
  dup(fd: number): number {
    this.assertAlive();
    const file = fget(this, fd);
    try {
      return fdInstall(this, file);
    } catch (e) {
      fputDeferred(file);
      throw e;
    }
  }

  /**
   * Duplicate `oldfd` onto `newfd`, closing what `newfd` had open first; `newfd` equal to `oldfd` is a no-op once
   * `oldfd` is checked. EBADF for a bad `oldfd` or a negative or too large `newfd` (at or past RLIMIT_NOFILE).
   * @linux dup2 -> ksys_dup3 -> do_dup2
   */
  dup2(oldfd: number, newfd: number): Promise<number> {
    return this.syscall(async () => {
      if (!Number.isInteger(newfd) || newfd < 0 || newfd >= this.rlimits.RLIMIT_NOFILE) {
        throw kerr("EBADF", `fd ${newfd} is out of range`);
      }
      const file = fget(this, oldfd);
      if (oldfd === newfd) {
        await fput(file);
        return newfd;
      }
      let old: File | undefined;
      try {
        old = this.files.replace(newfd, file);
      } catch (e) {
        await fput(file);
        throw e;
      }
      if (old !== undefined) await filpClose(old, this);
      return newfd;
    });
  }

  /**
   * Duplicate `fd` onto the lowest free fd at or above `minfd`. EBADF for a bad fd, EINVAL for a `minfd` at or past
   * RLIMIT_NOFILE, EMFILE when none is free.
   * @linux fcntl(F_DUPFD) -> f_dupfd
   */
  dupFrom(fd: number, minfd: number): number {
    this.assertAlive();
    const file = fget(this, fd);
    try {
      const nfd = this.files.allocFdFrom(minfd, this.rlimits.RLIMIT_NOFILE);
      fdInstallAt(this, nfd, file);
      return nfd;
    } catch (e) {
      fputDeferred(file);
      throw e;
    }
  }

  /**
   * Issue an ioctl; `arg` reaches the driver's `ioctl` as given. EBADF for a bad fd, ENOTTY when the file has no
   * ioctl, otherwise what the driver returns or throws.
   * @linux ksys_ioctl -> vfs_ioctl
   */
  ioctl(fd: number, cmd: number, arg: IoctlArg = null): Promise<number> {
    // The hottest system call runs as one asynchronous function (what syscall() does, without its two layers).
    try {
      this.assertAlive();
      return runAsProcess(this, () => this.doIoctl(fd, cmd, arg));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private doIoctl(fd: number, cmd: number, arg: IoctlArg): Promise<number> {
    // One promise for the driver's result and none of its own when the exit does not sleep (no final fput, no
    // deferred release): what an async function with two awaits did, in the same order.
    let file: File;
    let r: unknown;
    try {
      file = fget(this, fd);
    } catch (e) {
      return settle(() => this.ioctlExit(undefined, 0, e, true));
    }
    try {
      if (file.fops.ioctl === undefined) throw kerr("ENOTTY", `${file.name} has no ioctl`);
      r = file.fops.ioctl(file, cmd, arg, this);
    } catch (e) {
      return settle(() => this.ioctlExit(file, 0, e, true));
    }
    if (typeof r === "object" && r !== null) {
      return Promise.resolve(r as Promise<unknown>).then(
        (v) => this.ioctlExit(file, typeof v === "number" ? v : 0, undefined, false),
        (e) => this.ioctlExit(file, 0, e, true),
      );
    }
    const v = r;
    return settle(() => this.ioctlExit(file, typeof v === "number" ? v : 0, undefined, false));
  }

  /** The end of an ioctl: fdput, then the deferred releases, then its result or error; synchronous when neither sleeps. */
  private ioctlExit(file: File | undefined, r: number, err: unknown, failed: boolean): number | Promise<number> {
    const release = file === undefined ? undefined : fdput(file);
    if (release === undefined && !this.space.hasDeferred) {
      if (failed) throw err;
      return r;
    }
    return this.ioctlExitSlow(release, r, err, failed);
  }

  private async ioctlExitSlow(
    release: Promise<void> | undefined,
    r: number,
    err: unknown,
    failed: boolean,
  ): Promise<number> {
    try {
      if (release) await release;
    } finally {
      if (this.space.hasDeferred) await this.space.flushDeferred();
    }
    if (failed) throw err;
    return r;
  }

  /**
   * Read up to `length` bytes. EBADF for a bad or write-only fd, EINVAL when the file cannot be read.
   * @linux ksys_read -> vfs_read
   */
  read(fd: number, length: number): Promise<Uint8Array> {
    return this.syscall(async () => {
      if (!Number.isSafeInteger(length) || length < 0) throw kerr("EINVAL", `bad length ${length}`);
      const file = fget(this, fd);
      try {
        if ((file.fMode & FMODE_READ) === 0) throw kerr("EBADF", `fd ${fd} is not open for reading`);
        if (file.fops.read === undefined) throw kerr("EINVAL", `${file.name} cannot be read`);
        return await file.fops.read(file, length, this);
      } finally {
        await fput(file);
      }
    });
  }

  /**
   * Write `bytes`; resolves to the count consumed. EBADF for a bad or read-only fd, EINVAL when the file cannot
   * be written.
   * @linux ksys_write -> vfs_write
   */
  write(fd: number, bytes: Uint8Array): Promise<number> {
    return this.syscall(async () => {
      const file = fget(this, fd);
      try {
        if ((file.fMode & FMODE_WRITE) === 0) throw kerr("EBADF", `fd ${fd} is not open for writing`);
        if (file.fops.write === undefined) throw kerr("EINVAL", `${file.name} cannot be written`);
        return await file.fops.write(file, bytes, this);
      } finally {
        await fput(file);
      }
    });
  }

  /**
   * Map memory and return its page-aligned user VA: anonymous zero-filled memory by default, lazily backed;
   * `shared` for MAP_SHARED; `fd` to map a memfd at `offset`; `hugeAligned` for 2 MiB alignment (and transparent
   * huge pages for private anonymous memory). EINVAL for a bad length, offset or flag, EBADF for a bad fd, ENODEV
   * for a file that cannot be mapped, ENOMEM when the address space is full.
   * @linux ksys_mmap_pgoff -> do_mmap
   */
  mmap(length: number | bigint, opts: MmapOptions = {}): bigint {
    this.assertAlive();
    let file: File | undefined;
    if (opts.fd !== undefined) {
      file = this.files.lookup(opts.fd);
      if (file === undefined) throw kerr("EBADF", `fd ${opts.fd} is not open`);
    }
    return BigInt(this.mm.mmap(Number(length), opts, file));
  }

  /**
   * Unmap [va, va + length). Pinned pages stay allocated until unpinned. EINVAL for an unaligned VA or a bad
   * length.
   * @linux munmap
   */
  munmap(va: bigint, length: number | bigint): void {
    this.assertAlive();
    if (va < 0n || va >= 2n ** 53n) throw kerr("EINVAL", `munmap of bad address 0x${va.toString(16)}`);
    this.mm.munmap(Number(va), Number(length));
  }

  /**
   * Create an anonymous shared-memory file of `size` bytes and return its fd. Its pages belong to the file: every
   * MAP_SHARED mapping of it shares them. EINVAL for a name longer than 249 bytes or a bad size.
   * @linux memfd_create
   */
  memfdCreate(name: string, size = 0, opts: MemfdOptions = {}): number {
    this.assertAlive();
    if (name.length > 249) throw kerr("EINVAL", "memfd name too long");
    const file = shmemFileSetup(this.space, this.space.pages, `memfd:${name}`, size, {
      hugetlb: opts.hugetlb ?? false,
      cred: this.cred,
    });
    try {
      return fdInstall(this, file);
    } catch (e) {
      fputDeferred(file);
      throw e;
    }
  }

  /**
   * Set the size of a memfd. Shrinking unmaps and drops the pages past the end (pinned pages live on until
   * unpinned). EBADF for a bad fd, EINVAL for a file that is not a memfd or a bad size.
   * @linux ftruncate -> shmem_setattr
   */
  ftruncate(fd: number, size: number): void {
    this.assertAlive();
    const file = this.files.lookup(fd);
    if (file === undefined) throw kerr("EBADF", `fd ${fd} is not open`);
    const inode = shmemInodeOf(file);
    if (inode === undefined) throw kerr("EINVAL", `${file.name} cannot be truncated`);
    inode.setSize(size);
  }

  /**
   * Load `length` bytes from user memory (what dereferencing a pointer does). EFAULT for unmapped or unreadable
   * memory.
   * @linux a user-mode load (do_user_addr_fault on a miss)
   */
  readMemory(va: bigint, length: number): Uint8Array {
    this.assertAlive();
    return this.mm.read(va, length);
  }

  /**
   * Store `bytes` to user memory. EFAULT for unmapped or read-only memory (nothing is written then).
   * @linux a user-mode store (do_user_addr_fault on a miss)
   */
  writeMemory(va: bigint, bytes: Uint8Array): void {
    this.assertAlive();
    this.mm.write(va, bytes);
  }

  /**
   * Fork: a child with the same credentials and limits, a copy of the fd table (sharing the open files), and a
   * copy of the address space (shared mappings stay shared; private anonymous memory is copied now, which is
   * what copy-on-write looks like to either process).
   * @linux fork -> copy_process (dup_fd, dup_mmap)
   */
  fork(): Process {
    this.assertAlive();
    const files = this.files.dup();
    const child = this.space.newProcess(this.comm, this.cred, { ...this.rlimits }, files);
    try {
      this.mm.dupInto(child.mm);
    } catch (e) {
      for (const [fd] of files.entries()) {
        const f = files.remove(fd);
        if (f) fputDeferred(f);
      }
      child.state = "exited";
      this.space.reap(child);
      throw e;
    }
    return child;
  }

  /**
   * Set a resource limit. Raising one needs CAP_SYS_RESOURCE (EPERM otherwise).
   * @linux setrlimit (do_prlimit)
   */
  setrlimit(resource: RlimitResource, value: number): void {
    this.assertAlive();
    if (!(value >= 0)) throw kerr("EINVAL", `bad limit ${value}`);
    if (value > this.rlimits[resource] && !this.cred.has("CAP_SYS_RESOURCE")) {
      throw kerr("EPERM", `raising ${resource} needs CAP_SYS_RESOURCE`);
    }
    this.rlimits[resource] = value;
  }

  /**
   * Exit: tear the address space down (pinned pages stay until their holders unpin them), then close every fd in
   * order, releasing files whose last reference that was. Calling it again does nothing.
   * @linux do_exit (exit_mm, then exit_files)
   */
  async exit(): Promise<void> {
    if (this.state !== "running") return;
    this.state = "exiting";
    await runAsProcess(this, async () => {
      try {
        mmput(this.mm);
        for (const [fd] of this.files.entries()) {
          const file = this.files.remove(fd);
          if (file !== undefined) await filpClose(file, this);
        }
      } finally {
        await this.space.flushDeferred();
        this.state = "exited";
        this.space.reap(this);
      }
    });
  }
}

/** `fn`'s result as a promise: a throw becomes a rejection. */
function settle<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}
