/**
 * The hitless entry writer (arm_smmu_write_entry) against an independent checker: for random pairs of legal STEs
 * (abort, bypass, stage 1, stage 2, nested) and CDs, the writer runs on an in-memory entry whose every 64-bit store
 * is observed; after each store the entry must be invalid (V=0) or, on the fields the hardware reads for its
 * config, equal to the old or to the target entry. The checker decodes raw bit positions from the SMMUv3
 * specification (STE/CD layouts) and imports neither the hardware model nor the driver's field tables.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  armSmmuGetCdUsed,
  armSmmuGetSteUsed,
  armSmmuWriteEntry,
  type EntryQwords,
  type EntryWriter,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeNestedDomainSte,
  makeS1Cd,
  makeS2DomainSte,
  newEntry,
} from "../../src/driver/index.js";

// --- independent checker -------------------------------------------------------------------------------------

const bits = (q: bigint, hi: number, lo: number) => (q >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n);

/** The fields an SMMU reads for the STE's configuration, as [qword, hi, lo] (SMMUv3 spec §5.2). */
function steFields(e: ArrayLike<bigint>): [number, number, number][] | "invalid" | "illegal" {
  if (!(e[0]! & 1n)) return "invalid";
  const cfg = Number(bits(e[0]!, 3, 1));
  const f: [number, number, number][] = [[0, 3, 0]];
  if (cfg === 0) return f;
  if (cfg === 4) return [...f, [1, 45, 44]];
  if (cfg !== 5 && cfg !== 6 && cfg !== 7) return "illegal";
  if (cfg & 1) {
    // S1Fmt, S1ContextPtr, S1CDMax; S1DSS..S1CSH, S1STALLD, EATS, STRW; S2VMID.
    f.push([0, 5, 4], [0, 51, 6], [0, 63, 59], [1, 7, 0], [1, 27, 27], [1, 29, 28], [1, 31, 30], [2, 15, 0]);
    if (bits(e[1]!, 1, 0) === 1n) f.push([1, 45, 44]);
    // A stage-1 STE must point at a CD table.
    if (bits(e[0]!, 51, 6) === 0n) return "illegal";
  }
  if (cfg & 2) {
    // EATS, SHCFG, S2VMID, VTCR, S2AA64, S2ENDI, S2PTW, S2R, S2TTB.
    f.push([1, 29, 28], [1, 45, 44], [2, 15, 0], [2, 50, 32], [2, 52, 51], [2, 54, 54], [2, 58, 57], [3, 51, 4]);
    if (bits(e[2]!, 51, 51) !== 1n || bits(e[3]!, 51, 4) === 0n) return "illegal";
  }
  return f;
}

/** CD fields read when V=1 (everything except what EPD0 disables). */
function cdFields(e: ArrayLike<bigint>): [number, number, number][] | "invalid" {
  if (!(e[0]! & (1n << 31n))) return "invalid";
  const f: [number, number, number][] = [
    [0, 63, 14],
    [2, 63, 0],
    [3, 63, 0],
  ];
  if (!(e[0]! & (1n << 14n))) f.push([0, 13, 0], [1, 63, 0]);
  return f;
}

function project(e: ArrayLike<bigint>, f: [number, number, number][]): string {
  return f.map(([q, hi, lo]) => bits(e[q]!, hi, lo).toString(16)).join(",");
}

/** Legal for the hardware: invalid, or equal to `a` or `b` on every field it reads. */
function legal(
  fields: (e: ArrayLike<bigint>) => [number, number, number][] | "invalid" | "illegal",
  cur: ArrayLike<bigint>,
  a: ArrayLike<bigint>,
  b: ArrayLike<bigint>,
): boolean {
  const fc0 = fields(cur);
  if (fc0 === "invalid") return true;
  if (fc0 === "illegal") return false;
  const p = project(cur, fc0);
  for (const x of [a, b]) {
    const fx = fields(x);
    if (fx === "invalid" || fx === "illegal") continue;
    if (project(x, fx) === project(x, fc0) && project(x, fc0) === p && fx.length === fc0.length) return true;
  }
  return false;
}

// --- generators ------------------------------------------------------------------------------------------------

const feat = (attrTypesOvr: boolean) => ({ attrTypesOvr, stalls: false, e2h: false });
const page = fc.integer({ min: 1, max: 0xfffff }).map((p) => p * 4096);

const s2cfg = fc.record({
  vmid: fc.integer({ min: 1, max: 0xffff }),
  ttb: page,
  tsz: fc.constantFrom(16, 24, 28),
  sl: fc.integer({ min: 0, max: 2 }),
  tg: fc.constantFrom(0, 1, 2),
});

const steArb: fc.Arbitrary<EntryQwords> = fc.oneof(
  fc.constant(makeAbortSte()),
  fc.boolean().map((o) => makeBypassSte(feat(o))),
  fc
    .record({
      pa: page,
      fmt: fc.constantFrom(0, 2),
      cdmax: fc.integer({ min: 0, max: 20 }),
      s1dss: fc.integer({ min: 0, max: 2 }),
      ats: fc.boolean(),
      ovr: fc.boolean(),
    })
    .map((r) =>
      makeCdtableSte(
        feat(r.ovr),
        { pa: r.pa, s1fmt: r.fmt, s1cdmax: r.cdmax },
        { atsEnabled: r.ats, s1dss: r.s1dss, stallEnabled: false },
      ),
    ),
  fc
    .record({ s2: s2cfg, ats: fc.boolean(), ovr: fc.boolean() })
    .map((r) => makeS2DomainSte(feat(r.ovr), s2of(r.s2), r.ats)),
  fc
    .record({
      s2: s2cfg,
      pa: page,
      cdmax: fc.integer({ min: 0, max: 10 }),
      s1dss: fc.integer({ min: 0, max: 2 }),
      ats: fc.boolean(),
    })
    .map((r) => {
      const v0 = 1n | (5n << 1n) | BigInt(r.pa) | (BigInt(r.cdmax) << 59n);
      const v1 = BigInt(r.s1dss) | (1n << 2n) | (1n << 4n) | (3n << 6n);
      return makeNestedDomainSte(feat(false), [v0, v1], s2of(r.s2), r.ats);
    }),
);

function s2of(r: { vmid: number; ttb: number; tsz: number; sl: number; tg: number }) {
  return {
    vmid: r.vmid,
    cfg: { vtcr: { tsz: r.tsz, sl: r.sl, irgn: 1, orgn: 1, sh: 3, tg: r.tg, ps: 5 }, vttbr: r.ttb },
  };
}

const cdArb: fc.Arbitrary<EntryQwords> = fc.oneof(
  fc.constant(newEntry()),
  fc
    .record({
      asid: fc.integer({ min: 1, max: 0xffff }),
      ttb: page,
      tsz: fc.constantFrom(16, 25),
      hd: fc.boolean(),
      stall: fc.boolean(),
    })
    .map((r) =>
      makeS1Cd(
        {
          asid: r.asid,
          hd: r.hd,
          cfg: { tcr: { tsz: r.tsz, tg: 0, irgn: 1, orgn: 1, sh: 3, ips: 5 }, ttbr: r.ttb, mair: 0xf404ff44n },
        },
        r.stall,
      ),
    ),
);

// --- the property ------------------------------------------------------------------------------------------------

function run(
  getUsed: (e: EntryQwords, u: EntryQwords) => void,
  fields: (e: ArrayLike<bigint>) => [number, number, number][] | "invalid" | "illegal",
  from: EntryQwords,
  to: EntryQwords,
): { writes: number; syncs: number; bad: string[] } {
  const mem = [...from];
  const res = { writes: 0, syncs: 0, bad: [] as string[] };
  const w: EntryWriter = {
    getUsed,
    read: (i) => mem[i]!,
    write: (i, v) => {
      mem[i] = v;
      res.writes++;
      if (!legal(fields, mem, from, to))
        res.bad.push(`after store to qword ${i}: ${mem.map((q) => q.toString(16)).join(" ")}`);
    },
    sync: () => res.syncs++,
    warn: (m) => res.bad.push(m),
  };
  armSmmuWriteEntry(w, to);
  for (let i = 0; i < 8; i++) if (mem[i] !== to[i]) res.bad.push(`final qword ${i} differs`);
  return res;
}

describe("arm_smmu_write_entry", () => {
  it("never exposes an illegal STE between two 64-bit stores", () => {
    fc.assert(
      fc.property(steArb, steArb, (a, b) => {
        const r = run(armSmmuGetSteUsed, steFields, a, b);
        expect(r.bad).toEqual([]);
      }),
      { numRuns: Number(process.env.SMMU_WRITER_RUNS ?? 600) },
    );
  });

  it("never exposes an illegal CD between two 64-bit stores", () => {
    fc.assert(
      fc.property(cdArb, cdArb, (a, b) => {
        const r = run(armSmmuGetCdUsed, cdFields, a, b);
        expect(r.bad).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it("updates hitlessly when only S1DSS changes, and breaks (V=0) between unrelated configs", () => {
    const f = feat(false);
    const cd = { pa: 0x10000, s1fmt: 0, s1cdmax: 4 };
    const a = makeCdtableSte(f, cd, { atsEnabled: false, s1dss: 0, stallEnabled: false });
    const b = makeCdtableSte(f, cd, { atsEnabled: false, s1dss: 1, stallEnabled: false });
    const hitless = run(armSmmuGetSteUsed, steFields, a, b);
    expect(hitless).toMatchObject({ writes: 1, syncs: 1, bad: [] });
    const s2 = makeS2DomainSte(f, s2of({ vmid: 3, ttb: 0x20000, tsz: 16, sl: 2, tg: 0 }), false);
    // Stage 1 → stage 2 changes qwords 0, 2 and 3: V=0, fill, then qword 0.
    const breaking = run(armSmmuGetSteUsed, steFields, a, s2);
    expect(breaking.bad).toEqual([]);
    expect(breaking.syncs).toBe(3);
    // Abort → bypass: one qword.
    expect(run(armSmmuGetSteUsed, steFields, makeAbortSte(), makeBypassSte(f))).toMatchObject({ syncs: 1, bad: [] });
  });

  it("the checker rejects a naive in-order copy (so the property can fail)", () => {
    const f = feat(false);
    const a = makeCdtableSte(
      f,
      { pa: 0x10000, s1fmt: 0, s1cdmax: 4 },
      { atsEnabled: false, s1dss: 0, stallEnabled: false },
    );
    const b = makeS2DomainSte(f, s2of({ vmid: 3, ttb: 0x20000, tsz: 16, sl: 2, tg: 0 }), false);
    const mem = [...a];
    mem[0] = b[0]!; // qword 0 first: config says stage 2 while qwords 2/3 still hold stage-1 values
    expect(legal(steFields, mem, a, b)).toBe(false);
  });
});
