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
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainAllocNested,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuReplaceDevicePasid,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { FR } from "../../src/hw/index.js";
import { IOMMU_HWPT_DATA_VTD_S1 } from "../../src/index.js";
import { type Booted, boot, teardownAll } from "./helpers.js";

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

/**
 * Run `fn` with `probe` called after every 32-bit store the driver makes to memory (not the unit's own stores while
 * it handles a register write, nor the probe's own).
 */
async function withStoreProbes(b: Booted, probe: () => void, fn: () => Promise<void>): Promise<void> {
  const mem = b.m.memory;
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
  try {
    await fn();
  } finally {
    mem.write32 = orig;
    b.hw.write32 = hwWrite;
  }
}

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
    const order: (IommuDomain | "identity" | "blocked")[] = [
      domains[0]!,
      domains[1]!,
      "identity",
      domains[2]!,
      "blocked",
      domains[0]!,
    ];
    await withStoreProbes(b, probe, async () => {
      for (const t of order) {
        const d = t === "identity" ? b.drv.identity : t === "blocked" ? b.drv.blocked : t;
        await iommuGroupReplaceDomain(group, d);
        probe();
        const want = t === "identity" ? "identity" : t === "blocked" ? "fault" : `d${domains.indexOf(t)}`;
        expect(seen.at(-1)).toBe(want);
      }
    });
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

describe("scalable mode: PASID entries and nested domains", () => {
  it("no DMA at the RID or at PASID 7 between the stores of PASID attach/replace/detach and nested replacements sees a half-written entry", async () => {
    const b = await boot(TINY);
    const m = b.m;
    const dev = m.driverCore.deviceFor("nvme0")!;
    const group = dev.iommuGroup as IommuGroup;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const page = () => {
      const pa = m.pages.allocPages(0, "test-buf");
      m.memory.fill(pa, 4096, 0);
      return pa;
    };
    const bufs = [0, 1, 2].map((i) => {
      const pa = page();
      m.memory.fill(pa, 4096, 0x40 + i);
      return pa;
    });
    // d0: first stage; d1: a second-stage nest parent; both PASID-capable, mapping IOVA to buffers 0 and 1.
    const d0 = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID);
    const d1 = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID);
    iommuMap(d0, IOVA, bufs[0]!, 4096, RW);
    iommuMap(d1, IOVA, bufs[1]!, 4096, RW);
    // n0: nested on d1 (guest-physical = physical for the pages d1 maps), the guest's 4-level tables mapping IOVA
    // to buffer 2.
    const tables = [page(), page(), page(), page()];
    for (const pa of [...tables, bufs[2]!]) iommuMap(d1, pa, pa, 4096, RW);
    const put = (pa: number, lo: number) => {
      m.memory.write32(pa, lo);
      m.memory.write32(pa + 4, 0);
    };
    for (let l = 4; l > 1; l--) {
      const idx = Math.floor(IOVA / 2 ** (12 + 9 * (l - 1))) % 512;
      put(tables[4 - l]! + idx * 8, (tables[5 - l]! | 0x27) >>> 0);
    }
    put(tables[3]! + (Math.floor(IOVA / 4096) % 512) * 8, (bufs[2]! | 0x67) >>> 0);
    const s1 = new Uint8Array(24);
    const dv = new DataView(s1.buffer);
    dv.setBigUint64(8, BigInt(tables[0]!), true);
    dv.setUint32(16, 48, true);
    const n0 = await iommuDomainAllocNested(dev, d1, IOMMU_HWPT_ALLOC.PASID, {
      type: IOMMU_HWPT_DATA_VTD_S1,
      data: s1,
    });
    const ep = m.device("nvme0");
    const names = new Map<number, string>([
      [0x40, "d0"],
      [0x41, "d1"],
      [0x42, "n0"],
    ]);
    const bad: string[] = [];
    const seen = { rid: new Set<string>(), pasid: new Set<string>() };
    const read = (pasid?: number): string => {
      try {
        const v = ep.dmaRead(IOVA + 16, 1, pasid === undefined ? undefined : { pasid })[0]!;
        const n = names.get(v);
        if (!n) bad.push(`${pasid ?? "RID"}: read ${v}`);
        return n ?? `?${v}`;
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e;
        if (!NOT_PRESENT.includes(e.faultCode)) bad.push(`${pasid ?? "RID"}: fault ${e.faultReason} (${e.faultCode})`);
        return "fault";
      }
    };
    const probe = () => {
      seen.rid.add(read());
      seen.pasid.add(read(7));
    };
    const handle = () => ({ domain: undefined });
    await withStoreProbes(b, probe, async () => {
      await iommuAttachDevicePasid(d0, dev, 7, handle());
      expect(read(7)).toBe("d0");
      await iommuReplaceDevicePasid(d1, dev, 7, handle());
      expect(read(7)).toBe("d1");
      await iommuReplaceDevicePasid(n0, dev, 7, handle());
      expect(read(7)).toBe("n0");
      await iommuGroupReplaceDomain(group, n0);
      expect(read()).toBe("n0");
      await iommuGroupReplaceDomain(group, d0);
      expect(read()).toBe("d0");
      await iommuReplaceDevicePasid(d0, dev, 7, handle());
      expect(read(7)).toBe("d0");
      await iommuGroupReplaceDomain(group, n0);
      await iommuDetachDevicePasid(d0, dev, 7);
      expect(read(7)).toBe("fault");
      expect(read()).toBe("n0");
    });
    expect(bad).toEqual([]);
    expect(seen.pasid).toEqual(new Set(["d0", "d1", "n0", "fault"]));
    expect(seen.rid).toContain("n0");
    // A change in the parent flushes the whole device TLB of a device on a nested domain (it caches nested results).
    iommuMap(d1, 0x4000_0000, bufs[0]!, 4096, RW);
    iommuUnmap(d1, 0x4000_0000, 4096);
    expect(b.hw.devTlbInvalidations.at(-1)).toMatchObject({ sid: 0x100, size: Number.POSITIVE_INFINITY });
    await iommuDeviceReleaseDmaOwner(dev);
    iommuDomainFree(n0);
    iommuUnmap(d0, IOVA, 4096);
    iommuUnmap(d1, IOVA, 4096);
    for (const pa of [...tables, bufs[2]!]) iommuUnmap(d1, pa, 4096);
    iommuDomainFree(d0);
    iommuDomainFree(d1);
    for (const pa of [...bufs, ...tables]) m.pages.freePages(pa, 0);
  });
});
