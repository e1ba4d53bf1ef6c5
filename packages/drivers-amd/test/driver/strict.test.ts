/**
 * The hardware model's strict mode (every DTE-cache, IOTLB and page-directory-cache hit re-checked against memory)
 * with 2-entry caches: random map/unmap/replace/realloc/DMA sequences through the driver never hit a stale entry,
 * and DMA always agrees with a simple model of what is mapped; with the IOTLB invalidation removed on purpose (the
 * test-only `skipIotlbFlush` option) the same checker reports a stale IOTLB hit.
 */
import { runStrictSequence, type StrictOp, strictOpArb } from "@iommu-sim/testkit/driver-tests";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const TINY = { strict: true, tlbEntries: 2, tlbWays: 1, dteEntries: 2, pdcEntries: 2 };
type Op = StrictOp;
const opArb = strictOpArb(fc);

async function runSequence(ops: Op[], driver: { skipIotlbFlush?: boolean } = {}) {
  const b = await boot(TINY, driver);
  const r = await runStrictSequence(ops, { m: b.m, device: "amd-nic0", staleReports: () => b.hw.stats.staleReports });
  return { b, ...r };
}

describe("strict mode", () => {
  it("finds no stale cache hit across random map/unmap/replace/realloc sequences", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
        const r = await runSequence(ops);
        expect(r.mismatches).toEqual([]);
        expect(r.stale).toBe(0);
        await teardownAll();
      }),
      { numRuns: Number(process.env.AMD_STRICT_RUNS ?? 25) },
    );
  });

  it("does find a stale IOTLB hit when the driver skips its invalidations", async () => {
    const ops: Op[] = [
      { k: "replace", d: 0 },
      { k: "map", d: 0, page: 1, buf: 0, big: false },
      { k: "dma", page: 1 },
      { k: "unmap", d: 0, page: 1 },
      { k: "dma", page: 1 },
    ];
    const good = await runSequence(ops);
    expect(good.stale).toBe(0);
    expect(good.mismatches).toEqual([]);
    await teardownAll();
    const bad = await runSequence(ops, { skipIotlbFlush: true });
    expect(bad.stale).toBeGreaterThan(0);
    expect(bad.mismatches.length).toBeGreaterThan(0);
    bad.b.m.diag.acknowledge({ kind: "warning", message: /stale/ });
  });

  it("a freed domain's ID is reused only after its IOTLB entries are gone", async () => {
    // d0 caches a translation, is detached, freed and reallocated (same domain ID): DMA must fault, not hit.
    const ops: Op[] = [
      { k: "replace", d: 0 },
      { k: "map", d: 0, page: 1, buf: 0, big: false },
      { k: "dma", page: 1 },
      { k: "replace", d: 1 },
      { k: "realloc", d: 0 },
      { k: "replace", d: 0 },
      { k: "dma", page: 1 },
    ];
    const r = await runSequence(ops);
    expect(r.mismatches).toEqual([]);
    expect(r.stale).toBe(0);
  });
});
