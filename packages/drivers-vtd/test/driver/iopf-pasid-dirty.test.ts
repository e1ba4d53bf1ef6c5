/**
 * Page requests, PASIDs, faults and dirty tracking through the driver:
 * - a PRI page request from nvme0 lands in the page request queue, the PRQ thread reports it to core's IOPF, the
 *   domain's handler answers, and the page group response reaches the endpoint (through the invalidation queue);
 *   a request for a device without a fault-capable domain is answered "invalid" by the core;
 * - a paging domain attached at a PASID translates requests carrying that PASID only;
 * - translation faults are recorded and read by the driver's fault handler;
 * - second-stage dirty tracking: SSADE in the PASID entry, the unit's D bits, read-and-clear with invalidation.
 */
import {
  DmaFault,
  IOMMU_HWPT_ALLOC,
  IOMMU_PAGE_RESP,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuGroup,
  type IopfGroup,
  iommuAttachDevicePasid,
  iommuAttachGroupHandle,
  iommuDetachDevicePasid,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  iopfFreeGroup,
  iopfGroupResponse,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { FR, VTD_PR_PERM } from "../../src/hw/index.js";
import { PRQ_ORDER } from "../../src/index.js";
import { boot, bytes, teardownAll, withDomain } from "./helpers.js";

afterEach(teardownAll);

const RW = IOMMU_READ | IOMMU_WRITE;

describe("page requests", () => {
  it("round trip: PRQ descriptor -> IOPF group -> handler response -> page group response", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("nvme0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const domain = await iommuPagingDomainAlloc(dev);
    const groups: IopfGroup[] = [];
    domain.iopfHandler = (g: IopfGroup) => {
      groups.push(g);
    };
    await iommuAttachGroupHandle(domain, dev.iommuGroup as IommuGroup, { domain: undefined });
    // Two requests of group 5 (the second is the last), as the endpoint's ATS/PRI would send them.
    b.hw.pageRequest(0x100, -1, 0x1234_5000, VTD_PR_PERM.READ, 5, false);
    b.hw.pageRequest(0x100, -1, 0x1234_6000, VTD_PR_PERM.READ | VTD_PR_PERM.WRITE, 5, true);
    await b.iommu.drainPrq();
    expect(groups).toHaveLength(1);
    const g = groups[0]!;
    expect(g.faults.map((f) => f.fault.prm.addr)).toEqual([0x1234_5000, 0x1234_6000]);
    expect(g.lastFault.fault.prm.grpid).toBe(5);
    // The PRQ head caught up with the tail; PPR was cleared.
    expect(b.m.mmio.read32(0xfed90000 + 0xc0)).toBe(b.m.mmio.read32(0xfed90000 + 0xc8));
    await iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS);
    iopfFreeGroup(g);
    expect(b.hw.pageResponses).toEqual([{ rid: 0x100, pasid: -1, prgIndex: 5, code: 0, auto: false }]);
    await iommuDetachGroupHandle(domain, dev.iommuGroup as IommuGroup);
    await iommuDeviceReleaseDmaOwner(dev);
    iommuDomainFree(domain);
  });

  it("a full page request queue: PRO, the unit answers the lost group itself; the driver drops partial groups and clears PRO", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("nvme0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const domain = await iommuPagingDomainAlloc(dev);
    const groups: IopfGroup[] = [];
    domain.iopfHandler = (g: IopfGroup) => {
      groups.push(g);
    };
    await iommuAttachGroupHandle(domain, dev.iommuGroup as IommuGroup, { domain: undefined });
    const ep = b.m.device("nvme0");
    // The first request of group 5 is received and kept as a partial group.
    expect(ep.pageRequest({ addr: 0x1000, read: true, grpid: 5, last: false })).toBe(true);
    await b.iommu.drainPrq();
    // The queue fills (no drain meanwhile): the request that finds it full sets PRO and is answered by the unit.
    const slots = (4096 * 2 ** PRQ_ORDER) / 32 - 1;
    for (let i = 0; i < slots; i++)
      expect(ep.pageRequest({ addr: 0x10_0000, read: true, grpid: 6, last: false })).toBe(true);
    expect(ep.pageRequest({ addr: 0x2000, read: true, grpid: 7, last: true })).toBe(false);
    expect(b.m.mmio.read32(0xfed90000 + 0xdc) & 2).toBe(2); // PRS.PRO
    expect(ep.pageResponses().at(-1)).toMatchObject({ grpid: 7, auto: true });
    await b.iommu.drainPrq();
    expect(b.m.mmio.read32(0xfed90000 + 0xdc) & 2).toBe(0); // PRO cleared after the drain
    // The partial groups were discarded: group 5's last request now makes a group of one fault.
    expect(ep.pageRequest({ addr: 0x3000, read: true, grpid: 5, last: true })).toBe(true);
    await b.iommu.drainPrq();
    expect(groups).toHaveLength(1);
    expect(groups[0]!.faults.map((f) => f.fault.prm.addr)).toEqual([0x3000]);
    await iopfGroupResponse(groups[0]!, IOMMU_PAGE_RESP.SUCCESS);
    iopfFreeGroup(groups[0]!);
    await iommuDetachGroupHandle(domain, dev.iommuGroup as IommuGroup);
    await iommuDeviceReleaseDmaOwner(dev);
    iommuDomainFree(domain);
  });

  it("a device with no fault-capable domain gets an 'invalid request' response", async () => {
    const b = await boot();
    b.hw.pageRequest(0x100, 3, 0x1000, VTD_PR_PERM.READ, 9, true);
    await b.iommu.drainPrq();
    expect(b.hw.pageResponses).toEqual([{ rid: 0x100, pasid: 3, prgIndex: 9, code: 1, auto: false }]);
  });
});

describe("PASID attach", () => {
  it("a domain at PASID 7 translates requests with PASID 7; the RID keeps its own domain", async () => {
    const b = await boot({ strict: true });
    await withDomain(b, "nvme0", 0, async (rid, dev) => {
      const pd = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID);
      iommuMap(rid, 0x10_0000, 0x4000_0000, 4096, RW);
      iommuMap(pd, 0x10_0000, 0x5000_0000, 4096, RW);
      await iommuAttachDevicePasid(pd, dev, 7);
      const ep = b.m.device("nvme0");
      ep.dmaWrite(0x10_0000, bytes(8, 1));
      ep.dmaWrite(0x10_0000, bytes(8, 2), { pasid: 7 });
      expect(b.m.memory.readBytes(0x4000_0000, 8)).toEqual(bytes(8, 1));
      expect(b.m.memory.readBytes(0x5000_0000, 8)).toEqual(bytes(8, 2));
      expect(() => ep.dmaRead(0x10_0000, 4, { pasid: 8 })).toThrow(DmaFault);
      await iommuDetachDevicePasid(pd, dev, 7);
      const f = (() => {
        try {
          ep.dmaRead(0x10_0000, 4, { pasid: 7 });
        } catch (e) {
          return e as DmaFault;
        }
        return undefined;
      })();
      expect(f?.faultCode).toBe(FR.SM_PTE_NOT_PRESENT);
      iommuUnmap(pd, 0x10_0000, 4096);
      iommuUnmap(rid, 0x10_0000, 4096);
      iommuDomainFree(pd);
    });
  });

  it("PASIDs are refused in legacy mode", async () => {
    const b = await boot({ scalableMode: false });
    await withDomain(b, "nvme0", 0, async (_rid, dev) => {
      const pd = await iommuPagingDomainAlloc(dev);
      await expect(iommuAttachDevicePasid(pd, dev, 7)).rejects.toMatchObject({ code: "EINVAL" });
      iommuDomainFree(pd);
    });
  });
});

describe("faults", () => {
  it("records a translation fault that the driver's fault handler reads and clears", async () => {
    const b = await boot();
    await withDomain(b, "xhci0", 0, async () => {
      expect(() => b.m.device("xhci0").dmaWrite(0x7000, bytes(4, 1))).toThrow(DmaFault);
      expect(b.iommu.faults.at(-1)).toEqual({
        sid: 0xa0,
        pasid: -1,
        addr: 0x7000,
        reason: FR.SM_FS_NOT_PRESENT,
        read: false,
      });
      // Read and cleared: no record pending any more.
      expect(b.m.mmio.read32(0xfed90000 + 0x34) & 2).toBe(0);
    });
  });
});

describe("fault overflow", () => {
  it("with the fault interrupt masked, a fault beyond the records sets PFO; unmasking runs the handler, which reads both records in order and clears PFO", async () => {
    const VTD = 0xfed90000;
    const b = await boot({ faultRecords: 2 });
    await withDomain(b, "xhci0", 0, async () => {
      const before = b.iommu.faults.length;
      b.m.mmio.write32(VTD + 0x38, 0x8000_0000); // FECTL.IM
      for (let i = 0; i < 3; i++) expect(() => b.m.device("xhci0").dmaRead(0x7000 + i * 4096, 4)).toThrow(DmaFault);
      expect(b.m.mmio.read32(VTD + 0x34) & 3).toBe(3); // PFO | PPF
      expect(b.iommu.faults.length).toBe(before); // nothing handled while masked
      expect(b.hw.stats.faultsLost).toBe(1);
      b.m.mmio.write32(VTD + 0x38, 0); // unmask: the pending interrupt (FECTL.IP) is delivered
      expect(b.iommu.faults.slice(before).map((f) => [f.addr, f.reason, f.sid])).toEqual([
        [0x7000, FR.SM_FS_NOT_PRESENT, 0xa0],
        [0x8000, FR.SM_FS_NOT_PRESENT, 0xa0],
      ]);
      expect(b.m.mmio.read32(VTD + 0x34) & 3).toBe(0); // records free, PFO cleared
      // Recording resumes: the next fault is recorded and handled at once.
      expect(() => b.m.device("xhci0").dmaRead(0xa000, 4)).toThrow(DmaFault);
      expect(b.iommu.faults.at(-1)).toMatchObject({ addr: 0xa000 });
    });
  });
});

describe("dirty tracking", () => {
  it("second-stage A/D: writes set D; read-and-clear reports and clears them", async () => {
    const b = await boot({ strict: true });
    await withDomain(b, "nvme0", IOMMU_HWPT_ALLOC.DIRTY_TRACKING, async (d) => {
      expect(d.firstStage).toBe(false);
      iommuMap(d, 0x10_0000, 0x4000_0000, 0x4000, RW);
      await d.dirtyOps!.setDirtyTracking(d, true);
      const ep = b.m.device("nvme0");
      ep.dmaWrite(0x10_1000, bytes(4, 1));
      ep.dmaRead(0x10_2000, 4);
      ep.dmaWrite(0x10_3ff0, bytes(4, 2));
      const dirty: number[] = [];
      d.dirtyOps!.readAndClearDirty(d, 0x10_0000, 0x4000, 0, (iova) => dirty.push(iova));
      expect(dirty).toEqual([0x10_1000, 0x10_3000]);
      const again: number[] = [];
      d.dirtyOps!.readAndClearDirty(d, 0x10_0000, 0x4000, 0, (iova) => again.push(iova));
      expect(again).toEqual([]);
      // After the clear (and its invalidation) a new write is seen again.
      ep.dmaWrite(0x10_1000, bytes(4, 3));
      d.dirtyOps!.readAndClearDirty(d, 0x10_0000, 0x4000, 0, (iova) => again.push(iova));
      expect(again).toEqual([0x10_1000]);
      await d.dirtyOps!.setDirtyTracking(d, false);
      iommuUnmap(d, 0x10_0000, 0x4000);
    });
    expect(b.hw.stats.staleReports).toBe(0);
  });

  it("dirty tracking needs SLADS", async () => {
    const b = await boot({ dirty: false });
    const dev = b.m.driverCore.deviceFor("nvme0")!;
    await expect(iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.DIRTY_TRACKING)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
  });
});
