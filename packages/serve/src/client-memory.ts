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
import { closeSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import { KernelError, type Machine, PAGE_SIZE, type Process, TASK_SIZE, type Vma } from "@iommu-sim/core";

const PROT_READ = 1;
const PROT_WRITE = 2;

/** One mapped range of a client process, as a line of /proc/PID/maps gives it: [start, end) with PROT_* bits. */
export interface Range {
  start: number;
  end: number;
  prot: number;
}

interface MirroredPage {
  pa: number;
  /** The page as both sides last agreed on it. */
  snap: Uint8Array;
}

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
  private readonly pages = new Map<number, MirroredPage>();

  constructor(
    private readonly machine: Machine,
    readonly pid: number,
    private readonly process: Process,
  ) {
    this.memFd = openSync(`/proc/${pid}/mem`, "r+");
    const mm = process.mm;
    const fault = mm.faultPage.bind(mm);
    mm.faultPage = (vma: Vma, va: number, write: boolean, needPage: boolean, unshare?: boolean): number => {
      if (vma.file !== undefined || vma.shared || vma.pfnmap) return fault(vma, va, write, needPage, unshare);
      const vpn = Math.floor(va / PAGE_SIZE);
      // A mirrored page always exists: reads of it must see the client's bytes, not the zero page.
      const pa = fault(vma, va, write, true, unshare);
      if (!this.pages.has(vpn)) {
        const bytes = this.readClient(vpn * PAGE_SIZE, PAGE_SIZE);
        const base = pa - (pa % PAGE_SIZE);
        this.machine.memory.writeBytes(base, bytes);
        this.pages.set(vpn, { pa: base, snap: bytes });
      }
      return pa;
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
    let wanted = parseMaps(readFileSync(`/proc/${this.pid}/maps`, "utf8"));
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
      for (let vpn = r.start / PAGE_SIZE; vpn < r.end / PAGE_SIZE; vpn++) this.pages.delete(vpn);
    }
    for (const r of added) {
      this.process.mmap(r.end - r.start, { prot: r.prot, fixed: BigInt(r.start) });
      for (let vpn = r.start / PAGE_SIZE; vpn < r.end / PAGE_SIZE; vpn++) this.pages.delete(vpn);
    }
    this.mirrored = wanted;
    for (const [vpn, page] of this.pages) {
      if (this.process.mm.lookupPhys(BigInt(vpn * PAGE_SIZE)) !== page.pa) {
        this.pages.delete(vpn);
        continue;
      }
      let now: Uint8Array;
      try {
        now = this.readClient(vpn * PAGE_SIZE, PAGE_SIZE);
      } catch {
        continue;
      }
      if (Buffer.compare(now, page.snap) !== 0) {
        this.machine.memory.writeBytes(page.pa, now);
        page.snap = now;
      }
    }
  }

  /** The reply is about to go: copy every mirrored page the simulation changed back to the client. */
  syncOut(): void {
    for (const [vpn, page] of this.pages) {
      const now = this.machine.memory.readBytes(page.pa, PAGE_SIZE);
      if (Buffer.compare(now, page.snap) === 0) continue;
      // Write only the changed bytes, so a client store the simulation did not touch is never rolled back.
      let i = 0;
      while (i < PAGE_SIZE) {
        if (now[i] === page.snap[i]) {
          i++;
          continue;
        }
        let j = i;
        while (j < PAGE_SIZE && now[j] !== page.snap[j]) j++;
        try {
          this.writeClient(vpn * PAGE_SIZE + i, now.subarray(i, j));
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

  /** Release /proc/PID/mem. */
  close(): void {
    closeSync(this.memFd);
  }
}
