/**
 * The stage-1 short miss path (src/hw/s1-walk-fill.ts) decides exactly as the full walk: two units with the same
 * stage-1 tables, CD and random accesses (and TLBIs, and table changes without them), one with the short path and
 * one with it switched off, give the same output address and length or the same fault for every access, write the
 * same events, leave the same descriptors (access flag, dirty state) and end with the same TLB and walk-cache
 * contents (entries, replacement state) and counters.
 */
import type { Machine } from "@iommu-sim/core";
import { newDmaRequest, newDmaTranslation } from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Smmuv3Hw } from "../../src/hw/index.js";
import { bootSmmu, cdDwords, PageTable } from "./helpers/encoder.js";

/** The short path, switched on or off for a run, and how many misses it answered. */
const ctl = vi.hoisted(() => ({ on: true, handled: 0 }));
vi.mock("../../src/hw/s1-walk-fill.js", async (importOriginal) => {
  const mod = await importOriginal<typeof import("../../src/hw/s1-walk-fill.js")>();
  return {
    ...mod,
    s1WalkFill: (...a: Parameters<typeof mod.s1WalkFill>) => {
      if (!ctl.on) return mod.S1_FILL_NONE;
      const r = mod.s1WalkFill(...a);
      if (r !== mod.S1_FILL_NONE) ctl.handled++;
      return r;
    },
  };
});

const machines: Machine[] = [];
afterEach(async () => {
  for (const m of machines.splice(0)) await m.teardown();
});

const SID = 0x10;
/** Three 2 MiB regions (more than the walk cache holds), 6 pages each; region 2 ends just below 1 GiB. */
const REGIONS = [0x0020_0000, 0x1000_0000, 0x3fe0_0000];
const PAGES_PER_REGION = 6;
/** Input addresses past a 30-bit input size (a fault there), or unmapped above it. */
const FAR = 0x4000_0000;

const pageArb = fc.record({
  mapped: fc.nat(9).map((n) => n > 0),
  af: fc.nat(5).map((n) => n > 0),
  ro: fc.nat(3).map((n) => n === 0),
  privOnly: fc.nat(3).map((n) => n === 0),
  xn: fc.nat(3).map((n) => n === 0),
  dbm: fc.boolean(),
  /** Output address above 2^36 (an address-size fault with a 36-bit IPS). */
  high: fc.nat(7).map((n) => n === 0),
});
type Page = { mapped: boolean; af: boolean; ro: boolean; privOnly: boolean; xn: boolean; dbm: boolean; high: boolean };
const regionArb = fc.record({
  /** 0: 4 KiB pages; 1: a 2 MiB block; 2: an invalid level-2 descriptor. */
  shape: fc.nat(7).map((n) => (n === 0 ? 1 : n === 1 ? 2 : 0)),
  pages: fc.array(pageArb, { minLength: PAGES_PER_REGION, maxLength: PAGES_PER_REGION }),
});
const opArb = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      op: fc.constant("dma" as const),
      region: fc.nat(3),
      page: fc.nat(PAGES_PER_REGION - 1),
      off: fc.nat(4095),
      write: fc.boolean(),
      priv: fc.boolean(),
      exec: fc.nat(4).map((n) => n === 0),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("tlbi" as const),
      region: fc.nat(2),
      page: fc.nat(PAGES_PER_REGION - 1),
      all: fc.boolean(),
      leaf: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("remap" as const), region: fc.nat(2), page: fc.nat(PAGES_PER_REGION - 1) }),
  },
);
const cfgArb = fc.record({
  ias: fc.constantFrom(48, 39, 30),
  replacement: fc.constantFrom("round-robin", "lru"),
  ha: fc.boolean(),
  hd: fc.boolean(),
  affd: fc.boolean(),
  epd0: fc.nat(9).map((n) => n === 0),
  r: fc.nat(4).map((n) => n > 0),
  ips36: fc.boolean(),
  el2: fc.nat(3).map((n) => n === 0),
});
type Cfg = {
  ias: number;
  replacement: string;
  ha: boolean;
  hd: boolean;
  affd: boolean;
  epd0: boolean;
  r: boolean;
  ips36: boolean;
  el2: boolean;
};
type Op =
  | { op: "dma"; region: number; page: number; off: number; write: boolean; priv: boolean; exec: boolean }
  | { op: "tlbi"; region: number; page: number; all: boolean; leaf: boolean }
  | { op: "remap"; region: number; page: number };

const iovaOf = (region: number, page: number) => (region < 3 ? REGIONS[region]! : FAR) + page * 0x1000;

/** Boot a unit, write the tables, run the operations; everything observable, in order. */
async function run(cfg: Cfg, regions: { shape: number; pages: Page[] }[], ops: Op[]) {
  const { m, t, hw } = await bootSmmu({
    tlbEntries: 4,
    tlbWays: 2,
    walkCacheEntries: 2,
    walkCacheWays: 2,
    replacement: cfg.replacement,
  });
  machines.push(m);
  t.enable();
  const pt = new PageTable(t, 12, cfg.ias);
  const cd = t.alloc(64, 64);
  t.writeDwords(
    cd,
    cdDwords({
      t0sz: 64 - cfg.ias,
      asid: 7,
      ttb0: pt.root,
      ha: cfg.ha,
      hd: cfg.hd,
      affd: cfg.affd,
      epd0: cfg.epd0,
      r: cfg.r,
      ips: cfg.ips36 ? 1 : 5,
    }),
  );
  t.writeSte(SID, { config: 5, s1ctx: cd, strw: cfg.el2 ? 2 : 0 });
  const leaves: number[] = [];
  const leafAt = (pa: number, p: Page) => (p.high ? 2 ** 36 + pa : pa);
  regions.forEach((r, ri) => {
    const base = REGIONS[ri]!;
    if (base >= 2 ** cfg.ias) return;
    if (r.shape === 1) {
      const p = r.pages[0]!;
      pt.map(base, leafAt(0x2_0000_0000 + ri * 0x20_0000, p), 0x20_0000, { ...p, af: p.af }, 2);
      leaves.push(pt.pte(base, 2));
      return;
    }
    if (r.shape === 2) {
      // A level-2 descriptor that is neither table nor block (reserved: valid bit clear, other bits set).
      const slot = pt.slot(base, 2);
      m.memory.write64(slot, 0x4000_0002n);
      leaves.push(slot);
      return;
    }
    r.pages.forEach((p, i) => {
      const iova = base + i * 0x1000;
      const e = pt.pte(iova);
      if (p.mapped) pt.map(iova, leafAt(t.alloc(0x1000), p), 0x1000, p);
      leaves.push(e);
    });
  });
  const seen: unknown[] = [];
  const req = newDmaRequest();
  req.requesterId = SID;
  for (const o of ops) {
    if (o.op === "dma") {
      const out = newDmaTranslation();
      req.iova = iovaOf(o.region, o.page) + o.off;
      req.write = o.write;
      req.privileged = o.priv;
      req.exec = o.exec;
      hw.translate(req, out);
      seen.push({ ...out }, t.events());
    } else if (o.op === "tlbi") {
      if (o.all) t.tlbiNhAsid(7);
      else t.tlbiNhVa(7, iovaOf(o.region, o.page), o.leaf);
      t.sync();
    } else {
      // Change a leaf without invalidating: the caches keep what they hold, in both units alike.
      const iova = iovaOf(o.region, o.page);
      if (iova < 2 ** cfg.ias && regions[o.region]!.shape === 0) pt.map(iova, t.alloc(0x1000), 0x1000);
    }
  }
  return { seen, leaves: leaves.map((e) => m.memory.read64(e).toString(16)), caches: cacheState(hw), t };
}

/** Every typed array a cache object holds (its entries, and through `ix` its replacement state), by name. */
function arrays(o: object): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(o)) {
    if (ArrayBuffer.isView(v)) out[k] = Array.from(v as unknown as ArrayLike<number>);
    else if (k === "ix" && typeof v === "object" && v !== null) {
      for (const [k2, v2] of Object.entries(arrays(v))) out[`ix.${k2}`] = v2;
    }
  }
  return out;
}

/** The TLB's and walk cache's entries and replacement state, and the counters. */
function cacheState(hw: Smmuv3Hw) {
  return { tlb: arrays(hw.tlb), wc: arrays(hw.walkCache), stats: hw.stats };
}

/** Run with the short path and without; the two must agree in everything observable. */
async function both(cfg: Cfg, regions: { shape: number; pages: Page[] }[], ops: Op[]) {
  const runs = [];
  for (const on of [true, false]) {
    ctl.on = on;
    const r = await run(cfg, regions, ops);
    runs.push({ seen: r.seen, leaves: r.leaves, caches: r.caches });
    await r.t.m.teardown();
    machines.pop();
  }
  ctl.on = true;
  expect(runs[0]).toEqual(runs[1]);
  return runs[0]!;
}

const PLAIN: Cfg = {
  ias: 48,
  replacement: "round-robin",
  ha: false,
  hd: false,
  affd: false,
  epd0: false,
  r: true,
  ips36: false,
  el2: false,
};
const RW: Page = { mapped: true, af: true, ro: false, privOnly: false, xn: false, dbm: false, high: false };
const dma = (region: number, page: number, write = true): Op => ({
  op: "dma",
  region,
  page,
  off: 8,
  write,
  priv: false,
  exec: false,
});

describe("stage-1 short miss path", () => {
  it("agrees with the full walk on random tables, CDs, accesses and invalidations", async () => {
    ctl.handled = 0;
    await fc.assert(
      fc.asyncProperty(
        cfgArb,
        fc.array(regionArb, { minLength: 3, maxLength: 3 }),
        fc.array(opArb, { minLength: 10, maxLength: 40 }),
        async (cfg, regions, ops) => {
          await both(cfg, regions, ops);
        },
      ),
      { numRuns: 100 },
    );
    // The property compared something: the short path answered misses (and the full walk the rest).
    expect(ctl.handled).toBeGreaterThan(200);
  });

  it("answers a plain 4 KiB stage-1 miss and fills the caches as the walk does", async () => {
    ctl.on = true;
    ctl.handled = 0;
    const regions = [0, 1, 2].map(() => ({ shape: 0, pages: Array.from({ length: PAGES_PER_REGION }, () => RW) }));
    // A first access configures the stream (the full path), then misses in region 0 (walked, then walk-cache hits).
    const r = await run(PLAIN, regions, [dma(0, 0), dma(0, 1), dma(0, 2), dma(1, 0)]);
    expect(ctl.handled).toBe(3);
    const s = r.caches.stats;
    expect(s.walks).toBe(4);
    expect(s.walkCacheHits).toBe(2);
    expect(r.seen.filter((_x, i) => i % 2 === 0).map((x) => (x as { faultCode: number }).faultCode)).toEqual([
      0, 0, 0, 0,
    ]);
  });

  it("refills the TLB entry that lacked the permission, as the walk does", async () => {
    // Page 1 read-only: a read caches it without write permission; the leaf is then made writable without a TLBI,
    // and the write misses on that entry (lookup found it, permission short) and is answered by the short path.
    const pages = Array.from({ length: PAGES_PER_REGION }, (_x, i) => (i === 1 ? { ...RW, ro: true } : RW));
    const regions = [0, 1, 2].map(() => ({ shape: 0, pages }));
    ctl.handled = 0;
    const ops: Op[] = [dma(0, 0), dma(0, 1, false), { op: "remap", region: 0, page: 1 }, dma(0, 1)];
    const r = await both(PLAIN, regions, ops);
    expect(ctl.handled).toBe(2);
    expect(r.caches.stats.tlbMisses).toBe(3);
    expect((r.seen[4] as { faultCode: number }).faultCode).toBe(0);
  });
});
