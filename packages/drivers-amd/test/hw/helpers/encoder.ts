/**
 * An independent AMD-Vi encoder for the hardware-model tests: device table entries, v1 and v2 page-table entries,
 * GCR3 entries and commands built with bigint from the specification's bit positions (not from src/hw's field
 * tables), registers programmed over MMIO. Tables live above 2 GiB, out of the way of the page allocator.
 */
import { createMachine, defaultPlatformInput, type Machine } from "@iommu-sim/core";
import { type AmdHw, amdHardwareModule } from "../../../src/hw/index.js";

export const AMD_BASE = 0xfeb80000;
/** DeviceIDs of the default platform's amd0 devices (segment 2). */
export const NIC = 0x0008; // 00:01.0
export const GPU = 0x0100; // 01:00.0
export const LEGACY_ALIAS = 0x0010; // 02:00.0 aliased to 00:02.0

const b = (n: number): bigint => BigInt(n);
const M64 = (1n << 64n) - 1n;

/** Memory and registers of a booted machine. */
export class Tables {
  private next = 0x8000_0000;
  constructor(readonly m: Machine) {}

  alloc(bytes: number, align = 4096): number {
    this.next = Math.ceil(this.next / align) * align;
    const at = this.next;
    this.next += Math.max(bytes, 8);
    this.m.memory.fill(at, bytes, 0);
    return at;
  }

  q(pa: number, v: bigint): void {
    const x = v & M64;
    this.m.memory.write32(pa, Number(x & 0xffffffffn));
    this.m.memory.write32(pa + 4, Number(x >> 32n));
  }

  rq(pa: number): bigint {
    return b(this.m.memory.read32(pa) >>> 0) | (b(this.m.memory.read32(pa + 4) >>> 0) << 32n);
  }

  qs(pa: number, vs: bigint[]): void {
    for (let i = 0; i < vs.length; i++) this.q(pa + 8 * i, vs[i]!);
  }

  r32(off: number): number {
    return this.m.mmio.read32(AMD_BASE + off) >>> 0;
  }

  w32(off: number, v: number): void {
    this.m.mmio.write32(AMD_BASE + off, v >>> 0);
  }

  r64(off: number): bigint {
    return b(this.r32(off)) | (b(this.r32(off + 4)) << 32n);
  }

  w64(off: number, v: bigint): void {
    this.w32(off, Number(v & 0xffffffffn));
    this.w32(off + 4, Number((v >> 32n) & 0xffffffffn));
  }
}

/** Boot the default platform with only the AMD-Vi hardware, `options` merged into amd0's. */
export async function bootAmd(options: Record<string, unknown> = {}): Promise<{ m: Machine; t: Tables; hw: AmdHw }> {
  const input = defaultPlatformInput();
  const v = input.iommus!.find((i) => i.name === "amd0")!;
  v.options = { ...v.options, ...options };
  input.memory = { size: "32GiB" }; // sparse: room for large pages above 4 GiB
  const m = await createMachine({ platform: input, modules: [amdHardwareModule] });
  await m.boot();
  return { m, t: new Tables(m), hw: m.dma.modelFor("amd0") as AmdHw };
}

/** What a DTE carries. */
export interface DteSpec {
  v?: boolean;
  tv?: boolean;
  mode?: number;
  root?: number;
  ir?: boolean;
  iw?: boolean;
  did?: number;
  ppr?: boolean;
  gv?: boolean;
  giov?: boolean;
  glx?: number;
  gcr3?: number;
  gptLevel?: number;
  noPageFault?: boolean;
}

/** The four qwords of a DTE (spec §2.2.2.1). */
export function dte(s: DteSpec): bigint[] {
  let q0 = 0n;
  if (s.v ?? true) q0 |= 1n;
  if (s.tv ?? true) q0 |= 2n;
  q0 |= b(s.mode ?? 0) << 9n;
  q0 |= b(s.root ?? 0) & 0x000f_ffff_ffff_f000n;
  if (s.ppr) q0 |= 1n << 52n;
  if (s.giov) q0 |= 1n << 54n;
  if (s.gv) q0 |= 1n << 55n;
  q0 |= b(s.glx ?? 0) << 56n;
  const g = b(s.gcr3 ?? 0);
  q0 |= ((g >> 12n) & 7n) << 58n;
  if (s.ir ?? true) q0 |= 1n << 61n;
  if (s.iw ?? true) q0 |= 1n << 62n;
  let q1 = b(s.did ?? 0) & 0xffffn;
  q1 |= ((g >> 15n) & 0xffffn) << 16n;
  if (s.noPageFault) q1 |= 1n << 34n;
  q1 |= ((g >> 31n) & 0x1f_ffffn) << 43n;
  const q2 = b(s.gptLevel ?? 0) << 54n;
  return [q0, q1, q2, 0n];
}

/** A v1 entry (spec §2.2.3): PR, next level, address, IR/IW. */
export function v1(addr: number, nl: number, ir = true, iw = true): bigint {
  return 1n | (b(nl) << 9n) | (b(addr) & 0x000f_ffff_ffff_f000n) | (ir ? 1n << 61n : 0n) | (iw ? 1n << 62n : 0n);
}

/** A v1 leaf with next level 7 for a 2^lg2-byte page at `pa`. */
export function v1Sized(pa: number, lg2: number, ir = true, iw = true): bigint {
  const size = 1n << b(lg2);
  const enc = (b(pa) | (size - 1n)) & ~(size >> 1n);
  return v1(Number(enc & 0x000f_ffff_ffff_f000n), 7, ir, iw);
}

/** An x86-64 entry: P, RW, U, A (+ PS). */
export function x86(addr: number, rw = true, ps = false): bigint {
  return 1n | (rw ? 2n : 0n) | 4n | 0x20n | (ps ? 0x80n : 0n) | (b(addr) & 0x000f_ffff_ffff_f000n);
}

/** Device table, command buffer and event/PPR logs, and the IOMMU enabled. */
export class Setup {
  readonly devTab: number;
  readonly cmdBuf: number;
  readonly evtLog: number;
  readonly pprLog: number;
  constructor(
    readonly t: Tables,
    opts: { evtLen?: number; pprLen?: number } = {},
  ) {
    this.devTab = t.alloc(16384);
    this.cmdBuf = t.alloc(8192);
    const evtLen = opts.evtLen ?? 9;
    const pprLen = opts.pprLen ?? 9;
    this.evtLog = t.alloc(Math.max(4096, 16 << evtLen));
    this.pprLog = t.alloc(Math.max(4096, 16 << pprLen));
    t.w64(0x0000, b(this.devTab) | 3n);
    t.w64(0x0008, b(this.cmdBuf) | (9n << 56n));
    t.w64(0x0010, b(this.evtLog) | (b(evtLen) << 56n));
    t.w64(0x0038, b(this.pprLog) | (b(pprLen) << 56n));
    // IommuEn, EventLogEn, CmdBufEn, PPRLogEn, PPREn, GTEn.
    t.w64(0x0018, 1n | 4n | (1n << 12n) | (1n << 13n) | (1n << 15n) | (1n << 16n));
  }

  setDte(devid: number, s: DteSpec): void {
    this.t.qs(this.devTab + 32 * devid, dte(s));
  }

  /** Write a command at the tail and advance it. */
  cmd(q0: bigint, q1: bigint): void {
    const tail = this.t.r32(0x2008);
    this.t.qs(this.cmdBuf + tail, [q0, q1]);
    this.t.w64(0x2008, b((tail + 16) % 8192));
  }

  invDte(devid: number): void {
    this.cmd(b(devid) | (0x2n << 60n), 0n);
  }

  /** INVALIDATE_IOMMU_PAGES; `s`: size-encoded address. */
  invPages(did: number, addr: bigint, s: boolean, pasid = -1, pde = true): void {
    const q0 = (pasid >= 0 ? b(pasid) : 0n) | (b(did) << 32n) | (0x3n << 60n);
    const q1 = (s ? 1n : 0n) | (pde ? 2n : 0n) | (pasid >= 0 ? 4n : 0n) | (addr & ~0xfffn);
    this.cmd(q0, q1);
  }

  /** The event log entries written so far, as { code, devid, id, flags, addr }. */
  events(): { code: number; devid: number; id: number; flags: number; addr: bigint }[] {
    const out = [];
    const tail = this.t.r32(0x2018);
    for (let off = this.t.r32(0x2010); off !== tail; off += 16) {
      const q0 = this.t.rq(this.evtLog + off);
      const q1 = this.t.rq(this.evtLog + off + 8);
      out.push({
        code: Number(q0 >> 60n),
        devid: Number(q0 & 0xffffn),
        id: Number((((q0 >> 16n) & 0xfn) << 16n) | ((q0 >> 32n) & 0xffffn)),
        flags: Number((q0 >> 48n) & 0xfffn),
        addr: q1,
      });
    }
    return out;
  }
}
