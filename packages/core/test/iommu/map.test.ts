import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IommuDomain, iommuDomainFree, iommuPagingDomainAlloc } from "../../src/iommu/domain.js";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  iommuIotlbGatherAddPage,
  iommuIotlbSync,
  iommuIovaToPhys,
  iommuMap,
  iommuUnmap,
  iommuUnmapFast,
  minPageSize,
} from "../../src/iommu/map.js";
import { IOMMU_DOMAIN, type IommuDomainOps } from "../../src/iommu/types.js";
import { IotlbGather } from "../../src/pgtable/gather.js";
import { MOCK_APERTURE_LAST, MOCK_APERTURE_START, stubMachine } from "./group-fixture.js";

const K = 1024;
const M = 1024 * K;
const G = 1024 * M;
const RW = IOMMU_READ | IOMMU_WRITE;

/** A domain whose driver only records the runs it is asked to map/unmap and reports them done. */
function recordingDomain(pgsizeBitmap: number, extra: Partial<IommuDomainOps> = {}) {
  const maps: [number, number, number, number][] = [];
  const unmaps: [number, number, number][] = [];
  let syncs = 0;
  const domain = new IommuDomain({
    type: IOMMU_DOMAIN.UNMANAGED,
    pgsizeBitmap,
    ops: {
      mapPages(_d, iova, paddr, pgsize, pgcount) {
        maps.push([iova, paddr, pgsize, pgcount]);
        return pgsize * pgcount;
      },
      unmapPages(_d, iova, pgsize, pgcount) {
        unmaps.push([iova, pgsize, pgcount]);
        return pgsize * pgcount;
      },
      iotlbSync() {
        syncs++;
      },
      ...extra,
    },
  });
  return { domain, maps, unmaps, syncs: () => syncs };
}

describe("page-size splitting (iommu_pgsize)", () => {
  const MOCK = 2 * K + M;
  const X86 = 4 * K + 2 * M + G;
  const cases: [string, number, number, number, number, [number, number, number, number][]][] = [
    ["mock: both 1M aligned", MOCK, 0x1000000, 0x2000000, 2 * M, [[0x1000000, 0x2000000, M, 2]]],
    [
      "mock: same offset in 1M: 2K up to the boundary, then 1M, then the 2K tail",
      MOCK,
      0x1000800,
      0x2000800,
      2 * M,
      [
        [0x1000800, 0x2000800, 2 * K, 511],
        [0x1100000, 0x2100000, M, 1],
        [0x1200000, 0x2200000, 2 * K, 1],
      ],
    ],
    ["mock: different offsets: all 2K", MOCK, 0x1000000, 0x2000800, 2 * M, [[0x1000000, 0x2000800, 2 * K, 1024]]],
    ["mock: less than a huge page", MOCK, 0x1000000, 0x2000000, M - 2 * K, [[0x1000000, 0x2000000, 2 * K, 511]]],
    [
      "4K/2M/1G: 2M up to the 1G boundary, 1G, then 2M",
      X86,
      G - 2 * M,
      G - 2 * M,
      G + 4 * M,
      [
        [G - 2 * M, G - 2 * M, 2 * M, 1],
        [G, G, G, 1],
        [2 * G, 2 * G, 2 * M, 1],
      ],
    ],
    [
      "4K/2M/1G: 4K to 2M, a 2M page, 4K tail (1G offsets differ)",
      X86,
      0x1000,
      0x201000,
      4 * M,
      [
        [0x1000, 0x201000, 4 * K, 511],
        [0x200000, 0x400000, 2 * M, 1],
        [0x400000, 0x600000, 4 * K, 1],
      ],
    ],
    ["4K/2M/1G: iova and paddr 0 give the largest size", X86, 0, 0, G, [[0, 0, G, 1]]],
    [
      "4K/2M/1G: beyond 2^32",
      X86,
      5 * G,
      7 * G,
      2 * G + 4 * K,
      [
        [5 * G, 7 * G, G, 2],
        [7 * G, 9 * G, 4 * K, 1],
      ],
    ],
  ];
  for (const [name, bitmap, iova, pa, size, expected] of cases) {
    it(name, () => {
      const r = recordingDomain(bitmap);
      iommuMap(r.domain, iova, pa, size, RW);
      expect(r.maps).toEqual(expected);
      // Unmap splits with iova as both addresses, and syncs once.
      expect(iommuUnmap(r.domain, iova, size)).toBe(size);
      expect(r.unmaps.reduce((s, [, p, c]) => s + p * c, 0)).toBe(size);
      expect(r.syncs()).toBe(1);
    });
  }

  it("finds the smallest page size of bitmaps above 2^32", () => {
    expect(minPageSize(2 * K + M)).toBe(2 * K);
    expect(minPageSize(G + 512 * G)).toBe(G);
    expect(minPageSize(0)).toBe(0);
  });
});

describe("map and unmap argument checks", () => {
  it("rejects misaligned ranges with EINVAL and unmaps them as 0", () => {
    const r = recordingDomain(4 * K + 2 * M);
    expect(() => iommuMap(r.domain, 0x800, 0, 4 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => iommuMap(r.domain, 0, 0x800, 4 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => iommuMap(r.domain, 0, 0, 4 * K + 1, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => iommuMap(r.domain, 0.5, 0, 4 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => iommuMap(r.domain, -4096, 0, 4 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(iommuUnmap(r.domain, 0x800, 4 * K)).toBe(0);
    expect(iommuUnmap(r.domain, 0, 0x800)).toBe(0);
    expect(r.maps).toEqual([]);
    expect(r.unmaps).toEqual([]);
  });

  it("rejects ranges whose end overflows the address space", () => {
    const r = recordingDomain(4 * K);
    const top = 2 ** 53 - 4 * K;
    expect(() => iommuMap(r.domain, top, 0, 8 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => iommuMap(r.domain, 0, top, 8 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    iommuMap(r.domain, top, 0, 4 * K, RW);
    expect(iommuUnmap(r.domain, top, 8 * K)).toBe(0);
    expect(r.maps).toEqual([[top, 0, 4 * K, 1]]);
  });

  it("maps only paging domains; identity and blocked translate as the kernel says", () => {
    const id = new IommuDomain({ type: IOMMU_DOMAIN.IDENTITY });
    const blocked = new IommuDomain({ type: IOMMU_DOMAIN.BLOCKED });
    expect(() => iommuMap(id, 0, 0, 4 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(iommuUnmap(id, 0, 4 * K)).toBe(0);
    expect(iommuIovaToPhys(id, 0x1234)).toBe(0x1234);
    expect(iommuIovaToPhys(blocked, 0x1234)).toBe(0);
    // A paging domain without map_pages or page sizes: ENODEV.
    expect(() => iommuMap(new IommuDomain({ type: IOMMU_DOMAIN.UNMANAGED }), 0, 0, 4 * K, RW)).toThrow(
      expect.objectContaining({ code: "ENODEV" }),
    );
  });

  it("unmaps everything again when iotlb_sync_map fails", () => {
    const r = recordingDomain(4 * K, {
      iotlbSyncMap() {
        throw Object.assign(new Error("sync"), { code: "EIO" });
      },
    });
    expect(() => iommuMap(r.domain, 0x10000, 0x20000, 16 * K, RW)).toThrow(expect.objectContaining({ code: "EIO" }));
    expect(r.unmaps).toEqual([[0x10000, 4 * K, 4]]);
  });

  it("syncs a gather before adding a disjoint page or another granule", () => {
    const r = recordingDomain(4 * K);
    const g = new IotlbGather();
    iommuIotlbGatherAddPage(r.domain, g, 0x1000, 0x1000);
    iommuIotlbGatherAddPage(r.domain, g, 0x2000, 0x1000);
    expect(r.syncs()).toBe(0);
    iommuIotlbGatherAddPage(r.domain, g, 0x9000, 0x1000);
    expect(r.syncs()).toBe(1);
    expect([g.start, g.end]).toEqual([0x9000, 0x9fff]);
    iommuIotlbGatherAddPage(r.domain, g, 0xa000, 0x200000);
    expect(r.syncs()).toBe(2);
  });
});

describe("map and unmap through the page-table engine", () => {
  const BASE = MOCK_APERTURE_START;

  it("checks the aperture, returns what was unmapped, and syncs once per unmap", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0");
    const d = await iommuPagingDomainAlloc(nic);
    expect(() => iommuMap(d, BASE - 2 * K, 0x40000000, 4 * K, RW)).toThrow(expect.objectContaining({ code: "ERANGE" }));
    expect(() => iommuMap(d, MOCK_APERTURE_LAST + 1 - 2 * K, 0x40000000, 4 * K, RW)).toThrow(
      expect.objectContaining({ code: "ERANGE" }),
    );
    expect(iommuUnmap(d, BASE - 2 * K, 4 * K)).toBe(0);

    iommuMap(d, BASE, 0x40000000, 2 * M, RW);
    expect(t.drv.callsOf("map")).toEqual([{ op: "map", iova: BASE, paddr: 0x40000000, pgsize: M, pgcount: 2 }]);
    expect(iommuIovaToPhys(d, BASE + M + 0x123)).toBe(0x40000000 + M + 0x123);
    // Unmapping 2K at the start of a 1 MiB leaf removes the whole leaf (generic_pt) and says so.
    const syncs = t.drv.callsOf("iotlbSync").length;
    expect(iommuUnmap(d, BASE, 2 * K)).toBe(M);
    expect(t.drv.callsOf("iotlbSync").length).toBe(syncs + 1);
    expect(iommuIovaToPhys(d, BASE)).toBe(0);
    // A range running into a hole stops there.
    expect(iommuUnmap(d, BASE + M, 2 * M)).toBe(M);
    expect(iommuUnmap(d, BASE, 2 * M)).toBe(0);

    // Several runs in one unmap: one gather, one sync.
    iommuMap(d, BASE + 0x800, 0x40000800, 2 * M, RW);
    const before = t.drv.callsOf("iotlbSync").length;
    const gather = new IotlbGather();
    expect(iommuUnmapFast(d, BASE + 0x800, 2 * M, gather)).toBe(2 * M);
    expect(t.drv.callsOf("unmap").length).toBeGreaterThan(1);
    expect(t.drv.callsOf("iotlbSync").length).toBe(before);
    expect([gather.start, gather.end]).toEqual([BASE + 0x800, BASE + 0x800 + 2 * M - 1]);
    iommuIotlbSync(d, gather);
    iommuDomainFree(d);
    await t.m.diag.expectWarning({ kind: "use-after-free" }, () => {
      expect(() => iommuMap(d, BASE, 0x40000000, 2 * K, RW)).toThrow(expect.objectContaining({ code: "EINVAL" }));
      expect(iommuUnmap(d, BASE, 2 * K)).toBe(0);
    });
    await t.teardown();
  });

  it("unwinds a partial map when the driver fails midway (EEXIST)", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0");
    const d = await iommuPagingDomainAlloc(nic);
    iommuMap(d, BASE + 4 * K, 0x50000000, 2 * K, RW);
    t.drv.calls.length = 0;
    await t.m.diag.expectWarning(/already mapped/, () => {
      expect(() => iommuMap(d, BASE, 0x60000000, 8 * K, RW)).toThrow(expect.objectContaining({ code: "EEXIST" }));
    });
    expect(t.drv.callsOf("unmap")).toEqual([{ op: "unmap", iova: BASE, pgsize: 2 * K, pgcount: 2 }]);
    expect(iommuIovaToPhys(d, BASE)).toBe(0);
    expect(iommuIovaToPhys(d, BASE + 2 * K)).toBe(0);
    expect(iommuIovaToPhys(d, BASE + 4 * K)).toBe(0x50000000);
    iommuDomainFree(d);
    await t.teardown();
  });

  it("unwinds a map whose table allocation fails (ENOMEM) and leaks nothing", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0");
    const d = await iommuPagingDomainAlloc(nic);
    // 511 2K pages fit the first 1 MiB (2 new tables); the 1 MiB page beyond 1 GiB needs a third table: fail it.
    t.drv.calls.length = 0;
    t.m.faults.failNth(3, ["io-pgtable"]);
    expect(() => iommuMap(d, 0x3ff00000 + 0x800, 0x70000800, 0x200000, RW)).toThrow(
      expect.objectContaining({ code: "ENOMEM" }),
    );
    expect(t.m.faults.failedSites).toEqual(["io-pgtable"]);
    expect(t.drv.callsOf("map").map((c) => [c.pgsize, c.pgcount])).toEqual([
      [2 * K, 511],
      [M, 1],
    ]);
    expect(t.drv.callsOf("unmap")[0]).toMatchObject({ iova: 0x3ff00800 });
    for (let a = 0x3ff00000 + 0x800; a < 0x3ff00000 + 0x200800; a += 2 * K) expect(iommuIovaToPhys(d, a)).toBe(0);
    t.m.faults.reset();
    iommuDomainFree(d);
    await t.teardown();
  });
});

describe("property: iommuMap/iommuUnmap against a model", () => {
  const PAGE = 2 * K;
  const WINDOW = 8192; // pages (16 MiB) above the aperture start
  type Op =
    | { kind: "map"; page: number; len: number; paPage: number; sameOffset: boolean }
    | { kind: "unmap"; pick: number }
    | { kind: "unmapHole"; page: number; len: number }
    | { kind: "probe"; page: number };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      arbitrary: fc.record({
        kind: fc.constant("map" as const),
        page: fc.integer({ min: 0, max: WINDOW - 1 }),
        len: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 500, max: 1200 })),
        paPage: fc.integer({ min: 0, max: 1 << 16 }),
        sameOffset: fc.boolean(),
      }),
      weight: 4,
    },
    { arbitrary: fc.record({ kind: fc.constant("unmap" as const), pick: fc.nat() }), weight: 2 },
    {
      arbitrary: fc.record({
        kind: fc.constant("unmapHole" as const),
        page: fc.integer({ min: 0, max: WINDOW - 1 }),
        len: fc.integer({ min: 1, max: 16 }),
      }),
      weight: 1,
    },
    {
      arbitrary: fc.record({ kind: fc.constant("probe" as const), page: fc.integer({ min: 0, max: WINDOW }) }),
      weight: 1,
    },
  );

  it("keeps iommuIovaToPhys equal to the model", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0");
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        const d = await iommuPagingDomainAlloc(nic);
        const ranges: { iova: number; pa: number; size: number }[] = [];
        const expectPhys = (iova: number): number => {
          const r = ranges.find((x) => iova >= x.iova && iova < x.iova + x.size);
          return r ? r.pa + (iova - r.iova) : 0;
        };
        const overlaps = (iova: number, size: number) =>
          ranges.some((r) => iova < r.iova + r.size && r.iova < iova + size);
        try {
          for (const op of ops) {
            if (op.kind === "map") {
              const iova = MOCK_APERTURE_START + op.page * PAGE;
              const size = Math.min(op.len, WINDOW - op.page) * PAGE;
              // Same offset inside 1 MiB as the IOVA (huge pages possible) or not.
              const pa = 0x40000000 + op.paPage * M + (op.sameOffset ? iova % M : (iova + PAGE) % M);
              if (overlaps(iova, size)) {
                expect(() => iommuMap(d, iova, pa, size, RW)).toThrow(expect.objectContaining({ code: "EEXIST" }));
              } else {
                iommuMap(d, iova, pa, size, RW);
                ranges.push({ iova, pa, size });
              }
            } else if (op.kind === "unmap") {
              if (ranges.length === 0) continue;
              const [r] = ranges.splice(op.pick % ranges.length, 1);
              const syncs = t.drv.callsOf("iotlbSync").length;
              expect(iommuUnmap(d, r!.iova, r!.size)).toBe(r!.size);
              expect(t.drv.callsOf("iotlbSync").length).toBe(syncs + 1);
            } else if (op.kind === "unmapHole") {
              const iova = MOCK_APERTURE_START + op.page * PAGE;
              const size = op.len * PAGE;
              if (!overlaps(iova, size)) expect(iommuUnmap(d, iova, size)).toBe(0);
            } else {
              const iova = MOCK_APERTURE_START + op.page * PAGE + 0x7f;
              expect(iommuIovaToPhys(d, iova)).toBe(expectPhys(iova));
            }
            for (const r of ranges) {
              expect(iommuIovaToPhys(d, r.iova)).toBe(r.pa);
              expect(iommuIovaToPhys(d, r.iova + r.size - 1)).toBe(r.pa + r.size - 1);
              expect(iommuIovaToPhys(d, r.iova + r.size)).toBe(expectPhys(r.iova + r.size));
              // Around every 1 MiB boundary inside the range, where the page size changes.
              for (let a = Math.ceil(r.iova / M) * M; a < r.iova + r.size; a += M) {
                expect(iommuIovaToPhys(d, a)).toBe(r.pa + (a - r.iova));
                if (a - PAGE >= r.iova) expect(iommuIovaToPhys(d, a - PAGE)).toBe(r.pa + (a - PAGE - r.iova));
              }
            }
          }
        } finally {
          iommuDomainFree(d);
        }
      }),
      { numRuns: 60, seed: 4242 },
    );
    t.m.diag.acknowledge(/already mapped/);
    await t.teardown();
  });
});
