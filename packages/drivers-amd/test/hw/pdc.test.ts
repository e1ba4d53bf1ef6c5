/**
 * The page-directory cache: a walk that misses the IOTLB starts at the table the PDC remembers for the IOVA's 2 MiB
 * region, so a directory entry rewritten behind the hardware's back keeps being used until INVALIDATE_IOMMU_PAGES
 * with PDE=1 (or INVALIDATE_IOMMU_ALL); PDE=0 and INVALIDATE_DEVTAB_ENTRY leave it. Strict mode reports the stale use.
 */
import type { Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import type { AmdHw } from "../../src/hw/index.js";
import { bootAmd, GPU, NIC, Setup, type Tables, v1, x86 } from "./helpers/encoder.js";

let m: Machine;
let t: Tables;
let hw: AmdHw;

afterEach(async () => {
  await m.teardown();
});

const DID = 3;

/**
 * A 3-level table whose level-2 entry for region 0 points at table A; table B maps the same pages elsewhere. Each
 * page holds its own marker word. Returns the level-2 slot and table B's entry value.
 */
async function setup(options: Record<string, unknown>) {
  ({ m, t, hw } = await bootAmd({ pdcEntries: 2, ...options }));
  const s = new Setup(t);
  const root = t.alloc(4096);
  const l2 = t.alloc(4096);
  const a = t.alloc(4096);
  const b = t.alloc(4096);
  t.q(root, v1(l2, 2));
  const slot = l2; // index 0: region [0, 2 MiB)
  t.q(slot, v1(a, 1));
  for (const [table, tag] of [
    [a, 0xa0],
    [b, 0xb0],
  ] as const) {
    for (const i of [1, 2, 3]) {
      const page = t.alloc(4096);
      m.memory.write32(page, tag + i);
      t.q(table + 8 * i, v1(page, 0));
    }
  }
  s.setDte(NIC, { mode: 3, root, did: DID });
  const read = (iova: number) => new DataView(m.device("amd-nic0").dmaRead(iova, 4).buffer).getUint32(0, true);
  return { s, slot, tableB: v1(b, 1), read };
}

describe("page-directory cache", () => {
  it("keeps using a rewritten PDE until INVALIDATE_IOMMU_PAGES with PDE=1", async () => {
    const { s, slot, tableB, read } = await setup({});
    expect(read(0x1000)).toBe(0xa1);
    expect(hw.pdc.used).toBe(1);
    t.q(slot, tableB); // behind the hardware's back
    // 0x2000 misses the IOTLB; the walk starts at the cached table A.
    const hits = hw.stats.pdcHits;
    expect(read(0x2000)).toBe(0xa2);
    expect(hw.stats.pdcHits).toBe(hits + 1);
    // Neither INVALIDATE_DEVTAB_ENTRY nor INVALIDATE_IOMMU_PAGES with PDE=0 drops it.
    s.invDte(NIC);
    s.invPages(DID, 0x1000n, false, -1, false);
    expect(read(0x1000)).toBe(0xa1);
    // PDE=1 for another domain, or for a range outside the region, leaves it too.
    s.invPages(DID + 1, 0x1000n, false, -1, true);
    s.invPages(DID, 0x40_0000n, false, -1, true);
    s.invPages(DID, 0x3000n, false, -1, false);
    expect(read(0x3000)).toBe(0xa3);
    // PDE=1 over one page of the region: the region's entry goes, with that page's IOTLB entry.
    s.invPages(DID, 0x1000n, false, -1, true);
    expect(hw.pdc.used).toBe(0);
    expect(read(0x1000)).toBe(0xb1);
    expect(hw.stats.staleReports).toBe(0);
  });

  it("INVALIDATE_IOMMU_ALL drops it; its size comes from the platform description", async () => {
    const { s, slot, tableB, read } = await setup({});
    expect(read(0x1000)).toBe(0xa1);
    t.q(slot, tableB);
    s.cmd(0x8n << 60n, 0n); // INVALIDATE_IOMMU_ALL
    expect(hw.pdc.used).toBe(0);
    expect(read(0x2000)).toBe(0xb2);
    expect(hw.pdc.entries).toBe(2);
  });

  it("strict mode reports the stale directory entry once, and is quiet after the PDE invalidation", async () => {
    const { s, slot, tableB, read } = await setup({ strict: true });
    expect(read(0x1000)).toBe(0xa1);
    t.q(slot, tableB);
    m.diag.expectWarningSync(/stale page-directory cache entry: DomainID 3 iova 0x2000: cached level 1 table/, () =>
      expect(read(0x2000)).toBe(0xa2),
    );
    expect(hw.stats.staleReports).toBe(1);
    s.invPages(DID, 0x0n | 0x1f_f000n, true, -1, true); // the whole 2 MiB region (bits 20:12 set, S)
    expect(read(0x3000)).toBe(0xb3);
    expect(read(0x2000)).toBe(0xb2);
    expect(hw.stats.staleReports).toBe(1);
  });
});

describe("page-directory cache of guest (v2) tables", () => {
  it("is tagged by PASID: a GN invalidation with PDE=1 drops only that PASID's entries", async () => {
    ({ m, t, hw } = await bootAmd({ pdcEntries: 4, strict: false }));
    const s = new Setup(t);
    const gcr3 = t.alloc(4096);
    // Two PASIDs, each with its own 4-level guest table mapping IOVA 0x1000 and 0x2000 through one L1 table.
    for (const pasid of [1, 2]) {
      const cr3 = t.alloc(4096);
      let table = cr3;
      for (let level = 4; level > 1; level--) {
        const next = t.alloc(4096);
        t.q(table, x86(next));
        table = next;
      }
      for (const i of [1, 2]) {
        const page = t.alloc(4096);
        m.memory.write32(page, 0x100 * pasid + i);
        t.q(table + 8 * i, x86(page));
      }
      t.q(gcr3 + 8 * pasid, BigInt(cr3) | 1n);
    }
    s.setDte(GPU, { gv: true, glx: 0, gcr3, did: 9 });
    const read = (iova: number, pasid: number) =>
      new DataView(m.device("amd-gpu0").dmaRead(iova, 4, { pasid }).buffer).getUint32(0, true);
    expect(read(0x1000, 1)).toBe(0x101);
    expect(read(0x1000, 2)).toBe(0x201);
    expect(hw.pdc.used).toBe(2);
    // Behind the hardware's back, each PASID's L2 directory entry now points at an empty L1 table.
    const empty = t.alloc(4096);
    for (const pasid of [1, 2]) {
      const cr3 = Number(t.rq(gcr3 + 8 * pasid) & ~0xfffn);
      const l3 = Number(t.rq(cr3) & 0x000f_ffff_ffff_f000n);
      const l2 = Number(t.rq(l3) & 0x000f_ffff_ffff_f000n);
      t.q(l2, x86(empty));
    }
    // PASID 1 with PDE=1 (GN): its entry goes and its walk now faults; PASID 2 still walks the cached L1 table.
    s.invPages(9, 0x1000n, false, 1, true);
    s.invPages(9, 0x2000n, false, 2, false);
    expect(hw.pdc.used).toBe(1);
    expect(() => read(0x2000, 1)).toThrow(/not present/);
    expect(read(0x2000, 2)).toBe(0x202);
  });
});
