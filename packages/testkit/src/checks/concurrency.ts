/**
 * Concurrency: the dangerous pairs run under the seeded random scheduler over many seeds (bounded in npm test,
 * more under IOMMU_SIM_SOAK=1); each run must end consistent and tear down clean (no leak, warning or held lock).
 * A failure names the seed that replays it.
 * @linux the races fixed around iommu_probe_device, group->mutex, io-pgfault and iommufd object destruction
 */
import {
  type Device,
  devIommu,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuSetFaultHandler,
  iommuUnmap,
} from "@iommu-sim/core";
import { destroy, hwptAlloc, vfioDeviceAttachPt } from "@iommu-sim/iommufd";
import { ConformanceError, check } from "../errors.js";
import { type Rig, type RigOptions, withRig } from "../rig.js";
import { openVmmSession } from "./iommufd.js";
import { addDeviceBehind, noSpareDevice } from "./probe.js";
import type { CheckContext, ConformanceCheck } from "./types.js";

async function overSeeds(ctx: CheckContext, opts: RigOptions, fn: (rig: Rig, seed: number) => Promise<void>) {
  for (let r = 0; r < ctx.runs(8, 200); r++) {
    const seed = ctx.seed + r;
    try {
      await withRig(ctx.target, { ...opts, seed, scheduler: { kind: "random", seed } }, (rig) => fn(rig, seed));
    } catch (e) {
      if (e instanceof ConformanceError) throw e;
      throw new ConformanceError(`seed ${seed}: ${(e as Error).message}`, seed);
    }
  }
}

function iovaOf(rig: Rig): number {
  const g = Math.max(rig.target.caps.pageSizes[0]!, 4096);
  return Math.ceil(rig.target.caps.iova.base / g) * g;
}

const attachVsAttach: ConformanceCheck = {
  id: "concurrency/replace-vs-replace",
  title: "two concurrent domain replacements leave the device translating with whichever won",
  applies: () => undefined,
  run: (ctx) =>
    overSeeds(ctx, {}, async (rig, seed) => {
      const name = ctx.target.devices.primary;
      const dev = rig.dev(name);
      const g = rig.group(dev);
      const iova = iovaOf(rig);
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const [a, b] = [await iommuPagingDomainAllocFlags(dev, 0), await iommuPagingDomainAllocFlags(dev, 0)];
      iommuMap(a, iova, rig.page(0xa1), 4096, IOMMU_READ | IOMMU_WRITE);
      iommuMap(b, iova, rig.page(0xb2), 4096, IOMMU_READ | IOMMU_WRITE);
      const s = rig.m.scheduler;
      await s.joinAll([
        s.spawn("testkit-replace-a", () => iommuGroupReplaceDomain(g, a)),
        s.spawn("testkit-replace-b", () => iommuGroupReplaceDomain(g, b)),
      ]);
      const want = g.domain === a ? 0xa1 : 0xb2;
      const o = rig.read(name, iova, 1);
      check(o !== "fault" && o[0] === want, `the group's domain and the hardware disagree after the race`, seed);
      await iommuDeviceReleaseDmaOwner(dev);
      for (const d of [a, b]) {
        iommuUnmap(d, iova, 4096);
        iommuDomainFree(d);
      }
    }),
};

const probeVsUnregister: ConformanceCheck = {
  id: "concurrency/probe-vs-iommu-unregister",
  title: "a device registering while its IOMMU unbinds ends unprobed, and is probed when the IOMMU returns",
  applies: noSpareDevice,
  run: (ctx) =>
    overSeeds(ctx, {}, async (rig, seed) => {
      const pdev = rig.dev(ctx.target.iommu);
      const s = rig.m.scheduler;
      let added: Device | undefined;
      await s.joinAll([
        s.spawn("testkit-add", async () => {
          added = await addDeviceBehind(rig, "testkit-race");
        }),
        s.spawn("testkit-unbind", () => rig.m.driverCore.deviceReleaseDriver(pdev)),
      ]);
      const dev = added!;
      check(devIommu(dev)?.iommuDev === undefined, "the device stayed probed on an unregistered IOMMU", seed);
      await rig.m.driverCore.deviceAttach(pdev);
      const inst = ctx.target.driver.instanceFor(rig.m, ctx.target.iommu);
      check(devIommu(dev)?.iommuDev === inst, "the device was not probed when its IOMMU registered again", seed);
      await rig.m.driverCore.deviceUnregister(dev);
    }),
};

const faultVsFree: ConformanceCheck = {
  id: "concurrency/fault-vs-domain-free",
  title: "faults being reported while the device detaches and its domain is freed never touch the freed domain",
  applies: () => undefined,
  run: (ctx) =>
    overSeeds(ctx, {}, async (rig) => {
      const name = ctx.target.devices.primary;
      const dev = rig.dev(name);
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const d = await iommuPagingDomainAllocFlags(dev, 0);
      let freed = false;
      const late: number[] = [];
      iommuSetFaultHandler(
        d,
        (_d, _dev, iova) => {
          if (freed) late.push(iova);
          return 0;
        },
        undefined,
      );
      await iommuGroupReplaceDomain(rig.group(dev), d);
      for (let i = 0; i < 4; i++) rig.read(name, iovaOf(rig) + i * 4096, 4);
      const s = rig.m.scheduler;
      await s.joinAll([
        s.spawn("testkit-events", async () => {
          await ctx.target.settle?.(rig.m);
        }),
        s.spawn("testkit-release", async () => {
          await iommuDeviceReleaseDmaOwner(dev);
          iommuDomainFree(d);
          freed = true;
        }),
      ]);
      await rig.settle();
      check(late.length === 0, `the fault handler of a freed domain ran for ${late.length} fault(s)`);
    }),
};

const destroyVsUnbind: ConformanceCheck = {
  id: "concurrency/hwpt-destroy-vs-unbind",
  title: "IOMMU_DESTROY of the attached HWPT racing the device's unbind (close) ends clean",
  applies: (t) => (t.caps.iommufd ? undefined : "iommufd not claimed"),
  run: (ctx) =>
    overSeeds(ctx, { iommufd: true }, async (rig) => {
      const sess = await openVmmSession(rig.m, ctx.target.devices.primary);
      const h = await hwptAlloc(sess.p, sess.iommufd, { devId: sess.devId, ptId: sess.ioas });
      await vfioDeviceAttachPt(sess.p, sess.devfd, h);
      const s = rig.m.scheduler;
      const quiet = (p: Promise<unknown>) => p.catch(() => undefined);
      await s.joinAll([
        s.spawn("testkit-destroy", () => quiet(destroy(sess.p, sess.iommufd, h))),
        s.spawn("testkit-unbind", () => quiet(sess.p.close(sess.devfd))),
      ]);
      await sess.p.exit();
    }),
};

/** The concurrency checks. */
export const concurrencyChecks: readonly ConformanceCheck[] = [
  attachVsAttach,
  probeVsUnregister,
  faultVsFree,
  destroyVsUnbind,
];
