/**
 * The SMMUv3 model's cache of stage-2 translations for nested stage-1 table fetches (IPA granule → PA, by VMID):
 * a stage-2 entry rewritten behind the hardware's back keeps serving table fetches until TLBI_S2_IPA (or
 * TLBI_S12_VMALL / TLBI_NSNH_ALL) and CMD_SYNC, and strict mode reports the stale use. Tables written by hand; no
 * driver.
 */
import type { Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import type { Smmuv3Hw } from "../../src/hw/index.js";
import { bootSmmu, bytes, cdDwords, f, PageTable, type Tables } from "./helpers/encoder.js";

const SID0 = 0x10;
const GIB = 2 ** 30;
const VMID = 3;
const IPA_OFF = 3 * GIB; // stage-1 tables and the CD live at IPA = PA + 3 GiB
const DATA_IPA = 8 * GIB;
const DATA_PA = 0x7000_0000;
const IOVA = 0x1234_5000;
let m: Machine;
let t: Tables;
let hw: Smmuv3Hw;

afterEach(async () => {
  await m.teardown();
});

/** TLBI_S2_IPA of one 4 KiB IPA (no range, no TTL) for `vmid`, LEAF as given. */
function tlbiS2Ipa(ipa: number, vmid: number, leaf: boolean): void {
  t.cmd(0x2an | f(vmid, 32), (BigInt(ipa) & ~0xfffn) | (leaf ? 1n : 0n));
}
function tlbiS12Vmall(vmid: number): void {
  t.cmd(0x28n | f(vmid, 32));
}

/**
 * A nested stream: stage 1 maps IOVA, IOVA + 4K, IOVA + 8K to data IPAs +0x3000, +0x4000, +0x6000; stage 2 maps
 * every table page with 4 KiB leaves (IPA = PA + 3 GiB) and the data IPAs with one 2 MiB block. Returns the stage-2
 * table, the stage-1 leaf table's PA and IPA, and a copy of that leaf table whose entries for IOVA + 4K and + 8K
 * point elsewhere (+0x5000, +0x7000).
 */
function nested(): { s2: PageTable; leafPa: number; leafIpa: number; copy: number } {
  t.enable();
  const s2 = new PageTable(t, 12, 40, true, 1);
  const s1 = new PageTable(t, 12, 48, false, undefined, IPA_OFF);
  s1.map(IOVA, DATA_IPA + 0x3000, 0x1000);
  s1.map(IOVA + 0x1000, DATA_IPA + 0x4000, 0x1000);
  s1.map(IOVA + 0x2000, DATA_IPA + 0x6000, 0x1000);
  const cd = t.alloc(64, 64);
  t.writeDwords(cd, cdDwords({ t0sz: 16, asid: 9, ttb0: s1.root + IPA_OFF }));
  const leafPa = s1.pte(IOVA) - (s1.pte(IOVA) % 4096);
  const copy = t.alloc(4096);
  m.memory.writeBytes(copy, m.memory.readBytes(leafPa, 4096));
  const pteOff = (a: number) => s1.pte(a) - leafPa;
  m.memory.write64(copy + pteOff(IOVA + 0x1000), m.memory.read64(leafPa + pteOff(IOVA + 0x1000)) + 0x1000n);
  m.memory.write64(copy + pteOff(IOVA + 0x2000), m.memory.read64(leafPa + pteOff(IOVA + 0x2000)) + 0x1000n);
  for (let pa = 0x4000_0000; pa < t.next + 0x1000; pa += 0x1000) s2.map(pa + IPA_OFF, pa, 0x1000);
  s2.map(DATA_IPA, DATA_PA, 0x20_0000, {}, 2);
  t.writeSte(SID0, {
    config: 7,
    s1ctx: cd + IPA_OFF,
    vmid: VMID,
    s2t0sz: 24,
    s2sl0: 1,
    s2tg: 0,
    s2ps: 5,
    s2ttb: s2.root,
  });
  for (let i = 3; i <= 7; i++) m.memory.writeBytes(DATA_PA + i * 0x1000, bytes(8, i));
  return { s2, leafPa, leafIpa: leafPa + IPA_OFF, copy };
}

describe("stage-2 translations cached for stage-1 table fetches", () => {
  it("a rewritten stage-2 entry of a stage-1 table keeps serving fetches until TLBI_S2_IPA + CMD_SYNC; strict reports it", async () => {
    ({ m, t, hw } = await bootSmmu({ strict: true, s2WalkTlbEntries: 4, s2WalkTlbWays: 2 }));
    const { s2, leafIpa, copy } = nested();
    const dev = m.device("smmu-dma0");
    expect(dev.dmaRead(IOVA, 8)).toEqual(bytes(8, 3));
    expect(hw.s2WalkTlb.used).toBeGreaterThan(0);
    // Behind the SMMU's back: stage 2 now maps the leaf table's IPA to the copy.
    m.memory.write64(s2.pte(leafIpa), BigInt(copy) | s2.leafBits({}) | 3n);
    const seen = await m.diag.expectWarning(/stale stage-2 table-fetch cache entry/, () => {
      // A TLB miss in the same leaf table: the fetch still goes to the old table (data +0x4000, not +0x5000).
      expect(dev.dmaRead(IOVA + 0x1000, 8)).toEqual(bytes(8, 4));
    });
    // The fetch of the descriptor of IOVA + 4K, inside the leaf table's IPA page.
    expect(seen[0]!.message).toMatch(new RegExp(`fetch at IPA 0x${(leafIpa / 4096).toString(16)}[0-9a-f]{3} used`));
    // A leaf-only TLBI of the wrong IPA leaves it in place (a second use is not reported again).
    tlbiS2Ipa(leafIpa + 0x1000, VMID, true);
    t.sync();
    expect(dev.dmaRead(IOVA + 0x2000, 8)).toEqual(bytes(8, 6));
    // TLBI_S2_IPA of the table's IPA (LEAF = 1 is enough: the entry caches a stage-2 leaf) + CMD_SYNC: the copy is
    // used from now on, and nothing is stale. IOVA + 8K is still in the combined TLB (TLBI_S2_IPA does not drop
    // combined entries: Linux follows it with TLBI_S12_VMALL for nesting parents), so invalidate that as well.
    tlbiS2Ipa(leafIpa, VMID, true);
    t.sync();
    tlbiS12Vmall(VMID);
    t.sync();
    const before = hw.stats.staleReports;
    expect(dev.dmaRead(IOVA + 0x2000, 8)).toEqual(bytes(8, 7));
    expect(hw.stats.staleReports).toBe(before);
    expect(m.diag.unexpected()).toHaveLength(0);
  });

  it("a nested walk-cache entry holds its table's PA: TLBI_S2_IPA of the table's IPA drops the PA, TLBI_NH_ALL the entry; strict reports a stale PA once", async () => {
    ({ m, t, hw } = await bootSmmu({ strict: true }));
    const { s2, leafPa, leafIpa, copy } = nested();
    const dev = m.device("smmu-dma0");
    const wc = hw.walkCache;
    const entry = () => Array.from(wc.table).findIndex((x, e) => x === leafIpa && wc.region[e] !== -1);
    expect(dev.dmaRead(IOVA, 8)).toEqual(bytes(8, 3));
    const w = entry();
    expect(w).toBeGreaterThanOrEqual(0);
    expect(wc.tablePa[w]).toBe(leafPa);
    // A TLBI_S2_IPA of another IPA, or of this VMID's other IPA space, keeps it.
    tlbiS2Ipa(leafIpa + 0x1000, VMID, false);
    tlbiS2Ipa(leafIpa, VMID + 1, false);
    t.sync();
    expect(wc.tablePa[w]).toBe(leafPa);
    // TLBI_S2_IPA of the table's IPA (LEAF = 1: the PA came from a stage-2 leaf) drops the PA, not the entry; the next
    // miss in the table takes the PA again, through the table-fetch cache (a stage-2 walk).
    tlbiS2Ipa(leafIpa, VMID, true);
    t.sync();
    expect(entry()).toBe(w);
    expect(wc.tablePa[w]).toBe(-1);
    expect(dev.dmaRead(IOVA + 0x1000, 8)).toEqual(bytes(8, 4));
    expect(wc.tablePa[w]).toBe(leafPa);
    // Behind the SMMU's back, stage 2 moves the table: the held PA keeps serving (reported once in strict mode).
    m.memory.write64(s2.pte(leafIpa), BigInt(copy) | s2.leafBits({}) | 3n);
    const seen = await m.diag.expectWarning(/stale stage-2 table-fetch cache entry held by a walk-cache entry/, () => {
      expect(dev.dmaRead(IOVA + 0x2000, 8)).toEqual(bytes(8, 6));
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.message).toMatch(new RegExp(`fetch at IPA 0x${(leafIpa / 4096).toString(16)}[0-9a-f]{3} used`));
    // TLBI_NH_ALL of the VMID drops the whole entry (and the combined TLB entries): the copy is used from now on.
    t.cmd(0x10n | f(VMID, 32));
    tlbiS2Ipa(leafIpa, VMID, true);
    t.sync();
    expect(entry()).toBe(-1);
    const before = hw.stats.staleReports;
    expect(dev.dmaRead(IOVA + 0x2000, 8)).toEqual(bytes(8, 7));
    expect(wc.tablePa[entry()]).toBe(copy);
    expect(hw.stats.staleReports).toBe(before);
    expect(m.diag.unexpected()).toHaveLength(0);
  });

  it("TLBI_S2_IPA drops only the entry of its VMID and IPA; TLBI_S12_VMALL and TLBI_NSNH_ALL drop the VMID's / all", async () => {
    ({ m, t, hw } = await bootSmmu({ s2WalkTlbEntries: 16, s2WalkTlbWays: 4 }));
    const { leafIpa } = nested();
    m.device("smmu-dma0").dmaRead(IOVA, 8);
    const fc = hw.s2WalkTlb;
    const filled = fc.used; // the root, three intermediate tables, the leaf table
    expect(filled).toBe(4);
    tlbiS2Ipa(leafIpa, VMID + 1, false);
    t.sync();
    expect(fc.used).toBe(filled);
    tlbiS2Ipa(leafIpa, VMID, true);
    t.sync();
    expect(fc.used).toBe(filled - 1);
    tlbiS12Vmall(VMID + 1);
    t.sync();
    expect(fc.used).toBe(filled - 1);
    // Stage-1 invalidations (even non-leaf) never touch stage-2 entries.
    t.tlbiNhVa(9, IOVA, false, VMID);
    t.tlbiNhAsid(9, VMID);
    t.sync();
    expect(fc.used).toBe(filled - 1);
    tlbiS12Vmall(VMID);
    t.sync();
    expect(fc.used).toBe(0);
    m.device("smmu-dma0").dmaRead(IOVA + 0x1000, 8);
    expect(fc.used).toBeGreaterThan(0);
    t.tlbiNsnhAll();
    t.sync();
    expect(fc.used).toBe(0);
  });
});
