/**
 * The SMMUv3 hardware model on its own: stream tables, CDs and page tables written by hand (test/hw/helpers),
 * registers programmed over MMIO, DMA from devices of the default platform (smmu-dma0 = SID 0x10, smmu-dma1 =
 * 0x11, nic0 = 0x108, gpu0 = 0x110). No driver is loaded.
 */
import { DmaFault, fieldGet, type Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { EVT_ID, IDR0, IDR1, IDR5, SMMU_ABORT, type Smmuv3Hw } from "../../src/hw/index.js";
import { bootSmmu, bytes, type Evt, PageTable, type Tables } from "./helpers/encoder.js";

const SID0 = 0x10;
const NIC = 0x108;
const GIB = 2 ** 30;
let m: Machine;
let t: Tables;
let hw: Smmuv3Hw;

async function boot(options: Record<string, unknown> = {}): Promise<void> {
  ({ m, t, hw } = await bootSmmu(options));
}

afterEach(async () => {
  await m.teardown();
});

function s1Setup(
  granLg2: number,
  opts: { asid?: number; sid?: number; ias?: number; cd?: Record<string, unknown> } = {},
) {
  const ias = opts.ias ?? 48;
  const pt = new PageTable(t, granLg2, ias);
  const cd = t.alloc(64, 64);
  const tg0 = granLg2 === 12 ? 0 : granLg2 === 16 ? 1 : 2;
  t.writeDwords(cd, cdOf({ t0sz: 64 - ias, tg0, asid: opts.asid ?? 1, ttb0: pt.root, ...opts.cd }));
  t.writeSte(opts.sid ?? SID0, { config: 5, s1ctx: cd });
  return { pt, cd };
}

import { cdDwords as cdOf } from "./helpers/encoder.js";

function dmaFault(fn: () => unknown): DmaFault {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFault) return e;
    throw e;
  }
  throw new Error("expected a DmaFault");
}

function only(evts: Evt[]): Evt {
  expect(evts).toHaveLength(1);
  return evts[0]!;
}

describe("registers", () => {
  it("reports the platform's features through the IDRs", async () => {
    await boot({ stages: "s1s2", sidBits: 16, ssidBits: 20, oas: 44, granules: [4096, 65536], pri: true, ats: true });
    const idr0 = t.r32(0x0);
    expect(fieldGet(idr0, IDR0.S1P)).toBe(1);
    expect(fieldGet(idr0, IDR0.S2P)).toBe(1);
    expect(fieldGet(idr0, IDR0.TTF)).toBe(2);
    expect(fieldGet(idr0, IDR0.PRI)).toBe(1);
    expect(fieldGet(idr0, IDR0.ATS)).toBe(1);
    expect(fieldGet(idr0, IDR0.ST_LEVEL)).toBe(1);
    expect(fieldGet(idr0, IDR0.HTTU)).toBe(2);
    expect(idr0 & 0x3).toBe(3); // literal: S2P bit 0, S1P bit 1
    const idr1 = t.r32(0x4);
    expect(idr1 & 0x3f).toBe(16);
    expect((idr1 >>> 6) & 0x1f).toBe(20);
    expect(fieldGet(idr1, IDR1.CMDQS)).toBe(8);
    const idr5 = t.r32(0x14);
    expect(idr5 & 7).toBe(4); // 44 bits
    expect(fieldGet(idr5, IDR5.GRAN4K)).toBe(1);
    expect(fieldGet(idr5, IDR5.GRAN16K)).toBe(0);
    expect(fieldGet(idr5, IDR5.GRAN64K)).toBe(1);
  });

  it("mirrors CR0 into CR0ACK and IRQ_CTRL into IRQ_CTRLACK", async () => {
    await boot();
    t.w32(0x20, 0b1100);
    expect(t.r32(0x24)).toBe(0b1100);
    t.w32(0x50, 0b101);
    expect(t.r32(0x54)).toBe(0b101);
  });

  it("GBPA decides disabled-SMMU traffic: bypass by default, abort after an UPDATE with ABORT", async () => {
    await boot();
    const dev = m.device("smmu-dma0");
    dev.dmaWrite(0x5000_0000, bytes(16));
    expect(m.memory.readBytes(0x5000_0000, 16)).toEqual(bytes(16));
    t.w32(0x44, 1 << 20); // ABORT without UPDATE: ignored
    expect(t.r32(0x44) & (1 << 20)).toBe(0);
    t.w32(0x44, (1 << 31) | (1 << 20));
    expect(t.r32(0x44) >>> 31).toBe(0); // UPDATE completes at once
    expect(dmaFault(() => dev.dmaRead(0x5000_0000, 4)).faultCode).toBe(SMMU_ABORT);
  });
});

describe("stage 1", () => {
  for (const g of [12, 14, 16]) {
    it(`translates pages, blocks and contiguous ranges with the ${2 ** (g - 10)}K granule`, async () => {
      await boot({ strict: true });
      t.enable();
      const { pt } = s1Setup(g);
      const page = 2 ** g;
      const blockLg2 = g + (g - 3);
      pt.map(0x10_0000_0000 % 2 ** 48, 0x6000_0000, page * 2);
      pt.map(2 ** blockLg2 * 3, 0x8000_0000, 2 ** blockLg2, {}, 2);
      const contN = g === 12 ? 16 : g === 14 ? 128 : 32;
      pt.map(0x2000_0000_0000 % 2 ** 47, 0x7000_0000, page * contN, { cont: true });
      const dev = m.device("smmu-dma0");
      dev.dmaWrite(0x10_0000_0000 + page - 8, bytes(16)); // crosses into the second page
      expect(m.memory.readBytes(0x6000_0000 + page - 8, 16)).toEqual(bytes(16));
      const inBlock = 2 ** blockLg2 * 3 + 2 ** blockLg2 / 2 + 24;
      dev.dmaWrite(inBlock, bytes(8, 3));
      expect(m.memory.readBytes(0x8000_0000 + 2 ** blockLg2 / 2 + 24, 8)).toEqual(bytes(8, 3));
      dev.dmaWrite((0x2000_0000_0000 % 2 ** 47) + page * 5 + 4, bytes(4, 9));
      expect(m.memory.readBytes(0x7000_0000 + page * 5 + 4, 4)).toEqual(bytes(4, 9));
      expect(dev.dmaRead(inBlock, 8)).toEqual(bytes(8, 3));
      expect(hw.stats.tlbHits).toBeGreaterThan(0);
      expect(m.diag.unexpected()).toHaveLength(0);
    });
  }

  it("faults: translation, permission (read-only, privileged-only, XN), access flag, address size, walk abort", async () => {
    await boot();
    t.enable();
    const { pt, cd } = s1Setup(12, { ias: 39, cd: { ips: 2 } }); // IPS 40 bits
    pt.map(0x1000, 0x6000_0000, 0x1000, { ro: true });
    pt.map(0x2000, 0x6000_1000, 0x1000, { privOnly: true });
    pt.map(0x3000, 0x6000_2000, 0x1000, { af: false });
    pt.map(0x4000, 0x6000_3000, 0x1000, { xn: true });
    pt.map(0x5000, 2 ** 44, 0x1000); // beyond IPS
    const dev = m.device("smmu-dma0");
    expect(dmaFault(() => dev.dmaRead(0x9000, 4)).faultCode).toBe(EVT_ID.F_TRANSLATION);
    let e = only(t.events());
    expect(e).toMatchObject({ id: 0x10, sid: SID0, ssv: false, addr: 0x9000, rnw: true, s2: false });
    expect(dev.dmaRead(0x1000, 4)).toHaveLength(4);
    expect(dmaFault(() => dev.dmaWrite(0x1008, bytes(4))).faultCode).toBe(EVT_ID.F_PERMISSION);
    e = only(t.events());
    expect(e).toMatchObject({ id: 0x13, addr: 0x1008, rnw: false, pnu: false });
    expect(dmaFault(() => dev.dmaRead(0x2000, 4)).faultCode).toBe(EVT_ID.F_PERMISSION);
    expect(dev.dmaRead(0x2000, 4, { privileged: true })).toHaveLength(4);
    expect(only(t.events())).toMatchObject({ id: 0x13, pnu: false });
    expect(dmaFault(() => dev.dmaRead(0x3000, 4)).faultCode).toBe(EVT_ID.F_ACCESS);
    expect(only(t.events()).id).toBe(0x12);
    expect(dmaFault(() => dev.dmaRead(0x4000, 4, { exec: true })).faultCode).toBe(EVT_ID.F_PERMISSION);
    expect(only(t.events())).toMatchObject({ id: 0x13, ind: true });
    expect(dmaFault(() => dev.dmaRead(0x5000, 4)).faultCode).toBe(EVT_ID.F_ADDR_SIZE);
    expect(only(t.events()).id).toBe(0x11);
    // Input beyond T0SZ's range.
    expect(dmaFault(() => dev.dmaRead(2 ** 40, 4)).faultCode).toBe(EVT_ID.F_TRANSLATION);
    t.events();
    // TTB0 outside memory (but inside IPS): external abort on the walk.
    t.writeDwords(cd, cdOf({ t0sz: 25, asid: 2, ttb0: 0x10_0000_0000 })); // new ASID: the TLB still holds ASID 1
    t.cfgiCd(SID0, 0);
    expect(dmaFault(() => dev.dmaRead(0x1000, 4)).faultCode).toBe(EVT_ID.F_WALK_EABT);
    expect(only(t.events()).id).toBe(0x0b);
  });

  it("does not record faults when CD.R is clear", async () => {
    await boot();
    t.enable();
    s1Setup(12, { cd: { r: false } });
    expect(dmaFault(() => m.device("smmu-dma0").dmaRead(0x9000, 4)).faultCode).toBe(EVT_ID.F_TRANSLATION);
    expect(t.events()).toHaveLength(0);
  });

  it("HTTU: sets the access flag (HA) and clears AP[2] of writable-clean leaves (HD)", async () => {
    await boot();
    t.enable();
    const { pt } = s1Setup(12, { cd: { ha: true, hd: true } });
    pt.map(0x1000, 0x6000_0000, 0x1000, { af: false });
    pt.map(0x2000, 0x6000_1000, 0x1000, { ro: true, dbm: true });
    pt.map(0x3000, 0x6000_2000, 0x1000, { ro: true });
    const dev = m.device("smmu-dma0");
    dev.dmaRead(0x1000, 4);
    expect(m.memory.read32(pt.pte(0x1000)) & (1 << 10)).not.toBe(0);
    dev.dmaRead(0x2000, 4);
    expect(m.memory.read32(pt.pte(0x2000)) & (1 << 7)).not.toBe(0); // still clean after a read
    dev.dmaWrite(0x2000, bytes(4));
    expect(m.memory.read32(pt.pte(0x2000)) & (1 << 7)).toBe(0); // dirty
    expect(dmaFault(() => dev.dmaWrite(0x3000, bytes(4))).faultCode).toBe(EVT_ID.F_PERMISSION);
  });

  it("SubstreamIDs select CDs in linear and 2-level CD tables; S1DSS decides traffic without one", async () => {
    await boot();
    t.enable();
    const ptA = new PageTable(t, 12, 48);
    const ptB = new PageTable(t, 12, 48);
    ptA.map(0x1000, 0x6000_0000, 0x1000);
    ptB.map(0x1000, 0x6100_0000, 0x1000);
    // Linear: 8 CDs.
    const cds = t.alloc(64 * 8, 64);
    t.writeDwords(cds, cdOf({ t0sz: 16, asid: 1, ttb0: ptA.root }));
    t.writeDwords(cds + 64 * 5, cdOf({ t0sz: 16, asid: 2, ttb0: ptB.root }));
    t.writeSte(SID0, { config: 5, s1ctx: cds, s1cdmax: 3, s1dss: 2 });
    const dev = m.device("smmu-dma0");
    dev.dmaWrite(0x1000, bytes(4, 1), { pasid: 5 });
    expect(m.memory.readBytes(0x6100_0000, 4)).toEqual(bytes(4, 1));
    dev.dmaWrite(0x1000, bytes(4, 2)); // no SSID: CD 0 (S1DSS = SSID0)
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4, 2));
    expect(dmaFault(() => dev.dmaRead(0x1000, 4, { pasid: 8 })).faultCode).toBe(EVT_ID.C_BAD_SUBSTREAMID);
    expect(only(t.events())).toMatchObject({ id: 0x08, ssv: true, ssid: 8, sid: SID0 });
    // SubstreamID 0 is CD 0's, which S1DSS = 0b10 gave to traffic without one: terminated, F_STREAM_DISABLED.
    expect(dmaFault(() => dev.dmaRead(0x1000, 4, { pasid: 0 })).faultCode).toBe(EVT_ID.F_STREAM_DISABLED);
    expect(only(t.events())).toMatchObject({ id: 0x06, ssv: true, ssid: 0, sid: SID0 });
    expect(dmaFault(() => dev.dmaRead(0x1000, 4, { pasid: 3 })).faultCode).toBe(EVT_ID.C_BAD_CD);
    expect(only(t.events())).toMatchObject({ id: 0x0a, ssid: 3 });
    // Two-level, 64K leaves (S1Fmt 2): SSID 1030 lives in leaf 1, entry 6.
    const l1 = t.alloc(8 * 4, 64);
    const leaf = t.alloc(64 * 1024);
    m.memory.write64(l1 + 8, BigInt(leaf) | 1n);
    t.writeDwords(leaf + 64 * 6, cdOf({ t0sz: 16, asid: 3, ttb0: ptB.root }));
    t.writeSte(0x11, { config: 5, s1ctx: l1, s1fmt: 2, s1cdmax: 12, s1dss: 0 });
    const dev1 = m.device("smmu-dma1");
    dev1.dmaWrite(0x1000, bytes(4, 7), { pasid: 1030 });
    expect(m.memory.readBytes(0x6100_0000, 4)).toEqual(bytes(4, 7));
    expect(dmaFault(() => dev1.dmaRead(0x1000, 4, { pasid: 6 })).faultCode).toBe(EVT_ID.C_BAD_SUBSTREAMID);
    expect(only(t.events()).id).toBe(0x08); // L1CD.V = 0
    expect(dmaFault(() => dev1.dmaRead(0x1000, 4)).faultCode).toBe(EVT_ID.F_STREAM_DISABLED);
    expect(only(t.events())).toMatchObject({ id: 0x06, sid: 0x11, ssv: false });
  });
});

describe("STE.S1DSS (spec 5.2)", () => {
  /** SID0 with a linear table of 4 CDs (CD 0 → ptA, CD 1 → ptB) and the given S1DSS. */
  function dssSetup(s1dss: number) {
    const ptA = new PageTable(t, 12, 48);
    const ptB = new PageTable(t, 12, 48);
    ptA.map(0x1000, 0x6000_0000, 0x1000);
    ptB.map(0x1000, 0x6100_0000, 0x1000);
    const cds = t.alloc(64 * 4, 64 * 4);
    t.writeDwords(cds, cdOf({ t0sz: 16, asid: 1, ttb0: ptA.root }));
    t.writeDwords(cds + 64, cdOf({ t0sz: 16, asid: 2, ttb0: ptB.root }));
    t.writeSte(SID0, { config: 5, s1ctx: cds, s1cdmax: 2, s1dss });
  }

  it("0b11 is reserved and behaves as 0b00: traffic without a SubstreamID is terminated, SubstreamID 0 uses CD 0", async () => {
    await boot();
    t.enable();
    dssSetup(3);
    const dev = m.device("smmu-dma0");
    expect(dmaFault(() => dev.dmaRead(0x1000, 4)).faultCode).toBe(EVT_ID.F_STREAM_DISABLED);
    expect(only(t.events())).toMatchObject({ id: 0x06, sid: SID0, ssv: false });
    dev.dmaWrite(0x1000, bytes(4, 5), { pasid: 0 });
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4, 5));
    dev.dmaWrite(0x1000, bytes(4, 6), { pasid: 1 });
    expect(m.memory.readBytes(0x6100_0000, 4)).toEqual(bytes(4, 6));
    expect(t.events()).toHaveLength(0);
  });

  it("0b10: traffic without a SubstreamID uses CD 0; SubstreamID 0 is terminated with F_STREAM_DISABLED", async () => {
    await boot();
    t.enable();
    dssSetup(2);
    const dev = m.device("smmu-dma0");
    dev.dmaWrite(0x1000, bytes(4, 7));
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4, 7));
    expect(dmaFault(() => dev.dmaRead(0x1000, 4, { pasid: 0 })).faultCode).toBe(EVT_ID.F_STREAM_DISABLED);
    expect(only(t.events())).toMatchObject({ id: 0x06, sid: SID0, ssv: true, ssid: 0 });
    dev.dmaWrite(0x1000, bytes(4, 8), { pasid: 1 });
    expect(m.memory.readBytes(0x6100_0000, 4)).toEqual(bytes(4, 8));
  });
});

describe("stream table and configuration errors", () => {
  it("abort and bypass STEs; C_BAD_STREAMID, C_BAD_STE, F_STE_FETCH, F_CD_FETCH", async () => {
    await boot();
    t.enable({ stLog2: 9 });
    const dev = m.device("smmu-dma0");
    t.writeSte(SID0, { config: 4 });
    dev.dmaWrite(0x5000_0000, bytes(8));
    expect(m.memory.readBytes(0x5000_0000, 8)).toEqual(bytes(8));
    t.writeSte(SID0, { config: 0 });
    t.cfgiSte(SID0);
    expect(dmaFault(() => dev.dmaRead(0, 4)).faultCode).toBe(SMMU_ABORT);
    expect(t.events()).toHaveLength(0); // abort STEs terminate silently
    t.writeSte(SID0, { config: 4, v: false });
    t.cfgiSte(SID0);
    expect(dmaFault(() => dev.dmaRead(0, 4)).faultCode).toBe(EVT_ID.C_BAD_STE);
    expect(only(t.events())).toMatchObject({ id: 0x04, sid: SID0 });
    // Reserved Config 0b001-0b011 behave as 0b000 (spec 5.2): abort, no event, whatever the other fields say.
    for (const config of [1, 2, 3]) {
      t.writeSte(SID0, { config, s1ctx: 0x20_0000_0000, s1fmt: 3, s1cdmax: 31, eats: 3, strw: 1, s2tg: 3 });
      t.cfgiSte(SID0);
      expect(dmaFault(() => dev.dmaRead(0, 4)).faultCode).toBe(SMMU_ABORT);
      expect(dmaFault(() => dev.dmaRead(0, 4, { pasid: 1 })).faultCode).toBe(SMMU_ABORT);
      expect(t.events()).toHaveLength(0);
    }
    // nic0 (SID 0x108) is beyond a 2^8-entry table.
    t.w32(0x20, 0b1110);
    t.w32(0x88, 8);
    t.w32(0x20, 0b1111);
    expect(dmaFault(() => m.device("nic0").dmaRead(0, 4)).faultCode).toBe(EVT_ID.C_BAD_STREAMID);
    expect(only(t.events())).toMatchObject({ id: 0x02, sid: NIC });
    // STE fetch from beyond memory.
    t.w32(0x20, 0b1110);
    t.w64(0x80, 0x10_0000_0000);
    t.w32(0x20, 0b1111);
    t.cfgiAll();
    expect(dmaFault(() => dev.dmaRead(0, 4)).faultCode).toBe(EVT_ID.F_STE_FETCH);
    expect(only(t.events())).toMatchObject({ id: 0x03, addr2: 0x10_0000_0000 + SID0 * 64 });
    t.w32(0x20, 0b1110);
    t.w64(0x80, t.strtab);
    t.w32(0x20, 0b1111);
    t.writeSte(SID0, { config: 5, s1ctx: 0x20_0000_0000 });
    t.cfgiAll();
    expect(dmaFault(() => dev.dmaRead(0, 4)).faultCode).toBe(EVT_ID.F_CD_FETCH);
    expect(only(t.events())).toMatchObject({ id: 0x09, addr2: 0x20_0000_0000 });
  });

  it("2-level stream tables: L1 descriptors with SPAN, L2 STEs", async () => {
    await boot();
    t.enable({ stLog2: 16, twoLevel: { split: 8 } });
    t.writeSte(NIC, { config: 4 });
    m.device("nic0").dmaWrite(0x5000_0000, bytes(8));
    expect(m.memory.readBytes(0x5000_0000, 8)).toEqual(bytes(8));
    // gpu0 (0x110) shares L1 entry 1 but has an invalid STE; smmu-dma0 (0x10) has no L2 table (SPAN 0).
    expect(dmaFault(() => m.device("gpu0").dmaRead(0, 4)).faultCode).toBe(EVT_ID.C_BAD_STE);
    expect(dmaFault(() => m.device("smmu-dma0").dmaRead(0, 4)).faultCode).toBe(EVT_ID.C_BAD_STREAMID);
    expect(t.events().map((e) => [e.id, e.sid])).toEqual([
      [0x04, 0x110],
      [0x02, 0x10],
    ]);
  });
});

describe("stage 2 and nested", () => {
  for (const g of [12, 14, 16]) {
    it(`stage 2 with the ${2 ** (g - 10)}K granule (S2SL0 start levels, S2AP permissions)`, async () => {
      await boot();
      t.enable();
      const ias = g === 12 ? 40 : g === 14 ? 36 : 42;
      // Start levels: 4K/40 bits → level 1 (SL0 1, two concatenated tables); 16K/36 → level 2 (SL0 1); 64K/42 → level 2 (SL0 1).
      const start = g === 12 ? 1 : 2;
      const pt = new PageTable(t, g, ias, true, start);
      const tg = g === 12 ? 0 : g === 16 ? 1 : 2;
      pt.map(0x1_0000_0000, 0x6000_0000, 2 ** g);
      pt.map(0x2_0000_0000, 0x6100_0000, 2 ** g, { s2w: false });
      t.writeSte(NIC, { config: 6, vmid: 7, s2t0sz: 64 - ias, s2sl0: 1, s2tg: tg, s2ps: 5, s2ttb: pt.root });
      const dev = m.device("nic0");
      dev.dmaWrite(0x1_0000_0000 + 16, bytes(8));
      expect(m.memory.readBytes(0x6000_0000 + 16, 8)).toEqual(bytes(8));
      expect(dmaFault(() => dev.dmaWrite(0x2_0000_0000, bytes(4))).faultCode).toBe(EVT_ID.F_PERMISSION);
      expect(only(t.events())).toMatchObject({ id: 0x13, s2: true, sid: NIC, addr2: 0x2_0000_0000, cls: 2 });
      expect(dmaFault(() => dev.dmaRead(0x3_0000_0000, 4)).faultCode).toBe(EVT_ID.F_TRANSLATION);
      expect(only(t.events())).toMatchObject({ id: 0x10, s2: true, addr2: 0x3_0000_0000 });
    });
  }

  it("nested: stage-1 tables and CDs are read at IPAs translated by stage 2", async () => {
    await boot({ strict: true });
    t.enable();
    // Stage 2 maps IPA [4 GiB, 5 GiB) → PA [1 GiB, 2 GiB) with one 1 GiB block, and IPA 8 GiB → data at PA 0x7000_0000.
    const s2 = new PageTable(t, 12, 40, true, 1);
    const ipaOff = 4 * GIB - 1 * GIB;
    s2.map(4 * GIB, 1 * GIB, GIB, {}, 1);
    s2.map(8 * GIB, 0x7000_0000, 0x20_0000, {}, 2);
    const s1 = new PageTable(t, 12, 48, false, undefined, ipaOff);
    s1.map(0x1234_5000, 8 * GIB + 0x3000, 0x1000);
    const cd = t.alloc(64, 64);
    t.writeDwords(cd, cdOf({ t0sz: 16, asid: 9, ttb0: s1.root + ipaOff }));
    t.writeSte(SID0, {
      config: 7,
      s1ctx: cd + ipaOff,
      vmid: 3,
      s2t0sz: 24,
      s2sl0: 1,
      s2tg: 0,
      s2ps: 5,
      s2ttb: s2.root,
    });
    const dev = m.device("smmu-dma0");
    dev.dmaWrite(0x1234_5010, bytes(8));
    expect(m.memory.readBytes(0x7000_3010, 8)).toEqual(bytes(8));
    expect(dev.dmaRead(0x1234_5010, 8)).toEqual(bytes(8));
    // Stage-2 fault on the final IPA.
    s1.map(0x2000, 9 * GIB, 0x1000);
    expect(dmaFault(() => dev.dmaRead(0x2000, 4)).faultCode).toBe(EVT_ID.F_TRANSLATION);
    expect(only(t.events())).toMatchObject({ id: 0x10, s2: true, cls: 2, addr2: 9 * GIB });
    // Stage-2 fault on a stage-1 table fetch (CLASS = TT): point a level-0 entry at an unmapped IPA.
    m.memory.write64(s1.root + 8 * 5, BigInt(10 * GIB) | 3n);
    expect(dmaFault(() => dev.dmaRead(5 * 2 ** 39, 4)).faultCode).toBe(EVT_ID.F_TRANSLATION);
    expect(only(t.events())).toMatchObject({ id: 0x10, s2: true, cls: 1, addr2: 10 * GIB });
    expect(m.diag.unexpected()).toHaveLength(0);
  });
});
