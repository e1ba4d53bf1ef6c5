/**
 * Dirty tracking on v1 domains against a model: random DMA reads and writes, tracking switched on and off, and
 * read-and-clear with and without IOMMU_DIRTY_NO_CLEAR; what is reported is exactly what was written while
 * tracking was on and not yet cleared, and the strict model sees no stale cache hit. Without EFR.HDSup a
 * dirty-tracking domain is EOPNOTSUPP, and `capable(DIRTY_TRACKING)` says so.
 */
import {
  IOMMU_CAP,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuReadAndClearDirty,
  iommuSetDirtyTracking,
  iommuUnmap,
} from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { ProtectionDomain } from "../../src/index.js";
import { boot, propertyCase, teardownAll } from "./helpers.js";

afterEach(teardownAll);
const BASE = 0x80_0000;
const PAGES = 4;

describe("dirty tracking", () => {
  it("reports exactly the pages written while tracking (random DMA, strict model clean)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant("write" as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
            fc.record({ op: fc.constant("read" as const), page: fc.integer({ min: 0, max: PAGES - 1 }) }),
            fc.record({ op: fc.constant("track" as const), on: fc.boolean() }),
            fc.record({ op: fc.constant("collect" as const), keep: fc.boolean() }),
          ),
          { maxLength: 30 },
        ),
        (ops) =>
          propertyCase(async () => {
            const b = await boot({ strict: true, tlbEntries: 4, tlbWays: 2 });
            const dev = b.m.driverCore.deviceFor("amd-nic0")!;
            await iommuDeviceClaimDmaOwner(dev, "test");
            const d = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING)) as ProtectionDomain;
            const pa = b.m.pages.allocPages(2, "test");
            await iommuMap(d, BASE, pa, PAGES * 4096, IOMMU_READ | IOMMU_WRITE);
            await iommuAttachDevice(d, dev);
            const ep = b.m.device("amd-nic0");
            let on = false;
            const dirty = new Set<number>();
            for (const o of ops) {
              if (o.op === "write") {
                ep.dmaWrite(BASE + o.page * 4096 + 8, Uint8Array.of(1));
                if (on) dirty.add(o.page);
              } else if (o.op === "read") ep.dmaRead(BASE + o.page * 4096, 4);
              else if (o.op === "track") {
                await iommuSetDirtyTracking(d, o.on);
                on = o.on;
              } else if (on) {
                const got = new Set<number>();
                iommuReadAndClearDirty(d, BASE, PAGES * 4096, o.keep ? IOMMU_DIRTY_NO_CLEAR : 0, (iova, len) => {
                  for (let a = iova; a < iova + len; a += 4096) got.add((a - BASE) / 4096);
                });
                expect([...got].sort()).toEqual([...dirty].sort());
                if (!o.keep) dirty.clear();
              } else {
                expect(() => iommuReadAndClearDirty(d, BASE, PAGES * 4096, 0, () => {})).toThrow(
                  expect.objectContaining({ code: "EINVAL" }),
                );
              }
            }
            expect(b.hw.stats.staleReports).toBe(0);
            await iommuDetachDevice(d, dev);
            await iommuUnmap(d, BASE, PAGES * 4096);
            iommuDomainFree(d);
            await iommuDeviceReleaseDmaOwner(dev);
            b.m.pages.freePages(pa, 2);
          }),
      ),
      { numRuns: 30, seed: 3 },
    );
  }, 60_000);

  it("no EFR.HDSup: capable(DIRTY_TRACKING) is false and the allocation is EOPNOTSUPP", async () => {
    const b = await boot({ dirty: false });
    const dev = b.m.driverCore.deviceFor("amd-nic0")!;
    expect(b.drv.ops.capable!(dev, IOMMU_CAP.DIRTY_TRACKING)).toBe(false);
    await expect(iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    const on = await boot();
    expect(on.drv.ops.capable!(on.m.driverCore.deviceFor("amd-nic0")!, IOMMU_CAP.DIRTY_TRACKING)).toBe(true);
  });

  it("nest parents need GT (EOPNOTSUPP without v2); PASID domains need GT and PPR", async () => {
    const b = await boot({ v2: false });
    const dev = b.m.driverCore.deviceFor("amd-gpu0")!;
    for (const f of [IOMMU_HWPT_ALLOC.NEST_PARENT, IOMMU_HWPT_ALLOC.PASID]) {
      await expect(iommuPagingDomainAllocFlags(dev, f)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    }
    const noPpr = await boot({ ppr: false });
    const dev2 = noPpr.m.driverCore.deviceFor("amd-gpu0")!;
    await expect(iommuPagingDomainAllocFlags(dev2, IOMMU_HWPT_ALLOC.PASID)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    // Flags Linux does not combine, and user data, are EOPNOTSUPP too.
    const ok = await boot();
    const d3 = ok.m.driverCore.deviceFor("amd-gpu0")!;
    await expect(
      iommuPagingDomainAllocFlags(d3, IOMMU_HWPT_ALLOC.PASID | IOMMU_HWPT_ALLOC.DIRTY_TRACKING),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
  });
});
