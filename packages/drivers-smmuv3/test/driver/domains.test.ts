/**
 * Paging domains end to end: for stage 1 and stage 2 and each granule (the kernel PAGE_SIZE option), iommuMap /
 * iommuIovaToPhys / iommuUnmap through core, DMA from smmu-dma0 through the hardware model landing where the
 * domain maps it, and the commands the driver queues (read back from the command queue in memory).
 */
import {
  type Device,
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuIovaToPhys,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { ARM_SMMU_DOMAIN, type ArmSmmuDomain, CMDQ_OP, newCmdEnt, type Smmuv3Hw, STE_VAL } from "../../src/index.js";
import { type Booted, boot, captureCmds, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const RW = IOMMU_READ | IOMMU_WRITE;
const BLOCK: Record<number, number> = { 4096: 2 ** 21, 16384: 2 ** 25, 65536: 2 ** 29 };

async function withDomain(
  b: Booted,
  name: string,
  flags: number,
  fn: (d: ArmSmmuDomain, dev: Device) => Promise<void>,
) {
  const dev = b.m.driverCore.deviceFor(name)!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, flags)) as ArmSmmuDomain;
  try {
    await iommuAttachDevice(d, dev);
    await fn(d, dev);
    await iommuDetachDevice(d, dev);
  } finally {
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
  }
}

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

describe.each([4096, 16384, 65536])("granule %i", (granule) => {
  describe.each([
    ["stage 1", 0, ARM_SMMU_DOMAIN.S1],
    ["stage 2 (nest parent)", IOMMU_HWPT_ALLOC.NEST_PARENT, ARM_SMMU_DOMAIN.S2],
  ] as const)("%s", (_n, flags, stage) => {
    it("maps pages and a block; DMA lands where the domain maps it; unmap faults", async () => {
      const b = await boot({}, { pageSize: granule });
      await withDomain(b, "smmu-dma0", flags, async (d) => {
        expect(d.stage).toBe(stage);
        expect(d.pt.format.granuleLg2).toBe(Math.log2(granule));
        expect(d.pgsizeBitmap).toBe(granule + BLOCK[granule]! + (granule === 4096 ? 2 ** 30 : 0));
        const ste = b.smmu.readSte(0x10);
        expect(Number((ste[0]! >> 1n) & 7n)).toBe(
          stage === ARM_SMMU_DOMAIN.S1 ? STE_VAL.CFG_S1_TRANS : STE_VAL.CFG_S2_TRANS,
        );

        // Four pages at a page-aligned IOVA.
        const order = Math.log2(granule) - 12 + 2;
        const pa = b.m.pages.allocPages(order, "test-buf");
        const iova = 0x4000_0000 + 5 * granule;
        iommuMap(d, iova, pa, 4 * granule, RW);
        expect(iommuIovaToPhys(d, iova + granule + 0x123)).toBe(pa + granule + 0x123);
        const ep = b.m.device("smmu-dma0");
        const data = bytes(3 * granule, 3);
        ep.dmaWrite(iova + 100, data);
        expect(b.m.memory.readBytes(pa + 100, data.length)).toEqual(data);
        expect(ep.dmaRead(iova + 100, data.length)).toEqual(data);

        // One block, at an aligned PA high in RAM.
        const blk = BLOCK[granule]!;
        const bpa = 0xc000_0000;
        const biova = 4 * blk;
        iommuMap(d, biova, bpa, blk, IOMMU_READ);
        expect(iommuIovaToPhys(d, biova + blk - 8)).toBe(bpa + blk - 8);
        b.m.memory.writeBytes(bpa + blk - 16, bytes(16, 9));
        expect(ep.dmaRead(biova + blk - 16, 16)).toEqual(bytes(16, 9));
        // Read-only: a DMA write faults.
        expect(() => ep.dmaWrite(biova, bytes(4, 1))).toThrow(DmaFault);

        const cmds = await captureCmds(b.smmu, () => expect(iommuUnmap(d, iova, 4 * granule)).toBe(4 * granule));
        const tlbi = cmds.filter(
          (c) => c.op === (stage === ARM_SMMU_DOMAIN.S1 ? CMDQ_OP.TLBI_NH_VA : CMDQ_OP.TLBI_S2_IPA),
        );
        expect(tlbi.length).toBeGreaterThan(0);
        for (const c of tlbi) {
          if (stage === ARM_SMMU_DOMAIN.S1) expect(c.w[1] >>> 16).toBe(d.asid);
          else expect(c.w[1] & 0xffff).toBe(d.vmid);
          expect((c.w[2] >>> 10) & 3).toBe((Math.log2(granule) - 10) / 2); // TG
        }
        // Range invalidation: NUM+1 pages × 2^SCALE cover the 4 pages from the first address.
        const first = tlbi[0]!;
        expect(first.w[2] & 0xfffff000).toBe(iova % 2 ** 32);
        const num = ((first.w[0] >>> 12) & 0x1f) + 1;
        const scale = (first.w[0] >>> 20) & 0x1f;
        expect(num * 2 ** scale).toBe(4);
        if (stage === ARM_SMMU_DOMAIN.S2) expect(cmds.map((c) => c.op)).toContain(CMDQ_OP.TLBI_NH_ALL);
        expect(cmds.at(-1)!.op).toBe(CMDQ_OP.CMD_SYNC);
        expect(iommuIovaToPhys(d, iova)).toBe(0);
        expect(() => ep.dmaRead(iova, 4)).toThrow(DmaFault);
        expect(iommuUnmap(d, biova, blk)).toBe(blk);
        await b.smmu.drainQueues();
        b.m.pages.freePages(pa, order);
      });
    });
  });
});

describe("invalidation commands", () => {
  it("without range invalidation, one TLBI_NH_VA per page with the leaf level in TTL", async () => {
    const b = await boot({ ril: false });
    expect(b.smmu.feat.rangeInv).toBe(false);
    await withDomain(b, "smmu-dma1", 0, async (d) => {
      const pa = b.m.pages.allocPages(3, "t");
      iommuMap(d, 0x10_0000, pa, 8 * 4096, RW);
      const cmds = await captureCmds(b.smmu, () => iommuUnmap(d, 0x10_0000, 8 * 4096));
      const tlbi = cmds.filter((c) => c.op === CMDQ_OP.TLBI_NH_VA);
      expect(tlbi.map((c) => c.w[2] & 0xfffff000)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => 0x10_0000 + i * 4096));
      for (const c of tlbi) expect(c.w[2] & 1).toBe(1); // leaf
      expect(cmds.at(-1)!.op).toBe(CMDQ_OP.CMD_SYNC);
      b.m.pages.freePages(pa, 3);
    });
  });

  it("an ATS-enabled master gets ATC_INV after the TLBI, aligned to a power-of-two span", async () => {
    const b = await boot();
    const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
    await withDomain(b, "nic0", 0, async (d) => {
      expect(b.smmu.streams.get(0x108)!.atsEnabled).toBe(true);
      expect(d.nrAtsMasters).toBe(1);
      const pa = b.m.pages.allocPages(2, "t");
      iommuMap(d, 0x7000_0000 + 3 * 4096, pa, 2 * 4096, RW); // pages 3..4 of the span
      const cmds = await captureCmds(b.smmu, () => iommuUnmap(d, 0x7000_0000 + 3 * 4096, 2 * 4096));
      const ops = cmds.map((c) => c.op);
      const atc = cmds.find((c) => c.op === CMDQ_OP.ATC_INV)!;
      expect(ops.indexOf(CMDQ_OP.ATC_INV)).toBeGreaterThan(ops.indexOf(CMDQ_OP.TLBI_NH_VA));
      expect(atc.w[1]).toBe(0x108);
      // Pages 3 and 4 differ in bit 2: the span is 8 pages from page 0 (SIZE = 3).
      expect(atc.w[2] & 0x3f).toBe(3);
      expect(atc.w[2] & 0xfffff000).toBe(0x7000_0000);
      expect(hw.atcInvalidations.at(-1)).toMatchObject({ sid: 0x108, ssid: -1, addr: 0x7000_0000, size: 3 });
      b.m.pages.freePages(pa, 2);
    });
  });

  it("a batch longer than the queue waits for room and wraps", async () => {
    const b = await boot();
    const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
    const n0 = hw.stats.commands;
    const ents = Array.from({ length: 600 }, () => newCmdEnt(CMDQ_OP.PREFETCH_CFG));
    b.smmu.cmdq.issue(ents, ents.length, true);
    expect(hw.stats.commands - n0).toBe(601);
    expect(b.smmu.gerrors).toEqual([]);
  });

  it("an unmap that frees a table invalidates non-leaf (walk caches too)", async () => {
    const b = await boot();
    await withDomain(b, "smmu-dma1", 0, async (d) => {
      const pa = b.m.pages.allocPages(9, "t");
      // 512 separate 4 KiB maps: a full leaf table rather than a 2 MiB block.
      for (let i = 0; i < 512; i++) iommuMap(d, 0x20_0000 + i * 4096, pa + i * 4096, 4096, RW);
      // iommu_pgsize picks 2 MiB for the unmap; the engine removes the whole leaf table.
      const cmds = await captureCmds(b.smmu, () => expect(iommuUnmap(d, 0x20_0000, 2 ** 21)).toBe(2 ** 21));
      const tlbi = cmds.filter((c) => c.op === CMDQ_OP.TLBI_NH_VA);
      expect(tlbi.length).toBeGreaterThan(0);
      for (const c of tlbi) {
        expect(c.w[2] & 1).toBe(0); // not leaf-only
        expect((c.w[2] >>> 8) & 3).toBe(0); // no TTL hint
      }
      b.m.pages.freePages(pa, 9);
    });
  });

  it("attach writes the CD then the STE; free invalidates the ASID", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("smmu-dma1")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const d = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
    const cmds = await captureCmds(b.smmu, () => iommuAttachDevice(d, dev));
    const ops = cmds.map((c) => c.op);
    // The default domain is stage 1 too: only CD 0 changes (ASID/TTB0): CFGI_CD (SID 0x11, SSID 0, leaf) + SYNC.
    expect(ops).toContain(CMDQ_OP.CFGI_CD);
    const cfgi = cmds.find((c) => c.op === CMDQ_OP.CFGI_CD)!;
    expect(cfgi.w[1]).toBe(0x11);
    expect(b.smmu.streams.get(0x11)!.readCd(0)[0]! >> 48n).toBe(BigInt(d.asid));
    await iommuDetachDevice(d, dev);
    const freeCmds = await captureCmds(b.smmu, () => iommuDomainFree(d));
    const asid = freeCmds.find((c) => c.op === CMDQ_OP.TLBI_NH_ASID)!;
    expect(asid.w[1] >>> 16).toBe(d.asid);
    await iommuDeviceReleaseDmaOwner(dev);
  });
});
