/**
 * A client's address space seen by its simulated process. The simulated process maps the same VA ranges as the
 * client (read from /proc/PID/maps) with private anonymous memory; a page the simulated kernel touches for the
 * first time (copy_from_user, copy_to_user, pin_user_pages) is filled from the client through /proc/PID/mem and
 * becomes a mirrored page. Mirrored pages are synchronised at defined points only: client to simulation when a
 * request arrives, simulation to client before the reply is sent (only the bytes the simulation changed). The
 * client is blocked in its system call in between, so for a single-threaded client, or threads that leave these
 * pages alone during the call, every pointer means what it means to the kernel. docs/serve-protocol.md says what is
 * coherent and when.
 */
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync, writeSync } from "node:fs";
import { KernelError, type Machine, PAGE_SIZE, type Process, shmemInodeOf, TASK_SIZE } from "@iommu-sim/core";

const PROT_READ = 1;
const PROT_WRITE = 2;

/** One mapped range of a client process, as a line of /proc/PID/maps gives it: [start, end) with PROT_* bits. */
export interface Range {
  start: number;
  end: number;
  prot: number;
}

/** Where a mirrored page's bytes live in the client: its address space, or one of its memfds. */
interface ClientBacking {
  read(off: number, length: number): Uint8Array;
  write(off: number, bytes: Uint8Array): void;
}

interface MirroredPage {
  pa: number;
  /** The page (or hugetlb folio) as both sides last agreed on it. */
  snap: Uint8Array;
  backing: ClientBacking;
  /** Offset of the page in `backing` (the VA, or the file offset). */
  off: number;
  /** Whether the simulated frame no longer backs this page (unmapped, truncated): forget it. */
  stale(): boolean;
}

/** A client memfd shadowed by a simulated memfd. */
interface ShadowFile {
  /** The client file's inode number (how /proc/PID/maps names its mappings). */
  ino: number;
  /** The server's own fd on the client's memfd (opened through /proc/PID/fd/N). */
  realFd: number;
  /** The simulated fd that keeps the shadow open (high in the table, never one the client uses). */
  hiddenFd: number;
}

/** A MAP_SHARED mapping of a shadowed memfd in the client. */
interface MemfdRange extends Range {
  ino: number;
  offset: number;
}

/** The MAP_SHARED mappings of memfds in /proc/PID/maps (path "/memfd:NAME (deleted)"). */
function parseMemfdMaps(text: string): MemfdRange[] {
  const out: MemfdRange[] = [];
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (r|-)(w|-)\S(s) ([0-9a-f]+) \S+ (\d+)\s+\/memfd:/.exec(line);
    if (!m) continue;
    out.push({
      start: Number.parseInt(m[1]!, 16),
      end: Number.parseInt(m[2]!, 16),
      prot: (m[3] === "r" ? PROT_READ : 0) | (m[4] === "w" ? PROT_WRITE : 0),
      offset: Number.parseInt(m[6]!, 16),
      ino: Number(m[7]),
    });
  }
  return out;
}

const sameRange = (a: MemfdRange, b: MemfdRange) =>
  a.start === b.start && a.end === b.end && a.ino === b.ino && a.offset === b.offset && a.prot === b.prot;

/** Ranges of `a` not covered by a range of `b` with the same protection. */
function subtract(a: readonly Range[], b: readonly Range[]): Range[] {
  let out = a.map((r) => ({ ...r }));
  for (const cut of b) {
    const next: Range[] = [];
    for (const r of out) {
      if (cut.end <= r.start || cut.start >= r.end || cut.prot !== r.prot) {
        next.push(r);
        continue;
      }
      if (cut.start > r.start) next.push({ start: r.start, end: cut.start, prot: r.prot });
      if (cut.end < r.end) next.push({ start: cut.end, end: r.end, prot: r.prot });
    }
    out = next;
  }
  return out;
}

/**
 * Parse /proc/PID/maps into the readable ranges a simulated process can mirror.
 * @linux show_map_vma (fs/proc/task_mmu.c), the format it prints
 */
export function parseMaps(text: string): Range[] {
  const out: Range[] = [];
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (r|-)(w|-)\S* \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (!m) continue;
    const start = Number.parseInt(m[1]!, 16);
    const end = Number.parseInt(m[2]!, 16);
    const name = m[5] ?? "";
    if (m[3] !== "r" || end > TASK_SIZE || name.startsWith("[vvar") || name === "[vsyscall]") continue;
    out.push({ start, end, prot: PROT_READ | (m[4] === "w" ? PROT_WRITE : 0) });
  }
  return out;
}

/**
 * The bridge between a client's real memory and its simulated process.
 * @linux access_remote_vm (the server reads and writes the client as ptrace would)
 */
export class ClientMemory {
  private readonly memFd: number;
  private mirrored: Range[] = [];
  /** Ranges mapped from a simulated file (the MMAP request): never replaced by a mirror. */
  private readonly fileRanges: Range[] = [];
  private readonly pages = new Map<string, MirroredPage>();
  /** Client memfds shadowed in the simulated process, by inode number. */
  private readonly shadows = new Map<number, ShadowFile>();
  /** Client fd number -> inode of the shadowed memfd installed at the same number in the simulated table. */
  private readonly fdShadow = new Map<number, number>();
  /** Shared memfd mappings of the client, mapped from their shadows in the simulated process. */
  private memfdMapped: MemfdRange[] = [];
  /** /proc/PID/maps as read by the last syncFiles (syncIn reuses it). */
  private mapsText = "";

  constructor(
    private readonly machine: Machine,
    readonly pid: number,
    private readonly process: Process,
  ) {
    this.memFd = openSync(`/proc/${pid}/mem`, "r+");
    const mm = process.mm;
    const clientVm: ClientBacking = {
      read: (off, length) => this.readClient(off, length),
      write: (off, bytes) => this.writeClient(off, bytes),
    };
    // The simulated process's anonymous pages are filled from the client's (core's userfaultfd-like hook): every
    // page the simulated kernel touches first holds the client's bytes, and becomes a mirrored page.
    mm.missingPageFill = (va, pa) => {
      const bytes = this.readClient(va, PAGE_SIZE);
      this.pages.set(`a${va / PAGE_SIZE}`, {
        pa,
        snap: bytes,
        backing: clientVm,
        off: va,
        stale: () => mm.lookupPhys(BigInt(va)) !== pa,
      });
      return bytes;
    };
  }

  /** Pages currently mirrored. */
  get mirroredPages(): number {
    return this.pages.size;
  }

  private readClient(va: number, length: number): Uint8Array {
    const buf = Buffer.alloc(length);
    try {
      const n = readSync(this.memFd, buf, 0, length, va);
      if (n !== length) throw new Error("short read");
    } catch {
      throw new KernelError("EFAULT", `client pid ${this.pid}: cannot read 0x${va.toString(16)}`);
    }
    return new Uint8Array(buf.buffer, buf.byteOffset, length);
  }

  private writeClient(va: number, bytes: Uint8Array): void {
    writeSync(this.memFd, bytes, 0, bytes.byteLength, va);
  }

  /** Record that [start, end) is a mapping of a simulated file; the mirror leaves it alone. */
  addFileRange(start: number, end: number): void {
    this.fileRanges.push({ start, end, prot: 0 });
  }

  /** Forget the file mappings inside [start, end); whether there were any. */
  removeFileRange(start: number, end: number): boolean {
    let found = false;
    for (let i = this.fileRanges.length - 1; i >= 0; i--) {
      const r = this.fileRanges[i]!;
      if (r.start >= start && r.end <= end) {
        this.fileRanges.splice(i, 1);
        found = true;
      }
    }
    return found;
  }

  /**
   * A request arrived: make the simulated mappings match the client's, then copy every mirrored page the client
   * changed since the last reply into its simulated frame.
   */
  syncIn(): void {
    const text = this.mapsText || readFileSync(`/proc/${this.pid}/maps`, "utf8");
    this.mapsText = "";
    const memfdWanted = parseMemfdMaps(text).filter((r) => this.shadows.has(r.ino));
    let wanted = subtract(parseMaps(text), [
      ...memfdWanted.map((r) => ({ ...r, prot: PROT_READ })),
      ...memfdWanted.map((r) => ({ ...r, prot: PROT_READ | PROT_WRITE })),
    ]);
    for (const f of this.fileRanges) {
      wanted = subtract(wanted, [
        { ...f, prot: PROT_READ },
        { ...f, prot: PROT_READ | PROT_WRITE },
      ]);
    }
    const gone = subtract(this.mirrored, wanted);
    const added = subtract(wanted, this.mirrored);
    for (const r of gone) {
      this.process.munmap(BigInt(r.start), r.end - r.start);
      for (let vpn = r.start / PAGE_SIZE; vpn < r.end / PAGE_SIZE; vpn++) this.pages.delete(`a${vpn}`);
    }
    // Shared memfd mappings map the shadow file, so a page pinned through IOAS_MAP_FILE and the page the client
    // sees at its address are one simulated page (as MD_CHECK_MAP and ACCESS_PAGES expect).
    for (const r of this.memfdMapped) {
      if (!memfdWanted.some((w) => sameRange(w, r))) this.process.munmap(BigInt(r.start), r.end - r.start);
    }
    for (const r of memfdWanted) {
      if (this.memfdMapped.some((m) => sameRange(m, r))) continue;
      const shadow = this.shadows.get(r.ino)!;
      this.process.mmap(r.end - r.start, {
        fd: shadow.hiddenFd,
        shared: true,
        offset: r.offset,
        prot: r.prot,
        fixed: BigInt(r.start),
      });
    }
    this.memfdMapped = memfdWanted;
    for (const r of added) {
      this.process.mmap(r.end - r.start, { prot: r.prot, fixed: BigInt(r.start) });
      for (let vpn = r.start / PAGE_SIZE; vpn < r.end / PAGE_SIZE; vpn++) this.pages.delete(`a${vpn}`);
    }
    this.mirrored = wanted;
    this.refreshPages();
  }

  /**
   * Copy every mirrored page the client changed since the last agreement into its simulated frame, without
   * looking at the client's mappings. The server calls this for the other connected clients too before a request,
   * so memory they share with the caller (MAP_SHARED, a forked child's view of its parent's shared buffer) is
   * current in every simulated process.
   */
  refreshPages(): void {
    for (const [key, page] of this.pages) {
      if (page.stale()) {
        this.pages.delete(key);
        continue;
      }
      let now: Uint8Array;
      try {
        now = page.backing.read(page.off, page.snap.byteLength);
      } catch {
        continue;
      }
      if (Buffer.compare(now, page.snap) !== 0) {
        this.machine.memory.writeBytes(page.pa, now);
        page.snap = now;
      }
    }
  }

  /**
   * Give every memfd the client holds a simulated memfd (a shadow) at the same fd number, whose page cache is
   * filled from the client's file on first use and kept coherent like mirrored pages, so IOMMU_IOAS_MAP_FILE pins
   * the client's file pages; the client's MAP_SHARED mappings of it map the shadow (see syncIn). A shadow lives
   * while the client has the file open or mapped.
   */
  async syncFiles(simFds: ReadonlySet<number>): Promise<void> {
    const p = this.process;
    let fds: number[] = [];
    try {
      fds = readdirSync(`/proc/${this.pid}/fd`).map(Number);
      this.mapsText = readFileSync(`/proc/${this.pid}/maps`, "utf8");
    } catch {
      return; // the client is gone; its session ends with the socket
    }
    const seen = new Map<number, number>();
    for (const fd of fds) {
      if (simFds.has(fd) && !this.fdShadow.has(fd)) continue;
      let link: string;
      try {
        link = readlinkSync(`/proc/${this.pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!link.startsWith("/memfd:")) continue;
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(`/proc/${this.pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const ino = Number(st.ino);
      let shadow = this.shadows.get(ino);
      if (shadow === undefined) {
        const name = link.slice("/memfd:".length).replace(/ \(deleted\)$/, "");
        shadow = await this.createShadow(fd, ino, name, Number(st.size), Number(st.blksize));
      }
      const inode = shmemInodeOf(p.files.lookup(shadow.hiddenFd)!)!;
      if (inode.size !== Number(st.size)) p.ftruncate(shadow.hiddenFd, Number(st.size));
      seen.set(fd, ino);
    }
    for (const [fd, ino] of this.fdShadow) {
      if (seen.get(fd) === ino) continue;
      this.fdShadow.delete(fd);
      if (p.files.lookup(fd) !== undefined) await p.close(fd);
    }
    for (const [fd, ino] of seen) {
      if (this.fdShadow.get(fd) === ino) continue;
      await p.dup2(this.shadows.get(ino)!.hiddenFd, fd);
      this.fdShadow.set(fd, ino);
    }
    const mapped = new Set(parseMemfdMaps(this.mapsText).map((r) => r.ino));
    for (const [ino, shadow] of this.shadows) {
      if (mapped.has(ino) || [...seen.values()].includes(ino)) continue;
      await this.dropShadow(shadow);
    }
  }

  private async createShadow(fd: number, ino: number, name: string, size: number, blksize: number) {
    const p = this.process;
    const realFd = openSync(`/proc/${this.pid}/fd/${fd}`, "r+");
    // MFD_HUGETLB: hugetlbfs reports its page size as the block size.
    const tmp = p.memfdCreate(name, size, { hugetlb: blksize >= 2 * 1024 * 1024 });
    let hiddenFd = p.rlimits.RLIMIT_NOFILE - 1;
    while (p.files.lookup(hiddenFd) !== undefined) hiddenFd--;
    await p.dup2(tmp, hiddenFd);
    await p.close(tmp);
    const inode = shmemInodeOf(p.files.lookup(hiddenFd)!)!;
    const backing: ClientBacking = {
      read: (off, length) => {
        const buf = Buffer.alloc(length);
        readSync(realFd, buf, 0, length, off);
        return new Uint8Array(buf.buffer, buf.byteOffset, length);
      },
      write: (off, bytes) => {
        writeSync(realFd, bytes, 0, bytes.byteLength, off);
      },
    };
    inode.missingFill = (index, pa) => {
      const bytes = backing.read(index * PAGE_SIZE, inode.folioPages * PAGE_SIZE);
      this.pages.set(`f${ino}:${index}`, {
        pa,
        snap: bytes,
        backing,
        off: index * PAGE_SIZE,
        stale: () => inode.peekFolio(index)?.pa !== pa,
      });
      return bytes;
    };
    const shadow = { ino, realFd, hiddenFd };
    this.shadows.set(ino, shadow);
    return shadow;
  }

  private async dropShadow(s: ShadowFile): Promise<void> {
    this.shadows.delete(s.ino);
    closeSync(s.realFd);
    for (const key of [...this.pages.keys()]) if (key.startsWith(`f${s.ino}:`)) this.pages.delete(key);
    if (this.process.files.lookup(s.hiddenFd) !== undefined) await this.process.close(s.hiddenFd);
  }

  /** The reply is about to go: copy every mirrored page the simulation changed back to the client. */
  syncOut(): void {
    for (const page of this.pages.values()) {
      const size = page.snap.byteLength;
      const now = this.machine.memory.readBytes(page.pa, size);
      if (Buffer.compare(now, page.snap) === 0) continue;
      // Write only the changed bytes, so a client store the simulation did not touch is never rolled back.
      let i = 0;
      while (i < size) {
        if (now[i] === page.snap[i]) {
          i++;
          continue;
        }
        let j = i;
        while (j < size && now[j] !== page.snap[j]) j++;
        try {
          page.backing.write(page.off + i, now.subarray(i, j));
        } catch {
          // The client unmapped it meanwhile; nothing to keep coherent.
        }
        i = j;
      }
      page.snap = Uint8Array.from(now);
    }
  }

  /** Seed a simulated file mapping's pages into the client (after MMAP). */
  copyRangeOut(start: number, end: number): void {
    for (let va = start; va < end; va += PAGE_SIZE) {
      const pa = this.process.mm.lookupPhys(BigInt(va));
      if (pa === undefined) continue;
      this.writeClient(va, this.machine.memory.readBytes(pa, PAGE_SIZE));
    }
  }

  /** Release /proc/PID/mem and the client's memfds. */
  close(): void {
    for (const s of this.shadows.values()) closeSync(s.realFd);
    this.shadows.clear();
    closeSync(this.memFd);
  }
}
