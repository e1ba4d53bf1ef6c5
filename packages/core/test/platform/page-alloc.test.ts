import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { FaultInjector } from "../../src/kernel/fault-inject.js";
import { PAGE_SIZE, PhysicalMemory } from "../../src/platform/memory.js";
import { MAX_PAGE_ORDER, PageAllocator, PCP_HIGH, POISON_FREE } from "../../src/platform/page-alloc.js";

const MiB = 2 ** 20;
const BLOCK = PAGE_SIZE << MAX_PAGE_ORDER; // 4 MiB

function setup(size = 64 * MiB, opts: { base?: number; limit?: number; recordFreeStacks?: boolean } = {}) {
  const diag = new Diagnostics();
  const faults = new FaultInjector();
  const memory = new PhysicalMemory({ size, faults, diag });
  const pages = new PageAllocator(memory, { faults, diag, ...opts }).install();
  return { diag, faults, memory, pages };
}

describe("PageAllocator", () => {
  it("returns addresses aligned to their order, inside the range, zeroed", () => {
    const { memory, pages } = setup(64 * MiB, { base: 0x3000, limit: 60 * MiB + 0x5000 });
    for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
      const pa = pages.allocPages(order, `order${order}`);
      const size = PAGE_SIZE << order;
      expect(pa % size).toBe(0);
      expect(pa).toBeGreaterThanOrEqual(0x3000);
      expect(pa + size).toBeLessThanOrEqual(60 * MiB + 0x5000);
      expect(memory.read32(pa)).toBe(0);
      expect(memory.read32(pa + size - 4)).toBe(0);
      memory.fill(pa, size, 0xee); // dirty it; the next allocation must come back zeroed
    }
    for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
      const pa = pages.allocPages(order);
      const bytes = memory.readBytes(pa, PAGE_SIZE << order);
      expect(bytes.every((b) => b === 0)).toBe(true);
    }
  });

  it("hands out distinct, non-overlapping blocks until memory is exhausted, then ENOMEM", () => {
    const { pages } = setup(8 * MiB, { base: 0x1000 }); // unaligned head: blocks of every size
    const got: [number, number][] = [];
    for (;;) {
      try {
        got.push([pages.allocPages(2, "fill"), 4 * PAGE_SIZE]);
      } catch (e) {
        expect(e).toMatchObject({ code: "ENOMEM" });
        break;
      }
    }
    got.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < got.length; i++) expect(got[i]![0]).toBeGreaterThanOrEqual(got[i - 1]![0] + got[i - 1]![1]);
    expect(pages.freePagesCount).toBeLessThan(4);
    expect(pages.allocatedPages).toBe(got.length * 4);
    for (const [pa] of got) pages.freePages(pa, 2);
  });

  it("coalesces buddies: all order-0 pages of a block freed give back an order-10 block", () => {
    const { pages } = setup(BLOCK); // exactly one max-order block
    const all: number[] = [];
    for (let i = 0; i < 1 << MAX_PAGE_ORDER; i++) all.push(pages.allocPages(0, "small"));
    expect(() => pages.allocPages(0)).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    expect(() => pages.allocPages(MAX_PAGE_ORDER)).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    // Free in a scattered order so merges happen at every level from both sides.
    for (let i = 0; i < all.length; i += 2) pages.freePage(all[i]!);
    for (let i = all.length - 1; i > 0; i -= 2) pages.freePage(all[i]!);
    expect(pages.allocatedPages).toBe(0);
    expect(pages.allocPages(MAX_PAGE_ORDER, "big")).toBe(0);
    pages.freePages(0, MAX_PAGE_ORDER);
  });

  it("poisons freed pages with POISON_FREE", () => {
    const { memory, pages } = setup();
    const pa = pages.allocPages(1, "pt");
    memory.write64(pa, 0x123n);
    pages.freePages(pa, 1);
    expect(memory.read8(pa)).toBe(POISON_FREE);
    expect(memory.read32(pa)).toBe(0x6b6b6b6b);
    expect(memory.read32(pa + 2 * PAGE_SIZE - 4)).toBe(0x6b6b6b6b);
  });

  it("reports a double free naming the address and the allocation site, without crashing", () => {
    const { diag, pages } = setup(64 * MiB, { recordFreeStacks: true });
    const pa = pages.allocPages(0, "arm_smmu_strtab");
    pages.freePages(pa, 0);
    const [d] = diag.expectWarningSync({ kind: "double-free" }, () => pages.freePages(pa, 0));
    expect(d!.message).toContain(`0x${pa.toString(16)}`);
    expect(d!.message).toContain("arm_smmu_strtab");
    expect(d!.culprit).toBe("arm_smmu_strtab");
    expect(d!.related[0]!.label).toBe("first freed at");
    expect(d!.related[0]!.stack).toContain("page-alloc.test.ts");
    expect(pages.allocatedPages).toBe(0);
    expect(diag.unexpected()).toEqual([]);
  });

  it("without free stacks a double free is still reported, says how to get the stack, and turns recording on", () => {
    const { diag, pages } = setup();
    const pa = pages.allocPages(0, "arm_smmu_cdtab");
    pages.freePages(pa, 0);
    const [d] = diag.expectWarningSync({ kind: "double-free", culprit: "arm_smmu_cdtab" }, () =>
      pages.freePages(pa, 0),
    );
    expect(d!.related[0]!.stack).toContain("trackFreeStacks");
    const pb = pages.allocPages(0, "arm_smmu_cdtab");
    function releaseTable() {
      pages.freePages(pb, 0);
    }
    releaseTable();
    const [d2] = diag.expectWarningSync({ kind: "double-free" }, () => pages.freePages(pb, 0));
    expect(d2!.related[0]!.stack.split("\n")[0]).toContain("releaseTable");
    expect(diag.unexpected()).toEqual([]);
  });

  it("keeps freed order-0 pages on a per-CPU list: reused first, poisoned, drained in batches past PCP_HIGH", () => {
    const { memory, pages } = setup();
    const a = pages.allocPages(0, "t");
    const b = pages.allocPages(0, "t");
    pages.freePages(a, 0);
    expect(memory.read32(a)).toBe(0x6b6b6b6b);
    expect(pages.allocPages(0, "t")).toBe(a); // the hot page comes back
    expect(memory.read32(a)).toBe(0); // zeroed again
    pages.freePages(a, 0);
    pages.freePages(b, 0);
    // Many frees: the list never holds more than PCP_HIGH, and every page is accounted free.
    const many = Array.from({ length: 3 * PCP_HIGH }, () => pages.allocPages(0, "t"));
    for (const pa of many) {
      pages.freePages(pa, 0);
      expect(pages.pcpPages).toBeLessThanOrEqual(PCP_HIGH);
    }
    expect(pages.pcpPages).toBeGreaterThan(0);
    expect(pages.allocatedPages).toBe(0);
    expect(pages.siteCount("t")).toBe(0);
    // Everything merges back: the whole range is one set of MAX_PAGE_ORDER blocks again when asked for.
    const bigs: number[] = [];
    for (let i = 0; i < (64 * MiB) / (PAGE_SIZE * 2 ** MAX_PAGE_ORDER); i++)
      bigs.push(pages.allocPages(MAX_PAGE_ORDER));
    expect(() => pages.allocPages(0)).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    for (const pa of bigs) pages.freePages(pa, MAX_PAGE_ORDER);
  });

  it("reports a free with the wrong order naming the site, and frees what was allocated", () => {
    const { diag, pages } = setup();
    const pa = pages.allocPages(2, "iommu_dma_alloc");
    const [d] = diag.expectWarningSync({ culprit: "iommu_dma_alloc" }, () => pages.freePages(pa, 0));
    expect(d!.message).toMatch(/order 0.*allocated with order 2 at iommu_dma_alloc/);
    expect(d!.message).toContain(`0x${pa.toString(16)}`);
    expect(pages.allocatedPages).toBe(0);
    expect(pages.allocPages(2)).toBe(pa); // the whole block went back
  });

  it("reports frees of never-allocated addresses and of the middle of an allocation", () => {
    const { diag, pages } = setup();
    diag.expectWarningSync(/0x5000.*never allocated/, () => pages.freePage(0x5000));
    const pa = pages.allocPages(3, "ctx_table");
    diag.expectWarningSync(/not the start of the order-3 allocation.*ctx_table/, () => pages.freePage(pa + PAGE_SIZE));
    expect(pages.allocatedPages).toBe(8);
    pages.freePages(pa, 3);
    expect(diag.unexpected()).toEqual([]);
  });

  it("an injected failure (failNth) throws ENOMEM and leaves the accounting unchanged", () => {
    const { faults, memory, pages } = setup();
    const a = pages.allocPages(0, "first");
    const before = { allocated: pages.allocatedPages, free: pages.freePagesCount, frames: memory.touchedFrames };
    faults.failNth(1);
    expect(() => pages.allocPages(3, "strtab")).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    expect(faults.failedSites).toEqual(["strtab"]);
    expect({ allocated: pages.allocatedPages, free: pages.freePagesCount, frames: memory.touchedFrames }).toEqual(
      before,
    );
    expect(pages.siteCount("strtab")).toBe(0);
    // The next allocation works and gets the block the failed one would have had.
    const b = pages.allocPages(3, "strtab");
    expect(pages.siteCount("strtab")).toBe(8);
    pages.freePages(b, 3);
    pages.freePage(a);
  });

  it("counts pages per site and lists leaks by site at teardown", () => {
    const { diag, pages } = setup();
    const kept = [pages.allocPages(0, "arm_smmu_strtab"), pages.allocPages(1, "arm_smmu_strtab")];
    const gone = pages.getZeroedPage("cd_table");
    pages.allocPages(0, "cd_table");
    expect(pages.siteCount("arm_smmu_strtab")).toBe(3);
    expect(pages.siteCount("cd_table")).toBe(2);
    expect(pages.allocatedPages).toBe(5);
    pages.freePage(gone);
    expect(pages.siteCount("cd_table")).toBe(1);
    expect(Object.fromEntries(pages.pagesPerSite)).toEqual({ arm_smmu_strtab: 3, cd_table: 1 });
    diag.runTeardownChecks();
    const leaks = diag.ofKind("leak").map((d) => d.message);
    expect(leaks).toHaveLength(2);
    expect(leaks[0]).toMatch(/^3 pages from arm_smmu_strtab still allocated \(/);
    expect(leaks[0]).toContain(`0x${kept[1]!.toString(16)} order 1`);
    expect(leaks[1]).toMatch(/^1 page from cd_table still allocated/);
    expect(diag.ofKind("leak")[0]!.culprit).toBe("pages");
  });

  it("is clean at teardown when everything was freed", () => {
    const { diag, pages } = setup();
    pages.freePage(pages.getZeroedPage());
    diag.runTeardownChecks();
    expect(diag.records).toEqual([]);
  });

  it("manages a huge RAM range lazily and accepts the (memory, faults, diag) form", () => {
    const diag = new Diagnostics();
    const faults = new FaultInjector();
    const memory = new PhysicalMemory({ size: 2 ** 48 });
    const pages = new PageAllocator(memory, faults, diag);
    expect(pages.diag).toBe(diag);
    expect(pages.freePagesCount).toBe(2 ** 36);
    const pa = pages.allocPages(MAX_PAGE_ORDER);
    expect(pa).toBe(0);
    faults.failSite("x");
    expect(() => pages.allocPages(0, "x")).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    pages.freePages(pa, MAX_PAGE_ORDER);
  });

  it("rejects orders above MAX_PAGE_ORDER with a warning and ENOMEM", () => {
    const { diag, pages } = setup();
    diag.expectWarningSync(/order 11/, () => {
      expect(() => pages.allocPages(11, "huge")).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    });
  });
});
