/**
 * Contiguous ranges beyond the buddy allocator's largest block (for tests mapping 1 GiB leaves): aligned, reading
 * as zero, counted and reported as leaks like pages, and given back to the buddy lists on free.
 */
import { describe, expect, it } from "vitest";
import { createMachine, KernelError } from "../../src/index.js";

const GiB = 1024 * 1024 * 1024;

describe("allocContigRange", () => {
  it("reserves an aligned 1 GiB range that a 1 GiB mapping can point at, and frees it", async () => {
    const m = await createMachine({ platform: undefined });
    const before = m.pages.allocatedPages;
    const pa = m.pages.allocContigRange(GiB, GiB, "test_1g");
    expect(pa % GiB).toBe(0);
    expect(m.pages.allocatedPages - before).toBe(GiB / 4096);
    expect(m.memory.read32(pa + GiB - 4)).toBe(0);
    // Buddy allocations never land inside it.
    for (let i = 0; i < 64; i++) {
      const p = m.pages.allocPages(10, "t");
      expect(p + (4096 << 10) <= pa || p >= pa + GiB).toBe(true);
      m.pages.freePages(p, 0 + 10);
    }
    expect(() => m.pages.allocContigRange(8 * GiB)).toThrow(KernelError);
    m.pages.freeContigRange(pa);
    expect(m.pages.allocatedPages).toBe(before);
    await m.teardown();
  });

  it("reports a range still reserved at teardown as a leak naming its site", async () => {
    const m = await createMachine({});
    m.pages.allocContigRange(4 * 1024 * 1024, 2 * 1024 * 1024, "forgotten_block");
    await expect(m.teardown()).rejects.toThrow(/1024 pages from forgotten_block still allocated/);
  });
});
