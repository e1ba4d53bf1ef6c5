/**
 * The hardware model's strict mode (every IOTLB, paging-structure, context and PASID cache hit re-checked against
 * memory) with 2-entry caches: random map/unmap/replace (paging, identity, blocked)/realloc/PASID attach, replace and
 * detach/DMA sequences through the driver, in scalable mode (first- and second-stage domains) and legacy mode, never hit a stale entry, and DMA always agrees with a simple
 * model of what is mapped; with the IOTLB invalidations removed on purpose (the test-only `skipIotlbFlush` option)
 * the same checker reports a stale IOTLB hit.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuReplaceDevicePasid,
  iommuUnmap,
} from "@iommu-sim/core";
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
const RW = IOMMU_READ | IOMMU_WRITE;
const BASE = 0x100_0000;
const NPAGES = 6;
const NDOMAINS = 3;

/** Replace targets beyond the paging domains: the identity and the blocked domain. */
const IDENTITY = NDOMAINS;
const BLOCKED = NDOMAINS + 1;
/** The PASID the sequences attach domains at (scalable mode). */
const PASID = 7;

type Op =
  | { k: "map"; d: number; page: number; buf: number; big: boolean }
  | { k: "unmap"; d: number; page: number }
  | { k: "replace"; d: number }
  | { k: "realloc"; d: number }
  | { k: "pasid"; d: number }
  | { k: "unpasid" }
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
  fc.record({ k: fc.constant("replace" as const), d: fc.nat(NDOMAINS + 1) }),
  fc.record({ k: fc.constant("realloc" as const), d: fc.nat(NDOMAINS - 1) }),
  fc.record({ k: fc.constant("pasid" as const), d: fc.nat(NDOMAINS - 1) }),
  fc.record({ k: fc.constant("unpasid" as const) }),
  fc.record({ k: fc.constant("dma" as const), page: fc.nat(NPAGES - 1) }),
  fc.record({ k: fc.constant("dma" as const), page: fc.nat(NPAGES - 1) }),
);

/** Each model page is 4 KiB or, for "big" maps, a 2 MiB leaf of its own 2 MiB-aligned region. */
function iovaOf(page: number, big: boolean): number {
  return big ? BASE * 16 + page * 2 ** 21 : BASE + page * 4096;
}

async function runSequence(ops: Op[], hw: Record<string, unknown>, driver: { skipIotlbFlush?: boolean } = {}) {
  const b = await boot({ ...TINY, ...hw }, driver);
  const dev = b.m.driverCore.deviceFor("nvme0")!;
  const group = dev.iommuGroup as IommuGroup;
  await iommuDeviceClaimDmaOwner(dev, "test");
  // Scalable: two first-stage domains and one second-stage nest parent, all PASID-capable; legacy: three
  // second-stage domains (and no PASIDs: those ops are skipped).
  const sm = b.iommu.sm;
  const flagsOf = (i: number) => (sm ? IOMMU_HWPT_ALLOC.PASID : 0) | (i === 2 && sm ? IOMMU_HWPT_ALLOC.NEST_PARENT : 0);
  const domains: IommuDomain[] = [];
  for (let i = 0; i < NDOMAINS; i++) domains.push(await iommuPagingDomainAllocFlags(dev, flagsOf(i)));
  const bufs = [0, 1, 2, 3].map((i) => {
    const pa = b.m.pages.allocPages(9, "test-buf");
    b.m.memory.fill(pa, 4096, 0x10 + i);
    return pa;
  });
  const model = domains.map(() => new Map<number, { buf: number; big: boolean }>());
  let cur = -1;
  let curPasid = -1;
  const ep = b.m.device("nvme0");
  const mismatches: string[] = [];
  const unmapAll = (i: number) => {
    for (const [p, v] of model[i]!) iommuUnmap(domains[i]!, iovaOf(p, v.big), v.big ? 2 ** 21 : 4096);
    model[i]!.clear();
  };
  for (const op of ops) {
    if (op.k === "map") {
      if (model[op.d]!.has(op.page)) continue;
      iommuMap(domains[op.d]!, iovaOf(op.page, op.big), bufs[op.buf]!, op.big ? 2 ** 21 : 4096, RW);
      model[op.d]!.set(op.page, { buf: op.buf, big: op.big });
    } else if (op.k === "unmap") {
      const v = model[op.d]!.get(op.page);
      if (!v) continue;
      iommuUnmap(domains[op.d]!, iovaOf(op.page, v.big), v.big ? 2 ** 21 : 4096);
      model[op.d]!.delete(op.page);
    } else if (op.k === "realloc") {
      // Free a detached domain and allocate a new one: its domain ID may be reused at once.
      if (op.d === cur || op.d === curPasid) continue;
      unmapAll(op.d);
      iommuDomainFree(domains[op.d]!);
      domains[op.d] = await iommuPagingDomainAllocFlags(dev, flagsOf(op.d));
    } else if (op.k === "replace") {
      const d = op.d === IDENTITY ? b.drv.identity : op.d === BLOCKED ? b.drv.blocked : domains[op.d]!;
      await iommuGroupReplaceDomain(group, d);
      cur = op.d;
    } else if (op.k === "pasid") {
      if (!sm || op.d === curPasid) continue;
      if (curPasid < 0) await iommuAttachDevicePasid(domains[op.d]!, dev, PASID);
      else await iommuReplaceDevicePasid(domains[op.d]!, dev, PASID, { domain: undefined });
      curPasid = op.d;
    } else if (op.k === "unpasid") {
      if (curPasid < 0) continue;
      await iommuDetachDevicePasid(domains[curPasid]!, dev, PASID);
      curPasid = -1;
    } else {
      for (const pasid of sm ? [-1, PASID] : [-1]) {
        const on = pasid < 0 ? cur : curPasid;
        for (const big of [false, true]) {
          const iova = iovaOf(op.page, big) + 8;
          let exp: number | "fault";
          if (on === IDENTITY) exp = b.m.memory.readBytes(iova, 1)[0]!;
          else {
            const m = on < 0 || on === BLOCKED ? undefined : model[on]!.get(op.page);
            exp = m && m.big === big ? 0x10 + m.buf : "fault";
          }
          let got: number | "fault";
          try {
            got = ep.dmaRead(iova, 1, pasid < 0 ? undefined : { pasid })[0]!;
          } catch (e) {
            if (!(e instanceof DmaFault)) throw e;
            got = "fault";
          }
          if (got !== exp)
            mismatches.push(`${JSON.stringify(op)} big=${big} pasid=${pasid} on ${on}: got ${got}, want ${exp}`);
        }
      }
    }
  }
  const stale = b.hw.stats.staleReports;
  if (curPasid >= 0) await iommuDetachDevicePasid(domains[curPasid]!, dev, PASID);
  await iommuDeviceReleaseDmaOwner(dev);
  for (let i = 0; i < NDOMAINS; i++) {
    unmapAll(i);
    iommuDomainFree(domains[i]!);
  }
  for (const pa of bufs) b.m.pages.freePages(pa, 9);
  return { b, stale, mismatches };
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
