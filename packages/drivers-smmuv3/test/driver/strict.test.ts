/**
 * The hardware model's strict mode (every TLB/config/walk-cache hit re-checked against memory) with tiny caches:
 * random map/unmap/attach/replace/DMA sequences through the driver never hit a stale entry, and DMA always agrees
 * with a simple model of what is mapped; with the TLBI commands removed on purpose (the test-only `skipTlbi`
 * option) the same checker finds a stale TLB hit.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { Smmuv3Hw } from "../../src/index.js";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const TINY = {
  strict: true,
  tlbEntries: 2,
  tlbWays: 1,
  cfgEntries: 2,
  cfgWays: 1,
  walkCacheEntries: 2,
  walkCacheWays: 1,
  s2WalkTlbEntries: 2,
  s2WalkTlbWays: 1,
};
const RW = IOMMU_READ | IOMMU_WRITE;
const BASE = 0x100_0000;
const NPAGES = 6;
const NDOMAINS = 3; // two stage-1 domains and one stage-2 nesting parent

type Op =
  | { k: "map"; d: number; page: number; buf: number }
  | { k: "unmap"; d: number; page: number }
  | { k: "replace"; d: number }
  | { k: "realloc"; d: number }
  | { k: "dma"; page: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant("map" as const), d: fc.nat(NDOMAINS - 1), page: fc.nat(NPAGES - 1), buf: fc.nat(3) }),
  fc.record({ k: fc.constant("unmap" as const), d: fc.nat(NDOMAINS - 1), page: fc.nat(NPAGES - 1) }),
  fc.record({ k: fc.constant("replace" as const), d: fc.nat(NDOMAINS - 1) }),
  fc.record({ k: fc.constant("realloc" as const), d: fc.nat(NDOMAINS - 1) }),
  fc.record({ k: fc.constant("dma" as const), page: fc.nat(NPAGES - 1) }),
  fc.record({ k: fc.constant("dma" as const), page: fc.nat(NPAGES - 1) }),
);

async function runSequence(ops: Op[], driver: { skipTlbi?: boolean } = {}) {
  const b = await boot(TINY, driver);
  const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
  const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
  const group = dev.iommuGroup as IommuGroup;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const domains: IommuDomain[] = [
    await iommuPagingDomainAllocFlags(dev, 0),
    await iommuPagingDomainAllocFlags(dev, 0),
    await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT),
  ];
  const bufs = [0, 1, 2, 3].map((i) => {
    const pa = b.m.pages.allocPages(0, "t");
    b.m.memory.fill(pa, 4096, 0x10 + i);
    return pa;
  });
  const model = domains.map(() => new Map<number, number>());
  let cur = -1;
  const ep = b.m.device("smmu-dma0");
  const mismatches: string[] = [];
  for (const op of ops) {
    if (op.k === "map") {
      if (model[op.d]!.has(op.page)) continue;
      iommuMap(domains[op.d]!, BASE + op.page * 4096, bufs[op.buf]!, 4096, RW);
      model[op.d]!.set(op.page, op.buf);
    } else if (op.k === "unmap") {
      if (!model[op.d]!.has(op.page)) continue;
      iommuUnmap(domains[op.d]!, BASE + op.page * 4096, 4096);
      model[op.d]!.delete(op.page);
    } else if (op.k === "realloc") {
      // Free a detached domain and allocate a new one: its ASID/VMID may be reused at once.
      if (op.d === cur) continue;
      for (const p of model[op.d]!.keys()) iommuUnmap(domains[op.d]!, BASE + p * 4096, 4096);
      model[op.d]!.clear();
      iommuDomainFree(domains[op.d]!);
      domains[op.d] = await iommuPagingDomainAllocFlags(dev, op.d === 2 ? IOMMU_HWPT_ALLOC.NEST_PARENT : 0);
    } else if (op.k === "replace") {
      await iommuGroupReplaceDomain(group, domains[op.d]!);
      cur = op.d;
    } else {
      const want = cur < 0 ? undefined : model[cur]!.get(op.page);
      let got: number | "fault";
      try {
        got = ep.dmaRead(BASE + op.page * 4096 + 8, 1)[0]!;
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e;
        got = "fault";
      }
      // The default domain (cur < 0) maps nothing at BASE either.
      const exp = want === undefined ? "fault" : 0x10 + want;
      if (got !== exp) mismatches.push(`${JSON.stringify(op)} on domain ${cur}: got ${got}, want ${exp}`);
    }
  }
  const stale = hw.stats.staleReports;
  // Clean up: back to the default domain, unmap, free.
  await iommuDeviceReleaseDmaOwner(dev);
  domains.forEach((d, i) => {
    for (const p of model[i]!.keys()) iommuUnmap(d, BASE + p * 4096, 4096);
    iommuDomainFree(d);
  });
  for (const pa of bufs) b.m.pages.freePages(pa, 0);
  await b.smmu.drainQueues();
  return { b, stale, mismatches };
}

describe("strict mode", () => {
  it("finds no stale TLB/config hit across random map/unmap/attach/replace sequences", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
        const r = await runSequence(ops);
        expect(r.mismatches).toEqual([]);
        expect(r.stale).toBe(0);
        await teardownAll();
      }),
      { numRuns: Number(process.env.SMMU_STRICT_RUNS ?? 30) },
    );
  });

  it("does find a stale TLB hit when the driver skips its TLBI commands", async () => {
    const ops: Op[] = [
      { k: "replace", d: 0 },
      { k: "map", d: 0, page: 1, buf: 0 },
      { k: "dma", page: 1 },
      { k: "unmap", d: 0, page: 1 },
      { k: "dma", page: 1 },
    ];
    const good = await runSequence(ops);
    expect(good.stale).toBe(0);
    expect(good.mismatches).toEqual([]);
    await teardownAll();
    const bad = await runSequence(ops, { skipTlbi: true });
    expect(bad.stale).toBeGreaterThan(0);
    expect(bad.mismatches.length).toBeGreaterThan(0);
    bad.b.m.diag.acknowledge({ kind: "warning", message: /stale/ });
  });
});
