/**
 * The hardware model's strict mode (every DTE-cache, IOTLB and page-directory-cache hit re-checked against memory)
 * with 2-entry caches: random map/unmap/replace/realloc/DMA sequences through the driver never hit a stale entry,
 * and DMA always agrees with a simple model of what is mapped; with the IOTLB invalidation removed on purpose (the
 * test-only `skipIotlbFlush` option) the same checker reports a stale IOTLB hit.
 */
import {
  DmaFault,
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
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const TINY = { strict: true, tlbEntries: 2, tlbWays: 1, dteEntries: 2, pdcEntries: 2 };
const RW = IOMMU_READ | IOMMU_WRITE;
const BASE = 0x100_0000;
const NPAGES = 6;
const NDOMAINS = 3;

type Op =
  | { k: "map"; d: number; page: number; buf: number; big: boolean }
  | { k: "unmap"; d: number; page: number }
  | { k: "replace"; d: number }
  | { k: "realloc"; d: number }
  | { k: "dma"; page: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant("map" as const),
    d: fc.nat(NDOMAINS - 1),
    page: fc.nat(NPAGES - 1),
    buf: fc.nat(3),
    big: fc.boolean(),
  }),
  fc.record({ k: fc.constant("unmap" as const), d: fc.nat(NDOMAINS - 1), page: fc.nat(NPAGES - 1) }),
  fc.record({ k: fc.constant("replace" as const), d: fc.nat(NDOMAINS - 1) }),
  fc.record({ k: fc.constant("realloc" as const), d: fc.nat(NDOMAINS - 1) }),
  fc.record({ k: fc.constant("dma" as const), page: fc.nat(NPAGES - 1) }),
  fc.record({ k: fc.constant("dma" as const), page: fc.nat(NPAGES - 1) }),
);

/** Each model page is 4 KiB or, for "big" maps, a 2 MiB leaf of its own 2 MiB-aligned region. */
function iovaOf(page: number, big: boolean): number {
  return big ? BASE * 16 + page * 2 ** 21 : BASE + page * 4096;
}

async function runSequence(ops: Op[], driver: { skipIotlbFlush?: boolean } = {}) {
  const b = await boot(TINY, driver);
  const dev = b.m.driverCore.deviceFor("amd-nic0")!;
  const group = dev.iommuGroup as IommuGroup;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const domains: IommuDomain[] = [];
  for (let i = 0; i < NDOMAINS; i++) domains.push(await iommuPagingDomainAllocFlags(dev, 0));
  const bufs = [0, 1, 2, 3].map((i) => {
    const pa = b.m.pages.allocPages(9, "test-buf");
    b.m.memory.fill(pa, 4096, 0x10 + i);
    return pa;
  });
  const model = domains.map(() => new Map<number, { buf: number; big: boolean }>());
  let cur = -1;
  const ep = b.m.device("amd-nic0");
  const mismatches: string[] = [];
  const unmapAll = async (i: number) => {
    for (const [p, v] of model[i]!) await iommuUnmap(domains[i]!, iovaOf(p, v.big), v.big ? 2 ** 21 : 4096);
    model[i]!.clear();
  };
  for (const op of ops) {
    if (op.k === "map") {
      if (model[op.d]!.has(op.page)) continue;
      await iommuMap(domains[op.d]!, iovaOf(op.page, op.big), bufs[op.buf]!, op.big ? 2 ** 21 : 4096, RW);
      model[op.d]!.set(op.page, { buf: op.buf, big: op.big });
    } else if (op.k === "unmap") {
      const v = model[op.d]!.get(op.page);
      if (!v) continue;
      await iommuUnmap(domains[op.d]!, iovaOf(op.page, v.big), v.big ? 2 ** 21 : 4096);
      model[op.d]!.delete(op.page);
    } else if (op.k === "realloc") {
      // Free a detached domain and allocate a new one: its domain ID may be reused at once.
      if (op.d === cur) continue;
      await unmapAll(op.d);
      iommuDomainFree(domains[op.d]!);
      domains[op.d] = await iommuPagingDomainAllocFlags(dev, 0);
    } else if (op.k === "replace") {
      await iommuGroupReplaceDomain(group, domains[op.d]!);
      cur = op.d;
    } else {
      for (const big of [false, true]) {
        const m = cur < 0 ? undefined : model[cur]!.get(op.page);
        const want = m && m.big === big ? m.buf : undefined;
        let got: number | "fault";
        try {
          got = ep.dmaRead(iovaOf(op.page, big) + 8, 1)[0]!;
        } catch (e) {
          if (!(e instanceof DmaFault)) throw e;
          got = "fault";
        }
        const exp = want === undefined ? "fault" : 0x10 + want;
        if (got !== exp) mismatches.push(`${JSON.stringify(op)} big=${big} on domain ${cur}: got ${got}, want ${exp}`);
      }
    }
  }
  const stale = b.hw.stats.staleReports;
  await iommuDeviceReleaseDmaOwner(dev);
  for (let i = 0; i < NDOMAINS; i++) {
    await unmapAll(i);
    iommuDomainFree(domains[i]!);
  }
  for (const pa of bufs) b.m.pages.freePages(pa, 9);
  return { b, stale, mismatches };
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
