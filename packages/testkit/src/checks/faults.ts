/**
 * Faults: unmapped and permission faults reach the driver and core's report_iommu_fault; a page request goes
 * through io-pgfault to the domain's handler and its response back to the device; a device leaving IOPF while a
 * group is outstanding answers it exactly once.
 * @linux report_iommu_fault, iommu_report_device_fault, iopf_group_response, iopf_queue_remove_device
 */
import {
  IOMMU_FAULT_READ,
  IOMMU_FAULT_WRITE,
  IOMMU_PAGE_RESP,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuGroup,
  type IopfGroup,
  iommuAttachGroupHandle,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuSetFaultHandler,
  iommuUnmap,
  iopfFreeGroup,
  iopfGroupResponse,
} from "@iommu-sim/core";
import { check, hex } from "../errors.js";
import { type Rig, withRig } from "../rig.js";
import type { PageRequestSpec, PageResponseSeen } from "../target.js";
import type { ConformanceCheck } from "./types.js";

function iovaOf(rig: Rig): number {
  const g = Math.max(rig.target.caps.pageSizes[0]!, 4096);
  return Math.ceil(rig.target.caps.iova.base / g) * g;
}

const reported: ConformanceCheck = {
  id: "faults/reported",
  title: "translation and permission faults reach the domain's fault handler with the IOVA and direction",
  applies: (t) => (t.caps.reportsFaults ? undefined : "report_iommu_fault not claimed"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const name = target.devices.primary;
      const dev = rig.dev(name);
      const iova = iovaOf(rig);
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const d = await iommuPagingDomainAllocFlags(dev, 0);
      const seen: string[] = [];
      iommuSetFaultHandler(
        d,
        (_d, fdev, at, flags) => {
          seen.push(`${fdev.name} ${hex(at)} ${flags === IOMMU_FAULT_WRITE ? "write" : "read"}`);
          return 0;
        },
        undefined,
      );
      await iommuGroupReplaceDomain(rig.group(dev), d);
      iommuMap(d, iova, rig.page(), 4096, IOMMU_READ);
      check(rig.read(name, iova + 0x10000, 4) === "fault", "a DMA read of an unmapped IOVA did not fault");
      check(!rig.write(name, iova + 8, new Uint8Array(4)), "a DMA write to a read-only mapping completed");
      await rig.settle();
      const want = [`${name} ${hex(iova + 0x10000)} read`, `${name} ${hex(iova + 8)} write`];
      check(
        JSON.stringify(seen) === JSON.stringify(want),
        `report_iommu_fault calls were [${seen.join("; ")}], want [${want.join("; ")}] (IOMMU_FAULT_READ=${IOMMU_FAULT_READ})`,
      );
      iommuUnmap(d, iova, 4096);
      await iommuDeviceReleaseDmaOwner(dev);
      iommuDomainFree(d);
    }),
};

/** The device sends a page request (through the target's hook, else its endpoint). */
export async function sendPageRequest(rig: Rig, req: PageRequestSpec): Promise<boolean> {
  const iopf = rig.target.caps.iopf!;
  const dev = rig.dev(iopf.device);
  if (iopf.pageRequest) return iopf.pageRequest(rig.m, dev, req);
  return rig.ep(iopf.device).pageRequest({ ...req, read: !req.write });
}

/** The page responses the IOPF device received. */
export function responsesSeen(rig: Rig): readonly PageResponseSeen[] {
  const iopf = rig.target.caps.iopf!;
  if (iopf.responses) return iopf.responses(rig.m);
  return rig.ep(iopf.device).pageResponses();
}

async function iopfRig(rig: Rig) {
  const { device } = rig.target.caps.iopf!;
  const dev = rig.dev(device);
  await iommuDeviceClaimDmaOwner(dev, "testkit");
  const d = await iommuPagingDomainAllocFlags(dev, 0);
  const groups: IopfGroup[] = [];
  d.iopfHandler = (g: IopfGroup) => {
    groups.push(g);
  };
  // As iommufd attaches a fault-capable HWPT: with a handle, so io-pgfault finds the domain.
  await iommuAttachGroupHandle(d, dev.iommuGroup as IommuGroup, { domain: undefined });
  const done = async () => {
    if ((dev.iommuGroup as IommuGroup).domain === d) await iommuDetachGroupHandle(d, dev.iommuGroup as IommuGroup);
    await iommuDeviceReleaseDmaOwner(dev);
    iommuDomainFree(d);
  };
  return { dev, d, groups, done };
}

const iopfRoundTrip: ConformanceCheck = {
  id: "faults/iopf-round-trip",
  title: "a page request reaches the domain's IOPF handler and its SUCCESS response reaches the device",
  applies: (t) => (t.caps.iopf ? undefined : "PRI/IOPF not claimed"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const { d, groups, done } = await iopfRig(rig);
      const iova = iovaOf(rig);
      const queued = await sendPageRequest(rig, { pasid: -1, addr: iova, write: true, grpid: 5, last: true });
      check(queued, "the hardware refused the page request of a device with IOPF enabled");
      await rig.settle();
      check(groups.length === 1, `the IOPF handler got ${groups.length} group(s), want 1`);
      const g = groups[0]!;
      check(g.lastFault.fault.prm.addr === iova, `the group's address is ${hex(g.lastFault.fault.prm.addr)}`);
      iommuMap(d, iova, rig.page(), 4096, IOMMU_READ | IOMMU_WRITE);
      await iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS);
      iopfFreeGroup(g);
      await rig.settle();
      const last = responsesSeen(rig).at(-1);
      check(
        last?.grpid === 5 && last.code === IOMMU_PAGE_RESP.SUCCESS,
        `the device saw response ${JSON.stringify(last)}, want group 5 SUCCESS`,
      );
      iommuUnmap(d, iova, 4096);
      await done();
    }),
};

const iopfRemoval: ConformanceCheck = {
  id: "faults/iopf-outstanding-removal",
  title: "leaving IOPF with a group outstanding answers it exactly once, under many interleavings",
  applies: (t) => (t.caps.iopf ? undefined : "PRI/IOPF not claimed"),
  async run(ctx) {
    const { target } = ctx;
    for (let r = 0; r < ctx.runs(6, 100); r++) {
      const seed = ctx.seed + r;
      await withRig(target, { seed, scheduler: { kind: "random", seed } }, async (rig) => {
        const { dev, d, groups, done } = await iopfRig(rig);
        const before = responsesSeen(rig).length;
        await sendPageRequest(rig, { pasid: -1, addr: iovaOf(rig), write: false, grpid: 9, last: true });
        await rig.settle();
        check(groups.length === 1, `the IOPF handler got ${groups.length} group(s), want 1`, seed);
        const g = groups[0]!;
        const s = rig.m.scheduler;
        const responder = s.spawn("testkit-iopf-handler", async () => {
          await s.yield();
          await iopfGroupResponse(g, IOMMU_PAGE_RESP.SUCCESS);
          iopfFreeGroup(g);
        });
        const detacher = s.spawn("testkit-detach", () => iommuDetachGroupHandle(d, dev.iommuGroup as IommuGroup));
        await s.joinAll([responder, detacher]);
        await rig.settle();
        const answers = responsesSeen(rig)
          .slice(before)
          .filter((x) => x.grpid === 9);
        check(answers.length === 1, `group 9 was answered ${answers.length} times, want exactly once`, seed);
        await done();
      });
    }
  },
};

const iopfDeviceGone: ConformanceCheck = {
  id: "faults/iopf-device-removal",
  title:
    "removing a device with a page request outstanding answers it INVALID once; the handler's later free of the " +
    "group drops the last reference to the fault data, which stays valid until then",
  applies: (t) => (t.caps.iopf ? undefined : "PRI/IOPF not claimed"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const { dev, d, groups } = await iopfRig(rig);
      // The device's side stays readable after it leaves the driver core.
      const iopf = target.caps.iopf!;
      const ep = rig.ep(iopf.device);
      const seen = () => (iopf.responses ? iopf.responses(rig.m) : ep.pageResponses());
      const before = seen().length;
      await sendPageRequest(rig, { pasid: -1, addr: iovaOf(rig), write: false, grpid: 11, last: true });
      await rig.settle();
      check(groups.length === 1, `the IOPF handler got ${groups.length} group(s), want 1`);
      const g = groups[0]!;
      // Unbinding the device's driver and hot-unplug: detach, give up DMA ownership, device_del. The handler still
      // holds the group (it has not answered): iopf_queue_remove_device answers for it.
      await iommuDetachGroupHandle(d, dev.iommuGroup as IommuGroup);
      await iommuDeviceReleaseDmaOwner(dev);
      await rig.m.driverCore.deviceUnregister(dev);
      await rig.settle();
      const answers = seen()
        .slice(before)
        .filter((x) => x.grpid === 11);
      check(
        answers.length === 1 && answers[0]!.code === IOMMU_PAGE_RESP.INVALID,
        () => `removing the device answered group 11 ${JSON.stringify(answers)}, want once with INVALID`,
      );
      // The fault data the group points at is still valid (the group holds a reference), and the free drops it.
      check(g.faultParam.users.read() >= 1, "the group's fault data was freed while the handler still held the group");
      iopfFreeGroup(g);
      iommuDomainFree(d);
    }),
};

/** The fault checks. */
export const faultChecks: readonly ConformanceCheck[] = [reported, iopfRoundTrip, iopfRemoval, iopfDeviceGone];
