/**
 * The SMMUv3 model's short nested miss path (a walk-cache hit on the last-level stage-1 table, the descriptor's
 * stage-2 translation from the table-fetch cache, stage 2 of the output IPA through the walk cache) decides exactly
 * as the full nested walk: a plain unit (which takes the short path on its per-stream fast path) and a strict one
 * (which never does, re-checking every cached entry), given the same random stage-1 and stage-2 tables and the same
 * random accesses, return the same bytes or the same fault, record the same events (stage-2 faults of table
 * fetches included), leave the same AF/dirty bits in both stages' descriptors, count the same, and end with the
 * same TLB, walk-cache and table-fetch-cache contents. Tables written by hand; no driver.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { Smmuv3Hw } from "../../src/hw/index.js";
import { bootSmmu, cdDwords, f, PageTable } from "./helpers/encoder.js";

const SID = 0x10;
const GIB = 2 ** 30;
const VMID = 5;
const IPA_OFF = 3 * GIB; // stage-1 tables and the CD live at IPA = PA + 3 GiB
const DATA_IPA = 8 * GIB; // above 4 GiB: the output IPA takes the long index path
const DATA_PA = 0x7000_0000;
const IOVA = 0x1234_5000;
/** Pages 0..5 in one 2 MiB stage-1 region, 6..8 in the next (two last-level tables, two walk-cache regions). */
const PAGES = 9;
const iovaOf = (i: number) => (i < 6 ? IOVA + i * 0x1000 : IOVA + 0x20_0000 + (i - 6) * 0x1000);
/** Odd pages' IPAs in the next 2 MiB of IPA space (two stage-2 last-level tables, two walk-cache regions). */
const ipaOf = (i: number) => DATA_IPA + (i % 2) * 0x20_0000 + i * 0x1000;
const paOf = (i: number) => DATA_PA + (i % 2) * 0x20_0000 + i * 0x1000;

const machines: Machine[] = [];
afterEach(async () => {
  for (const m of machines.splice(0)) await m.teardown();
});

/** Faults are the full walk's business: leaves mostly grant access, so that most misses can take the short path. */
const often = fc.nat(7).map((n) => n !== 0);
const rarely = fc.nat(7).map((n) => n === 0);
/** Descriptor bits 54:53 (stage 1 UXN/PXN, stage 2 XN[1:0]), each set on its own now and then. */
const xnArb = fc.constantFrom(0, 0, 0, 0, 0, 1, 2, 3);
/** Set descriptor bits 54:53 of the entry at `pte` to `xn`. */
function setXn(m: Machine, pte: number, xn: number): void {
  m.memory.write32(pte + 4, (m.memory.read32(pte + 4) & ~(3 << 21)) | (xn << 21));
}
/** A stage-1 leaf: unmapped, or a page with random AP/PXN/UXN/AF/DBM. */
const s1Arb = fc.record({
  mapped: often,
  ro: rarely,
  privOnly: rarely,
  xn: xnArb,
  af: often,
  dbm: fc.boolean(),
});
/** A stage-2 leaf of a data IPA: unmapped, or a page with random S2AP/XN[1:0]/AF/DBM. */
const s2Arb = fc.record({
  mapped: often,
  s2r: often,
  s2w: often,
  xn: xnArb,
  af: often,
  dbm: fc.boolean(),
});
/**
 * In some runs one stage-1 table page (of the root, level-1, level-2 and the two level-3 tables, in walk order) is
 * mapped by stage 2 without read permission, without AF, or not at all: its fetches fault at stage 2.
 */
const badTableArb = fc.oneof(
  { arbitrary: fc.constant(null), weight: 3 },
  { arbitrary: fc.record({ table: fc.nat(4), how: fc.constantFrom("noread", "noaf", "unmapped") }), weight: 1 },
);
const dmaArb = fc.record({
  op: fc.constant("dma" as const),
  page: fc.nat(PAGES - 1),
  write: fc.boolean(),
  exec: rarely,
  privileged: fc.boolean(),
  off: fc.nat(4095),
});
/**
 * An architected invalidation + CMD_SYNC between accesses: TLBI_S2_IPA of a stage-1 table's IPA (`table` < 5) or of
 * a data page's IPA, TLBI_NH_VA of a page, TLBI_NH_ALL or TLBI_S12_VMALL of the VMID.
 */
const tlbiArb = fc.record({
  op: fc.constantFrom("s2ipa" as const, "s2ipa" as const, "nhva" as const, "nhall" as const, "s12vmall" as const),
  table: fc.nat(4 + PAGES),
  leaf: fc.boolean(),
});
const accessArb = fc.oneof({ arbitrary: dmaArb, weight: 12 }, { arbitrary: tlbiArb, weight: 1 });
const cfgArb = fc.record({
  ha: fc.boolean(),
  hd: fc.boolean(),
  affd: fc.boolean(),
  s2ha: fc.boolean(),
  s2hd: fc.boolean(),
  /** Map the even pages' IPAs with one 2 MiB stage-2 block instead of pages. */
  s2Block: fc.boolean(),
  lru: fc.boolean(),
  tlbEntries: fc.constantFrom(2, 4),
  walkCacheEntries: fc.constantFrom(2, 4, 8),
  s2WalkTlbEntries: fc.constantFrom(1, 2, 8),
});
type Cfg = typeof cfgArb extends fc.Arbitrary<infer T> ? T : never;
type S1 = typeof s1Arb extends fc.Arbitrary<infer T> ? T : never;
type S2 = typeof s2Arb extends fc.Arbitrary<infer T> ? T : never;
type Access = typeof accessArb extends fc.Arbitrary<infer T> ? T : never;
type BadTable = typeof badTableArb extends fc.Arbitrary<infer T> ? T : never;

async function unit(strict: boolean, cfg: Cfg, s1Pages: S1[], s2Pages: S2[], bad: BadTable) {
  const { m, t, hw } = await bootSmmu({
    strict,
    replacement: cfg.lru ? "lru" : "round-robin",
    tlbEntries: cfg.tlbEntries,
    tlbWays: 2,
    walkCacheEntries: cfg.walkCacheEntries,
    walkCacheWays: Math.min(2, cfg.walkCacheEntries),
    s2WalkTlbEntries: cfg.s2WalkTlbEntries,
    s2WalkTlbWays: Math.min(2, cfg.s2WalkTlbEntries),
  });
  machines.push(m);
  t.enable();
  const s2 = new PageTable(t, 12, 40, true, 1);
  const s1 = new PageTable(t, 12, 48, false, undefined, IPA_OFF);
  const s1Leaves: number[] = [];
  s1Pages.forEach((p, i) => {
    const iova = iovaOf(i);
    if (p.mapped) s1.map(iova, ipaOf(i), 0x1000, { ...p, xn: false });
    if (p.mapped) setXn(m, s1.pte(iova), p.xn);
    s1Leaves.push(s1.pte(iova));
  });
  const cd = t.alloc(64, 64);
  t.writeDwords(cd, cdDwords({ t0sz: 16, asid: 9, ttb0: s1.root + IPA_OFF, ha: cfg.ha, hd: cfg.hd, affd: cfg.affd }));
  // Stage 2 of every page the queues, stream table, CD and stage-1 tables live in; one stage-1 table maybe broken.
  const s1Tables: number[] = [];
  for (let l = 0; l <= 3; l++) {
    for (let i = 0; i < PAGES; i++) {
      const page = s1.pte(iovaOf(i), l) - (s1.pte(iovaOf(i), l) % 4096);
      if (!s1Tables.includes(page)) s1Tables.push(page);
    }
  }
  const broken = bad === null ? -1 : s1Tables[bad.table]!;
  const end = t.next;
  const s2Leaves: number[] = [];
  for (let pa = 0x4000_0000; pa < end; pa += 0x1000) {
    const how = pa === broken ? bad!.how : "ok";
    if (how !== "unmapped") s2.map(pa + IPA_OFF, pa, 0x1000, { s2r: how !== "noread", af: how !== "noaf" });
    if (s1Tables.includes(pa)) s2Leaves.push(s2.pte(pa + IPA_OFF));
  }
  if (cfg.s2Block) {
    s2.map(DATA_IPA, DATA_PA, 0x20_0000, { s2w: true, af: s2Pages[0]!.af }, 2);
    setXn(m, s2.pte(DATA_IPA, 2), s2Pages[0]!.xn);
    s2Leaves.push(s2.pte(DATA_IPA, 2));
  }
  s2Pages.forEach((p, i) => {
    if (cfg.s2Block && i % 2 === 0) return;
    if (p.mapped) s2.map(ipaOf(i), paOf(i), 0x1000, { ...p, xn: false });
    if (p.mapped) setXn(m, s2.pte(ipaOf(i)), p.xn);
    s2Leaves.push(s2.pte(ipaOf(i)));
  });
  t.writeSte(SID, {
    config: 7,
    s1ctx: cd + IPA_OFF,
    vmid: VMID,
    s2t0sz: 24,
    s2sl0: 1,
    s2tg: 0,
    s2ps: 5,
    s2ttb: s2.root,
    s2ha: cfg.s2ha,
    s2hd: cfg.s2hd,
  });
  for (let i = 0; i < PAGES; i++) m.memory.write32(paOf(i), 0x1000 + i);
  return { m, t, hw, leaves: [...s1Leaves, ...s2Leaves], s1Tables };
}

/** Everything a cache holds (typed arrays copied into plain arrays for a readable diff). */
function caches(hw: Smmuv3Hw) {
  const a = (x: ArrayLike<number>) => Array.from(x);
  const { tlb, walkCache: wc, s2WalkTlb: fetch } = hw;
  return {
    tlb: { vpn: a(tlb.vpn), f: a(tlb.f), i: a(tlb.i) },
    wc: {
      region: a(wc.region),
      kind: a(wc.kind),
      tag: a(wc.tag),
      table: a(wc.table),
      level: a(wc.level),
      tablePa: a(wc.tablePa),
      tableS2Lg2: a(wc.tableS2Lg2),
    },
    fetch: { ipa: a(fetch.ipa), vmid: a(fetch.vmid), pa: a(fetch.pa), leafLg2: a(fetch.leafLg2) },
  };
}

async function run(strict: boolean, cfg: Cfg, s1: S1[], s2: S2[], bad: BadTable, accesses: Access[]) {
  const { m, t, hw, leaves, s1Tables } = await unit(strict, cfg, s1, s2, bad);
  const seen: string[] = [];
  for (const a of accesses) {
    if (a.op !== "dma") {
      const i = a.table < 5 ? -1 : a.table - 5;
      const ipa = i < 0 ? s1Tables[a.table]! + IPA_OFF : ipaOf(i);
      if (a.op === "s2ipa") t.cmd(0x2an | f(VMID, 32), BigInt(ipa) | (a.leaf ? 1n : 0n));
      else if (a.op === "nhva") t.tlbiNhVa(9, iovaOf(Math.max(i, 0)), a.leaf, VMID);
      else t.cmd((a.op === "nhall" ? 0x10n : 0x28n) | f(VMID, 32));
      t.sync();
      continue;
    }
    const iova = iovaOf(a.page) + a.off - (a.off % 4);
    const opt = { exec: a.exec, privileged: a.privileged };
    try {
      if (a.write) m.device("smmu-dma0").dmaWrite(iova, new Uint8Array([1]), opt);
      else seen.push(String(m.device("smmu-dma0").dmaRead(iova, 4, opt)));
      seen.push("ok");
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      seen.push(`${e.faultCode} ${e.faultReason}`);
    }
  }
  const { staleReports, ...stats } = hw.stats;
  const result = {
    seen,
    events: t.events(),
    leaves: leaves.map((l) => m.memory.read64(l).toString(16)),
    stats,
    staleReports,
    caches: caches(hw),
  };
  await m.teardown();
  machines.pop();
  return result;
}

describe("nested short miss path", () => {
  it("agrees with the full nested walk on random stage-1/stage-2 tables and accesses", async () => {
    await fc.assert(
      fc.asyncProperty(
        cfgArb,
        fc.array(s1Arb, { minLength: PAGES, maxLength: PAGES }),
        fc.array(s2Arb, { minLength: PAGES, maxLength: PAGES }),
        badTableArb,
        fc.array(accessArb, { minLength: 10, maxLength: 60 }),
        async (cfg, s1, s2, bad, accesses) => {
          const plain = await run(false, cfg, s1, s2, bad, accesses);
          const strict = await run(true, cfg, s1, s2, bad, accesses);
          expect(strict.staleReports).toBe(0);
          expect(plain).toEqual(strict);
        },
      ),
      { numRuns: 80 },
    );
  });
});
