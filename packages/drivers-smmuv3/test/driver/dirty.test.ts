/**
 * Dirty tracking with HTTU: a DIRTY_TRACKING domain sets HA/HD in its CD and DBM in writable PTEs; read-and-clear
 * reports what the SMMU marked dirty (writable-dirty = DBM with AP[2] clear) and makes it writable-clean again,
 * invalidating the TLB so the next DMA write marks the page again.
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
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, expect, it } from "vitest";
import { type ArmSmmuDomain, CD } from "../../src/index.js";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

it("reports pages the device wrote, and clears them", async () => {
  const b = await boot();
  const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
  expect(b.drv.capable(dev, IOMMU_CAP.DIRTY_TRACKING)).toBe(true);
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING)) as ArmSmmuDomain;
  expect(d.dirtyOps).toBeDefined();
  await iommuAttachDevice(d, dev);
  const cd0 = b.smmu.streams.get(0x10)!.readCd(0)[0]!;
  expect(cd0 & CD.HA.mask).toBe(CD.HA.mask);
  expect(cd0 & CD.HD.mask).toBe(CD.HD.mask);
  const pa = b.m.pages.allocPages(2, "t");
  const iova = 0x80_0000;
  iommuMap(d, iova, pa, 4 * 4096, IOMMU_READ | IOMMU_WRITE);
  // Writable leaves: DBM (bit 51) set.
  let leafHi = 0;
  d.pt.walk(iova, (level, _t, _i, _lo, hi) => {
    if (level === 0) leafHi = hi;
  });
  expect(leafHi & (1 << 19)).toBeTruthy();
  const read = (flags = 0) => {
    const out: [number, number][] = [];
    d.dirtyOps!.readAndClearDirty(d, iova, 4 * 4096, flags, (i, l) => out.push([i, l]));
    return out;
  };
  // New writable mappings start writable-dirty, as io-pgtable-arm makes them.
  expect(read().reduce((s, [, l]) => s + l, 0)).toBe(4 * 4096);
  expect(read()).toEqual([]);
  b.m.device("smmu-dma0").dmaWrite(iova + 2 * 4096 + 5, new Uint8Array([1]));
  b.m.device("smmu-dma0").dmaRead(iova + 4096, 4);
  expect(read(IOMMU_DIRTY_NO_CLEAR)).toEqual([[iova + 2 * 4096, 4096]]);
  expect(read()).toEqual([[iova + 2 * 4096, 4096]]);
  expect(read()).toEqual([]);
  // Cleared means clean in the TLB too: the next write marks it again.
  b.m.device("smmu-dma0").dmaWrite(iova + 2 * 4096 + 6, new Uint8Array([1]));
  expect(read()).toEqual([[iova + 2 * 4096, 4096]]);
  iommuUnmap(d, iova, 4 * 4096);
  await iommuDetachDevice(d, dev);
  iommuDomainFree(d);
  await iommuDeviceReleaseDmaOwner(dev);
  b.m.pages.freePages(pa, 2);
});

it("refuses dirty tracking without HTTU dirty support, and on a nesting parent", async () => {
  const b = await boot({ httu: "ha" });
  const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
  expect(b.drv.capable(dev, IOMMU_CAP.DIRTY_TRACKING)).toBe(false);
  await expect(iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING)).rejects.toMatchObject({
    code: "EOPNOTSUPP",
  });
  await expect(
    iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING | IOMMU_HWPT_ALLOC.NEST_PARENT),
  ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
});
