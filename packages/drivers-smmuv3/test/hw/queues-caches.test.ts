/**
 * SMMUv3 model: command queue (CFGI/TLBI/SYNC, illegal commands, deferred consumption), caches (tiny sizes,
 * invalidation only by the architected commands, strict-mode stale detection), event-queue overflow and the PRI
 * queue. Tables written by hand; no driver.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { PRI_PERM, type Smmuv3Hw } from "../../src/hw/index.js";
import { bootSmmu, bytes, cdDwords, f, PageTable, type Tables } from "./helpers/encoder.js";

const SID0 = 0x10;
const NIC = 0x108;
let m: Machine;
let t: Tables;
let hw: Smmuv3Hw;

async function boot(options: Record<string, unknown> = {}): Promise<void> {
  ({ m, t, hw } = await bootSmmu(options));
}

afterEach(async () => {
  await m.teardown();
});

/** Stage 1 for SID0 with a fresh 4K table, ASID `asid`. */
function s1(asid = 1, sid = SID0): PageTable {
  const pt = new PageTable(t, 12, 48);
  const cd = t.alloc(64, 64);
  t.writeDwords(cd, cdDwords({ t0sz: 16, asid, ttb0: pt.root }));
  t.writeSte(sid, { config: 5, s1ctx: cd, eats: 1 });
  return pt;
}

describe("command queue", () => {
  it("consumes commands when PROD is written; CMD_SYNC with an MSI address writes MSIDATA", async () => {
    await boot();
    t.enable();
    const flag = t.alloc(4096);
    t.cfgiAll();
    t.tlbiNsnhAll();
    t.sync(flag, 0xabcd);
    expect(t.r32(0x9c) & 0xfffff).toBe(3);
    expect(m.memory.read32(flag)).toBe(0xabcd);
    expect(hw.stats.syncs).toBe(1);
    let irqs = 0;
    hw.connectIrq("cmdq-sync", () => irqs++);
    t.cmd(0x46n | f(1, 12)); // CS = SIG_IRQ without an address: the wired interrupt
    t.cmd(0x46n | f(2, 12)); // CS = SEV
    expect(irqs).toBe(1);
    expect(hw.sevCount).toBe(1);
  });

  it("an illegal command raises GERROR.CMDQ_ERR with CONS.ERR = CERROR_ILL and stops until GERRORN acknowledges", async () => {
    await boot();
    t.enable();
    let gerr = 0;
    hw.connectIrq("gerror", () => gerr++);
    t.w32(0x50, 1); // GERROR_IRQEN
    t.cmd(0x46n, 0n, false);
    t.cmd(0x7fn, 0n, false); // not an opcode
    t.cmd(0x46n, 0n, false);
    t.w32(0x98, t.pendingProd);
    const cons = t.r32(0x9c);
    expect(cons & 0xff).toBe(1); // stopped at the bad command
    expect((cons >>> 24) & 0x7f).toBe(1); // CERROR_ILL
    expect(t.r32(0x60) & 1).toBe(1);
    expect(gerr).toBe(1);
    // The driver's skip: replace the bad command with a CMD_SYNC, then acknowledge.
    m.memory.write64(t.cmdq + 16, 0x46n);
    t.w32(0x64, t.r32(0x60));
    expect(t.r32(0x9c) & 0xff).toBe(3);
    // Illegal for the implemented features: RESUME with RESP 3, CMD_SYNC with CS 3.
    t.cmd(0x46n | f(3, 12));
    expect((t.r32(0x9c) >>> 24) & 0x7f).toBe(1);
    expect((t.r32(0x60) ^ t.r32(0x64)) & 1).toBe(1);
  });

  it("cmdqBatch defers consumption so a full queue is observable; step() makes progress", async () => {
    await boot({ cmdqBatch: 1 });
    t.enable({ cmdqLog2: 2 }); // 4 entries
    for (let i = 0; i < 4; i++) t.cmd(0x46n, 0n, false);
    t.w32(0x98, t.pendingProd); // PROD = wrap|0: full
    expect(t.r32(0x98)).toBe(0b100);
    expect(hw.pendingCommands).toBe(3); // the PROD write consumed one
    expect(hw.step(2)).toBe(2);
    expect(hw.step()).toBe(1);
    expect(hw.pendingCommands).toBe(0);
    expect(t.r32(0x9c)).toBe(0b100);
  });

  it("each CMDQ_CONS read is a slice of time: cmdqBatch more commands consumed per poll", async () => {
    await boot({ cmdqBatch: 2 });
    t.enable({ cmdqLog2: 3 }); // 8 entries
    for (let i = 0; i < 7; i++) t.cmd(0x46n, 0n, false);
    t.w32(0x98, t.pendingProd);
    expect(hw.pendingCommands).toBe(5);
    expect(t.r32(0x9c)).toBe(4); // the poll consumed two more before CONS was read
    expect(t.r32(0x98)).toBe(7); // other registers do not advance the queue
    expect(hw.pendingCommands).toBe(3);
    expect(t.r32(0x9c)).toBe(6);
    expect(t.r32(0x9c)).toBe(7);
    expect(t.r32(0x9c)).toBe(7);
    expect(hw.stats.syncs).toBe(7);
  });

  it("cmdqBatch 0: neither PROD writes nor CONS polls consume; only step()", async () => {
    await boot({ cmdqBatch: 0 });
    t.enable({ cmdqLog2: 2 });
    for (let i = 0; i < 2; i++) t.cmd(0x46n, 0n, false);
    t.w32(0x98, t.pendingProd);
    for (let i = 0; i < 5; i++) expect(t.r32(0x9c)).toBe(0);
    expect(hw.step()).toBe(2);
    expect(t.r32(0x9c)).toBe(2);
  });

  it("records ATC_INV, PRI_RESP and RESUME for the endpoints", async () => {
    await boot();
    t.enable();
    t.cmd(0x40n | f(1, 11) | f(5, 12) | f(NIC, 32), 0x1234_5000n | 3n);
    t.cmd(0x41n | f(1, 11) | f(7, 12) | f(NIC, 32), 0x1fn | f(2, 12));
    t.cmd(0x44n | f(1, 12) | f(NIC, 32), 0x42n);
    expect(hw.atcInvalidations).toEqual([{ sid: NIC, ssid: 5, addr: 0x1234_5000, size: 3, global: false }]);
    expect(hw.priResponses).toEqual([{ sid: NIC, ssid: 7, grpIdx: 0x1f, resp: 2, auto: false }]);
    expect(hw.resumes).toEqual([{ sid: NIC, stag: 0x42, resp: 1 }]);
  });
});

describe("caches", () => {
  it("configuration cache: an STE change takes effect only after CFGI_STE (or CFGI_ALL)", async () => {
    await boot();
    t.enable();
    const dev = m.device("smmu-dma0");
    t.writeSte(SID0, { config: 4 });
    dev.dmaRead(0x5000_0000, 4);
    t.writeSte(SID0, { config: 0 });
    expect(dev.dmaRead(0x5000_0000, 4)).toHaveLength(4); // cached bypass STE
    t.cfgiSte(0x11); // another stream: no effect
    expect(dev.dmaRead(0x5000_0000, 4)).toHaveLength(4);
    t.cfgiSte(SID0);
    expect(() => dev.dmaRead(0x5000_0000, 4)).toThrow(DmaFault);
    t.writeSte(SID0, { config: 4 });
    t.cmd(0x04n | f(0x18, 32), 3n); // CFGI_STE_RANGE 0x10..0x1f
    expect(dev.dmaRead(0x5000_0000, 4)).toHaveLength(4);
  });

  it("CFGI_STE drops every CD cached through the StreamID whatever Leaf says (spec 4.3.1; Linux sends Leaf=1)", async () => {
    await boot({ strict: true });
    t.enable();
    const dev = m.device("smmu-dma0");
    const ptA = new PageTable(t, 12, 48);
    const ptB = new PageTable(t, 12, 48);
    ptA.map(0x1000, 0x6000_0000, 0x1000);
    ptB.map(0x1000, 0x6100_0000, 0x1000);
    const tableA = t.alloc(64 * 8, 64 * 8);
    const tableB = t.alloc(64 * 8, 64 * 8);
    t.writeDwords(tableA + 64 * 3, cdDwords({ t0sz: 16, asid: 1, ttb0: ptA.root }));
    t.writeDwords(tableB + 64 * 3, cdDwords({ t0sz: 16, asid: 2, ttb0: ptB.root }));
    t.writeSte(SID0, { config: 5, s1ctx: tableA, s1cdmax: 3, s1dss: 0 });
    dev.dmaWrite(0x1000, bytes(4, 1), { pasid: 3 });
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4, 1));
    // The guest repoints its vSTE at another CD table and invalidates the STE the way Linux does (Leaf = 1).
    t.writeSte(SID0, { config: 5, s1ctx: tableB, s1cdmax: 3, s1dss: 0 });
    t.cfgiSte(SID0, true);
    t.sync();
    dev.dmaWrite(0x1000, bytes(4, 2), { pasid: 3 });
    expect(m.memory.readBytes(0x6100_0000, 4)).toEqual(bytes(4, 2));
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4, 1)); // nothing reached the old CD's tables
    // Repointed at a 2-level table whose L1CD is invalid: the SubstreamID no longer resolves.
    const l1 = t.alloc(8 * 2, 64);
    t.writeSte(SID0, { config: 5, s1ctx: l1, s1fmt: 1, s1cdmax: 7, s1dss: 0 });
    t.cfgiSte(SID0, true);
    expect(() => dev.dmaRead(0x1000, 4, { pasid: 3 })).toThrow(DmaFault);
    expect(t.events().map((e) => e.id)).toEqual([0x08]); // C_BAD_SUBSTREAMID: L1CD.V = 0
    expect(m.diag.unexpected()).toHaveLength(0);
  });

  it("TLB: a PTE change takes effect only after a TLBI covering it; TTL hints must match the leaf level", async () => {
    await boot();
    t.enable();
    const pt = s1(1);
    pt.map(0x1000, 0x6000_0000, 0x1000);
    pt.map(0x40_0000, 0x6100_0000, 0x20_0000, {}, 2); // 2M block
    const dev = m.device("smmu-dma0");
    dev.dmaRead(0x1000, 4);
    dev.dmaRead(0x40_1000, 4);
    pt.map(0x1000, 0x6200_0000, 0x1000);
    dev.dmaWrite(0x1000, bytes(4));
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4)); // stale translation used
    t.tlbiNhVa(2, 0x1000); // other ASID
    dev.dmaWrite(0x1000, bytes(4, 2));
    expect(m.memory.readBytes(0x6000_0000, 4)).toEqual(bytes(4, 2));
    t.tlbiNhVa(1, 0x1000);
    dev.dmaWrite(0x1000, bytes(4, 3));
    expect(m.memory.readBytes(0x6200_0000, 4)).toEqual(bytes(4, 3));
    // Block: a single-address TLBI anywhere in the block drops it; a range TLBI with the wrong TTL does not.
    pt.map(0x40_0000, 0x6300_0000, 0x20_0000, {}, 2);
    // TG=1 (4K), NUM=0, SCALE=0, TTL=3 (level 3): the block is a level-2 leaf, so it survives.
    t.cmd(0x12n | f(1, 48), 0x40_1000n | 1n | f(3, 8) | f(1, 10));
    dev.dmaWrite(0x40_1000, bytes(4, 4));
    expect(m.memory.readBytes(0x6100_1000, 4)).toEqual(bytes(4, 4));
    t.tlbiNhVa(1, 0x5f_f000);
    dev.dmaWrite(0x40_1000, bytes(4, 5));
    expect(m.memory.readBytes(0x6300_1000, 4)).toEqual(bytes(4, 5));
  });

  it("tiny caches (2 entries) still translate correctly and replace entries", async () => {
    await boot({ tlbEntries: 2, cfgEntries: 2, walkCacheEntries: 2, replacement: "lru" });
    t.enable();
    expect(hw.tlb.entries).toBe(2);
    const pts = [s1(1, SID0), s1(2, 0x11), s1(3, NIC)];
    const devs = ["smmu-dma0", "smmu-dma1", "nic0"].map((n) => m.device(n));
    for (let i = 0; i < 3; i++) pts[i]!.map(0, 0x6000_0000 + i * 0x10_0000, 0x8000);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) {
        for (let p = 0; p < 8; p++) {
          devs[i]!.dmaWrite(p * 0x1000 + 8, bytes(4, i + p + round));
          expect(m.memory.readBytes(0x6000_0000 + i * 0x10_0000 + p * 0x1000 + 8, 4)).toEqual(bytes(4, i + p + round));
        }
      }
    }
    expect(hw.tlb.used).toBeLessThanOrEqual(2);
    expect(hw.steCache.used).toBeLessThanOrEqual(2);
    expect(hw.stats.steMisses).toBeGreaterThan(3);
    expect(hw.stats.walkCacheHits).toBeGreaterThan(0);
  });
});

describe("strict mode", () => {
  it("reports a stale TLB entry when a PTE changes without a TLBI, and nothing when the TLBI is issued", async () => {
    await boot({ strict: true });
    t.enable();
    const pt = s1(4);
    pt.map(0x7000, 0x6000_0000, 0x1000);
    const dev = m.device("smmu-dma0");
    dev.dmaRead(0x7000, 4);
    // With the TLBI: clean.
    pt.map(0x7000, 0x6100_0000, 0x1000);
    t.tlbiNhVa(4, 0x7000);
    t.sync();
    dev.dmaRead(0x7000, 4);
    expect(m.diag.unexpected()).toHaveLength(0);
    // Without: caught, naming the stream, ASID, VMID and IOVA.
    pt.map(0x7000, 0x6200_0000, 0x1000);
    const d = await m.diag.expectWarning(
      { message: /stale TLB entry/, culprit: /StreamID 0x10 ASID 4 VMID 0 IOVA 0x7000/ },
      () => dev.dmaRead(0x7000, 4),
    );
    expect(d).toHaveLength(1);
    expect(hw.stats.staleReports).toBe(1);
  });

  it("reports stale STE / CD cache entries and stale walk-cache entries", async () => {
    await boot({ strict: true });
    t.enable();
    const pt = s1(5);
    pt.map(0x1000, 0x6000_0000, 0x1000);
    const dev = m.device("smmu-dma0");
    dev.dmaRead(0x1000, 4);
    // Replace the last-level table with a leaf-only TLBI: the walk cache still points at the old table.
    const l2 = pt.slot(0x1000, 2);
    const fresh = t.alloc(4096);
    m.memory.write64(fresh + 8, 0x6100_0000n | 0x743n);
    m.memory.write64(l2, BigInt(fresh) | 3n);
    t.tlbiNhVa(5, 0x1000, true);
    await m.diag.expectWarning(/stale walk-cache entry/, () => dev.dmaRead(0x1000, 4));
    // Changing the STE without CFGI_STE.
    t.writeSte(SID0, { config: 4 });
    // The cached STE is reported; the TLB entry the stale walk filled (old table → old PA) is reported too.
    const seen = await m.diag.expectWarning(/stale (configuration cache entry \(STE\)|TLB entry)/, () =>
      dev.dmaRead(0x1000, 4),
    );
    expect(seen.map((d) => /STE/.test(d.message))).toEqual([true, false]);
  });

  it("reports a CD served from cache after its STE was repointed, even where the new table has no such CD", async () => {
    // One-entry configuration caches: a bypass stream's STE evicts SID0's STE but leaves SID0's CD cached, so the
    // STE is refetched from memory while the CD cache still holds what the old STE located.
    await boot({ strict: true, cfgEntries: 1, cfgWays: 1 });
    t.enable();
    const dev = m.device("smmu-dma0");
    const pt = new PageTable(t, 12, 48);
    pt.map(0x1000, 0x6000_0000, 0x1000);
    const tableA = t.alloc(64 * 8, 64 * 8);
    t.writeDwords(tableA + 64 * 3, cdDwords({ t0sz: 16, asid: 1, ttb0: pt.root }));
    t.writeSte(SID0, { config: 5, s1ctx: tableA, s1cdmax: 3, s1dss: 0 });
    t.writeSte(0x11, { config: 4 });
    dev.dmaRead(0x1000, 4, { pasid: 3 });
    m.device("smmu-dma1").dmaRead(0x5000_0000, 4);
    // The STE is repointed without CFGI_STE, at a 2-level table whose L1CD is invalid.
    const l1 = t.alloc(8 * 2, 64);
    t.writeSte(SID0, { config: 5, s1ctx: l1, s1fmt: 1, s1cdmax: 7, s1dss: 0 });
    const seen = await m.diag.expectWarning(
      { message: /stale configuration cache entry \(CD\).*C_BAD_SUBSTREAMID/, culprit: /StreamID 0x10 SSID 3/ },
      () => dev.dmaRead(0x1000, 4, { pasid: 3 }),
    );
    expect(seen).toHaveLength(1);
    expect(t.events()).toHaveLength(0); // served from the stale CD, as the architecture allows: only strict knows
    // A word-for-word copy of the CD in another table is still another CD.
    t.writeSte(SID0, { config: 5, s1ctx: tableA, s1cdmax: 3, s1dss: 0 });
    t.cfgiAll();
    dev.dmaRead(0x1000, 4, { pasid: 3 });
    m.device("smmu-dma1").dmaRead(0x5000_0000, 4);
    const tableC = t.alloc(64 * 8, 64 * 8);
    t.writeDwords(tableC + 64 * 3, cdDwords({ t0sz: 16, asid: 1, ttb0: pt.root }));
    t.writeSte(SID0, { config: 5, s1ctx: tableC, s1cdmax: 3, s1dss: 0 });
    await m.diag.expectWarning(
      { message: new RegExp(`cached from 0x${(tableA + 64 * 3).toString(16)}.*0x${(tableC + 64 * 3).toString(16)}`) },
      () => dev.dmaRead(0x1000, 4, { pasid: 3 }),
    );
  });
});

describe("event and PRI queues", () => {
  it("EVTQ overflow toggles PROD.OVF; events are lost until software catches up", async () => {
    await boot();
    t.enable({ evtqLog2: 1 });
    s1(1);
    const dev = m.device("smmu-dma0");
    for (let i = 0; i < 3; i++) expect(() => dev.dmaRead(0x9000 + i * 0x1000, 4)).toThrow(DmaFault);
    const prod = t.r32(0x100a8);
    expect(prod >>> 31).toBe(1);
    expect(prod & 3).toBe(0b10); // two records, wrapped
    expect(hw.stats.eventsLost).toBe(1);
    expect(t.events().map((e) => e.addr)).toEqual([0x9000, 0xa000]);
  });

  it("page requests from an ATS-enabled stream go to the PRI queue; others are answered by the SMMU", async () => {
    await boot();
    t.enable({ priqLog2: 1 });
    let irqs = 0;
    hw.connectIrq("priq", () => irqs++);
    t.w32(0x50, 0b010);
    s1(1, NIC);
    expect(hw.pageRequest(NIC, 3, 0x1234_5678, PRI_PERM.READ | PRI_PERM.WRITE, 0x15, true)).toBe(true);
    const d0 = m.memory.read64(t.priq);
    const d1 = m.memory.read64(t.priq + 8);
    expect(Number(d0 & 0xffff_ffffn)).toBe(NIC);
    expect(Number((d0 >> 32n) & 0xfffffn)).toBe(3);
    expect((d0 >> 63n) & 1n).toBe(1n); // SSV
    expect((d0 >> 62n) & 1n).toBe(1n); // LAST
    expect((d0 >> 60n) & 3n).toBe(3n); // READ | WRITE
    expect(Number(d1 & 0x1ffn)).toBe(0x15);
    expect(Number(d1 & ~0xfffn)).toBe(0x1234_5000);
    expect(irqs).toBe(1);
    expect(t.r32(0x100c8)).toBe(1);
    // No ATS (EATS = 0) on smmu-dma0's STE: the SMMU answers with failure.
    t.writeSte(SID0, { config: 4 });
    expect(hw.pageRequest(SID0, -1, 0x1000, PRI_PERM.READ, 2, true)).toBe(false);
    expect(hw.priResponses.at(-1)).toMatchObject({ sid: SID0, grpIdx: 2, resp: 1, auto: true });
    // Fill the 2-entry queue, then overflow.
    expect(hw.pageRequest(NIC, -1, 0x2000, PRI_PERM.READ, 3, false)).toBe(true);
    expect(hw.pageRequest(NIC, -1, 0x3000, PRI_PERM.READ, 3, true)).toBe(false);
    expect(t.r32(0x100c8) >>> 31).toBe(1);
    expect(hw.priResponses.at(-1)).toMatchObject({ sid: NIC, grpIdx: 3, auto: true });
  });
});
