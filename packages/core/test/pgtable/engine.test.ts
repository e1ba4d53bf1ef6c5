import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { KernelError } from "../../src/kernel/errno.js";
import { FaultInjector } from "../../src/kernel/fault-inject.js";
import { IoPageTable, PgtableMapError, PT_ENTRY_OA, PT_ENTRY_TABLE } from "../../src/pgtable/engine.js";
import { mockFormat } from "../../src/pgtable/fmt/mock.js";
import { makeTestLpaeFormat, TEST_4K_FORMAT } from "../../src/pgtable/fmt/test-4k.js";
import type { PageTableFormat } from "../../src/pgtable/format.js";
import { IotlbGather } from "../../src/pgtable/gather.js";
import { pgsizeFor } from "../../src/pgtable/pgsize.js";
import {
  IOMMU_CACHE,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "../../src/pgtable/prot.js";
import { PhysicalMemory } from "../../src/platform/memory.js";
import { PageAllocator } from "../../src/platform/page-alloc.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const SITE = "io-pgtable-test";

/**
 * A test-only format shaped like VT-d second stage (formats.md §3.8): no present bit (R or W means present), PS
 * (bit 7) marks 2M/1G leaves, a full root, D (bit 9) dirty, and generic_pt's "whole" partial unmap.
 */
const VTD_R = 1 << 0;
const VTD_W = 1 << 1;
const VTD_PS = 1 << 7;
const VTD_D = 1 << 9;
const VTD_SNP = 1 << 11;
const vtdLikeFormat: PageTableFormat = {
  name: "test-vtd-like",
  spec: "VT-d 3.x §9.8 second-stage entries (test-only)",
  granuleLg2: 12,
  bitsPerLevel: 9,
  minLevels: 3,
  maxLevels: 5,
  topTable: "full",
  geometry: null,
  leafLevels: 0b111,
  presentLo: VTD_R | VTD_W,
  oaLo: 0xfffff000 | 0,
  oaHi: 0x000fffff,
  leafTypeMaskLo: VTD_PS,
  partialUnmap: "whole",
  dirty: { maskLo: VTD_D | VTD_W, maskHi: 0, dirtyLo: VTD_D | VTD_W, dirtyHi: 0, cleanLo: VTD_W, cleanHi: 0 },
  contig: null,
  tableMatch(_level, out) {
    out[0] = VTD_PS;
    out[1] = 0;
  },
  encodeTable(_level, out) {
    out[0] = VTD_R | VTD_W;
    out[1] = 0;
  },
  encodeLeaf(level, prot, out) {
    let lo = level > 0 ? VTD_PS : 0;
    if (prot & IOMMU_READ) lo |= VTD_R;
    if (prot & IOMMU_WRITE) lo |= VTD_W;
    if (prot & IOMMU_CACHE) lo |= VTD_SNP;
    out[0] = lo;
    out[1] = 0;
    return true;
  },
  decodeProt(lo) {
    return (lo & VTD_R ? IOMMU_READ : 0) | (lo & VTD_W ? IOMMU_WRITE : 0) | (lo & VTD_SNP ? IOMMU_CACHE : 0);
  },
  packOa: null,
  unpackOa: null,
};

interface Case {
  format: PageTableFormat;
  ias: number;
  oas: number;
  /** Expected leaf sizes, smallest first (contiguous sizes included). */
  sizes: number[];
  levels: number;
  /** 4 KiB pages of one lower-level table. */
  tablePagesPerTable: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const CASES: Case[] = [
  { format: mockFormat, ias: 40, oas: 48, sizes: [2 * KiB, MiB], levels: 4, tablePagesPerTable: 1 },
  { format: TEST_4K_FORMAT, ias: 48, oas: 48, sizes: [4 * KiB, 2 * MiB, GiB], levels: 4, tablePagesPerTable: 1 },
  {
    format: makeTestLpaeFormat({ name: "test-4k-split-contig", partialUnmap: "split", contig: true }),
    ias: 39,
    oas: 44,
    sizes: [4 * KiB, 64 * KiB, 2 * MiB, 32 * MiB, GiB, 16 * GiB],
    levels: 3,
    tablePagesPerTable: 1,
  },
  {
    format: makeTestLpaeFormat({ granuleLg2: 14, partialUnmap: "whole" }),
    ias: 40,
    oas: 48,
    sizes: [16 * KiB, 32 * MiB],
    levels: 3,
    tablePagesPerTable: 4,
  },
  {
    format: makeTestLpaeFormat({ granuleLg2: 16, partialUnmap: "split" }),
    ias: 42,
    oas: 48,
    sizes: [64 * KiB, 512 * MiB],
    levels: 2,
    tablePagesPerTable: 16,
  },
  { format: vtdLikeFormat, ias: 39, oas: 46, sizes: [4 * KiB, 2 * MiB, GiB], levels: 3, tablePagesPerTable: 1 },
];

function setup(c: Case, opts: { diag?: Diagnostics; sync?: (g: IotlbGather) => void } = {}) {
  const faults = new FaultInjector();
  const diag = opts.diag ?? new Diagnostics();
  const memory = new PhysicalMemory({ size: 2 * GiB, faults, diag });
  const alloc = new PageAllocator(memory, { faults, diag });
  const pt = new IoPageTable(c.format, memory, alloc, {
    ias: c.ias,
    oas: c.oas,
    site: SITE,
    ...(opts.diag ? { diag: opts.diag } : {}),
    ...(opts.sync ? { sync: opts.sync } : {}),
  });
  return { faults, memory, alloc, pt, diag };
}

function mapErr(fn: () => unknown): PgtableMapError {
  try {
    fn();
  } catch (e) {
    if (e instanceof PgtableMapError) return e;
    throw e;
  }
  throw new Error("expected the map to fail");
}

/** Page sizes that are a natural level item (not a contiguous run). */
function naturalSizes(pt: IoPageTable): number[] {
  const out: number[] = [];
  pt.walk(0, () => {});
  for (let l = 0; l < pt.levels; l++) {
    const s = 2 ** (pt.format.granuleLg2 + l * pt.format.bitsPerLevel);
    if ((pt.format.leafLevels >>> l) & 1 && s <= 2 ** pt.oas) out.push(s);
  }
  return out;
}

describe.each(CASES.map((c) => [c.format.name, c] as const))("IoPageTable [%s]", (_name, c) => {
  it("derives levels, root and the pgsize bitmap from the format and the IAS", () => {
    const { pt, alloc } = setup(c);
    expect(pt.levels).toBe(c.levels);
    expect(pt.pgsizeBitmap).toBe(c.sizes.reduce((a, b) => a + b, 0));
    expect(alloc.allocatedPages).toBe(pt.tablePages);
    expect(pt.root % 4096).toBe(0);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it.each(c.sizes.map((s) => [s]))(
    "maps, translates and unmaps a page of size %d at every offset of interest",
    (size) => {
      const { pt, alloc } = setup(c);
      const iova = size * 3;
      const pa = size * 5 + 0; // aligned
      expect(pt.map(iova, pa, size, 1, RW)).toBe(size);
      expect(pt.iovaToPhys(iova)).toBe(pa);
      expect(pt.iovaToPhys(iova + size / 2 + 8)).toBe(pa + size / 2 + 8);
      expect(pt.iovaToPhys(iova + size - 1)).toBe(pa + size - 1);
      expect(pt.iovaToPhys(iova - 1)).toBe(0);
      expect(pt.iovaToPhys(iova + size)).toBe(0);
      let leafLevel = -1;
      expect(
        pt.walk(iova, (level, _t, _i, _lo, _hi, type) => {
          if (type === PT_ENTRY_OA) leafLevel = level;
        }),
      ).toBe(PT_ENTRY_OA);
      const natural = naturalSizes(pt);
      const levelSize = 2 ** (c.format.granuleLg2 + leafLevel * c.format.bitsPerLevel);
      expect(natural).toContain(levelSize);
      expect(levelSize).toBeLessThanOrEqual(size);
      const leaves: number[][] = [];
      pt.dump((i, p, s, prot) => leaves.push([i, p, s, prot & RW]));
      expect(leaves.length).toBe(size / levelSize);
      expect(leaves[0]).toEqual([iova, pa, levelSize, RW]);
      const g = new IotlbGather();
      expect(pt.unmap(iova, size, 1, g)).toBe(size);
      expect(g.start).toBe(iova);
      expect(g.end).toBe(iova + size - 1);
      expect(pt.iovaToPhys(iova)).toBe(0);
      g.freePages(alloc);
      pt.free();
      expect(alloc.allocatedPages).toBe(0);
    },
  );

  it("maps many pages in one call across table boundaries", () => {
    const { pt, alloc } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    const perTable = 2 ** c.format.bitsPerLevel;
    const iova = (perTable - 7) * g0; // start near the end of a leaf table
    const count = perTable + 20;
    const pa = 0x40000000;
    expect(pt.map(iova, pa, g0, count, IOMMU_READ)).toBe(count * g0);
    for (let i = 0; i < count; i += 13) expect(pt.iovaToPhys(iova + i * g0 + 5)).toBe(pa + i * g0 + 5);
    expect(pt.iovaToPhys(iova + count * g0)).toBe(0);
    const g = new IotlbGather();
    expect(pt.unmap(iova, g0, count, g)).toBe(count * g0);
    g.freePages(alloc);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("keeps protection bits", () => {
    const { pt } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    pt.map(0, g0, g0, 1, IOMMU_READ | IOMMU_CACHE);
    pt.map(g0, g0, g0, 1, RW | IOMMU_NOEXEC | IOMMU_PRIV);
    const prots: number[] = [];
    pt.dump((_i, _p, _s, prot) => prots.push(prot));
    expect(prots[0]! & (RW | IOMMU_CACHE)).toBe(IOMMU_READ | IOMMU_CACHE);
    expect(prots[1]! & RW).toBe(RW);
    pt.free();
  });

  it("fails with EEXIST on overlap and reports the bytes mapped before the conflict", () => {
    const { pt, alloc } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    pt.map(10 * g0, 0x100000, g0, 1, RW);
    let e = mapErr(() => pt.map(10 * g0, 0x200000, g0, 1, RW));
    expect(e).toMatchObject({ code: "EEXIST", mapped: 0 });
    e = mapErr(() => pt.map(6 * g0, 0x200000, g0, 8, RW));
    expect(e).toMatchObject({ code: "EEXIST", mapped: 4 * g0 });
    expect(pt.iovaToPhys(9 * g0)).toBe(0x200000 + 3 * g0);
    const gather = new IotlbGather();
    expect(pt.unmap(6 * g0, g0, 4, gather)).toBe(4 * g0);
    // A large page over a small one, and a small one inside a large one.
    const big = c.sizes.find((s) => s > g0 && naturalSizes(pt).includes(s))!;
    e = mapErr(() => pt.map(0, 0, big, 1, RW));
    expect(e.code).toBe("EEXIST");
    pt.map(big, big, big, 1, RW);
    e = mapErr(() => pt.map(big + g0, 0, g0, 1, RW));
    expect(e.code).toBe("EEXIST");
    expect(pt.iovaToPhys(10 * g0)).toBe(0x100000);
    gather.freePages(alloc);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("warns on EEXIST when given diagnostics (io-pgtable-arm WARN_ON)", () => {
    const diag = new Diagnostics();
    const { pt } = setup(c, { diag });
    const g0 = 2 ** c.format.granuleLg2;
    pt.map(0, 0, g0, 1, RW);
    const ds = diag.expectWarningSync(/already mapped/, () => {
      expect(() => pt.map(0, 0, g0, 1, RW)).toThrow(KernelError);
    });
    expect(ds.length).toBe(1);
    pt.free();
  });

  it("rejects misalignment, unsupported sizes, no permission and out-of-range addresses", () => {
    const { pt, alloc } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    expect(mapErr(() => pt.map(g0 / 2, 0, g0, 1, RW)).code).toBe("EINVAL");
    expect(mapErr(() => pt.map(0, g0 / 2, g0, 1, RW)).code).toBe("EINVAL");
    expect(mapErr(() => pt.map(0, 0, g0 * 3, 1, RW)).code).toBe("EINVAL");
    expect(mapErr(() => pt.map(0, 0, g0 / 2, 1, RW)).code).toBe("EINVAL");
    expect(mapErr(() => pt.map(0, 0, g0, 0, RW)).code).toBe("EINVAL");
    expect(mapErr(() => pt.map(0, 0, g0, 1, IOMMU_CACHE)).code).toBe("EINVAL");
    expect(mapErr(() => pt.map(2 ** c.ias - g0, 0, g0, 2, RW)).code).toBe("ERANGE");
    expect(mapErr(() => pt.map(0, 2 ** c.oas, g0, 1, RW)).code).toBe("ERANGE");
    const big = c.sizes[c.sizes.length - 1]!;
    expect(mapErr(() => pt.map(big / 2, big / 2, big, 1, RW)).code).toBe("EINVAL");
    const g = new IotlbGather();
    expect(pt.unmap(0, g0 * 3, 1, g)).toBe(0);
    expect(pt.unmap(g0 / 2, g0, 1, g)).toBe(0);
    expect(pt.unmap(0, g0, 1, g)).toBe(0); // nothing mapped
    expect(pt.tablePages).toBe(alloc.allocatedPages);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it(`handles a partial unmap of a large leaf as "${c.format.partialUnmap}"`, () => {
    const diag = new Diagnostics();
    const { pt, alloc } = setup(c, { diag });
    const g0 = 2 ** c.format.granuleLg2;
    const big = naturalSizes(pt)[1]!;
    const pa = 4 * big;
    pt.map(big, pa, big, 1, RW);
    const g = new IotlbGather();
    const policy = c.format.partialUnmap;
    if (policy === "refuse") {
      diag.expectWarningSync(/partial large IOPTE/, () => {
        expect(pt.unmap(big, g0, 1, g)).toBe(0);
      });
      expect(pt.unmap(big + g0, g0, 1, g)).toBe(0);
      expect(pt.iovaToPhys(big)).toBe(pa);
      expect(pt.unmap(big, big, 1, g)).toBe(big);
    } else if (policy === "whole") {
      expect(pt.unmap(big + g0, g0, 1, g)).toBe(0); // starts inside the leaf
      expect(pt.iovaToPhys(big + g0)).toBe(pa + g0);
      expect(pt.unmap(big, g0, 1, g)).toBe(big); // the whole leaf goes
      expect(pt.iovaToPhys(big + g0)).toBe(0);
    } else {
      const before = pt.tablePages;
      expect(pt.unmap(big + g0, g0, 2, g)).toBe(2 * g0);
      expect(pt.tablePages).toBe(before + c.tablePagesPerTable);
      expect(pt.iovaToPhys(big)).toBe(pa);
      expect(pt.iovaToPhys(big + g0)).toBe(0);
      expect(pt.iovaToPhys(big + 2 * g0)).toBe(0);
      expect(pt.iovaToPhys(big + 3 * g0 + 1)).toBe(pa + 3 * g0 + 1);
      expect(pt.iovaToPhys(big + big - 1)).toBe(pa + big - 1);
      // Unmapping the rest piecewise empties the split table, which stays until free() (no single unmap covers it).
      expect(pt.unmap(big, g0, 1, g)).toBe(g0);
      expect(pt.unmap(big + 3 * g0, g0, big / g0 - 3, g)).toBe(big - 3 * g0);
      expect(pt.tablePages).toBe(before + c.tablePagesPerTable);
      expect(g.freedTables).toBe(0);
      expect(pt.iovaToPhys(big + big - 1)).toBe(0);
    }
    g.freePages(alloc);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("frees covered tables through the gather on unmap, and everything on free()", () => {
    const { pt, alloc } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    const rootPages = pt.tablePages;
    const span = g0 * 2 ** c.format.bitsPerLevel; // one leaf table
    const base = 2 * span; // keep away from the root's first entries
    pt.map(base, 0, g0, 3 * 2 ** c.format.bitsPerLevel, RW);
    expect(pt.tablePages).toBeGreaterThan(rootPages);
    expect(alloc.allocatedPages).toBe(pt.tablePages);
    // Unmapping page by page leaves the (empty) tables in place, as Linux does.
    const g = new IotlbGather();
    expect(pt.unmap(base, g0, 1, g)).toBe(g0);
    expect(g.freedTables).toBe(0);
    // Unmapping the rest of the first leaf table as one range covers no whole table: still nothing freed.
    expect(pt.unmap(base + g0, g0, 2 ** c.format.bitsPerLevel - 1, g)).toBe(span - g0);
    expect(g.freedTables).toBe(0);
    // The next two leaf tables are fully covered by one unmap: both go on the freelist.
    expect(pt.unmap(base + span, g0, 2 * 2 ** c.format.bitsPerLevel, g)).toBe(2 * span);
    expect(g.freedTables).toBeGreaterThanOrEqual(2);
    const held = alloc.allocatedPages;
    g.freePages(alloc);
    expect(alloc.allocatedPages).toBeLessThan(held);
    expect(alloc.allocatedPages).toBe(pt.tablePages);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
    expect(pt.iovaToPhys(base)).toBe(0);
  });

  it("returns to the root alone after mapping and unmapping the whole range in one call", () => {
    const { pt, alloc } = setup(c);
    const rootPages = pt.tablePages;
    const top = 2 ** (c.format.granuleLg2 + (pt.levels - 1) * c.format.bitsPerLevel); // one root entry
    const g0 = 2 ** c.format.granuleLg2;
    pt.map(top, 0, g0, 700, RW);
    const g = new IotlbGather();
    // A range covering the whole root entry frees every table below it.
    expect(pt.unmap(top, g0, 700, g)).toBe(700 * g0);
    expect(pt.tablePages).toBeGreaterThan(rootPages);
    g.freePages(alloc);
    if (pt.levels > 1) {
      pt.map(top, 0, g0, 1, RW);
      const whole = new IotlbGather();
      // Unmap with a length covering the whole root entry: stops at the hole after the one page, frees nothing.
      expect(pt.unmap(top, g0, top / g0, whole)).toBe(g0);
      whole.freePages(alloc);
    }
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("replaces empty lower tables by a large leaf, syncing before freeing them", () => {
    const syncs: number[] = [];
    const { pt, alloc } = setup(c, { sync: (g) => syncs.push(g.freedTables) });
    const g0 = 2 ** c.format.granuleLg2;
    const big = naturalSizes(pt)[1]!;
    pt.map(big, 0, g0, 1, RW);
    const g = new IotlbGather();
    pt.unmap(big, g0, 1, g);
    const withTable = pt.tablePages;
    expect(pt.map(big, 0, big, 1, RW)).toBe(big);
    expect(syncs).toEqual([1]);
    expect(pt.tablePages).toBe(withTable - c.tablePagesPerTable);
    expect(alloc.allocatedPages).toBe(pt.tablePages);
    expect(pt.iovaToPhys(big + g0)).toBe(g0);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("fails table allocations with ENOMEM, reports progress, and leaks nothing after unwinding", () => {
    const g0 = 2 ** c.format.granuleLg2;
    const perTable = 2 ** c.format.bitsPerLevel;
    const count = 2 * perTable + 3;
    const iova = 5 * perTable * g0 - 2 * g0;
    let failures = 0;
    for (let n = 1; n < 20; n++) {
      const { pt, alloc, faults } = setup(c);
      faults.failNth(n, [SITE]);
      let mapped = count * g0;
      try {
        pt.map(iova, 0, g0, count, RW);
      } catch (e) {
        expect(e).toBeInstanceOf(PgtableMapError);
        expect((e as PgtableMapError).code).toBe("ENOMEM");
        mapped = (e as PgtableMapError).mapped;
        failures++;
      }
      expect(mapped % g0).toBe(0);
      for (let i = 0; i < count; i += 7) {
        expect(pt.iovaToPhys(iova + i * g0)).toBe(i * g0 < mapped ? i * g0 : 0);
      }
      if (!faults.nthConsumed) {
        expect(mapped).toBe(count * g0);
        pt.free();
        expect(alloc.allocatedPages).toBe(0);
        break;
      }
      const g = new IotlbGather();
      if (mapped > 0) expect(pt.unmap(iova, g0, mapped / g0, g)).toBe(mapped);
      g.freePages(alloc);
      pt.free();
      expect(alloc.allocatedPages).toBe(0);
    }
    expect(failures).toBeGreaterThanOrEqual(2);
    // The root allocation itself.
    const faults = new FaultInjector();
    const memory = new PhysicalMemory({ size: GiB, faults });
    const alloc = new PageAllocator(memory, { faults });
    faults.failSite(SITE, 1);
    expect(() => new IoPageTable(c.format, memory, alloc, { ias: c.ias, oas: c.oas, site: SITE })).toThrow(
      expect.objectContaining({ code: "ENOMEM" }),
    );
    expect(alloc.allocatedPages).toBe(0);
  });

  it("reads and clears dirty bits, with and without IOMMU_DIRTY_NO_CLEAR", () => {
    const { pt } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    const big = naturalSizes(pt)[1]!;
    pt.map(0, 0, g0, 16, RW);
    pt.map(16 * g0, 0, g0, 1, IOMMU_READ);
    pt.map(big, 0, big, 1, RW);
    expect(pt.setDirty(3 * g0 + 5)).toBe(0);
    expect(pt.setDirty(7 * g0)).toBe(0);
    expect(pt.setDirty(16 * g0)).toBe(-11); // read-only: cannot become dirty
    expect(pt.setDirty(20 * g0)).toBe(-2); // not mapped
    expect(pt.setDirty(big + 3 * g0)).toBe(0);
    const read = (flags: number, gather?: IotlbGather) => {
      const out: number[][] = [];
      pt.readAndClearDirty(0, 2 * big, (iova, len) => out.push([iova, len]), flags, gather);
      return out;
    };
    const all = [
      [3 * g0, g0],
      [7 * g0, g0],
      [big, big],
    ];
    expect(read(IOMMU_DIRTY_NO_CLEAR)).toEqual(all);
    expect(read(IOMMU_DIRTY_NO_CLEAR)).toEqual(all);
    const g = new IotlbGather();
    expect(read(0, g)).toEqual(all);
    expect(g.start).toBe(3 * g0);
    expect(g.end).toBe(2 * big - 1);
    expect(read(0)).toEqual([]);
    // A window inside the large leaf reports only the window.
    pt.setDirty(big);
    const out: number[][] = [];
    pt.readAndClearDirty(big + g0, g0, (iova, len) => out.push([iova, len]), IOMMU_DIRTY_NO_CLEAR);
    expect(out).toEqual([[big + g0, g0]]);
    // Still readable and mapped.
    expect(pt.iovaToPhys(7 * g0)).toBe(7 * g0);
    pt.free();
  });

  it("packs leaf tables: N pages use N × 8 bytes of leaf tables plus the upper levels", () => {
    const { pt } = setup(c);
    const g0 = 2 ** c.format.granuleLg2;
    const perTable = 2 ** c.format.bitsPerLevel;
    const n = 4 * perTable;
    const before = pt.tablePages;
    pt.map(0, 0, g0, n, RW);
    const upper = pt.levels - 2; // one table per intermediate level below the root
    expect((pt.tablePages - before) * 4096).toBeLessThanOrEqual(1.05 * n * 8 + Math.max(0, upper) * perTable * 8);
    pt.free();
  });

  it("matches a Map model under random map/unmap (property)", () => {
    const g0 = 2 ** c.format.granuleLg2;
    const natural = c.sizes.slice(0, 2);
    const window = natural[1]! * 16;
    const arb = fc.array(
      fc.oneof(
        fc.record({
          op: fc.constant("map" as const),
          size: fc.constantFrom(...natural),
          slot: fc.nat({ max: 4095 }),
          count: fc.integer({ min: 1, max: 40 }),
          paSlot: fc.nat({ max: 4095 }),
        }),
        fc.record({ op: fc.constant("unmap" as const), pick: fc.nat() }),
        fc.record({ op: fc.constant("probe" as const), at: fc.nat({ max: 1 << 20 }) }),
      ),
      { maxLength: 40 },
    );
    fc.assert(
      fc.property(arb, (ops) => {
        const { pt, alloc } = setup(c);
        const extents = new Map<number, { pa: number; size: number; count: number }>();
        const model = new Map<number, number>(); // granule page index -> pa
        const check = (iova: number) => {
          const page = Math.floor(iova / g0);
          const pa = model.get(page);
          expect(pt.iovaToPhys(iova)).toBe(pa === undefined ? 0 : pa + (iova % g0));
        };
        const g = new IotlbGather();
        for (const o of ops) {
          if (o.op === "map") {
            const count = o.size === g0 ? o.count : 1 + (o.count % 3);
            const iova = (o.slot * o.size) % window;
            const pa = o.paSlot * o.size;
            if (iova + count * o.size > window) continue;
            let overlap = false;
            for (let p = iova / g0; p < (iova + count * o.size) / g0; p++) if (model.has(p)) overlap = true;
            try {
              pt.map(iova, pa, o.size, count, RW);
              expect(overlap).toBe(false);
              extents.set(iova, { pa, size: o.size, count });
              for (let i = 0; i < (count * o.size) / g0; i++) model.set(iova / g0 + i, pa + i * g0);
            } catch (e) {
              expect(e).toBeInstanceOf(PgtableMapError);
              expect((e as PgtableMapError).code).toBe("EEXIST");
              expect(overlap).toBe(true);
              const mapped = (e as PgtableMapError).mapped;
              if (mapped > 0) expect(pt.unmap(iova, o.size, mapped / o.size, g)).toBe(mapped);
            }
            check(iova);
          } else if (o.op === "unmap") {
            const keys = [...extents.keys()];
            if (keys.length === 0) continue;
            const iova = keys[o.pick % keys.length]!;
            const x = extents.get(iova)!;
            expect(pt.unmap(iova, x.size, x.count, g)).toBe(x.size * x.count);
            extents.delete(iova);
            for (let i = 0; i < (x.count * x.size) / g0; i++) model.delete(iova / g0 + i);
            check(iova);
          } else {
            check(Math.floor((o.at / (1 << 20)) * window));
          }
        }
        for (const [iova] of extents) {
          check(iova);
          const x = extents.get(iova)!;
          check(iova + x.size * x.count - 1);
        }
        g.freePages(alloc);
        pt.free();
        expect(alloc.allocatedPages).toBe(0);
      }),
      { numRuns: 60 },
    );
  });
});

describe("contiguous hint (test-4k with contig)", () => {
  const c = CASES[2]!;
  it("writes a run of marked entries and unmaps it as one leaf", () => {
    const { pt, alloc } = setup(c);
    pt.map(0x100000, 0x300000, 64 * KiB, 2, RW);
    let marked = 0;
    pt.dump(() => marked++);
    expect(marked).toBe(32);
    expect(pt.iovaToPhys(0x100000 + 0x1234)).toBe(0x301234);
    expect(pt.iovaToPhys(0x100000 + 64 * KiB + 0x10)).toBe(0x300000 + 64 * KiB + 0x10);
    const g = new IotlbGather();
    // Partial unmap inside a run: this format splits, so the hint goes and only one page is unmapped.
    expect(pt.unmap(0x100000 + 4 * KiB, 4 * KiB, 1, g)).toBe(4 * KiB);
    expect(pt.iovaToPhys(0x100000)).toBe(0x300000);
    expect(pt.iovaToPhys(0x100000 + 4 * KiB)).toBe(0);
    expect(pt.unmap(0x100000 + 64 * KiB, 64 * KiB, 1, g)).toBe(64 * KiB);
    expect(pt.iovaToPhys(0x100000 + 64 * KiB)).toBe(0);
    g.freePages(alloc);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("walk reports a table path down to the leaf", () => {
    const { pt } = setup(c);
    pt.map(2 * MiB, 0, 4 * KiB, 1, RW);
    const types: number[] = [];
    pt.walk(2 * MiB, (_l, _t, _i, _lo, _hi, type) => types.push(type));
    expect(types).toEqual([PT_ENTRY_TABLE, PT_ENTRY_TABLE, PT_ENTRY_OA]);
    pt.free();
  });
});

describe("pgsizeFor (iommu_pgsize)", () => {
  const bitmap = 4 * KiB + 2 * MiB + GiB;
  it("picks the largest aligned size and stops before a larger size could take over", () => {
    expect(pgsizeFor(bitmap, 0, 0, 4 * MiB)).toEqual({ pgsize: 2 * MiB, count: 2 });
    expect(pgsizeFor(bitmap, 4 * KiB, 4 * KiB, 4 * MiB)).toEqual({ pgsize: 4 * KiB, count: 511 });
    expect(pgsizeFor(bitmap, 4 * KiB, 8 * KiB, 4 * MiB)).toEqual({ pgsize: 4 * KiB, count: 1024 });
    expect(pgsizeFor(bitmap, 2 * MiB, 2 * MiB, 2 * GiB)).toEqual({ pgsize: 2 * MiB, count: 511 });
    expect(pgsizeFor(bitmap, GiB, 3 * GiB, 2 * GiB + 4 * KiB)).toEqual({ pgsize: GiB, count: 2 });
    expect(pgsizeFor(bitmap, 2 ** 40, 0, 8 * KiB)).toEqual({ pgsize: 4 * KiB, count: 2 });
    expect(pgsizeFor(2 * KiB + MiB, 0x800, 0x800, 3 * MiB)).toEqual({ pgsize: 2 * KiB, count: 511 });
  });
  it("throws when nothing fits (the kernel BUG()s)", () => {
    expect(() => pgsizeFor(bitmap, 0x800, 0, 8 * KiB)).toThrow(KernelError);
  });
});

describe("IoPageTable construction", () => {
  it("rejects an IAS the format cannot cover", () => {
    const memory = new PhysicalMemory({ size: GiB });
    const alloc = new PageAllocator(memory);
    expect(() => new IoPageTable(TEST_4K_FORMAT, memory, alloc, { ias: 53, oas: 48 })).toThrow(
      expect.objectContaining({ code: "EINVAL" }),
    );
    expect(() => new IoPageTable(TEST_4K_FORMAT, memory, alloc, { ias: 8, oas: 48 })).toThrow(KernelError);
    expect(alloc.allocatedPages).toBe(0);
  });
  it("shrinks the root for a small IAS (LPAE start level)", () => {
    const memory = new PhysicalMemory({ size: GiB });
    const alloc = new PageAllocator(memory);
    const pt = new IoPageTable(TEST_4K_FORMAT, memory, alloc, { ias: 32, oas: 40 });
    expect(pt.levels).toBe(3);
    pt.map(3 * GiB, GiB, GiB, 1, RW);
    expect(pt.iovaToPhys(3 * GiB + 5)).toBe(GiB + 5);
    expect(mapErr(() => pt.map(4 * GiB, 0, 4 * KiB, 1, RW)).code).toBe("ERANGE");
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });
});
