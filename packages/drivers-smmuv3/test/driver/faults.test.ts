/**
 * The fault path: DMA faults become event-queue records the driver's event thread decodes and hands to the
 * domain's fault handler; a PCI page request (PRI) reaches core's IOPF, whose response goes back as PRI_RESP;
 * a page request nobody handles is denied.
 */
import {
  type Device,
  DmaFault,
  IOMMU_FAULT_PAGE_REQUEST,
  IOMMU_FAULT_PERM,
  IOMMU_FAULT_WRITE,
  IOMMU_HWPT_ALLOC,
  IOMMU_PAGE_RESP,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuGroup,
  type IopfGroup,
  iommuAttachDevice,
  iommuAttachGroupHandle,
  iommuDetachDevice,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuSetFaultHandler,
  iommuUnmap,
  iopfFreeGroup,
  iopfGroupResponse,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { type ArmSmmuDomain, CMD_VAL, EVT_ID, type Smmuv3Hw } from "../../src/index.js";
import { boot, captureCmds, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const RW = IOMMU_READ | IOMMU_WRITE;
const PRI_READ = 1;
const PRI_WRITE = 2;

function dmaFault(fn: () => unknown): DmaFault {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFault) return e;
    throw e;
  }
  throw new Error("no DMA fault");
}

describe("event queue", () => {
  it.each([
    ["stage 1", 0],
    ["stage 2", IOMMU_HWPT_ALLOC.NEST_PARENT],
  ] as const)("%s: translation and permission faults become events and reach the fault handler", async (_n, flags) => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const d = (await iommuPagingDomainAllocFlags(dev, flags)) as ArmSmmuDomain;
    const seen: [Device, number, number][] = [];
    iommuSetFaultHandler(
      d,
      (_dom, fdev, iova, fl) => {
        seen.push([fdev, iova, fl]);
        return 0;
      },
      undefined,
    );
    await iommuAttachDevice(d, dev);
    const pa = b.m.pages.allocPages(0, "t");
    iommuMap(d, 0x20_0000, pa, 4096, IOMMU_READ);
    const ep = b.m.device("smmu-dma0");

    dmaFault(() => ep.dmaRead(0x30_0000, 8));
    dmaFault(() => ep.dmaWrite(0x20_0010, new Uint8Array(4)));
    await b.smmu.drainQueues();
    const evts = b.smmu.events.filter((e) => e.sid === 0x10);
    expect(evts.map((e) => e.id)).toEqual([EVT_ID.TRANSLATION, EVT_ID.PERMISSION]);
    expect(evts[0]).toMatchObject({ addr: 0x30_0000, rnw: true, device: "smmu-dma0", ssv: false });
    expect(evts[1]).toMatchObject({ addr: 0x20_0010, rnw: false });
    expect(evts.every((e) => e.s2 === (flags !== 0))).toBe(true);
    if (flags) expect(evts[0]!.ipa).toBe(0x30_0000);
    expect(seen.map(([x, iova, fl]) => [x.name, iova, fl])).toEqual([
      ["smmu-dma0", 0x30_0000, 0],
      ["smmu-dma0", 0x20_0010, IOMMU_FAULT_WRITE],
    ]);
    iommuUnmap(d, 0x20_0000, 4096);
    await iommuDetachDevice(d, dev);
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
    b.m.pages.freePages(pa, 0);
  });
});

describe("PRI queue", () => {
  async function rig() {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("nic0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const d = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
    const groups: IopfGroup[] = [];
    d.iopfHandler = (g: IopfGroup) => {
      groups.push(g);
    };
    await iommuAttachGroupHandle(d, dev.iommuGroup as IommuGroup, { domain: undefined });
    const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
    const done = async () => {
      await iommuDetachGroupHandle(d, dev.iommuGroup as IommuGroup);
      iommuDomainFree(d);
      await iommuDeviceReleaseDmaOwner(dev);
    };
    return { b, dev, d, groups, hw, done };
  }

  it("a page request reaches core IOPF and the response goes back as PRI_RESP (success)", async () => {
    const { b, d, groups, hw, done } = await rig();
    expect(hw.pageRequest(0x108, -1, 0x7000_0000, PRI_READ | PRI_WRITE, 5, true)).toBe(true);
    await b.smmu.drainQueues();
    expect(b.smmu.pris.at(-1)).toMatchObject({ sid: 0x108, grpid: 5, last: true, read: true, write: true, ssv: false });
    expect(groups).toHaveLength(1);
    const g = groups[0]!;
    const prm = g.lastFault.fault.prm;
    expect(prm.addr).toBe(0x7000_0000);
    expect(prm.perm & (IOMMU_FAULT_PERM.READ | IOMMU_FAULT_PERM.WRITE)).toBe(
      IOMMU_FAULT_PERM.READ | IOMMU_FAULT_PERM.WRITE,
    );
    expect(prm.flags & IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE).toBeTruthy();
    const pa = b.m.pages.allocPages(0, "t");
    iommuMap(d, 0x7000_0000, pa, 4096, RW);
    const cmds = await captureCmds(b.smmu, () => iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS));
    iopfFreeGroup(g);
    const resp = cmds.find((c) => c.op === 0x41)!;
    expect(resp.w[1]).toBe(0x108);
    expect(resp.w[2] & 0x1ff).toBe(5);
    expect((resp.w[2] >>> 12) & 3).toBe(CMD_VAL.PRI_RESP_SUCC);
    expect(hw.priResponses.at(-1)).toMatchObject({ sid: 0x108, grpIdx: 5, resp: CMD_VAL.PRI_RESP_SUCC, auto: false });
    // The device retries: the DMA now lands.
    b.m.device("nic0").dmaWrite(0x7000_0010, new Uint8Array([1, 2, 3]));
    expect(b.m.memory.readBytes(pa + 0x10, 3)).toEqual(new Uint8Array([1, 2, 3]));
    iommuUnmap(d, 0x7000_0000, 4096);
    await done();
    b.m.pages.freePages(pa, 0);
  });

  it("answers INVALID for a PASID with no attachment: PRI_RESP DENY carrying the PASID", async () => {
    const { b, groups, hw, done } = await rig();
    expect(hw.pageRequest(0x108, 3, 0x7100_0000, PRI_READ, 9, true)).toBe(true);
    await b.smmu.drainQueues();
    expect(b.smmu.pris.at(-1)).toMatchObject({ ssv: true, ssid: 3 });
    // io-pgfault finds no handler at PASID 3 (the RID domain is not nested) and answers INVALID itself.
    expect(groups).toHaveLength(0);
    expect(hw.priResponses.at(-1)).toMatchObject({
      sid: 0x108,
      ssid: 3,
      grpIdx: 9,
      resp: CMD_VAL.PRI_RESP_DENY,
      auto: false,
    });
    await done();
  });

  it("a device without a fault-capable attachment gets DENY for the last request of a group", async () => {
    const b = await boot();
    const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
    hw.pageRequest(0x108, -1, 0x7000_0000, PRI_READ, 2, false);
    hw.pageRequest(0x108, -1, 0x7000_1000, PRI_READ, 2, true);
    await b.smmu.drainQueues();
    expect(b.smmu.pris).toHaveLength(2);
    expect(hw.priResponses.filter((r) => !r.auto)).toEqual([
      expect.objectContaining({ sid: 0x108, grpIdx: 2, resp: CMD_VAL.PRI_RESP_DENY }),
    ]);
  });
});

describe("stall model", () => {
  /** smmu-dma0 declares `dma-can-stall`; the SMMU supports stalls when `stall` is set. */
  async function rig() {
    const b = await boot({ stall: true }, {}, (input) => {
      input.devices!.find((x) => x.name === "smmu-dma0")!.dmaCanStall = true;
    });
    const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const d = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
    const groups: IopfGroup[] = [];
    d.iopfHandler = (g: IopfGroup) => {
      groups.push(g);
    };
    await iommuAttachGroupHandle(d, dev.iommuGroup as IommuGroup, { domain: undefined });
    const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
    const done = async () => {
      await iommuDetachGroupHandle(d, dev.iommuGroup as IommuGroup);
      iommuDomainFree(d);
      await iommuDeviceReleaseDmaOwner(dev);
    };
    return { b, dev, d, groups, hw, done };
  }

  it("a stalled DMA fault goes to IOPF and is answered with RESUME (retry) carrying its STAG", async () => {
    const { b, d, groups, hw, done } = await rig();
    const ep = b.m.device("smmu-dma0");
    // A first stall so the second one's STAG is not 0 (STAGs are per SMMU, not per device).
    dmaFault(() => ep.dmaRead(0x6000_0000, 4));
    await b.smmu.drainQueues();
    expect(groups).toHaveLength(1);
    await iopfGroupResponse(groups[0]!, IOMMU_PAGE_RESP.INVALID);
    iopfFreeGroup(groups[0]!);
    expect(hw.resumes.at(-1)).toEqual({ sid: 0x10, stag: 0, resp: CMD_VAL.RESUME_ABORT });

    dmaFault(() => ep.dmaWrite(0x6100_0010, new Uint8Array([1, 2, 3])));
    await b.smmu.drainQueues();
    const evt = b.smmu.events.at(-1)!;
    expect(evt).toMatchObject({ sid: 0x10, stall: true, stag: 1, rnw: false, addr: 0x6100_0010, s2: false });
    expect(groups).toHaveLength(2);
    const g = groups[1]!;
    const prm = g.lastFault.fault.prm;
    expect(prm).toMatchObject({ grpid: 1, addr: 0x6100_0010 });
    expect(prm.perm & IOMMU_FAULT_PERM.WRITE).toBeTruthy();
    expect(prm.flags & IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE).toBeTruthy();

    const pa = b.m.pages.allocPages(0, "t");
    iommuMap(d, 0x6100_0000, pa, 4096, RW);
    const cmds = await captureCmds(b.smmu, () => iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS));
    iopfFreeGroup(g);
    const resume = cmds.find((c) => c.op === 0x44)!;
    expect(resume.w[1]).toBe(0x10);
    expect(resume.w[2] & 0xffff).toBe(1);
    expect((resume.w[0] >>> 12) & 3).toBe(CMD_VAL.RESUME_RETRY);
    expect(hw.resumes.at(-1)).toEqual({ sid: 0x10, stag: 1, resp: CMD_VAL.RESUME_RETRY });
    // The retried transaction now lands.
    ep.dmaWrite(0x6100_0010, new Uint8Array([1, 2, 3]));
    expect(b.m.memory.readBytes(pa + 0x10, 3)).toEqual(new Uint8Array([1, 2, 3]));
    iommuUnmap(d, 0x6100_0000, 4096);
    await done();
    b.m.pages.freePages(pa, 0);
  });

  it.each([
    ["the SMMU has no stall model", false, true],
    ["the device does not declare dma-can-stall", true, false],
  ] as const)(
    "no stall when %s: IOPF attach refused, faults are plain events, no RESUME",
    async (_n, stall, canStall) => {
      const b = await boot({ stall }, {}, (input) => {
        input.devices!.find((x) => x.name === "smmu-dma0")!.dmaCanStall = canStall;
      });
      const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
      await iommuDeviceClaimDmaOwner(dev, "test");
      const d = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
      d.iopfHandler = () => {};
      await expect(
        iommuAttachGroupHandle(d, dev.iommuGroup as IommuGroup, { domain: undefined }),
      ).rejects.toMatchObject({
        code: "EOPNOTSUPP",
      });
      d.iopfHandler = undefined;
      await iommuAttachDevice(d, dev);
      dmaFault(() => b.m.device("smmu-dma0").dmaRead(0x6000_0000, 4));
      await b.smmu.drainQueues();
      expect(b.smmu.events.at(-1)).toMatchObject({ sid: 0x10, stall: false });
      expect((b.m.hw.get("smmu0") as Smmuv3Hw).resumes).toEqual([]);
      await iommuDetachDevice(d, dev);
      iommuDomainFree(d);
      await iommuDeviceReleaseDmaOwner(dev);
    },
  );
});
