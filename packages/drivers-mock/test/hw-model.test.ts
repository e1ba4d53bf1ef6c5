/**
 * The mock IOMMU hardware model on its own: tables written by hand with the model's field definitions, DMA from
 * `mock-dev0` (requester ID 1 on `mock0`) of the default platform. No driver is loaded.
 */
import { createMachine, DmaFault, type Machine } from "@iommu-sim/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  CTX_MODE,
  FAULT,
  FAULT_CODE,
  FAULT_TYPE,
  fieldGet,
  fieldPrep,
  IDR1,
  INV_OP,
  MockIommuHw,
  mockHardwareModule,
  PRESP_INFO,
  PRESP_PASID,
  PTE,
  REG,
  STATUS,
} from "../src/index.js";
import { HandTables } from "./helpers/hand-tables.js";

const RID = 1;
const LEVELS = 3;

let m: Machine;
let t: HandTables;
let hw: MockIommuHw;

async function boot(options: Record<string, unknown> = {}): Promise<void> {
  const { defaultPlatformInput } = await import("@iommu-sim/core");
  const input = defaultPlatformInput();
  const io = input.iommus!.find((i) => i.name === "mock0")!;
  io.options = { ...io.options, ...options };
  m = await createMachine({ platform: input, modules: [mockHardwareModule] });
  await m.boot();
  t = new HandTables(m);
  hw = m.hw.get("mock0") as MockIommuHw;
}

beforeEach(async () => {
  await boot({ tlbEntries: 8 });
});

afterEach(async () => {
  await m.teardown();
});

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

/** A translate-mode device entry for RID 1 with a fresh root. */
function setupTranslate(extra: { dirty?: boolean; pri?: boolean; did?: number } = {}): {
  dt: number;
  fq: number;
  root: number;
} {
  const { dt, fq } = t.enable(4, 4);
  const root = t.alloc();
  t.writeCtx(dt + RID * 32, { mode: CTX_MODE.TRANSLATE, levels: LEVELS, did: extra.did ?? 5, ttb: root, ...extra });
  return { dt, fq, root };
}

function record(fq: number, i: number): { w0: number; rid: number; pasid: number; prgi: number; addr: number } {
  const pa = fq + i * 32;
  const mem = m.memory;
  return {
    w0: mem.read32(pa),
    rid: mem.read32(pa + 4),
    pasid: fieldGet(mem.read32(pa + 8), FAULT.PASID),
    prgi: fieldGet(mem.read32(pa + 12), FAULT.PRGI),
    addr: mem.read32(pa + 16) + mem.read32(pa + 20) * 2 ** 32,
  };
}

describe("mock IOMMU hardware model", () => {
  it("advertises 2 KiB and 1 MiB pages and a 20-bit PASID in its ID registers", () => {
    expect(hw).toBeInstanceOf(MockIommuHw);
    expect(t.readReg(REG.IDR0)).toBe(2048 + (1 << 20));
    expect(fieldGet(t.readReg(REG.IDR1), IDR1.PASID_BITS)).toBe(20);
    expect(fieldGet(t.readReg(REG.IDR1), IDR1.NESTING)).toBe(1);
  });

  it("lets DMA through untranslated while disabled", () => {
    m.device("mock-dev0").dmaWrite(0x5000_0000, bytes(16));
    expect(m.memory.readBytes(0x5000_0000, 16)).toEqual(bytes(16));
  });

  it("translates 2 KiB and 1 MiB leaves walked from memory", () => {
    const { root } = setupTranslate();
    t.map(root, LEVELS, 0x100_0000, 0x6000_0800, 0);
    t.map(root, LEVELS, 0x200_0000, 0x7010_0000, 1);
    const dev = m.device("mock-dev0");
    dev.dmaWrite(0x100_0010, bytes(64));
    expect(m.memory.readBytes(0x6000_0810, 64)).toEqual(bytes(64));
    // A transfer spanning many 2 KiB pages of one huge leaf.
    dev.dmaWrite(0x200_0000 + 0x7f0, bytes(5000, 3));
    expect(m.memory.readBytes(0x7010_07f0, 5000)).toEqual(bytes(5000, 3));
    expect(dev.dmaRead(0x200_07f0, 5000)).toEqual(bytes(5000, 3));
    expect(t.readReg(REG.STATUS) & 1).toBe(1);
  });

  it("records a translation fault with requester, address and access, and raises its interrupt", () => {
    const { fq } = setupTranslate();
    let irqs = 0;
    hw.connectIrq(() => irqs++);
    const dev = m.device("mock-dev0");
    let err: unknown;
    try {
      dev.dmaWrite(0x123_4567, bytes(4));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DmaFault);
    expect((err as DmaFault).faultCode).toBe(FAULT_CODE.TRANSLATION);
    expect(irqs).toBe(1);
    expect(t.readReg(REG.FQ_TAIL)).toBe(1);
    const r = record(fq, 0);
    expect(fieldGet(r.w0, FAULT.TYPE)).toBe(FAULT_TYPE.FAULT);
    expect(fieldGet(r.w0, FAULT.CODE)).toBe(FAULT_CODE.TRANSLATION);
    expect(fieldGet(r.w0, FAULT.WRITE)).toBe(1);
    expect(fieldGet(r.w0, FAULT.PV)).toBe(0);
    expect(r.rid).toBe(RID);
    expect(r.addr).toBe(0x123_4567);
  });

  it("checks permissions: read-only, no-exec and privileged-only leaves", () => {
    const { root } = setupTranslate();
    t.map(root, LEVELS, 0x100_0000, 0x6000_0000, 0, { r: true });
    t.map(root, LEVELS, 0x100_0800, 0x6000_0800, 0, { r: true, w: true, nx: true });
    t.map(root, LEVELS, 0x100_1000, 0x6000_1000, 0, { r: true, w: true, priv: true });
    const dev = m.device("mock-dev0");
    expect(dev.dmaRead(0x100_0000, 4)).toEqual(new Uint8Array(4));
    expect(() => dev.dmaWrite(0x100_0000, bytes(4))).toThrow(/permission/);
    expect(() => dev.dmaRead(0x100_0800, 4, { exec: true })).toThrow(/permission/);
    expect(() => dev.dmaRead(0x100_1000, 4)).toThrow(/permission/);
    expect(dev.dmaRead(0x100_1000, 4, { privileged: true })).toHaveLength(4);
  });

  it("caches translations in its IOTLB until software invalidates them", () => {
    const { root } = setupTranslate({ did: 7 });
    const pte = t.map(root, LEVELS, 0x100_0000, 0x6000_0000, 0);
    m.memory.write32(0x6000_0000, 0xaaaa_aaaa);
    m.memory.write32(0x6100_0000, 0xbbbb_bbbb);
    const dev = m.device("mock-dev0");
    expect(dev.dmaRead(0x100_0000, 4)).toEqual(new Uint8Array([0xaa, 0xaa, 0xaa, 0xaa]));
    const misses = hw.stats.tlbMisses;
    // Repoint the leaf in memory: the cached translation is still used.
    m.memory.write32(pte, (m.memory.read32(pte) & 0x7ff) | 0x6100_0000);
    expect(dev.dmaRead(0x100_0000, 4)).toEqual(new Uint8Array([0xaa, 0xaa, 0xaa, 0xaa]));
    expect(hw.stats.tlbMisses).toBe(misses);
    // Invalidating another domain changes nothing; a range invalidation of ours picks up the new leaf.
    t.invalidate(INV_OP.RANGE, { did: 8, first: 0x100_0000, last: 0x100_07ff });
    expect(dev.dmaRead(0x100_0000, 4)).toEqual(new Uint8Array([0xaa, 0xaa, 0xaa, 0xaa]));
    t.invalidate(INV_OP.RANGE, { did: 7, first: 0x100_0000, last: 0x100_07ff });
    expect(dev.dmaRead(0x100_0000, 4)).toEqual(new Uint8Array([0xbb, 0xbb, 0xbb, 0xbb]));
    // Unmapping without invalidation keeps the stale entry; a domain invalidation drops it.
    m.memory.write32(pte, 0);
    expect(dev.dmaRead(0x100_0000, 4)).toHaveLength(4);
    t.invalidate(INV_OP.DOMAIN, { did: 7 });
    expect(() => dev.dmaRead(0x100_0000, 4)).toThrow(DmaFault);
    expect(t.readReg(REG.INV_COUNT)).toBe(3);
  });

  it("keeps translating correctly when a tiny IOTLB thrashes", () => {
    const { root } = setupTranslate();
    for (let i = 0; i < 64; i++) t.map(root, LEVELS, 0x100_0000 + i * 2048, 0x6000_0000 + (63 - i) * 2048, 0);
    const dev = m.device("mock-dev0");
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 64; i++) {
        dev.dmaWrite(0x100_0000 + i * 2048 + 8, new Uint8Array([i]));
        dev.dmaWrite(0x100_0000 + i * 2048 + 9, new Uint8Array([round]));
      }
    }
    for (let i = 0; i < 64; i++)
      expect(m.memory.readBytes(0x6000_0000 + (63 - i) * 2048 + 8, 2)).toEqual(new Uint8Array([i, 2]));
    expect(hw.iotlb.used).toBeLessThanOrEqual(8);
    expect(hw.stats.tlbHits).toBeGreaterThan(0);
  });

  it("sets the dirty bit on writes only when the context tracks dirty pages", () => {
    const { dt, root } = setupTranslate();
    const pte = t.map(root, LEVELS, 0x100_0000, 0x6000_0000, 0);
    const dev = m.device("mock-dev0");
    const dBit = fieldPrep(PTE.D, 1);
    dev.dmaWrite(0x100_0000, bytes(4));
    expect(m.memory.read32(pte) & dBit).toBe(0);
    t.writeCtx(dt + RID * 32, { mode: CTX_MODE.TRANSLATE, levels: LEVELS, did: 5, ttb: root, dirty: true });
    // Software invalidates the device entry and the domain's IOTLB entries, as after set_dirty_tracking.
    t.invalidate(INV_OP.DEVICE, { rid: RID });
    t.invalidate(INV_OP.DOMAIN, { did: 5 });
    dev.dmaRead(0x100_0000, 4);
    expect(m.memory.read32(pte) & dBit).toBe(0);
    dev.dmaWrite(0x100_0000, bytes(4));
    expect(m.memory.read32(pte) & dBit).toBe(dBit);
    // Software clears D and invalidates: the next write sets it again.
    m.memory.write32(pte, m.memory.read32(pte) & ~dBit);
    t.invalidate(INV_OP.RANGE, { did: 5, first: 0x100_0000, last: 0x100_07ff });
    dev.dmaRead(0x100_0000, 4);
    expect(m.memory.read32(pte) & dBit).toBe(0);
    dev.dmaWrite(0x100_0000, bytes(4));
    expect(m.memory.read32(pte) & dBit).toBe(dBit);
  });

  it("uses the configuration it cached until the device entry is invalidated", () => {
    const { dt, root } = setupTranslate();
    t.map(root, LEVELS, 0x100_0000, 0x6000_0000, 0);
    const dev = m.device("mock-dev0");
    dev.dmaRead(0x100_0000, 4);
    t.writeCtx(dt + RID * 32, { mode: CTX_MODE.ABORT });
    expect(dev.dmaRead(0x100_0000, 4)).toHaveLength(4);
    t.invalidate(INV_OP.DEVICE, { rid: RID });
    expect(() => dev.dmaRead(0x100_0000, 4)).toThrow(/abort/);
    t.writeCtx(dt + RID * 32, { mode: CTX_MODE.BYPASS });
    t.invalidate(INV_OP.ALL);
    dev.dmaWrite(0x5555_0000, bytes(8));
    expect(m.memory.readBytes(0x5555_0000, 8)).toEqual(bytes(8));
    m.memory.write32(dt + RID * 32, 0);
    t.invalidate(INV_OP.DEVICE, { rid: RID });
    expect(() => dev.dmaRead(0, 4)).toThrow(/bad device/);
  });

  it("translates PASID-tagged DMA through the PASID table", () => {
    const { dt, root } = setupTranslate();
    const dir = t.alloc(16);
    const root2 = t.alloc();
    t.map(root, LEVELS, 0x100_0000, 0x6000_0000, 0);
    t.map(root2, LEVELS, 0x100_0000, 0x6800_0000, 0);
    const dev = m.device("mock-dev0");
    expect(() => dev.dmaRead(0x100_0000, 4, { pasid: 300 })).toThrow(/bad PASID/);
    t.writeCtx(dt + RID * 32, {
      mode: CTX_MODE.TRANSLATE,
      levels: LEVELS,
      did: 5,
      ttb: root,
      pasidBits: 20,
      pasidDir: dir,
    });
    t.writePasidCtx(dir, 300, { mode: CTX_MODE.TRANSLATE, levels: LEVELS, did: 6, ttb: root2 });
    t.invalidate(INV_OP.DEVICE, { rid: RID });
    dev.dmaWrite(0x100_0000, bytes(8, 1));
    dev.dmaWrite(0x100_0000, bytes(8, 2), { pasid: 300 });
    expect(m.memory.readBytes(0x6000_0000, 8)).toEqual(bytes(8, 1));
    expect(m.memory.readBytes(0x6800_0000, 8)).toEqual(bytes(8, 2));
    expect(() => dev.dmaRead(0x100_0000, 4, { pasid: 301 })).toThrow(/bad PASID/);
  });

  it("walks a nested stage-1 whose tables and output are IPAs translated by the stage-2 parent", () => {
    const { dt } = setupTranslate();
    const s2root = t.alloc();
    // Stage-1 tables live at IPAs 0x1000_0000 + n * 4 KiB; stage 2 maps them (4 KiB = two 2 KiB pages each).
    const s1Pa: number[] = [];
    for (let n = 0; n < 3; n++) {
      const pa = t.alloc();
      s1Pa.push(pa);
      t.map(s2root, LEVELS, 0x1000_0000 + n * 4096, pa, 0, { r: true });
      t.map(s2root, LEVELS, 0x1000_0000 + n * 4096 + 2048, pa + 2048, 0, { r: true });
    }
    // Stage-1 tables written at their PAs but pointing at IPAs: root (n=0) -> level1 (n=1) -> level0 (n=2).
    const ipaOf = (n: number) => 0x1000_0000 + n * 4096;
    const iova = 0x100_0800;
    const tableLo = (ipa: number) =>
      fieldPrep(PTE.V, 1) | fieldPrep(PTE.T, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1) | ipa;
    m.memory.write32(s1Pa[0]! + (Math.floor(iova / 2 ** 29) % 512) * 8, tableLo(ipaOf(1)));
    m.memory.write32(s1Pa[1]! + (Math.floor(iova / 2 ** 20) % 512) * 8, tableLo(ipaOf(2)));
    m.memory.write32(
      s1Pa[2]! + (Math.floor(iova / 2 ** 11) % 512) * 8,
      fieldPrep(PTE.V, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1) | 0x2000_0000,
    );
    // Stage 2 maps the output IPA 0x2000_0000 to PA 0x6a00_0000, with dirty tracking.
    const s2leaf = t.map(s2root, LEVELS, 0x2000_0000, 0x6a00_0000, 0);
    t.writeCtx(dt + RID * 32, {
      mode: CTX_MODE.NESTED,
      levels: LEVELS,
      s1Levels: LEVELS,
      did: 9,
      s1id: 3,
      ttb: s2root,
      s1ttb: ipaOf(0),
      dirty: true,
    });
    t.invalidate(INV_OP.DEVICE, { rid: RID });
    const dev = m.device("mock-dev0");
    dev.dmaWrite(iova + 4, bytes(8));
    expect(m.memory.readBytes(0x6a00_0004, 8)).toEqual(bytes(8));
    expect(m.memory.read32(s2leaf) & fieldPrep(PTE.D, 1)).not.toBe(0);
    // An output IPA the parent does not map is a stage-2 fault.
    m.memory.write32(
      s1Pa[2]! + (Math.floor((iova + 2048) / 2 ** 11) % 512) * 8,
      fieldPrep(PTE.V, 1) | fieldPrep(PTE.R, 1) | 0x3000_0000,
    );
    expect(() => dev.dmaRead(iova + 2048, 4)).toThrow(/stage-2/);
    // Stage-1 invalidation by cache ID drops the nested entry.
    const hits = hw.stats.tlbHits;
    dev.dmaRead(iova, 4);
    expect(hw.stats.tlbHits).toBe(hits + 1);
    t.invalidate(INV_OP.S1, { did: 9, s1id: 3 });
    dev.dmaRead(iova, 4);
    expect(hw.stats.tlbHits).toBe(hits + 1);
  });

  it("turns faults of a PRI context into page requests and delivers page responses", () => {
    const { fq } = setupTranslate({ pri: true });
    const dev = m.device("mock-dev0");
    let err: unknown;
    try {
      dev.dmaWrite(0x100_0123, bytes(4));
    } catch (e) {
      err = e;
    }
    expect((err as DmaFault).faultCode).toBe(FAULT_CODE.PAGE_REQUEST);
    const r = record(fq, 0);
    expect(fieldGet(r.w0, FAULT.TYPE)).toBe(FAULT_TYPE.PAGE_REQUEST);
    expect(fieldGet(r.w0, FAULT.LAST)).toBe(1);
    expect(fieldGet(r.w0, FAULT.WRITE)).toBe(1);
    expect(r.addr).toBe(0x100_0000);
    // A device-issued group of two requests with a PASID.
    expect(
      hw.pageRequest({ requesterId: RID, pasid: -1, addr: 0x200_0000, read: true, write: false, prgi: 7, last: false }),
    ).toBe(true);
    expect(
      hw.pageRequest({ requesterId: RID, pasid: -1, addr: 0x200_0800, read: true, write: false, prgi: 7, last: true }),
    ).toBe(true);
    expect(record(fq, 1).prgi).toBe(7);
    expect(fieldGet(record(fq, 1).w0, FAULT.LAST)).toBe(0);
    expect(fieldGet(record(fq, 2).w0, FAULT.LAST)).toBe(1);
    t.writeReg(REG.FQ_HEAD, 3);
    t.writeReg(REG.PRESP_RID, RID);
    t.writeReg(REG.PRESP_PASID, fieldPrep(PRESP_PASID.PV, 0));
    t.writeReg(REG.PRESP_INFO, fieldPrep(PRESP_INFO.PRGI, 7) | fieldPrep(PRESP_INFO.CODE, 0));
    t.writeReg(REG.PRESP_SEND, 1);
    expect(hw.responses).toEqual([{ requesterId: RID, pasid: -1, prgi: 7, code: 0 }]);
  });

  it("answers page requests itself when the context has no PRI", () => {
    setupTranslate();
    expect(
      hw.pageRequest({ requesterId: RID, pasid: -1, addr: 0, read: true, write: false, prgi: 2, last: true }),
    ).toBe(false);
    expect(hw.responses).toEqual([{ requesterId: RID, pasid: -1, prgi: 2, code: 1 }]);
  });

  it("flags an overflow and drops records when the fault queue is full", () => {
    const { fq } = t.enable(4, 2); // 4 records: 3 usable
    void fq;
    const dev = m.device("mock-dev0");
    for (let i = 0; i < 5; i++) expect(() => dev.dmaRead(i * 2048, 4)).toThrow(DmaFault);
    expect(t.readReg(REG.FQ_TAIL)).toBe(3);
    expect(fieldGet(t.readReg(REG.STATUS), STATUS.FQ_OVF)).toBe(1);
    expect(hw.stats.dropped).toBe(2);
    t.writeReg(REG.STATUS, fieldPrep(STATUS.FQ_OVF, 1));
    expect(fieldGet(t.readReg(REG.STATUS), STATUS.FQ_OVF)).toBe(0);
  });

  it("faults addresses beyond the context's levels and entries with reserved bits", () => {
    const { root } = setupTranslate();
    const dev = m.device("mock-dev0");
    expect(() => dev.dmaRead(2 ** 38, 4)).toThrow(/address size/);
    const pte = t.map(root, LEVELS, 0x100_0000, 0x6000_0000, 0);
    m.memory.write32(pte + 4, 0x8000_0000);
    expect(() => dev.dmaRead(0x100_0000, 4)).toThrow(/bad table entry/);
  });
});
