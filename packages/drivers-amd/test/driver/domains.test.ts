/**
 * The AMD driver on the default platform: probe through the IVRS (select, range, alias), default domains, v1
 * paging domains on core's engine (4 KiB, 2 MiB, 1 GiB), DTEs as the hardware reads them, identity and blocked
 * domains, and the unmap flush as one size-encoded INVALIDATE_IOMMU_PAGES.
 */
import {
  DmaFault,
  IOMMU_DOMAIN,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuGetDomainForDev,
  iommuMap,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { boot, bytes, teardownAll, withDomain } from "./helpers.js";

afterEach(teardownAll);
const RW = IOMMU_READ | IOMMU_WRITE;

describe("probe", () => {
  it("probes amd0's devices from the IVRS with their DeviceIDs and the alias", async () => {
    const b = await boot();
    const ids = (name: string) => {
      const d = b.drv.devData(b.m.driverCore.deviceFor(name)!);
      return [d.devid, d.alias];
    };
    expect(ids("amd-nic0")).toEqual([0x0008, 0x0008]);
    expect(ids("amd-gpu0")).toEqual([0x0100, 0x0100]);
    expect(ids("amd-legacy0")).toEqual([0x0200, 0x0010]);
    // Default domains are in place: every DTE is valid and translates.
    for (const id of [0x0008, 0x0100, 0x0200, 0x0010]) expect(b.iommu.readDte(id)[0]! & 3).toBe(3);
    // Another vendor's devices are not ours.
    expect(() => b.drv.devData(b.m.driverCore.deviceFor("xhci0")!)).toThrow();
  });

  it("alias devices share one DTE: amd-legacy0's DTE is copied to its alias 00:02.0", async () => {
    const b = await boot();
    await withDomain(b, "amd-legacy0", async (d) => {
      expect(b.iommu.readDte(0x0010)).toEqual(b.iommu.readDte(0x0200));
      expect(b.iommu.readDte(0x0010)[2]! & 0xffff).toBe(d.id);
      const pa = b.m.pages.allocPages(0, "test");
      await iommuMap(d, 0x10_0000, pa, 4096, RW);
      b.m.device("amd-legacy0").dmaWrite(0x10_0010, bytes(16, 3));
      expect(b.m.memory.readBytes(pa + 0x10, 16)).toEqual(bytes(16, 3));
      await iommuUnmap(d, 0x10_0000, 4096);
      b.m.pages.freePages(pa, 0);
    });
  });
});

describe("paging domains", () => {
  it("DMA through 4 KiB, 2 MiB and 1 GiB pages; the DTE carries Mode 4, the root and the domain ID", async () => {
    const b = await boot();
    await withDomain(b, "amd-nic0", async (d) => {
      const w = b.iommu.readDte(0x0008);
      expect((w[0]! >>> 9) & 7).toBe(4);
      expect((w[0]! & 0xfffff000) >>> 0).toBe(d.pt.root % 2 ** 32);
      expect(w[2]! & 0xffff).toBe(d.id);
      expect((w[1]! >>> 29) & 3).toBe(3); // IR, IW
      const small = b.m.pages.allocPages(0, "t");
      const big = b.m.pages.allocPages(9, "t");
      await iommuMap(d, 0x4000, small, 4096, RW);
      await iommuMap(d, 0x4020_0000, big, 2 ** 21, RW);
      await iommuMap(d, 0x8000_0000, 0x4000_0000, 2 ** 30, IOMMU_READ);
      const dev = b.m.device("amd-nic0");
      dev.dmaWrite(0x4008, bytes(8, 1));
      expect(b.m.memory.readBytes(small + 8, 8)).toEqual(bytes(8, 1));
      dev.dmaWrite(0x4020_0000 + 0x1f_fff0, bytes(16, 2));
      expect(b.m.memory.readBytes(big + 0x1f_fff0, 16)).toEqual(bytes(16, 2));
      b.m.memory.write32(0x4000_0000 + 0x3fff_fff0, 0x01020304);
      expect(dev.dmaRead(0x8000_0000 + 0x3fff_fff0, 4)).toEqual(new Uint8Array([4, 3, 2, 1]));
      expect(() => dev.dmaWrite(0x8000_0000, new Uint8Array(1))).toThrow(DmaFault);
      await iommuUnmap(d, 0x4000, 4096);
      await iommuUnmap(d, 0x4020_0000, 2 ** 21);
      await iommuUnmap(d, 0x8000_0000, 2 ** 30);
      expect(() => dev.dmaRead(0x4008, 4)).toThrow(DmaFault);
      b.m.pages.freePages(small, 0);
      b.m.pages.freePages(big, 9);
    });
    // The event log reported the faults and the driver printed them.
    expect(b.iommu.events.filter((e) => e.type === 2).length).toBeGreaterThanOrEqual(2);
    expect(b.m.diag.kernelLog.some((l) => /IO_PAGE_FAULT device=00:01.0/.test(l.message))).toBe(true);
  });

  it("unmapping 1 GiB of 2 MiB pages costs O(1) commands: one size-encoded INVALIDATE_IOMMU_PAGES", async () => {
    const b = await boot();
    await withDomain(b, "amd-nic0", async (d) => {
      const pa = b.m.pages.allocPages(9, "t");
      for (let i = 0; i < 512; i++) await iommuMap(d, 2 ** 30 + i * 2 ** 21, pa, 2 ** 21, RW);
      b.m.device("amd-nic0").dmaRead(2 ** 30, 4);
      const before = b.iommu.commandsIssued;
      expect(await iommuUnmap(d, 2 ** 30, 2 ** 30)).toBe(2 ** 30);
      // INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT.
      expect(b.iommu.commandsIssued - before).toBe(2);
      expect(() => b.m.device("amd-nic0").dmaRead(2 ** 30, 4)).toThrow(DmaFault);
      b.m.pages.freePages(pa, 9);
    });
  });

  it("an ATS device gets the DTE's I bit and an INVALIDATE_IOTLB_PAGES with every unmap flush", async () => {
    const b = await boot();
    await withDomain(b, "amd-gpu0", async (d) => {
      expect(b.iommu.readDte(0x0100)[3]! & 1).toBe(1);
      const pa = b.m.pages.allocPages(0, "t");
      await iommuMap(d, 0x20_0000, pa, 4096, RW);
      const before = b.hw.devTlbInvalidations.length;
      await iommuUnmap(d, 0x20_0000, 4096);
      expect(b.hw.devTlbInvalidations.slice(before)).toEqual([
        { devid: 0x0100, pasid: -1, start: 0x20_0000, end: 0x20_0fff },
      ]);
      b.m.pages.freePages(pa, 0);
    });
    // amd-nic0 has no ATS: no I bit.
    expect(b.iommu.readDte(0x0008)[3]! & 1).toBe(0);
  });

  it("identity and blocked domains", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("amd-nic0")!;
    expect(iommuGetDomainForDev(dev)?.type).toBe(IOMMU_DOMAIN.DMA);
    await withDomain(b, "amd-nic0", async () => {});
    // Ownership released: back to the default domain, which now translates again.
    b.m.memory.write32(0x9000, 0x55);
    expect(() => b.m.device("amd-nic0").dmaRead(0x9000, 1)).toThrow(DmaFault);
  });
});
