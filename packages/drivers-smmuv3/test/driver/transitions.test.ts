/**
 * STE transitions bypass → stage 1 → stage 2 → nested → abort on a live device, with the hardware made to
 * re-fetch the STE after every 64-bit store of the driver (a CFGI_STE models the configuration cache evicting the
 * entry at that instant) and a DMA issued right then: the model must never see an illegal STE (no C_BAD_STE, no
 * GERROR), and each DMA either lands as the old or the new configuration maps it, or faults.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGetDomainForDev,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, expect, it } from "vitest";
import {
  type ArmSmmuDomain,
  type ArmSmmuNestedDomain,
  CMDQ_OP,
  type EntryWriteEvent,
  EVT_ID,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  newCmdEnt,
  SMMU_REG,
  STE_VAL,
} from "../../src/index.js";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const RW = IOMMU_READ | IOMMU_WRITE;
const IOVA = 0x40_0000;

it("bypass → S1 → S2 → nested → abort never exposes an illegal STE", async () => {
  let probe: ((e: EntryWriteEvent) => void) | undefined;
  const b = await boot({}, { onEntryWrite: (e) => probe?.(e) });
  const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const s1 = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
  const s2 = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT)) as ArmSmmuDomain;
  const pa1 = b.m.pages.allocPages(0, "t");
  const pa2 = b.m.pages.allocPages(0, "t");
  b.m.memory.fill(pa1, 4096, 0x11);
  b.m.memory.fill(pa2, 4096, 0x22);
  b.m.memory.fill(IOVA, 4096, 0x33); // what bypass reads
  iommuMap(s1, IOVA, pa1, 4096, RW);
  iommuMap(s2, IOVA, pa2, 4096, RW);
  // A guest vSTE: stage 1 with a CD table at an IPA the stage 2 does not map (the walk faults, legally).
  const vste = new Uint8Array(16);
  new DataView(vste.buffer).setBigUint64(0, 1n | (BigInt(STE_VAL.CFG_S1_TRANS) << 1n) | 0x9000_0000n, true);
  const nested = (await b.drv.domainAllocNested(dev, s2, 0, {
    type: IOMMU_HWPT_DATA_ARM_SMMUV3,
    data: vste,
  })) as ArmSmmuNestedDomain;

  const seen = new Set<string>();
  const outcome = () => {
    try {
      return String(b.m.device("smmu-dma0").dmaRead(IOVA, 1)[0]);
    } catch (e) {
      if (e instanceof DmaFault) return "fault";
      throw e;
    }
  };
  let stores = 0;
  let invalidWindows = 0;
  const badWhileValid: string[] = [];
  probe = (e) => {
    if (e.kind !== "ste" || e.sid !== 0x10) return;
    stores++;
    const c = newCmdEnt(CMDQ_OP.CFGI_STE);
    c.sid = 0x10;
    c.leaf = true;
    b.smmu.cmdq.issueOne(c, true);
    const q = b.smmu.evtq;
    const before = b.m.mmio.read32(b.smmu.mmioBase + SMMU_REG.EVTQ_PROD);
    seen.add(outcome());
    const after = b.m.mmio.read32(b.smmu.mmioBase + SMMU_REG.EVTQ_PROD);
    const valid = (b.smmu.readSte(0x10)[0]! & 1n) === 1n;
    if (!valid) invalidWindows++;
    if (after !== before) {
      // The newest record, read from the event queue in memory.
      const id = b.m.memory.read32(q.entPa(q.inc(after, q.idxMask))) & 0xff;
      if (id === EVT_ID.BAD_STE && valid) badWhileValid.push(`store ${stores}: C_BAD_STE with V=1`);
    }
  };

  const steps: [string, () => Promise<void>, string][] = [
    ["bypass", () => b.drv.attachDevIdentity(dev, undefined), String(0x33)],
    ["s1", () => b.drv.attachDev(s1, dev, undefined), String(0x11)],
    ["s2", () => b.drv.attachDev(s2, dev, undefined), String(0x22)],
    ["nested", () => b.drv.attachDevNested(nested, dev, undefined), "fault"],
    ["abort", () => b.drv.attachDevBlocked(dev, undefined), "fault"],
  ];
  const cfgs: number[] = [];
  for (const [, step, expectAfter] of steps) {
    await step();
    cfgs.push(Number((b.smmu.readSte(0x10)[0]! >> 1n) & 7n));
    expect(outcome()).toBe(expectAfter);
  }
  expect(cfgs).toEqual([
    STE_VAL.CFG_BYPASS,
    STE_VAL.CFG_S1_TRANS,
    STE_VAL.CFG_S2_TRANS,
    STE_VAL.CFG_NESTED,
    STE_VAL.CFG_ABORT,
  ]);
  expect(stores).toBeGreaterThan(5);
  // Every DMA in between saw one of the configurations' results.
  for (const s of seen) expect(["fault", String(0x11), String(0x22), String(0x33)]).toContain(s);
  probe = undefined;
  await b.smmu.drainQueues();
  // C_BAD_STE only ever comes from the V=0 window of a breaking update (architecturally an invalid STE aborts
  // with C_BAD_STE); never from a valid STE.
  expect(badWhileValid).toEqual([]);
  expect(invalidWindows).toBeGreaterThan(0);
  const bad = b.smmu.events.filter((e) => e.id === EVT_ID.BAD_STREAMID);
  expect(bad).toEqual([]);
  expect(b.smmu.events.filter((e) => e.id === EVT_ID.BAD_STE).length).toBeLessThanOrEqual(invalidWindows);
  expect(b.smmu.gerrors).toEqual([]);

  // Restore the core's view (the group is still on its default domain) and clean up.
  const def = iommuGetDomainForDev(dev) as IommuDomain;
  await def.ops.attachDev!(def, dev, undefined);
  await iommuDeviceReleaseDmaOwner(dev);
  iommuUnmap(s1, IOVA, 4096);
  iommuUnmap(s2, IOVA, 4096);
  iommuDomainFree(nested);
  iommuDomainFree(s1);
  iommuDomainFree(s2);
  b.m.pages.freePages(pa1, 0);
  b.m.pages.freePages(pa2, 0);
});

it("rejects vSTEs with bits outside the allowed set (EIO) and non-parents (EINVAL)", async () => {
  const b = await boot();
  const dev = b.m.driverCore.deviceFor("smmu-dma1")!;
  const s2 = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT)) as ArmSmmuDomain;
  const s1 = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
  const v = (q0: bigint, q1 = 0n) => {
    const d = new Uint8Array(16);
    const dv = new DataView(d.buffer);
    dv.setBigUint64(0, q0, true);
    dv.setBigUint64(8, q1, true);
    return { type: IOMMU_HWPT_DATA_ARM_SMMUV3, data: d };
  };
  await expect(b.drv.domainAllocNested(dev, s2, 0, v(1n | (6n << 1n)))).rejects.toMatchObject({ code: "EIO" });
  await expect(b.drv.domainAllocNested(dev, s2, 0, v(1n | (5n << 1n), 1n << 58n))).rejects.toMatchObject({
    code: "EIO",
  });
  await expect(b.drv.domainAllocNested(dev, s1, 0, v(1n))).rejects.toMatchObject({ code: "EINVAL" });
  const ok = await b.drv.domainAllocNested(dev, s2, 0, v(0n, 0xffn));
  expect((ok as ArmSmmuNestedDomain).ste).toEqual([0n, 0n]);
  iommuDomainFree(ok);
  iommuDomainFree(s1);
  iommuDomainFree(s2);
});
