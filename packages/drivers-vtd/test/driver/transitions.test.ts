/**
 * Domain transitions and the order of entry updates: replacing a device's domain (first stage, second stage,
 * identity, blocked, back) rewrites its PASID entry (scalable mode) or context entry (legacy mode) so that a DMA
 * issued between any two stores of the update sees the old translation, the new one, or a not-present fault, and
 * never a half-written entry. Caches are tiny (one entry) so the unit re-reads the entries from memory.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { FR } from "../../src/hw/index.js";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

// Not strict: between the store that clears an entry and the invalidation that follows, a cached copy is
// legitimately still in use; the DMA results themselves are checked instead.
const TINY = { tlbEntries: 1, tlbWays: 1, contextEntries: 1, pasidEntries: 1, cacheWays: 1, pagingCacheEntries: 1 };
const IOVA = 0x20_0000;
const RW = IOMMU_READ | IOMMU_WRITE;
/** Faults a DMA may see while an entry is being replaced: the entry is not present (blocked). */
const NOT_PRESENT: readonly number[] = [
  FR.CTX_NOT_PRESENT,
  FR.SM_CTX_NOT_PRESENT,
  FR.SM_PTE_NOT_PRESENT,
  FR.SM_PDIR_NOT_PRESENT,
];

describe.each([
  ["scalable mode", {}],
  ["legacy mode", { scalableMode: false }],
] as const)("%s", (_name, hw) => {
  it("no DMA between the stores of a domain replacement sees a half-written entry", async () => {
    const b = await boot({ ...TINY, ...hw });
    const m = b.m;
    const dev = m.driverCore.deviceFor("nvme0")!;
    const group = dev.iommuGroup as IommuGroup;
    await iommuDeviceClaimDmaOwner(dev, "test");
    // Three paging domains mapping IOVA to three buffers, plus identity (IOVA itself) and blocked.
    const flags = b.iommu.sm ? [0, IOMMU_HWPT_ALLOC.NEST_PARENT, 0] : [0, 0, 0];
    const domains: IommuDomain[] = [];
    const pattern = new Map<number, number>();
    const bufs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const d = await iommuPagingDomainAllocFlags(dev, flags[i]!);
      const pa = m.pages.allocPages(0, "test-buf");
      bufs.push(pa);
      m.memory.fill(pa, 4096, 0x40 + i);
      iommuMap(d, IOVA, pa, 4096, RW);
      domains.push(d);
      pattern.set(0x40 + i, i);
    }
    m.memory.fill(IOVA, 4096, 0x33); // what identity reads
    const ep = m.device("nvme0");
    const seen: string[] = [];
    const bad: string[] = [];
    const probe = () => {
      try {
        const v = ep.dmaRead(IOVA + 16, 1)[0]!;
        seen.push(v === 0x33 ? "identity" : pattern.has(v) ? `d${pattern.get(v)}` : `?${v}`);
        if (v !== 0x33 && !pattern.has(v)) bad.push(`read ${v}`);
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e;
        seen.push("fault");
        if (!NOT_PRESENT.includes(e.faultCode)) bad.push(`fault ${e.faultReason} (${e.faultCode})`);
      }
    };
    // After every store the driver makes (outside the unit's own register handling), a DMA.
    const mem = m.memory;
    const orig = mem.write32.bind(mem);
    let inUnit = 0;
    const hwWrite = b.hw.write32.bind(b.hw);
    b.hw.write32 = (off: number, v: number) => {
      inUnit++;
      try {
        hwWrite(off, v);
      } finally {
        inUnit--;
      }
    };
    let probing = false;
    mem.write32 = (pa: number, v: number) => {
      orig(pa, v);
      if (inUnit === 0 && !probing) {
        probing = true;
        try {
          probe();
        } finally {
          probing = false;
        }
      }
    };
    const order: (IommuDomain | "identity" | "blocked")[] = [
      domains[0]!,
      domains[1]!,
      "identity",
      domains[2]!,
      "blocked",
      domains[0]!,
    ];
    try {
      for (const t of order) {
        const d = t === "identity" ? b.drv.identity : t === "blocked" ? b.drv.blocked : t;
        await iommuGroupReplaceDomain(group, d);
        probe();
        const want = t === "identity" ? "identity" : t === "blocked" ? "fault" : `d${domains.indexOf(t)}`;
        expect(seen.at(-1)).toBe(want);
      }
    } finally {
      mem.write32 = orig;
      b.hw.write32 = hwWrite;
    }
    expect(bad).toEqual([]);
    // Every kind of outcome was observed along the way.
    expect(new Set(seen)).toEqual(new Set(["d0", "d1", "d2", "identity", "fault"]));
    await iommuDeviceReleaseDmaOwner(dev);
    for (const d of domains) {
      iommuUnmap(d, IOVA, 4096);
      iommuDomainFree(d);
    }
    for (const pa of bufs) m.pages.freePages(pa, 0);
  });
});
