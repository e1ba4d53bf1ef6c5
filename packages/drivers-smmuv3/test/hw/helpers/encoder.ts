/**
 * A tiny, independent SMMUv3 encoder for tests of the hardware model: STEs, CDs, commands and VMSAv8-64 page tables
 * written as bigint dwords with literal bit positions taken from the architecture tables (formats.md §1–2), not from
 * the model's field definitions, so the tests cross-check those. Tables live at fixed addresses from a bump
 * allocator; registers are programmed over the machine's MMIO bus.
 */
import { createMachine, defaultPlatformInput, type Machine } from "@iommu-sim/core";
import { type Smmuv3Hw, smmuv3HardwareModule } from "../../../src/hw/index.js";

export const SMMU_BASE = 0x0905_0000;
const b = (v: number | bigint) => BigInt(v);

/** Bits [hi:lo] of a dword set to v. */
export function f(v: number | bigint, lo: number): bigint {
  return b(v) << b(lo);
}

export interface SteSpec {
  v?: boolean;
  config: number; // 0 abort, 4 bypass, 5 s1, 6 s2, 7 nested
  s1fmt?: number;
  s1ctx?: number;
  s1cdmax?: number;
  s1dss?: number;
  eats?: number;
  strw?: number;
  s1stalld?: boolean;
  vmid?: number;
  s2t0sz?: number;
  s2sl0?: number;
  s2tg?: number; // 0 4K, 1 64K, 2 16K
  s2ps?: number;
  s2aa64?: boolean;
  s2ha?: boolean;
  s2hd?: boolean;
  s2r?: boolean;
  s2ttb?: number;
}

export function steDwords(s: SteSpec): bigint[] {
  const d0 =
    f(s.v === false ? 0 : 1, 0) |
    f(s.config, 1) |
    f(s.s1fmt ?? 0, 4) |
    (b(s.s1ctx ?? 0) & 0x000f_ffff_ffff_ffc0n) |
    f(s.s1cdmax ?? 0, 59);
  const d1 = f(s.s1dss ?? 0, 0) | f(s.s1stalld ? 1 : 0, 27) | f(s.eats ?? 0, 28) | f(s.strw ?? 0, 30);
  const d2 =
    f(s.vmid ?? 0, 0) |
    f(s.s2t0sz ?? 0, 32) |
    f(s.s2sl0 ?? 0, 38) |
    f(s.s2tg ?? 0, 46) |
    f(s.s2ps ?? 0, 48) |
    f(s.s2aa64 === false ? 0 : s.config >= 6 ? 1 : 0, 51) |
    f(s.s2hd ? 1 : 0, 55) |
    f(s.s2ha ? 1 : 0, 56) |
    f(s.s2r === false ? 0 : s.config >= 6 ? 1 : 0, 58);
  const d3 = b(s.s2ttb ?? 0) & 0x000f_ffff_ffff_fff0n;
  return [d0, d1, d2, d3, 0n, 0n, 0n, 0n];
}

export interface CdSpec {
  v?: boolean;
  t0sz: number;
  tg0?: number; // 0 4K, 1 64K, 2 16K
  epd0?: boolean;
  ips?: number;
  affd?: boolean;
  aa64?: boolean;
  hd?: boolean;
  ha?: boolean;
  r?: boolean;
  a?: boolean;
  asid: number;
  ttb0: number;
}

export function cdDwords(c: CdSpec): bigint[] {
  const d0 =
    f(c.t0sz, 0) |
    f(c.tg0 ?? 0, 6) |
    f(c.epd0 ? 1 : 0, 14) |
    f(1, 30) | // EPD1
    f(c.v === false ? 0 : 1, 31) |
    f(c.ips ?? 5, 32) |
    f(c.affd ? 1 : 0, 35) |
    f(c.aa64 === false ? 0 : 1, 41) |
    f(c.hd ? 1 : 0, 42) |
    f(c.ha ? 1 : 0, 43) |
    f(c.r === false ? 0 : 1, 45) |
    f(c.a === false ? 0 : 1, 46) |
    f(1, 47) |
    f(c.asid, 48);
  const d1 = b(c.ttb0) & 0x000f_ffff_ffff_fff0n;
  return [d0, d1, 0n, 0x0000_0000_f404_ff44n, 0n, 0n, 0n, 0n];
}

/** Page-table leaf attributes. */
export interface LeafAttrs {
  /** Stage 1: read-only (AP[2]). */
  ro?: boolean;
  /** Stage 1: privileged only (AP[1] = 0). */
  privOnly?: boolean;
  xn?: boolean;
  af?: boolean;
  dbm?: boolean;
  cont?: boolean;
  /** Stage 2: S2AP read / write. */
  s2r?: boolean;
  s2w?: boolean;
}

export class Tables {
  next: number;
  constructor(
    readonly m: Machine,
    start = 0x4000_0000,
  ) {
    this.next = start;
  }

  get hw(): Smmuv3Hw {
    return this.m.hw.get("smmu0") as Smmuv3Hw;
  }

  /** Zeroed memory aligned to `align`. */
  alloc(bytes: number, align = 4096): number {
    this.next = Math.ceil(this.next / align) * align;
    const pa = this.next;
    this.next += bytes;
    this.m.memory.fill(pa, bytes, 0);
    return pa;
  }

  w32(off: number, v: number): void {
    this.m.mmio.write32(SMMU_BASE + off, v);
  }
  r32(off: number): number {
    return this.m.mmio.read32(SMMU_BASE + off);
  }
  w64(off: number, v: number | bigint): void {
    this.m.mmio.write64(SMMU_BASE + off, b(v));
  }

  writeDwords(pa: number, d: bigint[]): void {
    for (let i = 0; i < d.length; i++) this.m.memory.write64(pa + 8 * i, d[i]!);
  }

  cmdq = 0;
  evtq = 0;
  priq = 0;
  strtab = 0;
  cmdqLog2 = 4;
  evtqLog2 = 4;
  priqLog2 = 4;

  /** Queues at fresh addresses, enabled; stream table linear with 2^log2 entries; SMMU enabled. */
  enable(
    opts: {
      stLog2?: number;
      twoLevel?: { split: number };
      cmdqLog2?: number;
      evtqLog2?: number;
      priqLog2?: number;
    } = {},
  ): void {
    this.cmdqLog2 = opts.cmdqLog2 ?? 4;
    this.evtqLog2 = opts.evtqLog2 ?? 4;
    this.priqLog2 = opts.priqLog2 ?? 4;
    this.cmdq = this.alloc(16 << this.cmdqLog2);
    this.evtq = this.alloc(32 << this.evtqLog2);
    this.priq = this.alloc(16 << this.priqLog2);
    const log2 = opts.stLog2 ?? 12;
    if (opts.twoLevel) {
      const l1n = 2 ** (log2 - opts.twoLevel.split);
      this.strtab = this.alloc(l1n * 8, 64);
      this.w32(0x88, log2 | (opts.twoLevel.split << 6) | (1 << 16));
    } else {
      this.strtab = this.alloc(64 * 2 ** log2, 64);
      this.w32(0x88, log2);
    }
    this.split = opts.twoLevel?.split ?? -1;
    this.w64(0x80, this.strtab);
    this.w64(0x90, this.cmdq | this.cmdqLog2);
    this.w64(0xa0, this.evtq | this.evtqLog2);
    this.w64(0xc0, this.priq | this.priqLog2);
    this.w32(0x98, 0);
    this.w32(0x9c, 0);
    this.w32(0x100a8, 0);
    this.w32(0x100ac, 0);
    this.w32(0x100c8, 0);
    this.w32(0x100cc, 0);
    this.w32(0x20, 0b1110); // CMDQEN | EVTQEN | PRIQEN
    this.w32(0x20, 0b1111); // + SMMUEN
  }

  split = -1;
  private l2 = new Map<number, number>();

  /** The STE address of `sid` (allocating the L2 table of a 2-level stream table). */
  steAddr(sid: number): number {
    if (this.split < 0) return this.strtab + sid * 64;
    const l1i = Math.floor(sid / 2 ** this.split);
    let l2 = this.l2.get(l1i);
    if (l2 === undefined) {
      l2 = this.alloc(64 * 2 ** this.split, 64);
      this.l2.set(l1i, l2);
      this.m.memory.write64(this.strtab + l1i * 8, b(l2) | b(this.split + 1));
    }
    return l2 + (sid % 2 ** this.split) * 64;
  }

  writeSte(sid: number, s: SteSpec): void {
    this.writeDwords(this.steAddr(sid), steDwords(s));
  }

  /** Append a command and ring PROD. */
  cmd(d0: bigint, d1 = 0n, ring = true): void {
    const prod = this.swProd;
    const mask = 2 ** this.cmdqLog2 - 1;
    const idx = prod & mask;
    this.m.memory.write64(this.cmdq + idx * 16, d0);
    this.m.memory.write64(this.cmdq + idx * 16 + 8, d1);
    const next = ((prod & (mask * 2 + 1)) + 1) & (mask * 2 + 1);
    this.swProd = next;
    if (ring) this.w32(0x98, next);
    else this.pendingProd = next;
  }
  pendingProd = 0;
  /** The driver-side producer index. */
  swProd = 0;

  cfgiAll(): void {
    this.cmd(0x04n, 31n);
  }
  cfgiSte(sid: number, leaf = true): void {
    this.cmd(0x03n | f(sid, 32), leaf ? 1n : 0n);
  }
  cfgiCd(sid: number, ssid: number): void {
    this.cmd(0x05n | f(ssid, 12) | f(sid, 32), 1n);
  }
  tlbiNhAsid(asid: number, vmid = 0): void {
    this.cmd(0x11n | f(vmid, 32) | f(asid, 48));
  }
  tlbiNhVa(asid: number, va: number, leaf = true, vmid = 0): void {
    this.cmd(0x12n | f(vmid, 32) | f(asid, 48), (b(va) & ~0xfffn) | (leaf ? 1n : 0n));
  }
  tlbiNsnhAll(): void {
    this.cmd(0x30n);
  }
  sync(msiAddr = 0, data = 0): void {
    if (msiAddr) this.cmd(0x46n | f(1, 12) | f(data, 32), b(msiAddr));
    else this.cmd(0x46n);
  }

  /** Event records between EVTQ CONS and PROD (consumed). */
  events(): Evt[] {
    const out: Evt[] = [];
    const mask = 2 ** this.evtqLog2 - 1;
    let cons = this.r32(0x100ac);
    const prod = this.r32(0x100a8);
    while ((cons & (mask * 2 + 1)) !== (prod & (mask * 2 + 1))) {
      const pa = this.evtq + (cons & mask) * 32;
      const d = [0, 1, 2, 3].map((i) => this.m.memory.read64(pa + 8 * i));
      out.push(decodeEvt(d));
      cons = (cons & 0x8000_0000) | (((cons & (mask * 2 + 1)) + 1) & (mask * 2 + 1));
    }
    this.w32(0x100ac, cons);
    return out;
  }
}

export interface Evt {
  id: number;
  ssv: boolean;
  ssid: number;
  sid: number;
  stag: number;
  stall: boolean;
  pnu: boolean;
  ind: boolean;
  rnw: boolean;
  s2: boolean;
  cls: number;
  addr: number;
  addr2: number;
}

export function decodeEvt(d: bigint[]): Evt {
  const g = (x: bigint, lo: number, w: number) => Number((x >> b(lo)) & ((1n << b(w)) - 1n));
  const [d0, d1, d2, d3] = d as [bigint, bigint, bigint, bigint];
  return {
    id: g(d0, 0, 8),
    ssv: g(d0, 11, 1) === 1,
    ssid: g(d0, 12, 20),
    sid: g(d0, 32, 32),
    stag: g(d1, 0, 16),
    stall: g(d1, 31, 1) === 1,
    pnu: g(d1, 33, 1) === 1,
    ind: g(d1, 34, 1) === 1,
    rnw: g(d1, 35, 1) === 1,
    s2: g(d1, 39, 1) === 1,
    cls: g(d1, 40, 2),
    addr: Number(d2),
    addr2: Number(d3 & 0x000f_ffff_ffff_ffffn),
  };
}

/**
 * A VMSAv8-64 table tree written by hand: stage 1 (AP/XN) or stage 2 (S2AP), 4K/16K/64K granules. `ipaOffset`:
 * table pointers are written as PA + ipaOffset (stage-1 tables of a nested configuration live in IPA space).
 */
export class PageTable {
  readonly root: number;
  readonly bpl: number;
  readonly startLevel: number;
  readonly rootBits: number;
  constructor(
    readonly t: Tables,
    readonly granLg2: number,
    readonly ias: number,
    readonly stage2 = false,
    startLevel?: number,
    readonly ipaOffset = 0,
  ) {
    this.bpl = granLg2 - 3;
    this.startLevel = startLevel ?? 4 - Math.ceil((ias - granLg2) / this.bpl);
    this.rootBits = ias - (granLg2 + this.bpl * (3 - this.startLevel));
    this.root = t.alloc(Math.max(2 ** granLg2, 8 * 2 ** this.rootBits), Math.max(2 ** granLg2, 8 * 2 ** this.rootBits));
  }

  /** The descriptor address of `iova` at `level` (creating tables down to it). */
  slot(iova: number, level: number): number {
    let table = this.root;
    const mem = this.t.m.memory;
    for (let l = this.startLevel; ; l++) {
      const s = this.granLg2 + this.bpl * (3 - l);
      const n = l === this.startLevel ? this.rootBits : this.bpl;
      const e = table + (Math.floor(iova / 2 ** s) % 2 ** n) * 8;
      if (l === level) return e;
      let d = mem.read64(e);
      if ((d & 3n) !== 3n) {
        const next = this.t.alloc(2 ** this.granLg2, 2 ** this.granLg2);
        d = b(next + this.ipaOffset) | 3n;
        mem.write64(e, d);
      }
      table = Number(d & 0x0000_ffff_ffff_f000n) - this.ipaOffset;
    }
  }

  leafBits(a: LeafAttrs): bigint {
    let d = f(a.af === false ? 0 : 1, 10) | f(3, 8);
    if (this.stage2) {
      d |= f(0xf, 2) | f(a.s2r === false ? 0 : 1, 6) | f(a.s2w === false ? 0 : 1, 7);
    } else {
      d |= f(1, 11) | f(a.privOnly ? 0 : 1, 6) | f(a.ro ? 1 : 0, 7) | f(1, 2);
    }
    if (a.xn) d |= f(this.stage2 ? 3 : 3, 53);
    if (a.dbm) d |= f(1, 51);
    if (a.cont) d |= f(1, 52);
    return d;
  }

  /** Map [iova, iova + size) → pa with leaves at `level` (default: the last level). */
  map(iova: number, pa: number, size: number, attrs: LeafAttrs = {}, level = 3): void {
    const leaf = 2 ** (this.granLg2 + this.bpl * (3 - level));
    for (let o = 0; o < size; o += leaf) {
      const e = this.slot(iova + o, level);
      this.t.m.memory.write64(e, b(pa + o) | this.leafBits(attrs) | (level === 3 ? 3n : 1n));
    }
  }

  /** Address of the leaf descriptor of `iova` at `level`. */
  pte(iova: number, level = 3): number {
    return this.slot(iova, level);
  }
}

export async function bootSmmu(
  options: Record<string, unknown> = {},
): Promise<{ m: Machine; t: Tables; hw: Smmuv3Hw }> {
  const input = defaultPlatformInput();
  const io = input.iommus!.find((i) => i.name === "smmu0")!;
  io.options = { ...io.options, ...options };
  const m = await createMachine({ platform: input, modules: [smmuv3HardwareModule] });
  await m.boot();
  const t = new Tables(m);
  return { m, t, hw: t.hw };
}

export function bytes(n: number, seed = 1): Uint8Array {
  const x = new Uint8Array(n);
  for (let i = 0; i < n; i++) x[i] = (i * 7 + seed) & 0xff;
  return x;
}
