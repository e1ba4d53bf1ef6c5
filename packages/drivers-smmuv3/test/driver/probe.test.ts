/**
 * Platform probe on the default platform: ID registers, stream table (linear and 2-level), queues, CR0 enables,
 * devices probed through DT `iommus` (smmu-dma0/1) and PCI `iommu-map` (nic0, gpu0, gpu0-audio), groups and
 * default domains, and the STEs those default domains leave in memory.
 */
import {
  getIommuCore,
  IOMMU_DOMAIN,
  type IommuDomain,
  iommuGetDomainForDev,
  iommuGroupGet,
  iommuGroupPut,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { type ArmSmmuDomain, CMDQ_OP, newCmdEnt, SMMU_REG, STE_VAL, STRTAB, STRTAB_BASE_CFG } from "../../src/index.js";
import { boot, captureCmds, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const SIDS = { "smmu-dma0": 0x10, "smmu-dma1": 0x11, nic0: 0x108, gpu0: 0x110, "gpu0-audio": 0x111 } as const;

function reg(b: Awaited<ReturnType<typeof boot>>, off: number): number {
  return b.m.mmio.read32(b.smmu.mmioBase + off);
}

describe("arm_smmu_device_probe", () => {
  it("reads the ID registers and enables the SMMU with every queue", async () => {
    const b = await boot();
    const { smmu } = b;
    expect(smmu.feat).toMatchObject({
      transS1: true,
      transS2: true,
      nesting: true,
      ats: true,
      pri: true,
      twoLvlStrtab: true,
    });
    expect(smmu.sidBits).toBe(16);
    expect(smmu.ssidBits).toBe(20);
    expect(smmu.oas).toBe(48);
    // CR0 = SMMUEN | PRIQEN | EVTQEN | CMDQEN | ATSCHK, acknowledged.
    expect(reg(b, SMMU_REG.CR0)).toBe(0x1f);
    expect(reg(b, SMMU_REG.CR0ACK)).toBe(0x1f);
    expect(smmu.cmdq.q.maxNShift).toBe(8);
    expect(smmu.gerrors).toEqual([]);
  });

  it("uses a 2-level stream table with SPLIT 8, an L2 table per used L1 slot", async () => {
    const b = await boot();
    const cfg = reg(b, SMMU_REG.STRTAB_BASE_CFG);
    expect((cfg >>> 16) & 3).toBe(STRTAB_BASE_CFG.FMT_2LVL);
    expect((cfg >>> 6) & 0x1f).toBe(STRTAB.SPLIT);
    expect(cfg & 0x3f).toBe(16);
    const st = b.smmu.strtab!;
    // SIDs 0x10/0x11 → L1 0; 0x108..0x111 → L1 1.
    expect(st.l2.map((x, i) => (x === undefined ? -1 : i)).filter((i) => i >= 0)).toEqual([0, 1]);
    const l1 = b.m.memory.read64(st.basePa + 8);
    expect(Number(l1 & 0x1fn)).toBe(STRTAB.SPLIT + 1);
    expect(Number(l1 & 0xffffffffffc0n)).toBe(st.l2[1]);
    expect(b.m.memory.read64(st.basePa + 16)).toBe(0n);
  });

  it("uses a linear stream table when the SMMU has no 2-level support", async () => {
    const b = await boot({ twoLevelStreamTable: false, sidBits: 10 });
    const cfg = reg(b, SMMU_REG.STRTAB_BASE_CFG);
    expect((cfg >>> 16) & 3).toBe(STRTAB_BASE_CFG.FMT_LINEAR);
    expect(cfg & 0x3f).toBe(10);
    // Unused StreamIDs abort: V=1, Config=0.
    expect(b.smmu.readSte(0x3ff)[0]).toBe(1n);
    expect(b.smmu.streams.size).toBe(5);
  });

  it("can be told to use a linear table even with 2-level support", async () => {
    const b = await boot({}, { strtab: "linear" });
    expect((reg(b, SMMU_REG.STRTAB_BASE_CFG) >>> 16) & 3).toBe(STRTAB_BASE_CFG.FMT_LINEAR);
  });

  it("probes DT and PCI devices with their StreamIDs and groups gpu0 with gpu0-audio", async () => {
    const b = await boot();
    const core = getIommuCore(b.m);
    for (const [name, sid] of Object.entries(SIDS)) {
      const dev = b.m.driverCore.deviceFor(name)!;
      expect(b.smmu.streams.get(sid)?.dev).toBe(dev);
      expect(b.smmu.devices.has(dev)).toBe(true);
    }
    const g = (n: string) => iommuGroupGet(b.m.driverCore.deviceFor(n)!)!;
    const gpu = g("gpu0");
    const audio = g("gpu0-audio");
    const nic = g("nic0");
    const dma0 = g("smmu-dma0");
    const dma1 = g("smmu-dma1");
    expect(gpu).toBe(audio);
    expect(nic).not.toBe(gpu);
    expect(dma0).not.toBe(dma1);
    // iommuGroupGet takes a reference.
    for (const x of [gpu, audio, nic, dma0, dma1]) iommuGroupPut(x);
    expect(core.iommuDevices).toContain(b.smmu);
  });

  it("leaves each device on a default domain whose STE is in memory", async () => {
    const b = await boot();
    for (const [name, sid] of Object.entries(SIDS)) {
      const dev = b.m.driverCore.deviceFor(name)!;
      const d = iommuGetDomainForDev(dev)!;
      const ste = b.smmu.readSte(sid);
      const cfg = Number((ste[0]! >> 1n) & 7n);
      expect(ste[0]! & 1n).toBe(1n);
      if (d.type === IOMMU_DOMAIN.IDENTITY) expect(cfg).toBe(STE_VAL.CFG_BYPASS);
      else {
        expect(d.type & 1).toBe(1); // paging
        expect(cfg).toBe(STE_VAL.CFG_S1_TRANS);
        const master = b.smmu.streams.get(sid)!;
        expect(Number(ste[0]! & 0xffffffffffc0n)).toBe(master.cdTable!.pa);
        expect(master.readCd(0)[0]! >> 48n).toBe(BigInt((d as unknown as { asid: number }).asid));
      }
    }
  });

  it("PCI functions with ATS get EATS in their stage-1 STEs; ATS-less ones do not", async () => {
    const b = await boot();
    const eats = (sid: number) => Number((b.smmu.readSte(sid)[1]! >> 28n) & 3n);
    expect(eats(SIDS.nic0)).toBe(STE_VAL.EATS_TRANS);
    expect(eats(SIDS.gpu0)).toBe(STE_VAL.EATS_TRANS);
    expect(eats(SIDS["gpu0-audio"])).toBe(0);
    expect(eats(SIDS["smmu-dma0"])).toBe(0);
  });

  it("skips a command the SMMU refuses (GERROR.CMDQ_ERR, CERROR_ILL) and completes the CMD_SYNC after it", async () => {
    const b = await boot({ hyp: false });
    expect(b.smmu.feat.hyp).toBe(false);
    // Without EL2 support TLBI_EL2_ALL is an illegal command.
    b.smmu.cmdq.issueOne(newCmdEnt(CMDQ_OP.TLBI_EL2_ALL), true);
    expect(b.smmu.gerrors.some((g) => /CMDQ error 1 /.test(g))).toBe(true);
    // GERRORN acknowledged: no error active any more.
    expect(reg(b, SMMU_REG.GERROR) ^ reg(b, SMMU_REG.GERRORN)).toBe(0);
    // The queue keeps working.
    b.smmu.cmdq.issueOne(newCmdEnt(CMDQ_OP.TLBI_NSNH_ALL), true);
  });

  it("writes CFGI_STE + CMD_SYNC (and PREFETCH_CFG) for an STE change", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
    const master = b.smmu.streams.get(0x10)!;
    const cmds = await captureCmds(b.smmu, () => b.drv.attachDevBlocked(dev, master.domain));
    // Stage 1 → abort is a breaking update: V=0 (CFGI+SYNC), fill (CFGI+SYNC); then CD 0 cleared (CFGI_CD+SYNC).
    const ops = cmds.map((c) => c.op);
    expect(ops.filter((o) => o === 0x03).length).toBeGreaterThanOrEqual(1);
    for (const c of cmds.filter((x) => x.op === 0x03)) {
      expect(c.w[1]).toBe(0x10);
      expect(c.w[2] & 1).toBe(1); // leaf
    }
    expect(ops).toContain(0x01);
    expect(ops).toContain(0x46);
    expect(b.smmu.readSte(0x10)).toEqual([1n, 0n, 0n, 0n, 0n, 0n, 0n, 0n]);
    // Back to the default domain so teardown finds what it left.
    const def: IommuDomain | undefined = iommuGetDomainForDev(dev);
    await b.drv.attachDev(def as ArmSmmuDomain, dev, b.drv.blocked);
  });
});
