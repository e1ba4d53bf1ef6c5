/**
 * Paging domains end to end: first stage (scalable default, 4 and 5 levels), second stage (scalable, legacy
 * mode, 3-5 levels), every large-page size; iommuMap / iommuUnmap through core, DMA from the default platform's
 * vtd0 devices landing where the domain maps it, and the invalidation descriptors the driver queues.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuDomainFree,
  iommuIovaToPhys,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { type Booted, boot, bytes, teardownAll, withDomain } from "./helpers.js";

afterEach(teardownAll);

const RW = IOMMU_READ | IOMMU_WRITE;
const MIB2 = 2 ** 21;
const GIB = 2 ** 30;

/** Descriptors the unit processed while `fn` ran, as [type, qw0 lo] pairs. */
async function descs(b: Booted, fn: () => unknown): Promise<number[]> {
  const seen: number[] = [];
  b.hw.onDescriptor = (w) => seen.push(w[0]! & 0xf);
  try {
    await fn();
  } finally {
    b.hw.onDescriptor = undefined;
  }
  return seen;
}

const cases = [
  { name: "scalable, first stage 4-level", hw: {}, flags: 0, fs: true, levels: 4 },
  { name: "scalable, first stage 5-level", hw: { fl5lp: true }, flags: 0, fs: true, levels: 5 },
  // Second stage through dirty tracking (a nest parent would refuse the read-only 1 GiB mapping: SPR17 errata).
  { name: "scalable, second stage", hw: {}, flags: IOMMU_HWPT_ALLOC.DIRTY_TRACKING, fs: false, levels: 4 },
  {
    name: "scalable, second stage 5-level",
    hw: { sagaw: [4, 5] },
    flags: IOMMU_HWPT_ALLOC.DIRTY_TRACKING,
    fs: false,
    levels: 5,
  },
  { name: "legacy, second stage 4-level", hw: { scalableMode: false }, flags: 0, fs: false, levels: 4 },
  { name: "legacy, second stage 3-level", hw: { scalableMode: false, sagaw: [3] }, flags: 0, fs: false, levels: 3 },
] as const;

describe.each(cases)("$name", ({ hw, flags, fs, levels }) => {
  it("maps 4 KiB, 2 MiB and 1 GiB pages; DMA lands where the domain maps them; unmap faults", async () => {
    const b = await boot({ ...hw, strict: true });
    await withDomain(b, "nvme0", flags, async (d) => {
      expect(d.firstStage).toBe(fs);
      expect(d.levels).toBe(levels);
      const dev = b.m.device("nvme0");
      iommuMap(d, 0x10_0000, 0x4000_0000, 0x4000, RW);
      iommuMap(d, 0x20_0000 + 0 * MIB2, 0x6000_0000, MIB2, RW);
      iommuMap(d, GIB, 2 * GIB, GIB, IOMMU_READ);
      expect(iommuIovaToPhys(d, 0x10_1234)).toBe(0x4000_1234);
      dev.dmaWrite(0x10_2ff0, bytes(32, 1));
      expect(b.m.memory.readBytes(0x4000_2ff0, 32)).toEqual(bytes(32, 1));
      dev.dmaWrite(0x20_0000 + 0x1_0000, bytes(8, 2));
      expect(b.m.memory.readBytes(0x6001_0000, 8)).toEqual(bytes(8, 2));
      b.m.memory.writeBytes(2 * GIB + 0x3fff_0000, bytes(8, 3));
      expect(dev.dmaRead(GIB + 0x3fff_0000, 8)).toEqual(bytes(8, 3));
      expect(() => dev.dmaWrite(GIB, bytes(4, 4))).toThrow(DmaFault);
      expect(iommuUnmap(d, 0x10_0000, 0x4000)).toBe(0x4000);
      expect(() => dev.dmaRead(0x10_1000, 4)).toThrow(DmaFault);
      expect(iommuUnmap(d, GIB, GIB)).toBe(GIB);
      expect(() => dev.dmaRead(GIB, 4)).toThrow(DmaFault);
    });
    expect(b.hw.stats.staleReports).toBe(0);
  });
});

describe("nest parents", () => {
  it("refuse read-only mappings (ERRATA_772415_SPR17) and may be PASID-capable", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("nvme0")!;
    const d = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID);
    expect(() => iommuMap(d, 0x10_0000, 0x4000_0000, 4096, IOMMU_READ)).toThrow(
      expect.objectContaining({ code: "EINVAL" }),
    );
    expect(iommuIovaToPhys(d, 0x10_0000)).toBe(0);
    iommuMap(d, 0x10_0000, 0x4000_0000, 4096, RW);
    expect(iommuIovaToPhys(d, 0x10_0000)).toBe(0x4000_0000);
    expect(iommuUnmap(d, 0x10_0000, 4096)).toBe(4096);
    iommuDomainFree(d);
    // A plain second-stage domain (dirty tracking) still takes read-only mappings.
    const ss = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING);
    iommuMap(ss, 0x10_0000, 0x4000_0000, 4096, IOMMU_READ);
    expect(iommuUnmap(ss, 0x10_0000, 4096)).toBe(4096);
    iommuDomainFree(ss);
  });
});

describe("invalidation", () => {
  it("a 1 GiB unmap of 4 KiB pages issues O(1) descriptors (page-selective with AM, or domain-selective)", async () => {
    for (const hw of [{}, { scalableMode: false }, { mamv: 9 }]) {
      const b = await boot(hw);
      await withDomain(b, "xhci0", 0, async (d) => {
        // 512 leaves of 2 MiB (the output is only 2 MiB aligned), then one 1 GiB leaf.
        for (const pa of [0x4020_0000, 0x4000_0000]) {
          iommuMap(d, GIB, pa, GIB, RW);
          const seen = await descs(b, () => expect(iommuUnmap(d, GIB, GIB)).toBe(GIB));
          // One IOTLB (or PASID-IOTLB) descriptor and the wait descriptor: no device TLB on xhci0.
          expect(seen.length).toBe(2);
          expect(seen.at(-1)).toBe(0x5);
        }
      });
      await teardownAll();
    }
  });

  it("page-selective invalidation with the smallest covering mask; PASID-based for first-stage domains", async () => {
    const b = await boot();
    await withDomain(b, "xhci0", 0, async (d) => {
      iommuMap(d, 0x3000, 0x10_0000, 0x2000, RW);
      const words: number[][] = [];
      b.hw.onDescriptor = (w) => words.push([...w.slice(0, 4)]);
      iommuUnmap(d, 0x3000, 0x2000);
      b.hw.onDescriptor = undefined;
      const piotlb = words.find((w) => (w[0]! & 0xf) === 0x6)!;
      expect((piotlb[0]! >>> 4) & 3).toBe(3); // page-selective within PASID
      // PFNs 3..4 differ up to bit 2: the mask grows to 8 pages (32 KiB) at 0x0.
      expect(piotlb[2]! & 0x3f).toBe(3);
      expect(piotlb[2]! & 0xfffff000).toBe(0);
    });
  });

  it("ATS devices also get device-TLB invalidations", async () => {
    const b = await boot();
    await withDomain(b, "nvme0", 0, async (d) => {
      iommuMap(d, 0x10_0000, 0x4000_0000, 0x1000, RW);
      const seen = await descs(b, () => iommuUnmap(d, 0x10_0000, 0x1000));
      expect(seen).toContain(0x3); // device-TLB invalidation of the RID
      expect(b.hw.devTlbInvalidations.at(-1)).toMatchObject({ sid: 0x100, addr: 0x10_0000, size: 4096 });
    });
  });

  it("register-based invalidation when the unit has no queue (legacy, QI off)", async () => {
    const b = await boot({ scalableMode: false }, { noQi: true });
    await withDomain(b, "xhci0", 0, async (d) => {
      iommuMap(d, 0x10_0000, 0x4000_0000, 0x1000, RW);
      b.m.device("xhci0").dmaRead(0x10_0000, 4);
      iommuUnmap(d, 0x10_0000, 0x1000);
      expect(() => b.m.device("xhci0").dmaRead(0x10_0000, 4)).toThrow(DmaFault);
    });
  });
});

describe("invalidation queue", () => {
  it("a slow unit: the driver waits for room, the queue wraps many times, every wait completes", async () => {
    const b = await boot({ strict: true });
    b.hw.qiBatch = 1; // one descriptor per IQT write or IQH read
    await withDomain(b, "xhci0", 0, async (d) => {
      for (let i = 0; i < 300; i++) {
        iommuMap(d, 0x10_0000, 0x4000_0000 + i * 4096, 4096, RW);
        b.m.device("xhci0").dmaRead(0x10_0000, 4);
        iommuUnmap(d, 0x10_0000, 4096);
      }
    });
    expect(b.hw.stats.descriptors).toBeGreaterThan(2 * 256);
    expect(b.hw.stats.staleReports).toBe(0);
  });

  it("a stopped unit: the wait gives up with ETIMEDOUT and a warning (flushes swallow it, as Linux ignores it)", async () => {
    const b = await boot();
    await withDomain(b, "xhci0", 0, async (d) => {
      b.hw.qiBatch = 0;
      const w = b.m.diag.expectWarningSync({ message: /invalidation wait timed out/ }, () => {
        expect(() => b.iommu.submitSync([])).toThrow(/QI timeout/);
        d.ops.flushIotlbAll!(d);
      });
      expect(w).toHaveLength(2);
      b.hw.qiBatch = Number.POSITIVE_INFINITY;
      b.hw.step();
    });
  });

  it("a device-TLB invalidation timeout (ITE): the driver clears it and retries the batch", async () => {
    const b = await boot({ strict: true });
    await withDomain(b, "nvme0", 0, async (d) => {
      iommuMap(d, 0x10_0000, 0x4000_0000, 4096, RW);
      b.m.device("nvme0").dmaRead(0x10_0000, 4);
      b.hw.devTlbTimeouts.add(0x100);
      const before = b.hw.devTlbInvalidations.length;
      iommuUnmap(d, 0x10_0000, 4096);
      // The first try and three retries each reached the endpoint; ITE was cleared every time.
      expect(b.hw.devTlbInvalidations.length - before).toBe(4);
      expect(b.m.mmio.read32(0xfed90000 + 0x34) & 0x40).toBe(0);
      // The IOTLB invalidation ahead of it in the batch did happen: no stale hit, the DMA faults.
      expect(() => b.m.device("nvme0").dmaRead(0x10_0000, 4)).toThrow(DmaFault);
      b.hw.devTlbTimeouts.clear();
      iommuMap(d, 0x10_0000, 0x4000_0000, 4096, RW);
      iommuUnmap(d, 0x10_0000, 4096);
      expect(b.hw.devTlbInvalidations.length - before).toBe(5);
    });
    expect(b.hw.stats.staleReports).toBe(0);
  });
});
