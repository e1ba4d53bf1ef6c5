/**
 * The hardware model's strict mode (every IOTLB, paging-structure, context and PASID cache hit re-checked against
 * memory) with 2-entry caches: random map/unmap/replace (paging, identity, blocked)/realloc/PASID attach, replace and
 * detach/DMA sequences through the driver, on nvme0 (ATS, PASID), in scalable mode (first- and second-stage domains)
 * and legacy mode, never hit a stale entry, and DMA always agrees with a simple
 * model of what is mapped; with the IOTLB invalidations removed on purpose (the test-only `skipIotlbFlush` option)
 * the same checker reports a stale IOTLB hit.
 */
import { IOMMU_HWPT_ALLOC } from "@iommu-sim/core";
import { runStrictSequence, type StrictOp, strictOpArb } from "@iommu-sim/testkit/driver-tests";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const TINY = {
  strict: true,
  tlbEntries: 2,
  tlbWays: 1,
  contextEntries: 2,
  pasidEntries: 2,
  cacheWays: 1,
  pagingCacheEntries: 2,
};
type Op = StrictOp;
const opArb = strictOpArb(fc, { special: true, pasid: true });
/** The PASID the sequences attach domains at (scalable mode). */
const PASID = 7;

async function runSequence(ops: Op[], hw: Record<string, unknown>, driver: { skipIotlbFlush?: boolean } = {}) {
  const b = await boot({ ...TINY, ...hw }, driver);
  // Scalable: two first-stage domains and one second-stage nest parent, all PASID-capable, and PASID steps;
  // legacy: three second-stage domains and no PASIDs.
  const sm = b.iommu.sm;
  const r = await runStrictSequence(ops, {
    m: b.m,
    device: "nvme0",
    flagsOf: (i) => (sm ? IOMMU_HWPT_ALLOC.PASID : 0) | (i === 2 && sm ? IOMMU_HWPT_ALLOC.NEST_PARENT : 0),
    staleReports: () => b.hw.stats.staleReports,
    identity: b.drv.identity,
    blocked: b.drv.blocked,
    ...(sm ? { pasid: PASID } : {}),
  });
  return { b, ...r };
}

describe.each([
  ["scalable mode", {}],
  ["legacy mode", { scalableMode: false }],
] as const)("strict mode, %s", (_name, hw) => {
  it("finds no stale cache hit across random map/unmap/attach/replace/realloc/PASID sequences", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
        const r = await runSequence(ops, hw);
        expect(r.mismatches).toEqual([]);
        expect(r.stale).toBe(0);
        await teardownAll();
      }),
      { numRuns: Number(process.env.VTD_STRICT_RUNS ?? 25) },
    );
  }, 60_000);

  it("does find a stale IOTLB hit when the driver skips its invalidations", async () => {
    const ops: Op[] = [
      { k: "replace", d: 0 },
      { k: "map", d: 0, page: 1, buf: 0, big: false },
      { k: "dma", page: 1 },
      { k: "unmap", d: 0, page: 1 },
      { k: "dma", page: 1 },
    ];
    const good = await runSequence(ops, hw);
    expect(good.stale).toBe(0);
    expect(good.mismatches).toEqual([]);
    await teardownAll();
    const bad = await runSequence(ops, hw, { skipIotlbFlush: true });
    expect(bad.stale).toBeGreaterThan(0);
    expect(bad.mismatches.length).toBeGreaterThan(0);
    bad.b.m.diag.acknowledge({ kind: "warning", message: /stale/ });
  });
});
