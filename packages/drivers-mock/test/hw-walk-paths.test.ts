/**
 * Property: the hardware model's miss path has a short loop for the common case (MockIommuHw's walkFill) beside the
 * full walker of `hw/walk.ts`. The short loop may only ever be an optimisation: for random table chains (every level
 * count, valid and corrupt entries of every kind, tables and outputs above and below 4 GiB, tables in the memory's
 * pooled tier) and random accesses, what a DMA sees must be what the full walker and the permission rules decide,
 * on the first access (a walk) and on the second (an IOTLB hit).
 */
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { WalkResult, walkStage } from "../src/hw/walk.js";
import {
  BASE,
  CR,
  CTX,
  CTX_MODE,
  FAULT_CODE,
  fieldPrep,
  MockIommuHw,
  maskOf,
  PT_BITS_PER_LEVEL,
  PT_GRANULE_LG2,
  PTE,
  REG,
} from "../src/index.js";

const TWO_32 = 2 ** 32;
const RID = 3;
/** Tables below 4 GiB come from here, tables above from HIGH_TABLES; the device table sits at DT. */
const LOW_TABLES = 0x1000_0000;
const HIGH_TABLES = 2 ** 34;
const DT = 0x0800_0000;

/** What one level of the chain holds at the index the access uses. */
type EntryKind =
  | "table"
  | "table-high" // a table pointer above 4 GiB
  | "table-misaligned" // bit 11 of a table pointer set
  | "leaf"
  | "leaf-high" // output above 4 GiB
  | "leaf-misaligned" // a 1 MiB leaf whose output is not 1 MiB aligned
  | "invalid"
  | "res0" // a reserved bit of the low word
  | "res1"; // a reserved bit of the high word

interface Level {
  kind: EntryKind;
  r: boolean;
  w: boolean;
  nx: boolean;
  priv: boolean;
  d: boolean;
  /** Output frame (2 KiB units) of a leaf. */
  oaPage: number;
}

interface Case {
  levels: number;
  iova: number;
  rootHigh: boolean;
  dirty: boolean;
  pooled: boolean;
  chain: Level[];
  write: boolean;
  exec: boolean;
  privileged: boolean;
}

/** Mostly true. */
const likely = fc.integer({ min: 0, max: 4 }).map((n) => n !== 0);
/** Mostly false. */
const unlikely = fc.integer({ min: 0, max: 4 }).map((n) => n === 0);

const leafBits = fc.record({
  r: likely,
  w: likely,
  nx: unlikely,
  priv: unlikely,
  d: fc.boolean(),
  oaPage: fc.integer({ min: 1, max: 2 ** 20 }),
});

/** Kinds that replace one entry of an otherwise well-formed chain (some valid but unusual, most faulting). */
const odd = fc.constantFrom<EntryKind>(
  "table-high",
  "table-misaligned",
  "leaf-high",
  "leaf-misaligned",
  "invalid",
  "res0",
  "res1",
  "table",
  "leaf",
);

/**
 * A chain of table pointers from the top level down to a leaf (at level 0 mostly, at level 1 often, anywhere
 * sometimes), in which one entry may be replaced by an odd kind.
 */
const testCase: fc.Arbitrary<Case> = fc.integer({ min: 1, max: 5 }).chain((levels) =>
  fc
    .record({
      levels: fc.constant(levels),
      // Mostly inside the 4 GiB the short loop handles; sometimes beyond a shallow tree's span, or above 4 GiB.
      iova: fc.oneof(
        { weight: 6, arbitrary: fc.integer({ min: 0, max: TWO_32 - 1 }) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 47 - 1 }) },
      ),
      leafAt: fc.oneof(
        { weight: 6, arbitrary: fc.constant(0) },
        { weight: 2, arbitrary: fc.constant(Math.min(1, levels - 1)) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: levels - 1 }) },
      ),
      odd: fc.option(fc.tuple(fc.integer({ min: 0, max: levels - 1 }), odd), { freq: 2 }),
      bits: fc.array(leafBits, { minLength: levels, maxLength: levels }),
      rootHigh: fc.integer({ min: 0, max: 6 }).map((n) => n === 0),
      dirty: fc.boolean(),
      pooled: fc.boolean(),
      write: fc.boolean(),
      exec: unlikely,
      privileged: fc.boolean(),
    })
    .map(({ leafAt, odd, bits, ...rest }) => {
      // chain[i] is the entry at level (levels - 1 - i).
      const chain: Level[] = bits.map((b, i) => {
        const l = levels - 1 - i;
        let kind: EntryKind = l > leafAt ? "table" : "leaf";
        if (odd !== null && odd[0] === l) kind = odd[1];
        return { kind, ...b };
      });
      return { ...rest, chain };
    }),
);

const V = maskOf(PTE.V);
const T = maskOf(PTE.T);

/** Write the case's chain into `mem` (the entries on the access's path only) and return the root. */
function buildChain(mem: PhysicalMemory, c: Case): number {
  let lowNext = LOW_TABLES;
  let highNext = HIGH_TABLES;
  const allocTable = (high: boolean): number => {
    const pa = high ? highNext : lowNext;
    if (high) highNext += 4096;
    else lowNext += 4096;
    return pa;
  };
  const root = allocTable(c.rootHigh);
  let table = root;
  for (let l = c.levels - 1; l >= 0; l--) {
    const e = c.chain[c.levels - 1 - l]!;
    const shift = PT_GRANULE_LG2 + PT_BITS_PER_LEVEL * l;
    const index = Math.floor(c.iova / 2 ** shift) % 2 ** PT_BITS_PER_LEVEL;
    const at = table + index * 8;
    const perms =
      fieldPrep(PTE.R, e.r ? 1 : 0) |
      fieldPrep(PTE.W, e.w ? 1 : 0) |
      fieldPrep(PTE.NX, e.nx ? 1 : 0) |
      fieldPrep(PTE.PRIV, e.priv ? 1 : 0) |
      fieldPrep(PTE.D, e.d ? 1 : 0);
    let lo = 0;
    let hi = 0;
    let next = -1;
    switch (e.kind) {
      case "table":
      case "table-high":
      case "table-misaligned": {
        next = allocTable(e.kind === "table-high");
        const ptr = e.kind === "table-misaligned" ? next + 2048 : next;
        lo = (V | T | (ptr % TWO_32)) >>> 0;
        hi = Math.floor(ptr / TWO_32);
        break;
      }
      case "leaf":
      case "leaf-high":
      case "leaf-misaligned": {
        // A level-1 leaf maps 1 MiB: align its output unless the case wants it misaligned.
        const unit = l === 1 && e.kind !== "leaf-misaligned" ? 2 ** 20 : 2 ** PT_GRANULE_LG2;
        const oa = (e.kind === "leaf-high" ? 2 ** 35 : 0x4000_0000) + ((e.oaPage * unit) % 2 ** 30);
        lo = (V | perms | (oa % TWO_32)) >>> 0;
        hi = Math.floor(oa / TWO_32);
        break;
      }
      case "invalid":
        lo = perms & ~V;
        break;
      case "res0":
        lo = (V | perms | fieldPrep(PTE.RES0, 1) | 0x4000_0000) >>> 0;
        break;
      case "res1":
        lo = (V | perms | 0x4000_0000) >>> 0;
        hi = 1 << (PTE.RES1.bit - 32);
        break;
    }
    mem.write32(at, lo);
    mem.write32(at + 4, hi);
    if (next < 0) break;
    table = next;
  }
  return root;
}

/** A model with translation enabled and RID's device-table entry pointing at `root`. */
function boot(mem: PhysicalMemory, c: Case, root: number): MockIommuHw {
  const hw = new MockIommuHw({ name: "paths", memory: mem, diag: new Diagnostics(), options: { tlbEntries: 16 } });
  const ctx = DT + RID * 32;
  mem.write32(
    ctx,
    fieldPrep(CTX.V, 1) |
      fieldPrep(CTX.MODE, CTX_MODE.TRANSLATE) |
      fieldPrep(CTX.LEVELS, c.levels) |
      fieldPrep(CTX.DIRTY, c.dirty ? 1 : 0),
  );
  mem.write32(ctx + 4, fieldPrep(CTX.DID, 7));
  mem.write32(ctx + 8, root % TWO_32);
  mem.write32(ctx + 12, Math.floor(root / TWO_32));
  hw.write32(REG.DT_BASE_LO.offset, DT | fieldPrep(BASE.LOG2SIZE, 4));
  hw.write32(REG.CR.offset, fieldPrep(CR.EN, 1));
  return hw;
}

/** What the access must see: the full walker's decision, then the permission rules of the spec. */
function expected(
  mem: PhysicalMemory,
  c: Case,
  root: number,
): { fault: number; pa?: number; length?: number; ptePa?: number } {
  const r = new WalkResult();
  const f = walkStage(mem, root, c.levels, c.iova, r);
  if (f !== 0) return { fault: f };
  const leaf = r.leafLo;
  const readable = (leaf & maskOf(PTE.R)) !== 0;
  const ok =
    (c.write ? (leaf & maskOf(PTE.W)) !== 0 : readable) &&
    (!c.exec || (readable && (leaf & maskOf(PTE.NX)) === 0)) &&
    (c.privileged || (leaf & maskOf(PTE.PRIV)) === 0);
  if (!ok) return { fault: FAULT_CODE.PERMISSION };
  return { fault: 0, pa: r.pa, length: r.span - (c.iova % 2 ** PT_GRANULE_LG2), ptePa: r.ptePa };
}

describe("mock IOMMU hardware model: the miss path's short loop and the full walker", () => {
  it("decide every access alike, on the walk and on the IOTLB hit", () => {
    let walked = 0;
    fc.assert(
      fc.property(testCase, (c) => {
        // Pooled: only the zero frame in the fast tier, so every table lives in the pooled tier.
        const mem = new PhysicalMemory({ size: 2 ** 36, firstTierBytes: c.pooled ? 4096 : 2 ** 20 });
        const root = buildChain(mem, c);
        const hw = boot(mem, c, root);
        const want = expected(mem, c, root);
        const req = newDmaRequest();
        req.requesterId = RID;
        const out = newDmaTranslation();
        // A read of the neighbouring 2 KiB page first, so the device's configuration is cached and the access under
        // test takes the miss path of a configured context (the short loop) rather than the configuration fetch.
        req.iova = c.iova % 4096 < 2048 ? c.iova + 2048 : c.iova - 2048;
        hw.translate(req, out);
        const missesBefore = hw.stats.tlbMisses;
        req.iova = c.iova;
        req.write = c.write;
        req.exec = c.exec;
        req.privileged = c.privileged;
        for (const pass of ["walk", "hit"]) {
          out.faultCode = 0;
          hw.translate(req, out);
          expect({ pass, fault: out.faultCode }).toEqual({ pass, fault: want.fault });
          if (want.fault !== 0) return;
          expect({ pass, pa: out.pa, length: out.length }).toEqual({ pass, pa: want.pa, length: want.length });
          walked++;
        }
        expect(hw.stats.tlbMisses).toBe(missesBefore + 1);
        // A write through a dirty-tracking context leaves D set in the leaf.
        if (c.write && c.dirty) expect(mem.read32(want.ptePa!) & maskOf(PTE.D)).not.toBe(0);
      }),
      { numRuns: 3000, seed: 20261122 },
    );
    // The property would be vacuous if the chains almost never reached a leaf.
    expect(walked).toBeGreaterThan(200);
  });
});
