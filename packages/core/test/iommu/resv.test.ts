import { describe, expect, it } from "vitest";
import { iommuIovaToPhys } from "../../src/iommu/map.js";
import {
  iommuGetGroupResvRegions,
  iommuGroupShowResvRegions,
  iommuInsertResvRegion,
  iommuSwMsiRegion,
  MSI_IOVA_BASE,
  MSI_IOVA_LENGTH,
} from "../../src/iommu/resv.js";
import { IOMMU_RESV, type IommuResvRegion } from "../../src/iommu/types.js";
import { MOCK_APERTURE_START, stubMachine } from "./group-fixture.js";

const r = (start: number, length: number, type: number): IommuResvRegion => ({ start, length, prot: 3, type });

describe("reserved regions", () => {
  it("sorts by start and merges overlapping or adjacent regions of one type only", () => {
    const list: IommuResvRegion[] = [];
    iommuInsertResvRegion(r(0x3000, 0x1000, IOMMU_RESV.RESERVED), list);
    iommuInsertResvRegion(r(0x1000, 0x1000, IOMMU_RESV.RESERVED), list);
    iommuInsertResvRegion(r(0x2000, 0x1000, IOMMU_RESV.RESERVED), list); // adjacent to both: one region
    iommuInsertResvRegion(r(0x1800, 0x1000, IOMMU_RESV.MSI), list); // overlaps, other type: kept apart
    expect(list).toEqual([r(0x1000, 0x3000, IOMMU_RESV.RESERVED), r(0x1800, 0x1000, IOMMU_RESV.MSI)]);
    // The input region is copied, not linked.
    const mine = r(0x9000, 0x1000, IOMMU_RESV.DIRECT);
    iommuInsertResvRegion(mine, list);
    expect(list.at(-1)).not.toBe(mine);
  });

  it("merges the regions of every device of a group, with the MSI window, as sysfs shows them", async () => {
    const t = await stubMachine({
      resv: (dev) =>
        dev.name === "gpu0"
          ? [iommuSwMsiRegion(), r(0x20000000, 0x10000, IOMMU_RESV.RESERVED)]
          : [iommuSwMsiRegion(), r(0x20008000, 0x10000, IOMMU_RESV.RESERVED)],
    });
    await t.probe("gpu0");
    const g = await t.probe("gpu0-audio");
    const regions = await iommuGetGroupResvRegions(g);
    expect(regions.map((x) => [x.start, x.length, x.type])).toEqual([
      [MSI_IOVA_BASE, MSI_IOVA_LENGTH, IOMMU_RESV.SW_MSI],
      [0x20000000, 0x18000, IOMMU_RESV.RESERVED],
    ]);
    expect(await iommuGroupShowResvRegions(g)).toBe(
      "0x0000000008000000 0x00000000080fffff msi\n0x0000000020000000 0x0000000020017fff reserved\n",
    );
    await t.teardown();
  });

  it("identity-maps DIRECT regions in the default DMA domain before attach, skipping pages already mapped", async () => {
    const start = MOCK_APERTURE_START + 0x100000;
    const t = await stubMachine({
      resv: (dev) =>
        dev.name === "gpu0"
          ? [r(start, 0x3000, IOMMU_RESV.DIRECT)]
          : [r(start + 0x2000, 0x1800, IOMMU_RESV.DIRECT_RELAXABLE), r(0x30000000, 0x1000, IOMMU_RESV.RESERVED)],
    });
    const g = await t.probe("gpu0");
    const dom = g.defaultDomain!;
    // The map came before the first attach, and the IOTLB was flushed.
    const ops = t.drv.calls.map((c) => c.op);
    expect(ops.indexOf("map")).toBeLessThan(ops.indexOf("attach"));
    expect(ops).toContain("flushAll");
    expect(t.drv.callsOf("map")).toEqual([{ op: "map", iova: start, paddr: start, pgsize: 2048, pgcount: 6 }]);
    t.drv.calls.length = 0;
    await t.probe("gpu0-audio");
    // The relaxable region of the second device only adds what is not mapped yet (rounded to 2K pages).
    expect(t.drv.callsOf("map")).toEqual([
      { op: "map", iova: start + 0x3000, paddr: start + 0x3000, pgsize: 2048, pgcount: 1 },
    ]);
    for (const a of [start, start + 0x2fff, start + 0x3000, start + 0x37ff]) expect(iommuIovaToPhys(dom, a)).toBe(a);
    expect(iommuIovaToPhys(dom, start + 0x3800)).toBe(0);
    await t.teardown();
  });

  it("installs no direct mappings in an identity default domain but still requires them", async () => {
    const t = await stubMachine({ passthrough: true, resv: () => [r(0x2000000, 0x1000, IOMMU_RESV.DIRECT)] });
    const g = await t.probe("nic0");
    expect(g.defaultDomain).toBe(t.drv.ops.identityDomain);
    expect(t.drv.callsOf("map")).toEqual([]);
    expect((t.dev("nic0").iommu as { requireDirect: boolean }).requireDirect).toBe(true);
    await t.teardown();
  });
});
