/**
 * The hardware model and the driver's own page tables agree: after random maps of every page size through core's
 * engine (x86-64 first-stage or VT-d second-stage format), a DMA at any IOVA lands where `iommuIovaToPhys` says, or
 * faults exactly where nothing is mapped.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
} from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { boot, teardownAll, withDomain } from "./helpers.js";

afterEach(teardownAll);

const SIZES = [4096, 2 ** 21, 2 ** 30];

describe.each([
  ["first stage", {}, 0],
  ["second stage", {}, IOMMU_HWPT_ALLOC.NEST_PARENT],
  ["legacy second stage", { scalableMode: false }, 0],
] as const)("%s", (_n, hw, flags) => {
  it("DMA lands where iommuIovaToPhys says, for random mappings of every page size", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ slot: fc.nat(15), size: fc.nat(2), pa: fc.nat(2) }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(2 ** 34 - 1), { minLength: 16, maxLength: 16 }),
        async (maps, probes) => {
          const b = await boot({ ...hw, tlbEntries: 8, pagingCacheEntries: 4 });
          await withDomain(b, "xhci0", flags, async (d) => {
            const done: [number, number][] = [];
            for (const mp of maps) {
              const size = SIZES[mp.size]!;
              const iova = mp.slot * 2 ** 30 + (size < 2 ** 30 ? mp.slot * size : 0);
              if (done.some(([a, s]) => a < iova + size && iova < a + s)) continue;
              iommuMap(
                d,
                iova,
                (mp.pa + 1) * 2 ** 30 + (size < 2 ** 30 ? size * (mp.slot % 3) : 0),
                size,
                IOMMU_READ | IOMMU_WRITE,
              );
              done.push([iova, size]);
            }
            const ep = b.m.device("xhci0");
            for (const p of [...probes, ...done.map(([a, s]) => a + s - 8)]) {
              const iova = p - (p % 8);
              const want = iommuIovaToPhys(d, iova);
              const marker = (iova / 8) & 0xff;
              if (want !== 0) b.m.memory.write8(want, marker);
              let got: number | "fault";
              try {
                got = ep.dmaRead(iova, 1)[0]!;
              } catch (e) {
                if (!(e instanceof DmaFault)) throw e;
                got = "fault";
              }
              expect(got, `IOVA 0x${iova.toString(16)}`).toBe(want === 0 ? "fault" : marker);
            }
            for (const [a, s] of done) iommuUnmap(d, a, s);
          });
          await teardownAll();
        },
      ),
      { numRuns: 8 },
    );
  }, 120_000);
});
