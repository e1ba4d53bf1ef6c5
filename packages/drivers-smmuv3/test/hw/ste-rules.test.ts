/**
 * The model held to the architecture's STE and CD-table rules (SMMUv3 spec 5.2 STE.V, Config, S1Fmt, S1CDMax,
 * S1DSS; 5.3/5.4 L1CD and CD validity), for every combination a guest can write into a vSTE, legal and reserved,
 * on SMMUs with and without substreams, 2-level CD tables and each translation stage. The expected outcome of each
 * random (STE, SubstreamID) case comes from `expected` below, written from the specification's field tables and not
 * from the model or the driver; the STE and CDs are written with the test encoder's literal bit positions.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SMMU_ABORT } from "../../src/hw/index.js";
import { bootSmmu, cdDwords, PageTable, steDwords, type Tables } from "./helpers/encoder.js";
import { type Case, expected, type Features, MARK_BYPASS, MARK_S2, type Outcome } from "./helpers/ste-spec.js";

const SID0 = 0x10;
const IOVA = 0x1000;
/** Linear CD tables: 64 MiB aligned, room for 2^20 CDs. */
const LIN_BASE = 0x8000_0000;
/** Level-1 CD tables (at most 2^14 descriptors = 128 KiB). */
const L1_BASE = 0x8400_0000;
/** Level-2 CD tables, 64 KiB apart. */
const L2_BASE = 0x8500_0000;
/** Stage 2 (Config 0b11x) maps IPA [1 GiB, 3 GiB) to itself and IPA [0, 1 GiB) to PA [3 GiB, 4 GiB). */
const S2_LOW_PA = 0xc000_0000;
/** Stage-1 page table k maps IOVA to POOL_PA + k pages; 4 bytes there hold the marker k. */
const POOL_PA = 0x6000_0000;
const POOL = 6;

/** Where CD `idx` lives, and the L1CD (if any) that locates it, by the specification's S1Fmt table. */
function cdLocation(c: Case, f: Features, idx: number): { cd: number; l1?: number; l2?: number } {
  const cdmax = f.ssidBits === 0 ? 0 : c.s1cdmax;
  const fmt = cdmax === 0 || c.s1fmt === 3 ? 0 : c.s1fmt;
  if (fmt === 0) return { cd: LIN_BASE + idx * 64 };
  const leafBits = fmt === 1 ? 6 : 10;
  const l1i = Math.floor(idx / 2 ** leafBits);
  const l2 = L2_BASE + (l1i === 0 ? 0 : 1 + (l1i % 255)) * 0x1_0000;
  return { cd: l2 + (idx % 2 ** leafBits) * 64, l1: L1_BASE + l1i * 8, l2 };
}

function ssidsFor(cdmax: number): fc.Arbitrary<number> {
  const lim = 2 ** Math.min(cdmax, 20);
  const picks = [0, 1, 63, 64, 1023, 1024, lim - 1, lim, 2 ** 20 - 1].filter((x) => x >= 0 && x < 2 ** 20);
  return fc.oneof(
    { arbitrary: fc.constant(-1), weight: 3 },
    { arbitrary: fc.constant(0), weight: 2 },
    { arbitrary: fc.constantFrom(...picks), weight: 4 },
    { arbitrary: fc.nat(lim), weight: 1 },
    { arbitrary: fc.nat(2 ** 20 - 1), weight: 1 },
  );
}

/** Mostly the configurations with stage 1, where the substream rules apply; every value still comes up. */
const configArb = fc.oneof({ arbitrary: fc.nat(7), weight: 3 }, { arbitrary: fc.constantFrom(5, 7), weight: 5 });
/** S1CDMax: mostly within what some SMMU supports, and the edges of each table layout. */
const cdMaxArb = fc.oneof(
  { arbitrary: fc.nat(31), weight: 1 },
  { arbitrary: fc.nat(12), weight: 2 },
  { arbitrary: fc.constantFrom(0, 1, 6, 7, 8, 9, 10, 11, 12, 13, 20, 21), weight: 2 },
);
const mostly = { arbitrary: fc.constant(true), weight: 3 };

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    v: fc.oneof({ arbitrary: fc.constant(true), weight: 9 }, { arbitrary: fc.constant(false), weight: 1 }),
    config: configArb,
    s1fmt: fc.nat(3),
    s1cdmax: cdMaxArb,
    s1dss: fc.nat(3),
    cdPool: fc.nat(POOL - 1),
    cdValid: fc.oneof(mostly, { arbitrary: fc.boolean(), weight: 1 }),
    cd0Pool: fc.nat(POOL - 1),
    cd0Valid: fc.oneof(mostly, { arbitrary: fc.boolean(), weight: 1 }),
    l1Valid: fc.oneof(mostly, { arbitrary: fc.constant(false), weight: 1 }),
  })
  .chain((r) => ssidsFor(r.s1cdmax).map((ssid) => ({ ...r, ssid })));

const FEATURES: Features[] = [
  { name: "SSIDSIZE 20, 2-level CD tables, both stages", stages: "s1s2", ssidBits: 20, cd2l: true },
  { name: "SSIDSIZE 12, no 2-level CD tables", stages: "s1s2", ssidBits: 12, cd2l: false },
  { name: "no substreams (SSIDSIZE 0)", stages: "s1s2", ssidBits: 0, cd2l: true },
  { name: "stage 1 only, SSIDSIZE 8", stages: "s1", ssidBits: 8, cd2l: true },
  { name: "stage 2 only", stages: "s2", ssidBits: 20, cd2l: true },
];

describe.each(FEATURES)("STE and CD-table rules: $name", (f) => {
  let m: Machine;
  let t: Tables;
  let s2root = 0;
  const roots: number[] = [];

  beforeAll(async () => {
    ({ m, t } = await bootSmmu({ strict: true, stages: f.stages, ssidBits: f.ssidBits, cd2l: f.cd2l }));
    t.enable({ cmdqLog2: 8 });
    for (let k = 0; k < POOL; k++) {
      const pt = new PageTable(t, 12, 48);
      pt.map(IOVA, POOL_PA + k * 0x1000, 0x1000);
      m.memory.write32(POOL_PA + k * 0x1000, k);
      roots.push(pt.root);
    }
    m.memory.write32(IOVA, MARK_BYPASS);
    m.memory.write32(S2_LOW_PA + IOVA, MARK_S2);
    const s2 = new PageTable(t, 12, 40, true, 1);
    s2.map(0x4000_0000, 0x4000_0000, 2 * 2 ** 30, {}, 1);
    s2.map(0, S2_LOW_PA, 2 ** 30, {}, 1);
    s2root = s2.root;
  });

  afterAll(async () => {
    await m.teardown();
  });

  /** Write the case's STE and CD tables, run one DMA read, and clean up. */
  function run(c: Case): { got: Outcome; events: { id: number; ssv: boolean; ssid: number }[] } {
    const written: number[] = [];
    const put = (pa: number, d: bigint[]) => {
      t.writeDwords(pa, d);
      written.push(pa, d.length);
    };
    const cdmaxEff = f.ssidBits === 0 ? 0 : c.s1cdmax;
    const fmtEff = cdmaxEff === 0 || c.s1fmt === 3 ? 0 : c.s1fmt;
    const idxs = c.ssid > 0 ? [0, c.ssid] : [0];
    for (const idx of idxs) {
      const loc = cdLocation(c, f, idx);
      if (loc.l1 !== undefined) put(loc.l1, [c.l1Valid ? BigInt(loc.l2!) | 1n : BigInt(loc.l2!)]);
      const pool = idx === 0 ? c.cd0Pool : c.cdPool;
      const v = idx === 0 ? c.cd0Valid : c.cdValid;
      put(loc.cd, cdDwords({ v, t0sz: 16, asid: pool + 1, ttb0: roots[pool]! }));
    }
    const ste = steDwords({
      v: c.v,
      config: c.config,
      s1fmt: c.s1fmt,
      s1ctx: fmtEff === 0 ? LIN_BASE : L1_BASE,
      s1cdmax: c.s1cdmax,
      s1dss: c.s1dss,
      vmid: 1,
      s2t0sz: 24,
      s2sl0: 1,
      s2tg: 0,
      s2ps: 5,
      s2ttb: s2root,
      s2aa64: true,
      s2r: true,
    });
    put(t.steAddr(SID0), ste);
    t.cfgiAll();
    t.tlbiNsnhAll();
    t.sync();
    let got: Outcome;
    try {
      const opts = c.ssid >= 0 ? { pasid: c.ssid } : {};
      const b = m.device("smmu-dma0").dmaRead(IOVA, 4, opts);
      got = { mark: new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) };
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      got = e.faultCode === SMMU_ABORT ? { abort: true } : { event: e.faultCode, ssid: c.ssid };
    }
    const events = t.events().map((e) => ({ id: e.id, ssv: e.ssv, ssid: e.ssid }));
    for (let i = 0; i < written.length; i += 2) m.memory.fill(written[i]!, written[i + 1]! * 8, 0);
    return { got, events };
  }

  it("every Config, S1DSS, S1Fmt and S1CDMax, with and without a SubstreamID, does what the spec says", () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const want = expected(c, f);
        const { got, events } = run(c);
        expect(got).toEqual(want);
        if ("event" in want) {
          expect(events).toEqual([{ id: want.event, ssv: c.ssid >= 0, ssid: c.ssid >= 0 ? c.ssid : 0 }]);
        } else {
          expect(events).toEqual([]);
        }
        expect(m.diag.unexpected()).toEqual([]);
      }),
      { numRuns: 500, seed: 0x5e7e },
    );
  });
});
