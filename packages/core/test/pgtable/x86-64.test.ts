/**
 * The x86-64 (IA-32e) format shared by the VT-d first stage and the AMD-Vi v2 table: 4 and 5 levels, every leaf
 * size, the entry bits Linux writes (leaf P|U|A with RW|D when writable, PS above level 0, XD for NOEXEC; tables
 * P|RW|U|A), and a random map/unmap sequence against a model.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IoPageTable } from "../../src/pgtable/engine.js";
import { X86_64, x86_64Format } from "../../src/pgtable/fmt/x86-64.js";
import { IotlbGather } from "../../src/pgtable/gather.js";
import { IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE } from "../../src/pgtable/prot.js";
import { PhysicalMemory } from "../../src/platform/memory.js";
import { PageAllocator } from "../../src/platform/page-alloc.js";

const KiB = 1024;
const MiB = KiB * KiB;
const GiB = MiB * KiB;

function setup(levels: 4 | 5, gib1 = true) {
  const memory = new PhysicalMemory({ size: 4 * GiB });
  const alloc = new PageAllocator(memory);
  const pt = new IoPageTable(x86_64Format(levels, gib1), memory, alloc, { ias: levels === 5 ? 53 : 47, oas: 52 });
  return { memory, alloc, pt };
}

/** The raw leaf and the table entries above it for `iova`. */
function entries(pt: IoPageTable, iova: number): { level: number; lo: number; hi: number }[] {
  const out: { level: number; lo: number; hi: number }[] = [];
  pt.walk(iova, (level, _t, _i, lo, hi) => out.push({ level, lo, hi }));
  return out;
}

describe.each([4, 5] as const)("x86-64 format, %d levels", (levels) => {
  it("has the level count, a full 4 KiB root and 4K/2M/1G pages (1G only with gib1)", () => {
    const { pt, alloc } = setup(levels);
    expect(pt.levels).toBe(levels);
    expect(pt.pgsizeBitmap).toBe(4 * KiB + 2 * MiB + GiB);
    pt.free();
    const s = setup(levels, false);
    expect(s.pt.pgsizeBitmap).toBe(4 * KiB + 2 * MiB);
    s.pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it.each([
    [4 * KiB, 0],
    [2 * MiB, 1],
    [GiB, 2],
  ])("maps a %d-byte page with the bits Linux writes", (size, leafLevel) => {
    const { pt, alloc } = setup(levels);
    const iova = size * 3;
    expect(pt.map(iova, size * 2, size, 1, IOMMU_READ | IOMMU_WRITE)).toBe(size);
    expect(pt.map(iova + size, size * 5, size, 1, IOMMU_READ | IOMMU_NOEXEC)).toBe(size);
    const e = entries(pt, iova + 8);
    expect(e.length).toBe(levels - leafLevel);
    const leaf = e.at(-1)!;
    const X = X86_64;
    expect(leaf.lo & 0xfff).toBe(X.P | X.U | X.A | X.RW | X.D | (leafLevel > 0 ? X.PS : 0));
    expect((leaf.hi & ~0xfffff) >>> 0).toBe(0);
    for (const t of e.slice(0, -1)) expect(t.lo & 0xfff).toBe(X.P | X.RW | X.U | X.A);
    const ro = entries(pt, iova + size).at(-1)!;
    expect(ro.lo & (X.RW | X.D)).toBe(0);
    expect((ro.hi & ~0xfffff) >>> 0).toBe(X.NX_HI >>> 0);
    expect(pt.iovaToPhys(iova + 0x123)).toBe(size * 2 + 0x123);
    const g = new IotlbGather();
    expect(pt.unmap(iova, size, 2, g)).toBe(2 * size);
    g.freePages(alloc);
    expect(pt.iovaToPhys(iova)).toBe(0);
    pt.free();
    expect(alloc.allocatedPages).toBe(0);
  });

  it("agrees with a model over random map/unmap sequences", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ slot: fc.integer({ min: 0, max: 31 }), map: fc.boolean() }), { maxLength: 40 }),
        (ops) => {
          const { pt, alloc } = setup(levels);
          const model = new Map<number, number>();
          // Slots spread over the top level's range, so every level gets its own tables.
          const top = 2 ** (12 + 9 * (levels - 1));
          const at = (slot: number) => (slot % 4) * top + Math.floor(slot / 4) * 2 * MiB;
          for (const { slot, map } of ops) {
            const iova = at(slot);
            if (map && !model.has(slot)) {
              pt.map(iova, (slot + 1) * 4096, 4096, 1, IOMMU_READ | IOMMU_WRITE);
              model.set(slot, (slot + 1) * 4096);
            } else if (!map && model.has(slot)) {
              const g = new IotlbGather();
              expect(pt.unmap(iova, 4096, 1, g)).toBe(4096);
              g.freePages(alloc);
              model.delete(slot);
            }
          }
          for (let s = 0; s < 32; s++) expect(pt.iovaToPhys(at(s) + 5)).toBe(model.has(s) ? model.get(s)! + 5 : 0);
          pt.free();
          expect(alloc.allocatedPages).toBe(0);
        },
      ),
      { numRuns: 30, seed: levels },
    );
  });
});
