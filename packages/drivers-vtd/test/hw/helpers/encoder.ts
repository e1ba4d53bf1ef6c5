/**
 * A tiny, independent VT-d encoder for tests of the hardware model: root/context/PASID entries, paging entries and
 * invalidation descriptors built as bigint qwords with literal bit positions from the specification tables
 * (formats.md §3), not from the model's field definitions, so the tests cross-check those. Tables come from a bump
 * allocator; registers are programmed over the machine's MMIO bus.
 */
import { createMachine, defaultPlatformInput, type Machine } from "@iommu-sim/core";
import { type VtdHw, vtdHardwareModule } from "../../../src/hw/index.js";

export const VTD_BASE = 0xfed9_0000;
/** Requester IDs of the default platform's vtd0 devices. */
export const XHCI = 0x00a0; // 00:14.0
export const SATA = 0x00b8; // 00:17.0
export const NVME = 0x0100; // 01:00.0

const b = (v: number | bigint) => BigInt(v);
const M64 = (1n << 64n) - 1n;

/** Tables in memory and register access. */
export class Tables {
  private next = 0x8000_0000;
  constructor(readonly m: Machine) {}

  alloc(bytes: number, align = 4096): number {
    this.next = Math.ceil(this.next / align) * align;
    const at = this.next;
    this.next += Math.max(bytes, 8);
    for (let i = 0; i < bytes; i += 4) this.m.memory.write32(at + i, 0);
    return at;
  }

  q(pa: number, v: bigint): void {
    const x = v & M64;
    this.m.memory.write32(pa, Number(x & 0xffffffffn));
    this.m.memory.write32(pa + 4, Number(x >> 32n));
  }

  rq(pa: number): bigint {
    return b(this.m.memory.read32(pa)) | (b(this.m.memory.read32(pa + 4)) << 32n);
  }

  qs(pa: number, vs: bigint[]): void {
    for (let i = 0; i < vs.length; i++) this.q(pa + 8 * i, vs[i]!);
  }

  r32(off: number): number {
    return this.m.mmio.read32(VTD_BASE + off);
  }

  w32(off: number, v: number): void {
    this.m.mmio.write32(VTD_BASE + off, v);
  }

  r64(off: number): bigint {
    return this.m.mmio.read64(VTD_BASE + off);
  }

  w64(off: number, v: bigint): void {
    this.m.mmio.write64(VTD_BASE + off, v);
  }

  /** GCMD with one command; waits nothing (the model completes at once). */
  gcmd(bits: number): void {
    const gsts = this.r32(0x1c) & (0x80000000 | 0x04000000 | 0x02000000 | 0x00800000);
    this.w32(0x18, (gsts | bits) >>> 0);
  }
}

/** Paging tables (either format) built by hand. */
export class HandTable {
  readonly root: number;
  constructor(
    readonly t: Tables,
    readonly levels: number,
    /** Table-entry bits (SS: R|W = 3; FS: P|RW|US|A = 0x27). */
    readonly tableBits: bigint,
  ) {
    this.root = t.alloc(4096);
  }

  /** Map one leaf of 4 KiB (level 1), 2 MiB (2) or 1 GiB (3) with `bits` (PS added for large leaves by caller). */
  map(iova: number, pa: number, level: number, bits: bigint): number {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const idx = Math.floor(iova / 2 ** (12 + 9 * (l - 1))) % 512;
      const pte = table + idx * 8;
      const cur = this.t.rq(pte);
      if ((cur & this.tableBits & 3n) === 0n) {
        const next = this.t.alloc(4096);
        this.t.q(pte, b(next) | this.tableBits);
        table = next;
      } else table = Number(cur & 0x000f_ffff_ffff_f000n);
    }
    const idx = Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512;
    const pte = table + idx * 8;
    this.t.q(pte, b(pa) | bits);
    return pte;
  }

  /** Address of the leaf entry of `iova` at `level` (tables must exist). */
  pte(iova: number, level = 1): number {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const idx = Math.floor(iova / 2 ** (12 + 9 * (l - 1))) % 512;
      table = Number(this.t.rq(table + idx * 8) & 0x000f_ffff_ffff_f000n);
    }
    return table + (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
  }
}

/** Second-stage leaf: R bit 0, W bit 1, PS bit 7. */
export const ss = { R: 1n, W: 2n, RW: 3n, PS: 1n << 7n, A: 1n << 8n, D: 1n << 9n, table: 3n } as const;
/** First-stage leaf: P 0, RW 1, US 2, A 5, D 6, PS 7, XD 63. */
export const fs = {
  P: 1n,
  RW: 2n,
  US: 4n,
  A: 1n << 5n,
  D: 1n << 6n,
  PS: 1n << 7n,
  XD: 1n << 63n,
  table: 0x27n,
} as const;

export interface LegacyCtx {
  tt?: number;
  slptptr?: number;
  aw?: number; // 1 = 3-level, 2 = 4-level
  did?: number;
  fpd?: boolean;
}

export function legacyCtx(c: LegacyCtx): bigint[] {
  const lo = 1n | (c.fpd ? 2n : 0n) | (b(c.tt ?? 0) << 2n) | b(c.slptptr ?? 0);
  const hi = b(c.aw ?? 2) | (b(c.did ?? 1) << 8n);
  return [lo, hi];
}

export interface SmCtx {
  pasidDir: number;
  pdts?: number;
  pasidE?: boolean;
  pre?: boolean;
  dte?: boolean;
  fpd?: boolean;
  ridPasid?: number;
}

export function smCtx(c: SmCtx): bigint[] {
  const lo =
    1n |
    (c.fpd ? 2n : 0n) |
    (c.dte ? 4n : 0n) |
    (c.pasidE ? 8n : 0n) |
    (c.pre ? 16n : 0n) |
    (b(c.pdts ?? 0) << 9n) |
    b(c.pasidDir);
  return [lo, b(c.ridPasid ?? 0), 0n, 0n];
}

export interface PasidSpec {
  pgtt: number; // 1 FS, 2 SS, 3 nested, 4 PT
  did?: number;
  aw?: number;
  ssptptr?: number;
  ssade?: boolean;
  fsptptr?: number;
  fspm?: number; // 0 4-level, 1 5-level
  sre?: boolean;
  wpe?: boolean;
  fpd?: boolean;
  present?: boolean;
}

export function pasidEntry(p: PasidSpec): bigint[] {
  const q0 =
    (p.present === false ? 0n : 1n) |
    (p.fpd ? 2n : 0n) |
    (b(p.aw ?? 2) << 2n) |
    (b(p.pgtt) << 6n) |
    (p.ssade ? 1n << 9n : 0n) |
    b(p.ssptptr ?? 0);
  const q1 = b(p.did ?? 1);
  const q2 = (p.sre ? 1n : 0n) | (b(p.fspm ?? 0) << 2n) | (p.wpe ? 1n << 4n : 0n) | b(p.fsptptr ?? 0);
  return [q0, q1, q2, 0n, 0n, 0n, 0n, 0n];
}

/** Boot a machine with only the VT-d hardware (no driver). */
export async function bootVtd(options: Record<string, unknown> = {}): Promise<{ m: Machine; t: Tables; hw: VtdHw }> {
  const input = defaultPlatformInput();
  const v = input.iommus!.find((i) => i.name === "vtd0")!;
  v.options = { ...v.options, ...options };
  const m = await createMachine({ platform: input, modules: [vtdHardwareModule] });
  await m.boot();
  const hw = m.dma.modelFor("vtd0") as VtdHw;
  return { m, t: new Tables(m), hw };
}

/** Root table + context tables in legacy or scalable mode, and translation enabled. */
export class Setup {
  readonly root: number;
  private readonly ctxTables = new Map<number, number>();

  constructor(
    readonly t: Tables,
    readonly sm: boolean,
  ) {
    this.root = t.alloc(4096);
  }

  /** Address of the context entry of `sid` (creating its context table). */
  ctxAddr(sid: number): number {
    const bus = sid >> 8;
    const devfn = sid & 0xff;
    const key = this.sm ? bus * 2 + (devfn >= 128 ? 1 : 0) : bus;
    let ct = this.ctxTables.get(key);
    if (ct === undefined) {
      ct = this.t.alloc(4096);
      this.ctxTables.set(key, ct);
      const re = this.root + bus * 16 + (this.sm && devfn >= 128 ? 8 : 0);
      this.t.q(re, b(ct) | 1n);
    }
    return this.sm ? ct + (devfn & 0x7f) * 32 : ct + devfn * 16;
  }

  writeCtx(sid: number, q: bigint[]): void {
    this.t.qs(this.ctxAddr(sid), q);
  }

  /** SRTP with the root table (TTM from the mode), then TE. */
  enable(): void {
    this.t.w64(0x20, b(this.root) | (this.sm ? 1n << 10n : 0n));
    this.t.gcmd(0x40000000);
    this.t.gcmd(0x80000000);
  }
}

/** A PASID directory with tables created on demand. */
export class PasidDir {
  readonly dir: number;
  constructor(readonly t: Tables) {
    this.dir = t.alloc(4096);
  }
  entryAddr(pasid: number): number {
    const de = this.dir + (pasid >> 6) * 8;
    let pt = Number(this.t.rq(de) & 0x000f_ffff_ffff_f000n);
    if (pt === 0) {
      pt = this.t.alloc(4096);
      this.t.q(de, b(pt) | 1n);
    }
    return pt + (pasid & 63) * 64;
  }
  write(pasid: number, q: bigint[]): void {
    this.t.qs(this.entryAddr(pasid), q);
  }
}

/** An invalidation queue driven by hand (128- or 256-bit descriptors). */
export class Queue {
  readonly base: number;
  private tail = 0;
  readonly entries: number;
  constructor(
    readonly t: Tables,
    readonly dw: boolean,
  ) {
    this.base = t.alloc(4096);
    this.entries = 4096 / (dw ? 32 : 16);
    t.w64(0x88, 0n);
    t.w64(0x90, b(this.base) | (dw ? 1n << 11n : 0n));
    t.gcmd(0x04000000);
  }
  /** Append descriptors (qw0, qw1) and write IQT. */
  submit(...descs: [bigint, bigint][]): void {
    for (const [q0, q1] of descs) {
      const pa = this.base + this.tail * (this.dw ? 32 : 16);
      this.t.q(pa, q0);
      this.t.q(pa + 8, q1);
      if (this.dw) {
        this.t.q(pa + 16, 0n);
        this.t.q(pa + 24, 0n);
      }
      this.tail = (this.tail + 1) % this.entries;
    }
    this.t.w64(0x88, b(this.tail << (this.dw ? 5 : 4)));
  }
}

/** Descriptor builders (literal positions from formats.md §3.10). */
export const desc = {
  ccGlobal: (): [bigint, bigint] => [0x1n | (1n << 4n), 0n],
  ccDomain: (did: number): [bigint, bigint] => [0x1n | (2n << 4n) | (b(did) << 16n), 0n],
  ccDevice: (did: number, sid: number): [bigint, bigint] => [0x1n | (3n << 4n) | (b(did) << 16n) | (b(sid) << 32n), 0n],
  iotlbGlobal: (): [bigint, bigint] => [0x2n | (1n << 4n), 0n],
  iotlbDomain: (did: number): [bigint, bigint] => [0x2n | (2n << 4n) | (b(did) << 16n), 0n],
  iotlbPage: (did: number, addr: number, am: number, ih = false): [bigint, bigint] => [
    0x2n | (3n << 4n) | (b(did) << 16n),
    b(addr) | b(am) | (ih ? 1n << 6n : 0n),
  ],
  piotlbPasid: (did: number, pasid: number): [bigint, bigint] => [
    0x6n | (2n << 4n) | (b(did) << 16n) | (b(pasid) << 32n),
    0n,
  ],
  piotlbPage: (did: number, pasid: number, addr: number, am: number): [bigint, bigint] => [
    0x6n | (3n << 4n) | (b(did) << 16n) | (b(pasid) << 32n),
    b(addr) | b(am),
  ],
  pcPasid: (did: number, pasid: number): [bigint, bigint] => [
    0x7n | (1n << 4n) | (b(did) << 16n) | (b(pasid) << 32n),
    0n,
  ],
  pcDomain: (did: number): [bigint, bigint] => [0x7n | (b(did) << 16n), 0n],
  wait: (status: number, data: number): [bigint, bigint] => [0x5n | (1n << 5n) | (b(data) << 32n), b(status)],
  pgrpResp: (rid: number, pasid: number, idx: number, code: number): [bigint, bigint] => [
    0x9n | (pasid >= 0 ? 1n << 4n : 0n) | (b(code) << 12n) | (b(rid) << 16n) | (b(Math.max(pasid, 0)) << 32n),
    b(idx) << 3n,
  ],
};

/** Fault record i as fields (FRCD at CAP.FRO × 16). */
export function frcd(
  t: Tables,
  i: number,
): { f: boolean; fr: number; sid: number; addr: number; read: boolean; pp: boolean; pv: number } {
  const cap = t.r64(0x08);
  const fro = Number((cap >> 24n) & 0x3ffn) * 16;
  const lo = t.r64(fro + 16 * i);
  const hi = t.r64(fro + 16 * i + 8);
  return {
    f: ((hi >> 63n) & 1n) === 1n,
    fr: Number((hi >> 32n) & 0xffn),
    sid: Number(hi & 0xffffn),
    addr: Number(lo & ~0xfffn),
    read: ((hi >> 62n) & 1n) === 1n,
    pp: ((hi >> 31n) & 1n) === 1n,
    pv: Number((hi >> 40n) & 0xfffffn),
  };
}

/** Clear fault record i (write 1 to F). */
export function clearFrcd(t: Tables, i: number): void {
  const cap = t.r64(0x08);
  const fro = Number((cap >> 24n) & 0x3ffn) * 16;
  t.w32(fro + 16 * i + 12, 0x80000000);
}
