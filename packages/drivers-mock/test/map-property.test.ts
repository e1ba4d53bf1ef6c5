/**
 * Property: random map/unmap sequences through the real mock driver agree with a simple model (a Map from 2 KiB
 * page to PA), both in the core's view (iommuIovaToPhys) and in the hardware's (DMA from the device through the
 * mock IOMMU's walk and IOTLB, which the driver must invalidate on every unmap).
 */
import {
  createMachine,
  DmaFault,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuIovaToPhys,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuUnmap,
} from "@iommu-sim/core";
import fc from "fast-check";
import { expect, it } from "vitest";
import { MOCK_APERTURE_START, MOCK_HUGE_PAGE_SIZE, MOCK_PAGE_SIZE, mockIommuDriver } from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;
/** The property works in a 16 MiB window of the aperture, backed by PAs from 0x4000_0000. */
const WINDOW_PAGES = (16 * MOCK_HUGE_PAGE_SIZE) / MOCK_PAGE_SIZE;
const PA_BASE = 0x4000_0000;

type Cmd = { op: "map"; page: number; pages: number; paPage: number; huge: boolean } | { op: "unmap"; pick: number };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({
    op: fc.constant("map" as const),
    page: fc.nat(WINDOW_PAGES - 1),
    pages: fc.integer({ min: 1, max: 700 }),
    paPage: fc.nat(WINDOW_PAGES - 1),
    huge: fc.boolean(),
  }),
  fc.record({ op: fc.constant("unmap" as const), pick: fc.nat() }),
);

it("map/unmap through the mock driver matches a page model in iova_to_phys and in device DMA", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 12 }), fc.nat(), async (cmds, sampleSeed) => {
      const m = await createMachine({ modules: [mockIommuDriver], seed: 7, trackFreeStacks: false });
      await m.boot();
      const d = m.driverCore.deviceFor("mock-dev0")!;
      await iommuDeviceClaimDmaOwner(d, "prop");
      const domain: IommuDomain = await iommuPagingDomainAlloc(d);
      await iommuAttachDevice(domain, d);
      const ep = m.device("mock-dev0");
      const model = new Map<number, number>(); // page index -> PA of the page
      const ranges: { page: number; pages: number }[] = [];
      let tag = sampleSeed & 0xff;

      const check = () => {
        // Every page of the window in iova_to_phys; a sample of pages (all mapped ones up to 48) through DMA.
        for (let p = 0; p < WINDOW_PAGES; p += 7) {
          const iova = MOCK_APERTURE_START + p * MOCK_PAGE_SIZE + 24;
          const want = model.get(p);
          expect(iommuIovaToPhys(domain, iova)).toBe(want === undefined ? 0 : want + 24);
        }
        const mapped = [...model.keys()];
        const sample =
          mapped.length <= 48 ? mapped : mapped.filter((_, i) => (i * 2654435761 + sampleSeed) % mapped.length < 48);
        for (const p of sample) {
          tag = (tag + 1) & 0xff;
          ep.dmaWrite(MOCK_APERTURE_START + p * MOCK_PAGE_SIZE + 8, new Uint8Array([tag, p & 0xff]));
          expect(m.memory.read8(model.get(p)! + 8)).toBe(tag);
          expect(m.memory.read8(model.get(p)! + 9)).toBe(p & 0xff);
        }
        for (let p = sampleSeed % 13; p < WINDOW_PAGES; p += 97) {
          if (model.has(p)) continue;
          expect(() => ep.dmaRead(MOCK_APERTURE_START + p * MOCK_PAGE_SIZE, 4)).toThrow(DmaFault);
        }
      };

      try {
        for (const c of cmds) {
          if (c.op === "map") {
            let page = c.page;
            let paPage = c.paPage;
            let pages = Math.min(c.pages, WINDOW_PAGES - page);
            if (c.huge) {
              // Align IOVA and PA alike to 1 MiB so the splitter can use huge pages.
              const per = MOCK_HUGE_PAGE_SIZE / MOCK_PAGE_SIZE;
              page -= page % per;
              paPage -= paPage % per;
              pages = Math.min(Math.max(pages, per + 3), WINDOW_PAGES - page);
            }
            const overlaps = [...Array(pages).keys()].some((i) => model.has(page + i));
            const map = () =>
              iommuMap(
                domain,
                MOCK_APERTURE_START + page * MOCK_PAGE_SIZE,
                PA_BASE + paPage * MOCK_PAGE_SIZE,
                pages * MOCK_PAGE_SIZE,
                RW,
              );
            if (overlaps) {
              // The table code warns about the double map (the kernel's WARN_ON in the page-table code).
              m.diag.expectWarningSync(/already mapped/, () =>
                expect(map).toThrow(expect.objectContaining({ code: "EEXIST" })),
              );
            } else {
              map();
              for (let i = 0; i < pages; i++) model.set(page + i, PA_BASE + (paPage + i) * MOCK_PAGE_SIZE);
              ranges.push({ page, pages });
            }
          } else if (ranges.length > 0) {
            const [r] = ranges.splice(c.pick % ranges.length, 1);
            const n = iommuUnmap(domain, MOCK_APERTURE_START + r!.page * MOCK_PAGE_SIZE, r!.pages * MOCK_PAGE_SIZE);
            expect(n).toBe(r!.pages * MOCK_PAGE_SIZE);
            for (let i = 0; i < r!.pages; i++) model.delete(r!.page + i);
            // The pages just unmapped were likely cached by the IOTLB: the device must fault on them now.
            for (let i = 0; i < r!.pages; i += Math.max(1, r!.pages >> 3)) {
              expect(() => ep.dmaRead(MOCK_APERTURE_START + (r!.page + i) * MOCK_PAGE_SIZE, 4)).toThrow(DmaFault);
            }
          }
          check();
        }
      } finally {
        for (const r of ranges)
          iommuUnmap(domain, MOCK_APERTURE_START + r.page * MOCK_PAGE_SIZE, r.pages * MOCK_PAGE_SIZE);
        await iommuDetachDevice(domain, d);
        iommuDomainFree(domain);
        await iommuDeviceReleaseDmaOwner(d);
        await m.teardown();
      }
    }),
    { numRuns: Number(process.env.PROP_RUNS ?? 25), seed: 4242 },
  );
}, 120_000);
