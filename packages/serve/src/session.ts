/**
 * One connected client: a simulated process with its own fd table and address space, and the system calls the
 * shim forwards. Fd numbers are the client's: before a call the fds the client holds for itself are reserved in
 * the simulated table, so an fd the simulated kernel installs (open, or an anonymous fd handed out in an ioctl
 * struct) is free in the client too, and the shim places a stand-in there.
 */

import { readdirSync } from "node:fs";
import { formatDiagnostic, KernelError, type Machine, PAGE_SIZE, type Process, vfsPoll } from "@iommu-sim/core";
import { ClientMemory } from "./client-memory.js";
import { encodeReply, Op, type Request, SERVE_PROTOCOL_VERSION } from "./protocol.js";

const EPROTO = 71;
const EINVAL = 22;
const ENOSYS = 38;
const MAP_SHARED = 1;
const POLLNVAL = 0x20;
/** DUP request kinds: dup(2), dup2(2)/dup3(2), fcntl(F_DUPFD). */
const DUP_LOWEST = 0;
const DUP_ONTO = 1;
const DUP_FROM = 2;
/** The fd limit used for the stand-in reservations (RLIMIT_NOFILE of the simulated process still applies). */
const RESERVE_LIMIT = 1 << 20;

/** What the server reports when a client goes away. */
export interface ClientReport {
  /** The client's real pid (from HELLO). */
  clientPid: number;
  /** The simulated process's pid. */
  pid: number;
  /** Leaks left by the process once it exited (pinned or locked memory still accounted to it). */
  leaks: string[];
  /**
   * Unexpected diagnostics (warnings, refcount errors) recorded while it was connected, and requests that failed
   * other than with a kernel errno (answered EIO).
   */
  warnings: string[];
}

/** A request's outcome: the result and optional payload. */
interface Outcome {
  result: number;
  payload?: Uint8Array;
}

const EIO = 5;

/**
 * A client session.
 * @linux struct task_struct of a process whose system calls arrive over the socket
 */
export class ClientSession {
  private process: Process | undefined;
  private memory: ClientMemory | undefined;
  private clientPid = 0;
  private readonly reserved = new Set<number>();
  private readonly diagStart: number;
  /** Failures that were not the simulated kernel's answer (the client vanished mid-call, a simulator bug). */
  private readonly serverErrors: string[] = [];
  /** Whether a request of this client is being handled (its memory is synchronised by that request). */
  private busy = false;

  constructor(
    private readonly machine: Machine,
    /** The live session of a client pid (a forked child's HELLO names its parent). */
    private readonly sessionOf: (clientPid: number) => ClientSession | undefined = () => undefined,
    /** The other sessions, whose shared memory is kept coherent around this one's calls. */
    private readonly peers: () => Iterable<ClientSession> = () => [],
  ) {
    this.diagStart = machine.diag.unexpected().length;
  }

  /** The client's real pid (after HELLO). */
  get pid(): number {
    return this.clientPid;
  }

  /** The simulated process (after HELLO). */
  get simProcess(): Process | undefined {
    return this.process;
  }

  /** Handle one request and return the encoded reply; `shutdown` is set for SHUTDOWN. */
  async handle(req: Request): Promise<{ reply: Buffer; shutdown: boolean }> {
    if (req.op === Op.SHUTDOWN) return { reply: encodeReply(req.seq, 0, []), shutdown: true };
    if (req.op === Op.HELLO) {
      const version = req.payload.getUint32(0, true);
      const pid = req.payload.getUint32(4, true);
      const parentPid = req.payload.byteLength >= 12 ? req.payload.getUint32(8, true) : 0;
      if (version !== SERVE_PROTOCOL_VERSION || this.process !== undefined) {
        return { reply: encodeReply(req.seq, -EPROTO, []), shutdown: false };
      }
      // A forked child that inherited simulated fds is the fork of its parent's simulated process (sharing the
      // open files); its address space is mirrored afresh from its own memory.
      const parent = parentPid !== 0 ? this.sessionOf(parentPid)?.simProcess : undefined;
      let p: Process;
      try {
        p = parent !== undefined ? parent.fork() : this.machine.spawnProcess();
      } catch (e) {
        return { reply: encodeReply(req.seq, -this.errnoOf(e, req), []), shutdown: false };
      }
      if (parent !== undefined) {
        for (const vma of [...p.mm.mappings]) if (vma.anonymous) p.munmap(BigInt(vma.start), vma.end - vma.start);
      }
      try {
        this.memory = new ClientMemory(this.machine, pid, p);
      } catch (e) {
        await p.exit();
        const errno = Math.abs((e as NodeJS.ErrnoException).errno ?? EPROTO); // EACCES/EPERM: no ptrace access
        return { reply: encodeReply(req.seq, -errno, []), shutdown: false };
      }
      this.process = p;
      this.clientPid = pid;
      return { reply: encodeReply(req.seq, SERVE_PROTOCOL_VERSION, []), shutdown: false };
    }
    const p = this.process;
    const mem = this.memory;
    if (p === undefined || mem === undefined) return { reply: encodeReply(req.seq, -EPROTO, []), shutdown: false };
    let out: Outcome;
    let before = new Set(p.files.entries().map(([fd]) => fd));
    try {
      await mem.syncFiles(before);
    } catch (e) {
      return { reply: encodeReply(req.seq, -this.errnoOf(e, req), []), shutdown: false };
    }
    before = new Set(p.files.entries().map(([fd]) => fd));
    this.busy = true;
    const idlePeers = [...this.peers()].filter((s) => s !== this && !s.busy && s.memory !== undefined);
    try {
      this.reserveClientFds(before);
      mem.syncIn();
      for (const peer of idlePeers) peer.memory!.refreshPages();
      out = await this.dispatch(p, mem, req);
    } catch (e) {
      out = { result: -this.errnoOf(e, req) };
    } finally {
      this.releaseReservations();
    }
    try {
      mem.syncOut();
      for (const peer of idlePeers) if (peer.memory !== undefined && !peer.busy) peer.memory.syncOut();
    } catch (e) {
      out = { result: -this.errnoOf(e, req) };
    } finally {
      this.busy = false;
    }
    const installed = p.files
      .entries()
      .map(([fd]) => fd)
      .filter((fd) => !before.has(fd));
    return { reply: encodeReply(req.seq, out.result, installed, out.payload), shutdown: false };
  }

  private async dispatch(p: Process, mem: ClientMemory, req: Request): Promise<Outcome> {
    const d = req.payload;
    switch (req.op) {
      case Op.OPEN: {
        const flags = d.getUint32(0, true);
        const path = Buffer.from(d.buffer, d.byteOffset + 4, d.byteLength - 4)
          .toString("utf8")
          .replace(/\0.*$/s, "");
        return { result: await p.open(path, flags) };
      }
      case Op.CLOSE:
        await p.close(d.getInt32(0, true));
        return { result: 0 };
      case Op.IOCTL: {
        const fd = d.getInt32(0, true);
        const cmd = d.getUint32(4, true);
        const argp = d.getBigUint64(8, true);
        // The user pointer as the kernel gets it: iommufd reads the struct from the process's memory (its size
        // first, copy_struct_from_user) and copies out fields back there; value ioctls take it as the value.
        return { result: await p.ioctl(fd, cmd, argp) };
      }
      case Op.READ: {
        const fd = d.getInt32(0, true);
        const buf = d.getBigUint64(8, true);
        const count = Number(d.getBigUint64(16, true));
        const data = await p.read(fd, Math.min(count, 1 << 20));
        p.writeMemory(buf, data);
        return { result: data.byteLength };
      }
      case Op.WRITE: {
        const fd = d.getInt32(0, true);
        const buf = d.getBigUint64(8, true);
        const count = Number(d.getBigUint64(16, true));
        return { result: await p.write(fd, p.readMemory(buf, Math.min(count, 1 << 20))) };
      }
      case Op.MMAP: {
        const fd = d.getInt32(0, true);
        const prot = d.getUint32(4, true);
        const flags = d.getUint32(8, true);
        const addr = d.getBigUint64(16, true);
        const length = Number(d.getBigUint64(24, true));
        const offset = d.getBigUint64(32, true);
        const end = Number(addr) + Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
        mem.addFileRange(Number(addr), end);
        try {
          mem.syncIn(); // drop the mirror of the client's stand-in mapping
          p.mmap(length, { fd, prot, offset, shared: (flags & MAP_SHARED) !== 0, fixed: addr });
        } catch (e) {
          mem.removeFileRange(Number(addr), end);
          throw e;
        }
        mem.copyRangeOut(Number(addr), end);
        return { result: 0 };
      }
      case Op.MUNMAP: {
        const addr = d.getBigUint64(0, true);
        const length = Number(d.getBigUint64(8, true));
        // Only mappings of simulated files are unmapped here; the mirror of anonymous memory follows the client's
        // maps at the next request.
        if (mem.removeFileRange(Number(addr), Number(addr) + length)) p.munmap(addr, length);
        return { result: 0 };
      }
      case Op.POLL: {
        const fd = d.getInt32(0, true);
        const events = d.getUint32(4, true);
        const file = p.files.lookup(fd);
        if (file === undefined) return { result: POLLNVAL };
        // The file's readiness now (its poll op); the shim waits and asks again until its timeout.
        return { result: vfsPoll(file) & (events | 0x18) }; // POLLERR | POLLHUP are always reported
      }
      case Op.DUP: {
        const fd = d.getInt32(0, true);
        const kind = d.getUint32(4, true);
        const arg = d.getInt32(8, true);
        if (kind === DUP_LOWEST) return { result: p.dup(fd) };
        if (kind === DUP_ONTO) return { result: await p.dup2(fd, arg) };
        if (kind === DUP_FROM) return { result: p.dupFrom(fd, arg) };
        return { result: -EINVAL };
      }
      default:
        return { result: req.op === 0 ? -EINVAL : -ENOSYS };
    }
  }

  /** The errno to answer with: the kernel's, or EIO (recorded for the report) for anything else. */
  private errnoOf(e: unknown, req: Request): number {
    if (e instanceof KernelError) return e.errno;
    this.serverErrors.push(`request op ${req.op}: ${e instanceof Error ? e.message : String(e)}`);
    return EIO;
  }

  /** Reserve the client's own fd numbers in the simulated table so the kernel allocates only free ones. */
  private reserveClientFds(simFds: Set<number>): void {
    let clientFds: number[];
    try {
      clientFds = readdirSync(`/proc/${this.clientPid}/fd`).map(Number);
    } catch {
      return;
    }
    const want = new Set(clientFds.filter((fd) => !simFds.has(fd)));
    if (want.size === 0) return;
    const max = Math.max(...want);
    const extra: number[] = [];
    for (;;) {
      const fd = this.process!.files.allocFd(RESERVE_LIMIT);
      if (want.has(fd)) this.reserved.add(fd);
      else extra.push(fd);
      if (fd >= max) break;
    }
    for (const fd of extra) this.process!.files.putUnused(fd);
  }

  private releaseReservations(): void {
    for (const fd of this.reserved) this.process!.files.putUnused(fd);
    this.reserved.clear();
  }

  /**
   * The client went away: exit its process (closing every fd, releasing every pin) and report what it left.
   * @linux do_exit
   */
  async disconnect(): Promise<ClientReport | undefined> {
    const p = this.process;
    if (p === undefined) return undefined;
    this.process = undefined;
    this.memory?.close();
    await p.exit();
    const leaks: string[] = [];
    if (p.mm.pinnedVm !== 0) leaks.push(`pinned_vm is ${p.mm.pinnedVm} pages after exit`);
    if (p.mm.lockedVm !== 0) leaks.push(`locked_vm is ${p.mm.lockedVm} pages after exit`);
    const warnings = [
      ...this.serverErrors,
      ...this.machine.diag.unexpected().slice(this.diagStart).map(formatDiagnostic),
    ];
    return { clientPid: this.clientPid, pid: p.pid, leaks, warnings };
  }
}
