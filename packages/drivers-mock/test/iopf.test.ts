/**
 * I/O page faults through the real mock driver and hardware: a faulting DMA becomes a page request in the fault
 * queue, the driver's fault thread reports it to io-pgfault, the domain's handler gets the group, and its response
 * goes back through the page-response register. Grouping by group index, and removal of the device while a group
 * is outstanding, run under the randomized scheduler with several seeds.
 */
import {
  createMachine,
  type Device,
  DmaFault,
  IOMMU_FAULT_PAGE_REQUEST,
  IOMMU_FAULT_PERM,
  IOMMU_PAGE_RESP,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
  type IopfGroup,
  iommuAttachGroupHandle,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuUnmap,
  iopfFreeGroup,
  iopfGroupResponse,
  type Machine,
} from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import {
  FAULT_CODE,
  MOCK_APERTURE_START,
  MOCK_PAGE_SIZE,
  type MockIommu,
  type MockIommuHw,
  mockIommuDriver,
} from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const IOVA = MOCK_APERTURE_START + 16 * MOCK_PAGE_SIZE;

interface Rig {
  m: Machine;
  d: Device;
  iommu: MockIommu;
  hw: MockIommuHw;
  domain: IommuDomain;
  groups: IopfGroup[];
}

async function rig(seed: number): Promise<Rig> {
  const m = await createMachine({ modules: [mockIommuDriver], scheduler: { kind: "random", seed }, seed });
  await m.boot();
  const d = m.driverCore.deviceFor("mock-dev0")!;
  await iommuDeviceClaimDmaOwner(d, "test");
  const domain = await iommuPagingDomainAlloc(d);
  const groups: IopfGroup[] = [];
  // The handler takes every group; the test answers and frees them.
  domain.iopfHandler = (g: IopfGroup) => {
    groups.push(g);
  };
  // As iommufd attaches a fault-capable hwpt: with a handle, so io-pgfault finds the domain for the RID.
  await iommuAttachGroupHandle(domain, d.iommuGroup as IommuGroup, { domain: undefined });
  const iommu = mockIommuDriver.instanceFor(m, "mock0") as MockIommu;
  return { m, d, iommu, hw: m.hw.get("mock0") as MockIommuHw, domain, groups };
}

async function done(r: Rig): Promise<void> {
  const group = r.d.iommuGroup as IommuGroup;
  if (group.domain === r.domain) await iommuDetachGroupHandle(r.domain, group);
  await iommuDeviceReleaseDmaOwner(r.d);
  iommuDomainFree(r.domain);
  await r.m.teardown();
}

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];

describe("mock driver IOPF", () => {
  it.each(SEEDS)("resolves a faulting DMA through a page request and its response (seed %i)", async (seed) => {
    const r = await rig(seed);
    const ep = r.m.device("mock-dev0");
    let err: unknown;
    try {
      ep.dmaWrite(IOVA + 40, new Uint8Array([1, 2, 3, 4]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DmaFault);
    expect((err as DmaFault).faultCode).toBe(FAULT_CODE.PAGE_REQUEST);
    await r.iommu.drainFaultQueue();
    expect(r.groups).toHaveLength(1);
    const g = r.groups[0]!;
    const prm = g.lastFault.fault.prm;
    expect(prm.addr).toBe(IOVA);
    expect(prm.perm & IOMMU_FAULT_PERM.WRITE).toBeTruthy();
    expect(prm.flags & IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE).toBeTruthy();
    // The handler's work: populate the page, answer, free.
    iommuMap(r.domain, IOVA, 0x6600_0000, MOCK_PAGE_SIZE, RW);
    await iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS);
    iopfFreeGroup(g);
    expect(r.hw.responses.at(-1)).toEqual({
      requesterId: 1,
      pasid: -1,
      prgi: prm.grpid,
      code: IOMMU_PAGE_RESP.SUCCESS,
    });
    // The device retries.
    ep.dmaWrite(IOVA + 40, new Uint8Array([1, 2, 3, 4]));
    expect(r.m.memory.readBytes(0x6600_0000 + 40, 4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    iommuUnmap(r.domain, IOVA, MOCK_PAGE_SIZE);
    await done(r);
  });

  it.each(SEEDS)("groups requests by group index until the last one (seed %i)", async (seed) => {
    const r = await rig(seed);
    const req = (addr: number, prgi: number, last: boolean) =>
      r.hw.pageRequest({ requesterId: 1, pasid: -1, addr, read: true, write: false, prgi, last });
    expect(req(IOVA, 5, false)).toBe(true);
    expect(req(IOVA + MOCK_PAGE_SIZE, 6, false)).toBe(true);
    expect(req(IOVA + 2 * MOCK_PAGE_SIZE, 5, false)).toBe(true);
    await r.iommu.drainFaultQueue();
    expect(r.groups).toHaveLength(0);
    expect(req(IOVA + 3 * MOCK_PAGE_SIZE, 5, true)).toBe(true);
    await r.iommu.drainFaultQueue();
    expect(r.groups).toHaveLength(1);
    const g = r.groups[0]!;
    expect(g.faults.map((f) => f.fault.prm.addr).sort()).toEqual(
      [IOVA, IOVA + 2 * MOCK_PAGE_SIZE, IOVA + 3 * MOCK_PAGE_SIZE].sort(),
    );
    await iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS);
    iopfFreeGroup(g);
    expect(r.hw.responses).toEqual([{ requesterId: 1, pasid: -1, prgi: 5, code: IOMMU_PAGE_RESP.SUCCESS }]);
    await done(r);
  });

  it.each(SEEDS)(
    "answers an outstanding group once when the device leaves IOPF during its handling (seed %i)",
    async (seed) => {
      const r = await rig(seed);
      expect(
        r.hw.pageRequest({ requesterId: 1, pasid: -1, addr: IOVA, read: true, write: false, prgi: 9, last: true }),
      ).toBe(true);
      await r.iommu.drainFaultQueue();
      expect(r.groups).toHaveLength(1);
      const g = r.groups[0]!;
      const s = r.m.scheduler;
      // The handler answers while the device is detached (which removes it from the IOPF queue): either order.
      const responder = s.spawn("iopf-handler", async () => {
        await s.yield();
        await iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS);
        iopfFreeGroup(g);
      });
      const detacher = s.spawn("detach", async () => {
        await iommuDetachGroupHandle(r.domain, r.d.iommuGroup as IommuGroup);
      });
      await s.joinAll([responder, detacher]);
      const answers = r.hw.responses.filter((x) => x.prgi === 9);
      expect(answers).toHaveLength(1);
      expect([IOMMU_PAGE_RESP.SUCCESS, IOMMU_PAGE_RESP.INVALID]).toContain(answers[0]!.code);
      // IOPF is off now: a new request is answered INVALID by the driver itself (no handler is attached).
      expect(
        r.hw.pageRequest({ requesterId: 1, pasid: -1, addr: IOVA, read: true, write: false, prgi: 10, last: true }),
      ).toBe(false);
      expect(r.hw.responses.at(-1)).toMatchObject({ prgi: 10, code: IOMMU_PAGE_RESP.INVALID });
      await done(r);
    },
  );
});
