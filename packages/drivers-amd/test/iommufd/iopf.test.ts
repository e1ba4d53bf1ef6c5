/**
 * PPR round trip through an iommufd fault queue on the AMD driver: a fault-capable HWPT on a v2 table puts the
 * PRI-capable amd-gpu0 on amd0's IOPF queue (PPR in its DTE); the endpoint's page request becomes a PPR log entry,
 * then a `struct iommu_hwpt_pgfault` the VMM reads; the VMM's response becomes COMPLETE_PPR_REQUEST, which reaches
 * the endpoint with the request's tag, PASID and the response's status. Leaving the HWPT takes the device off the
 * queue (PPR cleared: the unit answers later requests itself). A v1 HWPT does not enable page requests, as in Linux.
 */
import { createMachine, defaultPlatformInput, type Machine, parsePlatform } from "@iommu-sim/core";
import {
  hwptAlloc,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_FLAGS_PASID_VALID,
  IOMMU_PGFAULT_PERM_WRITE,
  iommufdModule,
  vfioDeviceAttachPt,
  vfioDeviceDetachPt,
} from "@iommu-sim/iommufd";
import { faultQueueAlloc, openVmmSession, readFaults, writeFaultResponse } from "@iommu-sim/testkit";
import { afterEach, expect, it } from "vitest";
import { type AmdHw, amdHardwareKind, amdIommuDriverState, createAmdIommuDriver } from "../../src/index.js";

const GPU = 0x0100;
const IOVA = 0x4000_0000;

const live: Machine[] = [];
afterEach(async () => {
  for (const m of live.splice(0)) await m.teardown();
});

async function session(pgtable: "v1" | "v2", flags = 0) {
  const input = defaultPlatformInput();
  const mod = createAmdIommuDriver({ hardware: [amdHardwareKind], pgtable });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod, iommufdModule], seed: 1 });
  live.push(m);
  await m.boot();
  const s = await openVmmSession(m, "amd-gpu0");
  const iommu = amdIommuDriverState(mod, m)!.units.get("amd0")!;
  const fq = await faultQueueAlloc(s.p, s.iommufd);
  const hwpt = await hwptAlloc(s.p, s.iommufd, {
    devId: s.devId,
    ptId: s.ioas,
    flags: IOMMU_HWPT_FAULT_ID_VALID | flags,
    faultId: fq.id,
  });
  return {
    ...s,
    m,
    iommu,
    fq,
    hwpt,
    hw: m.dma.modelFor("amd0") as AmdHw,
    ep: m.device("amd-gpu0"),
    /** The DTE's PPR bit (bit 52). */
    ppr: () => (iommu.readDte(GPU)[1]! >>> 20) & 1,
  };
}

it("a page request on a fault-capable v2 HWPT: PPR log → fault queue → response → COMPLETE_PPR_REQUEST", async () => {
  // PASID-capable (IOMMU_HWPT_ALLOC_PASID), as iommufd wants of the RID's HWPT before a PASID attach.
  const s = await session("v2", IOMMU_HWPT_ALLOC_PASID);
  await vfioDeviceAttachPt(s.p, s.devfd, s.hwpt);
  expect(s.ppr()).toBe(1);

  // Without a PASID: a write request of group 0x1a5.
  expect(s.ep.pageRequest({ addr: IOVA + 0x123, write: true, grpid: 0x1a5 })).toBe(true);
  await s.iommu.drainPpr();
  const [f] = await readFaults(s.p, s.fq.fd);
  expect(f).toMatchObject({ dev_id: s.devId, grpid: 0x1a5, addr: BigInt(IOVA), perm: IOMMU_PGFAULT_PERM_WRITE });
  expect(f!.flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE).toBe(IOMMU_PGFAULT_FLAGS_LAST_PAGE);
  expect(s.ep.pageResponses()).toEqual([]); // nothing before the VMM answers
  await writeFaultResponse(s.p, s.fq.fd, f!.cookie, 0);
  expect(s.hw.pprResponses).toEqual([{ devid: GPU, pasid: -1, tag: 0x1a5, status: 0, auto: false }]);
  expect(s.ep.pageResponses()).toEqual([{ requesterId: GPU, pasid: -1, grpid: 0x1a5, code: 0, auto: false }]);

  // At PASID 5, on a PASID-capable fault HWPT: the VMM answers INVALID.
  const pasidHwpt = await hwptAlloc(s.p, s.iommufd, {
    devId: s.devId,
    ptId: s.ioas,
    flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
    faultId: s.fq.id,
  });
  await vfioDeviceAttachPt(s.p, s.devfd, pasidHwpt, 5);
  expect(s.ep.pageRequest({ addr: IOVA + 0x5000, pasid: 5, read: true, grpid: 7 })).toBe(true);
  await s.iommu.drainPpr();
  const [g] = await readFaults(s.p, s.fq.fd);
  expect(g).toMatchObject({ dev_id: s.devId, pasid: 5, grpid: 7, addr: BigInt(IOVA + 0x5000) });
  expect(g!.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID).toBe(IOMMU_PGFAULT_FLAGS_PASID_VALID);
  await writeFaultResponse(s.p, s.fq.fd, g!.cookie, 1);
  expect(s.hw.pprResponses.at(-1)).toEqual({ devid: GPU, pasid: 5, tag: 7, status: 1, auto: false });
  expect(s.ep.pageResponses().at(-1)).toEqual({ requesterId: GPU, pasid: 5, grpid: 7, code: 1, auto: false });

  // Teardown: off the PASID, off the RID (blocked): the device leaves the IOPF queue and PPR goes from its DTE, so
  // the unit answers a further request itself.
  await vfioDeviceDetachPt(s.p, s.devfd, 5);
  await vfioDeviceDetachPt(s.p, s.devfd);
  expect(s.ppr()).toBe(0);
  expect(s.ep.pageRequest({ addr: IOVA, read: true, grpid: 9 })).toBe(false);
  expect(s.ep.pageResponses().at(-1)).toMatchObject({ grpid: 9, code: 1, auto: true });
  expect(await readFaults(s.p, s.fq.fd)).toEqual([]);
  await s.p.exit();
});

it("an unanswered fault is answered INVALID once when the VMM closes the device (iopf_queue_remove_device)", async () => {
  const s = await session("v2");
  await vfioDeviceAttachPt(s.p, s.devfd, s.hwpt);
  expect(s.ep.pageRequest({ addr: IOVA, read: true, grpid: 3 })).toBe(true);
  await s.iommu.drainPpr();
  expect(await readFaults(s.p, s.fq.fd)).toHaveLength(1);
  await s.p.close(s.devfd);
  const answers = s.ep.pageResponses().filter((r) => r.grpid === 3);
  expect(answers).toEqual([{ requesterId: GPU, pasid: -1, grpid: 3, code: 1, auto: false }]);
  // Back on its default (v2) domain: on the IOPF queue again, with no fault handler there.
  expect(s.ppr()).toBe(1);
  await s.p.exit();
});

it("a fault-capable v1 HWPT attaches without page requests, as Linux enables PRI only for v2/identity", async () => {
  const s = await session("v1");
  await vfioDeviceAttachPt(s.p, s.devfd, s.hwpt);
  expect(s.ppr()).toBe(0);
  expect(s.ep.pageRequest({ addr: IOVA, write: true, grpid: 4 })).toBe(false);
  expect(s.ep.pageResponses()).toEqual([{ requesterId: GPU, pasid: -1, grpid: 4, code: 1, auto: true }]);
  expect(await readFaults(s.p, s.fq.fd)).toEqual([]);
  await s.p.exit();
});
