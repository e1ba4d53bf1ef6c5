/**
 * DTE updates are never visible half-written: after every store the driver makes into the device table, the
 * hardware's DTE cache and IOTLB are dropped and a DMA is made, as if the hardware had fetched the entry right
 * then. Replacing one v1 domain by another, switching to a GCR3 (GV) configuration and back, every DMA sees the
 * old or the new translation, never a mix; the same for the driver's own v1 → v2 (GCR3[0], GIOV) → v1 switches.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuGroup,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, expect, it } from "vitest";
import { type Booted, boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const X = 0x40_0000;
const GPU = 0x0100;

it("a DTE update is never seen half-written (v1 → v1, v1 → GV, GV → v1)", async () => {
  const b = await boot();
  const { m, hw, iommu } = b;
  const dev = m.driverCore.deviceFor("amd-gpu0")!;
  const group = dev.iommuGroup as IommuGroup;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const dA = await iommuPagingDomainAllocFlags(dev, 0);
  const dB = await iommuPagingDomainAllocFlags(dev, 0);
  const buf = (v: number) => {
    const pa = m.pages.allocPages(0, "test");
    m.memory.fill(pa, 4096, v);
    return pa;
  };
  const bufA = buf(0xa1);
  const bufB = buf(0xb2);
  const bufC = buf(0xc3);
  await iommuMap(dA, X, bufA, 4096, IOMMU_READ | IOMMU_WRITE);
  await iommuMap(dB, X, bufB, 4096, IOMMU_READ | IOMMU_WRITE);
  await iommuGroupReplaceDomain(group, dA);

  // A GCR3 table (one level) whose PASID 0 entry points at 4-level x86-64 tables mapping X to bufC.
  const pages: number[] = [];
  const page = () => {
    const pa = m.pages.allocPages(0, "test-gcr3");
    m.memory.fill(pa, 4096, 0);
    pages.push(pa);
    return pa;
  };
  const gcr3 = page();
  const cr3 = page();
  m.memory.write64Parts(gcr3, (cr3 | 1) >>> 0, 0);
  let table = cr3;
  for (let level = 4; level > 1; level--) {
    const next = page();
    m.memory.write64Parts(table + 8 * (Math.floor(X / 2 ** (12 + 9 * (level - 1))) % 512), (next | 0x27) >>> 0, 0);
    table = next;
  }
  m.memory.write64Parts(table + 8 * ((X / 4096) % 512), (bufC | 0x27) >>> 0, 0);
  const g = gcr3;
  const gvDte = [
    (1 | 2) >>> 0, // V, TV, Mode 0
    ((1 << 22) | (1 << 23) | (((g / 4096) & 7) << 26) | (1 << 29) | (1 << 30)) >>> 0, // GIOV, GV, GCR3[14:12], IR, IW
    ((Math.floor(g / 2 ** 15) & 0xffff) << 16) | 0x77, // DomainID, GCR3[30:15]
    (Math.floor(g / 2 ** 31) & 0x1fffff) << 11, // GCR3[51:31]
    0,
    0,
    0,
    0,
  ];

  // Observe the device's DMA after every store into its DTE.
  const seen: string[] = [];
  const dteAt = iommu.devTablePa + 32 * GPU;
  const mem = m.memory;
  const observe = (pa: number, len: number) => {
    if (pa + len <= dteAt || pa >= dteAt + 32) return;
    hw.dteCache.invalidate(-1);
    hw.iotlb.invalidate(-1, -2, 0, Number.POSITIVE_INFINITY);
    try {
      seen.push(
        m
          .device("amd-gpu0")
          .dmaRead(X + 8, 1)[0]!
          .toString(16),
      );
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      seen.push(`fault:${e.faultReason}`);
    }
  };
  // Every observation is the old or the new translation, and the last one is the new.
  const expectOnly = ([before, after]: [string, string]) => {
    expect(seen.length).toBeGreaterThan(0);
    for (const x of seen) expect([before, after]).toContain(x);
    expect(seen.at(-1)).toBe(after);
  };
  const orig = { writeBytes: mem.writeBytes, write32: mem.write32, write64Parts: mem.write64Parts };
  mem.writeBytes = function (pa, bytes) {
    orig.writeBytes.call(this, pa, bytes);
    observe(pa, bytes.length);
  };
  mem.write32 = function (pa, v) {
    orig.write32.call(this, pa, v);
    observe(pa, 4);
  };
  mem.write64Parts = function (pa, lo, hi) {
    orig.write64Parts.call(this, pa, lo, hi);
    observe(pa, 8);
  };
  try {
    await iommuGroupReplaceDomain(group, dB);
    expectOnly(["a1", "b2"]);
    seen.length = 0;
    iommu.writeDte(GPU, gvDte);
    iommu.flushDte(GPU);
    iommu.completionWait();
    expectOnly(["b2", "c3"]);
    seen.length = 0;
    await iommuGroupReplaceDomain(group, dA);
    expectOnly(["c3", "a1"]);
  } finally {
    Object.assign(mem, orig);
  }
  await iommuDeviceReleaseDmaOwner(dev);
  await iommuUnmap(dA, X, 4096);
  await iommuUnmap(dB, X, 4096);
  iommuDomainFree(dA);
  iommuDomainFree(dB);
  for (const pa of [bufA, bufB, bufC, ...pages]) m.pages.freePages(pa, 0);
});

/** Run `fn` with a DMA by amd-gpu0 at X made after every store into its DTE; resolves to what each one saw. */
async function watchDte(b: Booted, fn: () => Promise<void>): Promise<string[]> {
  const { m, hw, iommu } = b;
  const seen: string[] = [];
  const dteAt = iommu.devTablePa + 32 * GPU;
  const mem = m.memory;
  const orig = { writeBytes: mem.writeBytes };
  mem.writeBytes = function (pa, bytes) {
    orig.writeBytes.call(this, pa, bytes);
    if (pa + bytes.length <= dteAt || pa >= dteAt + 32) return;
    hw.dteCache.invalidate(-1);
    hw.iotlb.invalidate(-1, -2, 0, Number.POSITIVE_INFINITY);
    try {
      seen.push(
        m
          .device("amd-gpu0")
          .dmaRead(X + 8, 1)[0]!
          .toString(16),
      );
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      seen.push("fault");
    }
  };
  try {
    await fn();
  } finally {
    Object.assign(mem, orig);
  }
  return seen;
}

it("the driver's v1 → v2 → v1 switches (GCR3 table set up and torn down) are never seen half-written", async () => {
  // 5-level guest tables: the guest paging mode sits in the upper half, so a lower half written first would walk
  // the new table with the wrong depth.
  const b = await boot({}, { la57: true });
  const { m } = b;
  const dev = m.driverCore.deviceFor("amd-gpu0")!;
  const group = dev.iommuGroup as IommuGroup;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const v1 = await iommuPagingDomainAllocFlags(dev, 0);
  const v2 = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID);
  const bufs = [0xa1, 0xc3].map((v) => {
    const pa = m.pages.allocPages(0, "test");
    m.memory.fill(pa, 4096, v);
    return pa;
  });
  await iommuMap(v1, X, bufs[0]!, 4096, IOMMU_READ | IOMMU_WRITE);
  await iommuMap(v2, X, bufs[1]!, 4096, IOMMU_READ | IOMMU_WRITE);
  await iommuGroupReplaceDomain(group, v1);
  for (const [to, want] of [
    [v2, ["a1", "c3"]],
    [v1, ["c3", "a1"]],
  ] as const) {
    const seen = await watchDte(b, () => iommuGroupReplaceDomain(group, to));
    expect(seen.length).toBeGreaterThan(0);
    for (const x of seen) expect(want).toContain(x);
    expect(seen.at(-1)).toBe(want[1]);
  }
  await iommuDeviceReleaseDmaOwner(dev);
  await iommuUnmap(v1, X, 4096);
  await iommuUnmap(v2, X, 4096);
  iommuDomainFree(v1);
  iommuDomainFree(v2);
  for (const pa of bufs) m.pages.freePages(pa, 0);
});
