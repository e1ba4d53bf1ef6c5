/**
 * Hand-written mock IOMMU structures for tests of the hardware model: device-table entries, PASID tables, page
 * tables and register programming, built only from the field definitions of `src/spec/fields.ts` (no driver, no
 * page-table engine), at fixed physical addresses handed out by a bump allocator.
 */
import type { Machine, PhysicalMemory } from "@iommu-sim/core";
import {
  BASE,
  CR,
  CTX,
  CTX_SIZE,
  type Field,
  fieldPrep,
  fieldSet,
  INV_CMD,
  INV_TAG,
  PASID_DIRENT,
  PASID_LEAF_LG2,
  PTE,
  REG,
  wordOf,
} from "../../src/spec/fields.js";

const TWO_32 = 4294967296;

export interface LeafFlags {
  r?: boolean;
  w?: boolean;
  nx?: boolean;
  priv?: boolean;
  d?: boolean;
}

export interface CtxSpec {
  mode: number;
  levels?: number;
  s1Levels?: number;
  did?: number;
  s1id?: number;
  ttb?: number;
  s1ttb?: number;
  dirty?: boolean;
  pri?: boolean;
  pasidBits?: number;
  pasidDir?: number;
}

/** Split a 4 KiB-aligned address into (lo, hi) fields. */
function putAddr(words: Uint32Array, lo: Field, hi: Field, addr: number): void {
  const l = addr >>> 0;
  words[wordOf(lo)] = fieldSet(words[wordOf(lo)]!, lo, l >>> (lo.bit % 32));
  words[wordOf(hi)] = fieldSet(words[wordOf(hi)]!, hi, (addr - l) / TWO_32);
}

export class HandTables {
  next: number;
  constructor(
    readonly m: Machine,
    readonly mmioBase = 0x0900_0000,
    start = 0x4000_0000,
  ) {
    this.next = start;
  }

  get mem(): PhysicalMemory {
    return this.m.memory;
  }

  /** A zeroed 4 KiB-aligned block of `pages` frames. */
  alloc(pages = 1): number {
    const pa = this.next;
    this.next += pages * 4096;
    this.mem.fill(pa, pages * 4096, 0);
    return pa;
  }

  writeReg(def: { offset: number }, v: number): void {
    this.m.mmio.write32(this.mmioBase + def.offset, v);
  }

  readReg(def: { offset: number }): number {
    return this.m.mmio.read32(this.mmioBase + def.offset);
  }

  /** Program DT and FQ bases, then enable translation, the fault queue and its interrupt. */
  enable(dtLog2: number, fqLog2 = 4): { dt: number; fq: number } {
    const dt = this.alloc(Math.max(1, ((1 << dtLog2) * CTX_SIZE) / 4096));
    const fq = this.alloc(Math.max(1, ((1 << fqLog2) * 32) / 4096));
    this.writeReg(REG.DT_BASE_LO, (dt >>> 0) | fieldPrep(BASE.LOG2SIZE, dtLog2));
    this.writeReg(REG.DT_BASE_HI, 0);
    this.writeReg(REG.FQ_BASE_LO, (fq >>> 0) | fieldPrep(BASE.LOG2SIZE, fqLog2));
    this.writeReg(REG.FQ_BASE_HI, 0);
    this.writeReg(REG.CR, fieldPrep(CR.EN, 1) | fieldPrep(CR.FQEN, 1) | fieldPrep(CR.FQIRQEN, 1));
    return { dt, fq };
  }

  /** Encode a context entry into 8 words. */
  ctxWords(s: CtxSpec): Uint32Array {
    const w = new Uint32Array(8);
    w[0] =
      fieldPrep(CTX.V, 1) |
      fieldPrep(CTX.MODE, s.mode) |
      fieldPrep(CTX.DIRTY, s.dirty ? 1 : 0) |
      fieldPrep(CTX.PRI, s.pri ? 1 : 0) |
      fieldPrep(CTX.PASID_EN, s.pasidDir !== undefined ? 1 : 0) |
      fieldPrep(CTX.LEVELS, s.levels ?? 0) |
      fieldPrep(CTX.S1_LEVELS, s.s1Levels ?? 0) |
      fieldPrep(CTX.PASID_BITS, s.pasidBits ?? 0);
    w[1] = fieldPrep(CTX.DID, s.did ?? 0) | fieldPrep(CTX.S1ID, s.s1id ?? 0);
    if (s.ttb !== undefined) putAddr(w, CTX.TTB_LO, CTX.TTB_HI, s.ttb);
    if (s.s1ttb !== undefined) putAddr(w, CTX.S1TTB_LO, CTX.S1TTB_HI, s.s1ttb);
    if (s.pasidDir !== undefined) putAddr(w, CTX.PASID_DIR_LO, CTX.PASID_DIR_HI, s.pasidDir);
    return w;
  }

  writeCtx(pa: number, s: CtxSpec): void {
    const w = this.ctxWords(s);
    for (let i = 0; i < 8; i++) this.mem.write32(pa + 4 * i, w[i]!);
  }

  /** Write the PASID entry `pasid` under directory `dir`, allocating its leaf when missing. */
  writePasidCtx(dir: number, pasid: number, s: CtxSpec): void {
    const de = dir + (pasid >>> PASID_LEAF_LG2) * 8;
    let lo = this.mem.read32(de);
    if ((lo & 1) === 0) {
      const leaf = this.alloc();
      lo = fieldPrep(PASID_DIRENT.V, 1) | (leaf >>> 0);
      this.mem.write32(de, lo);
      this.mem.write32(de + 4, fieldPrep(PASID_DIRENT.ADDR_HI, Math.floor(leaf / TWO_32)));
    }
    const leaf = (lo & ~0xfff) >>> 0;
    this.writeCtx(leaf + (pasid & ((1 << PASID_LEAF_LG2) - 1)) * CTX_SIZE, s);
  }

  /** Map one leaf (2 KiB at level 0 or 1 MiB at level 1), creating tables from `root` down. */
  map(
    root: number,
    levels: number,
    iova: number,
    pa: number,
    level: 0 | 1,
    f: LeafFlags = { r: true, w: true },
  ): number {
    let table = root;
    for (let l = levels - 1; l > level; l--) {
      const idx = Math.floor(iova / 2 ** (11 + 9 * l)) % 512;
      const e = table + idx * 8;
      let lo = this.mem.read32(e);
      if ((lo & 1) === 0) {
        const t = this.alloc();
        lo = fieldPrep(PTE.V, 1) | fieldPrep(PTE.T, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1) | (t >>> 0);
        this.mem.write32(e, lo);
        this.mem.write32(e + 4, Math.floor(t / TWO_32));
      }
      table = ((lo & ~0xfff) >>> 0) + this.mem.read32(e + 4) * TWO_32;
    }
    const idx = Math.floor(iova / 2 ** (11 + 9 * level)) % 512;
    const e = table + idx * 8;
    const lo =
      fieldPrep(PTE.V, 1) |
      fieldPrep(PTE.R, f.r ? 1 : 0) |
      fieldPrep(PTE.W, f.w ? 1 : 0) |
      fieldPrep(PTE.NX, f.nx ? 1 : 0) |
      fieldPrep(PTE.PRIV, f.priv ? 1 : 0) |
      fieldPrep(PTE.D, f.d ? 1 : 0) |
      ((pa >>> 0) & ~0x7ff);
    this.mem.write32(e, lo >>> 0);
    this.mem.write32(e + 4, Math.floor(pa / TWO_32));
    return e;
  }

  /** Run an invalidation command. */
  invalidate(
    op: number,
    o: { did?: number; s1id?: number; rid?: number; pasid?: number; first?: number; last?: number } = {},
  ): void {
    this.writeReg(REG.INV_TAG, fieldPrep(INV_TAG.DID, o.did ?? 0) | fieldPrep(INV_TAG.S1ID, o.s1id ?? 0));
    this.writeReg(REG.INV_RID, o.rid ?? 0);
    this.writeReg(REG.INV_PASID, o.pasid ?? 0);
    const first = o.first ?? 0;
    const last = o.last ?? 0;
    this.writeReg(REG.INV_ADDR_LO, first >>> 0);
    this.writeReg(REG.INV_ADDR_HI, Math.floor(first / TWO_32));
    this.writeReg(REG.INV_LAST_LO, last >>> 0);
    this.writeReg(REG.INV_LAST_HI, Math.floor(last / TWO_32));
    this.writeReg(REG.INV_CMD, fieldPrep(INV_CMD.OP, op));
  }
}
