/**
 * iommufd through the VFIO cdev, as a VMM drives a real driver: IOAS map/unmap with device DMA checked, HWPT
 * allocation and replacement, dirty tracking, and close while an ioctl is in flight.
 * @linux tools/testing/selftests/iommu/iommufd.c (the parts that apply to a real driver), vfio_iommufd.c
 */
import type { Machine, Process } from "@iommu-sim/core";
import {
  destroy,
  hwptAlloc,
  hwptGetDirtyBitmap,
  hwptSetDirtyTracking,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  ioasAlloc,
  ioasMap,
  ioasUnmap,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";
import { ConformanceError, check, hex } from "../errors.js";
import {
  faultQueueAlloc,
  hwptInvalidate,
  nestedHwptAlloc,
  readFaults,
  readVevents,
  userBuffer,
  vdeviceAlloc,
  veventqAlloc,
  viommuAlloc,
  writeFaultResponse,
} from "../iommufd-helpers.js";
import { type Rig, withRig } from "../rig.js";
import { responsesSeen, sendPageRequest } from "./faults.js";
import type { ConformanceCheck } from "./types.js";

const PAGE = 4096;

/** A VMM process with /dev/iommu open and `devName`'s VFIO cdev bound, and one IOAS. */
export interface VmmSession {
  p: Process;
  iommufd: number;
  devfd: number;
  devId: number;
  ioas: number;
}

/**
 * Open /dev/iommu and the device's VFIO cdev, bind, allocate an IOAS.
 * @linux a VMM's iommufd setup: open, VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC
 */
export async function openVmmSession(m: Machine, devName: string): Promise<VmmSession> {
  const dev = m.driverCore.deviceFor(devName);
  const vdev = dev ? vfioDeviceOf(m, dev) : undefined;
  if (!vdev) throw new ConformanceError(`${devName} has no VFIO cdev: it was not probed into an IOMMU group`);
  const p = m.spawnProcess();
  const iommufd = await p.open("/dev/iommu");
  const devfd = await p.open(vdev.path);
  const devId = await vfioDeviceBindIommufd(p, devfd, iommufd);
  const ioas = await ioasAlloc(p, iommufd);
  return { p, iommufd, devfd, devId, ioas };
}

function iovaOf(rig: Rig): number {
  const g = Math.max(rig.target.caps.pageSizes[0]!, PAGE);
  return Math.ceil(rig.target.caps.iova.base / g) * g;
}

const ioasDma: ConformanceCheck = {
  id: "iommufd/ioas-dma",
  title: "IOAS map makes user memory reachable by the device's DMA at the IOVA, and unmap takes it away",
  applies: (t) => (t.caps.iommufd ? undefined : "iommufd not claimed"),
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const name = target.devices.primary;
      const s = await openVmmSession(rig.m, name);
      await vfioDeviceAttachPt(s.p, s.devfd, s.ioas);
      const va = s.p.mmap(4 * PAGE);
      s.p.writeMemory(va, new Uint8Array(4 * PAGE).fill(0x6c));
      const iova = iovaOf(rig);
      await ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: va, length: 4 * PAGE, iova });
      const o = rig.read(name, iova + PAGE + 4, 1);
      check(o !== "fault" && o[0] === 0x6c, `DMA read of IOAS-mapped user memory at ${hex(iova)} gave ${o}`);
      check(rig.write(name, iova + 2 * PAGE, new Uint8Array([9, 8, 7])), "DMA write to IOAS-mapped memory faulted");
      const back = s.p.readMemory(va + BigInt(2 * PAGE), 3);
      check(back[0] === 9 && back[2] === 7, "the device's write did not reach the process's memory");
      await ioasUnmap(s.p, s.iommufd, s.ioas, iova, 4 * PAGE);
      check(rig.read(name, iova, 1) === "fault", "DMA still reached user memory after IOMMU_IOAS_UNMAP returned");
      await s.p.exit();
    }),
};

const hwptReplace: ConformanceCheck = {
  id: "iommufd/hwpt-replace",
  title: "HWPTs allocated on an IOAS attach and replace each other with DMA following, and destroy cleanly",
  applies: (t) => (t.caps.iommufd ? undefined : "iommufd not claimed"),
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const name = target.devices.primary;
      const s = await openVmmSession(rig.m, name);
      const va = s.p.mmap(PAGE);
      s.p.writeMemory(va, new Uint8Array(PAGE).fill(0x3e));
      const iova = iovaOf(rig);
      const ioas2 = await ioasAlloc(s.p, s.iommufd);
      await ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: va, length: PAGE, iova });
      const h1 = await hwptAlloc(s.p, s.iommufd, { devId: s.devId, ptId: s.ioas });
      const h2 = await hwptAlloc(s.p, s.iommufd, { devId: s.devId, ptId: ioas2 });
      await vfioDeviceAttachPt(s.p, s.devfd, h1);
      let o = rig.read(name, iova, 1);
      check(o !== "fault" && o[0] === 0x3e, "DMA through HWPT 1 did not reach the IOAS's memory");
      await vfioDeviceAttachPt(s.p, s.devfd, h2);
      o = rig.read(name, iova, 1);
      check(o === "fault", "after replacing by an HWPT on an empty IOAS, DMA still reached the old mapping");
      const busy = await destroy(s.p, s.iommufd, h2).then(
        () => "destroyed",
        (e: { code?: string }) => e.code,
      );
      check(busy === "EBUSY", `destroying the attached HWPT gave ${busy}, want EBUSY`);
      await vfioDeviceAttachPt(s.p, s.devfd, h1);
      await destroy(s.p, s.iommufd, h2);
      await s.p.exit();
    }),
};

const dirty: ConformanceCheck = {
  id: "iommufd/dirty",
  title: "dirty tracking on an HWPT reports exactly the pages the device wrote",
  applies: (t) => (!t.caps.iommufd ? "iommufd not claimed" : !t.caps.dirty ? "dirty tracking not claimed" : undefined),
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const name = target.devices.primary;
      const s = await openVmmSession(rig.m, name);
      const va = s.p.mmap(8 * PAGE);
      const iova = iovaOf(rig);
      await ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: va, length: 8 * PAGE, iova });
      const h = await hwptAlloc(s.p, s.iommufd, {
        devId: s.devId,
        ptId: s.ioas,
        flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
      });
      await vfioDeviceAttachPt(s.p, s.devfd, h);
      await hwptSetDirtyTracking(s.p, s.iommufd, h, true);
      for (const pg of [1, 6]) check(rig.write(name, iova + pg * PAGE + 4, new Uint8Array([1])), "DMA write faulted");
      check(rig.read(name, iova + 3 * PAGE, 1) !== "fault", "DMA read faulted");
      const bitmap = s.p.mmap(PAGE);
      await hwptGetDirtyBitmap(s.p, s.iommufd, { hwptId: h, iova, length: 8 * PAGE, pageSize: PAGE, data: bitmap });
      const bits = s.p.readMemory(bitmap, 1)[0]!;
      check(bits === 0b0100_0010, `dirty bitmap 0b${bits.toString(2).padStart(8, "0")}, want 0b01000010 (writes only)`);
      await hwptSetDirtyTracking(s.p, s.iommufd, h, false);
      await s.p.exit();
    }),
};

const closeInFlight: ConformanceCheck = {
  id: "iommufd/close-vs-ioctl",
  title: "closing the device and iommufd while map/attach ioctls are in flight leaks nothing, over many seeds",
  applies: (t) => (t.caps.iommufd ? undefined : "iommufd not claimed"),
  async run(ctx) {
    for (let r = 0; r < ctx.runs(8, 200); r++) {
      const seed = ctx.seed + r;
      await withRig(ctx.target, { iommufd: true, seed, scheduler: { kind: "random", seed } }, async (rig) => {
        const s = await openVmmSession(rig.m, ctx.target.devices.primary);
        const va = s.p.mmap(4 * PAGE);
        const sch = rig.m.scheduler;
        const quiet = (p: Promise<unknown>) =>
          p.then(
            () => undefined,
            () => undefined,
          );
        const a = sch.spawn("testkit-vmm-map", async () => {
          await quiet(vfioDeviceAttachPt(s.p, s.devfd, s.ioas));
          await quiet(ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: va, length: 4 * PAGE, iova: iovaOf(rig) }));
        });
        const b = sch.spawn("testkit-vmm-close", async () => {
          await sch.yield();
          await quiet(s.p.close(s.devfd));
          await quiet(s.p.close(s.iommufd));
        });
        await sch.joinAll([a, b]);
        await s.p.exit();
      }).catch((e: Error) => {
        throw new ConformanceError(`seed ${seed}: ${e.message}`, seed);
      });
    }
  },
};

const viommuTombstone: ConformanceCheck = {
  id: "iommufd/viommu-vdevice-tombstone",
  title: "a nested HWPT on a vIOMMU isolates like its parent; unbinding with a live vDEVICE tombstones it cleanly",
  applies: (t) => (!t.caps.iommufd ? "iommufd not claimed" : !t.caps.viommu ? "vIOMMU not claimed" : undefined),
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const v = target.caps.viommu!;
      const name = target.devices.primary;
      const s = await openVmmSession(rig.m, name);
      const va = s.p.mmap(PAGE);
      s.p.writeMemory(va, new Uint8Array(PAGE).fill(0x5e));
      const iova = iovaOf(rig);
      await ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: va, length: PAGE, iova });
      const parent = await hwptAlloc(s.p, s.iommufd, {
        devId: s.devId,
        ptId: s.ioas,
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
      });
      const { viommuId } = await viommuAlloc(s.p, s.iommufd, { type: v.type, devId: s.devId, hwptId: parent });
      const vdev = await vdeviceAlloc(s.p, s.iommufd, { viommuId, devId: s.devId, virtId: v.virtId ?? 1 });
      const data = v.nestedData();
      const nested = await nestedHwptAlloc(s.p, s.iommufd, {
        devId: s.devId,
        ptId: viommuId,
        dataType: data.type,
        data: data.data,
      });
      await vfioDeviceAttachPt(s.p, s.devfd, nested);
      const o = rig.read(name, iova, 1);
      check(o === "fault" || o[0] === 0x5e, "DMA through the nested HWPT reached memory its parent does not map");
      const code = (p: Promise<unknown>) =>
        p.then(
          () => "ok",
          (e: { code?: string }) => e.code ?? String(e),
        );
      check((await code(destroy(s.p, s.iommufd, viommuId))) === "EBUSY", "a vIOMMU with a vDEVICE was destroyed");
      // Unbind (close the device) with the vDEVICE alive: it becomes a tombstone.
      await s.p.close(s.devfd);
      const gone = await code(destroy(s.p, s.iommufd, vdev));
      check(gone === "ENOENT", `IOMMU_DESTROY of the tombstoned vDEVICE gave ${gone}, want ENOENT`);
      // A tombstone keeps its ID until close(): new objects (xa_alloc takes the lowest free ID) never get it.
      for (let i = 0; i < 3; i++) {
        const id = await ioasAlloc(s.p, s.iommufd);
        check(id !== vdev, `a new IOAS got ID ${id}, the unbound vDEVICE's: its ID was freed instead of tombstoned`);
      }
      for (const [what, id] of [
        ["nested HWPT", nested],
        ["vIOMMU", viommuId],
        ["parent HWPT", parent],
      ] as const) {
        const r = await code(destroy(s.p, s.iommufd, id));
        check(r === "ok", `destroying the ${what} after the unbind gave ${r}: something still holds it`);
      }
      await s.p.exit();
    }),
};

const faultQueue: ConformanceCheck = {
  id: "iommufd/fault-queue",
  title: "a page request on a fault-capable HWPT reaches the fault queue, and the VMM's response reaches the device",
  applies: (t) => (!t.caps.iommufd ? "iommufd not claimed" : !t.caps.iopf ? "PRI/IOPF not claimed" : undefined),
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const name = target.caps.iopf!.device;
      const s = await openVmmSession(rig.m, name);
      const fq = await faultQueueAlloc(s.p, s.iommufd);
      const h = await hwptAlloc(s.p, s.iommufd, {
        devId: s.devId,
        ptId: s.ioas,
        flags: IOMMU_HWPT_FAULT_ID_VALID,
        faultId: fq.id,
      });
      await vfioDeviceAttachPt(s.p, s.devfd, h);
      const iova = iovaOf(rig);
      await sendPageRequest(rig, { pasid: -1, addr: iova, write: true, grpid: 7, last: true });
      await rig.settle();
      const faults = await readFaults(s.p, fq.fd);
      check(faults.length === 1, `the fault queue holds ${faults.length} record(s), want 1`);
      const f = faults[0]!;
      check(f.addr === BigInt(iova) && f.grpid === 7, `fault record addr ${hex(Number(f.addr))} grpid ${f.grpid}`);
      check(f.dev_id === s.devId, `fault record dev_id ${f.dev_id}, want ${s.devId}`);
      await writeFaultResponse(s.p, fq.fd, f.cookie, 0);
      await rig.settle();
      const last = responsesSeen(rig).at(-1);
      check(
        last?.grpid === 7 && last.code === 0,
        `the device saw response ${JSON.stringify(last)}, want group 7 success`,
      );
      await s.p.exit();
    }),
};

/** A VMM session with a nesting parent on its IOAS, a vIOMMU, the device's vDEVICE and a nested HWPT attached. */
async function viommuSession(rig: Rig, nested?: (zeroIpa: number) => import("@iommu-sim/core").IommuUserData) {
  const v = rig.target.caps.viommu!;
  const s = await openVmmSession(rig.m, rig.target.devices.primary);
  const va = s.p.mmap(PAGE);
  const iova = iovaOf(rig);
  await ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: va, length: PAGE, iova });
  const parent = await hwptAlloc(s.p, s.iommufd, { devId: s.devId, ptId: s.ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const { viommuId } = await viommuAlloc(s.p, s.iommufd, { type: v.type, devId: s.devId, hwptId: parent });
  const virtId = v.virtId ?? 1;
  const vdev = await vdeviceAlloc(s.p, s.iommufd, { viommuId, devId: s.devId, virtId });
  const data = nested ? nested(iova) : v.nestedData();
  const hwpt = await nestedHwptAlloc(s.p, s.iommufd, {
    devId: s.devId,
    ptId: viommuId,
    dataType: data.type,
    data: data.data,
  });
  return { s, iova, parent, viommuId, virtId, vdev, hwpt };
}

const errCode = (p: Promise<unknown>) =>
  p.then(
    () => "ok",
    (e: { code?: string }) => e.code ?? String(e),
  );

const viommuInvalidate: ConformanceCheck = {
  id: "iommufd/hwpt-invalidate",
  title:
    "IOMMU_HWPT_INVALIDATE on the vIOMMU handles valid entries, stops at a bad one reporting how many it handled, " +
    "and refuses an IOAS, an unknown type and a reserved field",
  applies: (t) =>
    !t.caps.iommufd
      ? "iommufd not claimed"
      : !t.caps.viommu
        ? "vIOMMU not claimed"
        : !t.caps.viommu.invalidate
          ? "vIOMMU invalidation not claimed"
          : undefined,
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const inv = target.caps.viommu!.invalidate!;
      const { s, viommuId, virtId, hwpt } = await viommuSession(rig);
      await vfioDeviceAttachPt(s.p, s.devfd, hwpt);
      const call = (id: number, entries: Uint8Array[], dataType = inv.dataType) =>
        hwptInvalidate(s.p, s.iommufd, { hwptId: id, dataType, entryLen: inv.entryLen, entries });
      const good = inv.entry(virtId);
      check((await call(viommuId, [])) === 0, "an empty invalidation array did not report 0 entries handled");
      const n = await call(viommuId, [good, good, good]);
      check(n === 3, `three valid entries reported ${n} handled, want 3`);
      // A bad entry in the middle: the call fails with the driver's errno and entry_num counts those before it.
      const cmd = {
        size: 0,
        hwpt_id: viommuId,
        data_uptr: userBuffer(s.p, new Uint8Array([...good, ...inv.bad(virtId), ...good])),
        data_type: inv.dataType,
        entry_len: inv.entryLen,
        entry_num: 3,
        __reserved: 0,
      };
      const bad = await errCode(s.p.ioctl(s.iommufd, IOMMU_HWPT_INVALIDATE, cmd));
      check(bad === inv.badCode, `an invalidation array with a bad 2nd entry gave ${bad}, want ${inv.badCode}`);
      check(cmd.entry_num === 1, `after a bad 2nd entry entry_num is ${cmd.entry_num}, want 1 (the entries handled)`);
      const onIoas = await errCode(call(s.ioas, [good]));
      check(onIoas === "EINVAL", `IOMMU_HWPT_INVALIDATE on an IOAS gave ${onIoas}, want EINVAL`);
      const wrongType = await errCode(call(viommuId, [good], 0xdadbeef));
      check(wrongType === "EINVAL", `an unknown data_type gave ${wrongType}, want EINVAL`);
      const reserved = await errCode(
        s.p.ioctl(s.iommufd, IOMMU_HWPT_INVALIDATE, { ...cmd, entry_num: 1, __reserved: 1 }),
      );
      check(reserved === "EOPNOTSUPP", `a non-zero __reserved gave ${reserved}, want EOPNOTSUPP`);
      await s.p.exit();
    }),
};

const veventq: ConformanceCheck = {
  id: "iommufd/veventq",
  title:
    "an event of a device behind a vIOMMU reaches its vEVENTQ naming the vDEVICE's virtual ID, in sequence; one " +
    "vEVENTQ per type",
  applies: (t) =>
    !t.caps.iommufd
      ? "iommufd not claimed"
      : !t.caps.viommu
        ? "vIOMMU not claimed"
        : !t.caps.viommu.vevent
          ? "vEVENTQ not claimed"
          : undefined,
  run: ({ target }) =>
    withRig(target, { iommufd: true }, async (rig) => {
      const ev = target.caps.viommu!.vevent!;
      const { s, viommuId, virtId, hwpt, iova } = await viommuSession(rig, ev.nestedData);
      const q = await veventqAlloc(s.p, s.iommufd, { viommuId, type: ev.type, depth: 8 });
      const dup = await errCode(veventqAlloc(s.p, s.iommufd, { viommuId, type: ev.type, depth: 8 }));
      check(dup === "EEXIST", `a second vEVENTQ of the same type gave ${dup}, want EEXIST`);
      await vfioDeviceAttachPt(s.p, s.devfd, hwpt);
      const dev = rig.dev(target.devices.primary);
      for (let i = 0; i < 2; i++) await ev.trigger(rig.m, dev, iova);
      await rig.settle();
      const got = await readVevents(s.p, q.fd, ev.payloadLen);
      check(got.length >= 2, `the vEVENTQ holds ${got.length} vEVENT(s) after two events, want 2`);
      for (const [i, e] of got.slice(0, 2).entries()) {
        check(e.flags === 0, `vEVENT ${i} has flags ${e.flags} (lost events?)`);
        check(ev.virtId(e.data) === virtId, `vEVENT ${i} names virtual ID ${ev.virtId(e.data)}, want ${virtId}`);
      }
      check(got[1]!.sequence === got[0]!.sequence + 1, "vEVENT sequence numbers are not consecutive");
      const busy = await errCode(destroy(s.p, s.iommufd, viommuId));
      check(busy === "EBUSY", `destroying a vIOMMU with a vEVENTQ gave ${busy}, want EBUSY`);
      await s.p.exit();
    }),
};

const iommufdResponseVsRemoval: ConformanceCheck = {
  id: "iommufd/fault-response-vs-removal",
  title:
    "a VMM's late page response races the device's unbind and hot-unplug: the device is answered exactly once, " +
    "the late write fails cleanly (EINVAL) or wins, nothing is used after free, over many interleavings",
  applies: (t) => (!t.caps.iopf ? "PRI/IOPF not claimed" : !t.caps.iommufd ? "iommufd not claimed" : undefined),
  async run(ctx) {
    const { target } = ctx;
    for (let r = 0; r < ctx.runs(6, 100); r++) {
      const seed = ctx.seed + r;
      await withRig(target, { iommufd: true, seed, scheduler: { kind: "random", seed } }, async (rig) => {
        const iopf = target.caps.iopf!;
        const ep = rig.ep(iopf.device);
        const seen = () => (iopf.responses ? iopf.responses(rig.m) : ep.pageResponses());
        const s = await openVmmSession(rig.m, iopf.device);
        const fq = await faultQueueAlloc(s.p, s.iommufd);
        const h = await hwptAlloc(s.p, s.iommufd, {
          devId: s.devId,
          ptId: s.ioas,
          flags: IOMMU_HWPT_FAULT_ID_VALID,
          faultId: fq.id,
        });
        await vfioDeviceAttachPt(s.p, s.devfd, h);
        const before = seen().length;
        await sendPageRequest(rig, { pasid: -1, addr: iovaOf(rig), write: false, grpid: 13, last: true });
        await rig.settle();
        const faults = await readFaults(s.p, fq.fd);
        check(faults.length === 1, `the fault queue holds ${faults.length} record(s), want 1`, seed);
        const dev = rig.dev(iopf.device);
        const sch = rig.m.scheduler;
        let write = "";
        const vmm = sch.spawn("testkit-vmm-response", async () => {
          await sch.yield();
          write = await writeFaultResponse(s.p, fq.fd, faults[0]!.cookie, 0).then(
            () => "ok",
            (e: { code?: string }) => e.code ?? String(e),
          );
        });
        const unplug = sch.spawn("testkit-unbind-unplug", async () => {
          await s.p.close(s.devfd);
          await rig.m.driverCore.deviceUnregister(dev);
        });
        await sch.joinAll([vmm, unplug]);
        await rig.settle();
        check(write === "ok" || write === "EINVAL", `the late page response write gave ${write}`, seed);
        const answers = seen()
          .slice(before)
          .filter((x) => x.grpid === 13);
        check(answers.length === 1, `group 13 was answered ${answers.length} times, want exactly once`, seed);
        await s.p.exit();
      });
    }
  },
};

/** The iommufd checks. */
export const iommufdChecks: readonly ConformanceCheck[] = [
  ioasDma,
  hwptReplace,
  dirty,
  viommuTombstone,
  viommuInvalidate,
  veventq,
  faultQueue,
  iommufdResponseVsRemoval,
  closeInFlight,
];
