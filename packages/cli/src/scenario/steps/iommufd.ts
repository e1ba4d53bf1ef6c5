/** Steps a VMM takes on iommufd: bind through the VFIO cdev, IOAS, map, HWPTs, attach/detach, destroy, unbind. */
import { describeIommuTopology } from "@iommu-sim/core";
import {
  hwptAlloc as hwptAllocUapi,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  ioasAlloc as ioasAllocUapi,
  ioasMap,
  ioasUnmap,
  destroy as iommuDestroy,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceDetachPt,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";
import { StepError } from "../context.js";
import { hex, type StepRunner } from "./types.js";

/** The IOMMU that translates `device`, for messages. */
function iommuOf(ctx: Parameters<StepRunner<"bind">>[0], device: string): string {
  return describeIommuTopology(ctx.m).devices.find((d) => d.name === device)?.iommu ?? "no IOMMU";
}

/** Open the device's VFIO cdev and VFIO_DEVICE_BIND_IOMMUFD it to the VMM's iommufd. */
export const bind: StepRunner<"bind"> = async (ctx, s) => {
  if (ctx.devices.has(s.device)) throw new StepError(`${s.device} is bound already`);
  const dev = ctx.m.driverCore.deviceFor(s.device);
  if (!dev) throw new StepError(`the platform has no device ${s.device}`);
  const vdev = vfioDeviceOf(ctx.m, dev);
  if (!vdev) throw new StepError(`${s.device} has no VFIO cdev (no IOMMU translates it?)`);
  const fd = await ctx.p.open(vdev.path);
  let devId: number;
  try {
    devId = await vfioDeviceBindIommufd(ctx.p, fd, ctx.fd);
  } catch (e) {
    await ctx.p.close(fd);
    throw e;
  }
  ctx.devices.set(s.device, { fd, devId });
  return `${vdev.path} (behind ${iommuOf(ctx, s.device)}) bound: dev_id ${devId}`;
};

/** IOMMU_IOAS_ALLOC. */
export const ioasAlloc: StepRunner<"ioas-alloc"> = async (ctx, s) => {
  const id = await ioasAllocUapi(ctx.p, ctx.fd);
  ctx.objects.set(s.as, { kind: "ioas", id });
  return `IOAS ${s.as} = id ${id}`;
};

/** mmap fresh memory in the VMM and IOMMU_IOAS_MAP it at a fixed IOVA. */
export const map: StepRunner<"map"> = async (ctx, s) => {
  const ioas = ctx.object(s.ioas, "ioas");
  const va = ctx.p.mmap(s.size);
  const access = s.readonly ? IOMMU_IOAS_MAP_READABLE : IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
  await ioasMap(ctx.p, ctx.fd, { ioasId: ioas.id, userVa: va, length: s.size, iova: s.iova, access });
  ctx.regions.set(s.as, { ioas: s.ioas, iova: s.iova, size: s.size, va });
  return `${s.as}: ${s.size / 1024} KiB of VMM memory at IOVA ${hex(s.iova)} (${s.readonly ? "read-only" : "read-write"})`;
};

/** IOMMU_IOAS_UNMAP of a range. */
export const unmap: StepRunner<"unmap"> = async (ctx, s) => {
  const ioas = ctx.object(s.ioas, "ioas");
  const n = await ioasUnmap(ctx.p, ctx.fd, ioas.id, s.iova, s.size);
  return `${n} bytes unmapped at ${hex(s.iova)}`;
};

/** IOMMU_HWPT_ALLOC of a paging HWPT (optionally a nesting parent, or reporting faults to a fault queue). */
export const hwptAlloc: StepRunner<"hwpt-alloc"> = async (ctx, s) => {
  const dev = ctx.device(s.device);
  let flags = s.nestParent ? IOMMU_HWPT_ALLOC_NEST_PARENT : 0;
  let faultId: number | undefined;
  if (s.faultQueue) {
    faultId = ctx.object(s.faultQueue, "fault").id;
    flags |= IOMMU_HWPT_FAULT_ID_VALID;
  }
  const id = await hwptAllocUapi(ctx.p, ctx.fd, {
    devId: dev.devId,
    ptId: ctx.pt(s.pt),
    flags,
    ...(faultId !== undefined ? { faultId } : {}),
  });
  ctx.objects.set(s.as, { kind: "hwpt", id });
  const base = ctx.objects.get(s.pt)?.kind === "ioas" ? s.pt : ctx.hwptIoas.get(s.pt);
  if (base) ctx.hwptIoas.set(s.as, base);
  const what = s.nestParent ? "nesting-parent HWPT" : s.faultQueue ? `HWPT reporting to ${s.faultQueue}` : "HWPT";
  return `${what} ${s.as} = id ${id} on ${s.pt}`;
};

/** VFIO_DEVICE_ATTACH_IOMMUFD_PT. */
export const attach: StepRunner<"attach"> = async (ctx, s) => {
  const dev = ctx.device(s.device);
  await vfioDeviceAttachPt(ctx.p, dev.fd, ctx.pt(s.pt), s.pasid);
  ctx.attached.set(s.device, s.pt);
  return `${s.device} attached to ${s.pt}${s.pasid !== undefined ? ` at PASID ${s.pasid}` : ""}`;
};

/** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
export const detach: StepRunner<"detach"> = async (ctx, s) => {
  const dev = ctx.device(s.device);
  await vfioDeviceDetachPt(ctx.p, dev.fd, s.pasid);
  ctx.attached.delete(s.device);
  return `${s.device} detached (blocked)`;
};

/** IOMMU_FAULT_QUEUE_ALLOC: a fault object and its fd. */
export const faultQueueAlloc: StepRunner<"fault-queue-alloc"> = async (ctx, s) => {
  const cmd = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
  await ctx.p.ioctl(ctx.fd, IOMMU_FAULT_QUEUE_ALLOC, cmd);
  ctx.objects.set(s.as, { kind: "fault", id: cmd.out_fault_id, fd: cmd.out_fault_fd });
  return `fault queue ${s.as} = id ${cmd.out_fault_id}, fd ${cmd.out_fault_fd}`;
};

/** IOMMU_DESTROY of a named object. */
export const destroy: StepRunner<"destroy"> = async (ctx, s) => {
  const o = ctx.object(s.object);
  await iommuDestroy(ctx.p, ctx.fd, o.id);
  ctx.objects.delete(s.object);
  return `${o.kind} ${s.object} (id ${o.id}) destroyed`;
};

/** close() of an object's file (a fault queue or vEVENTQ). */
export const close: StepRunner<"close"> = async (ctx, s) => {
  const o = ctx.object(s.fd);
  if (o.fd === undefined) throw new StepError(`${s.fd} has no file`);
  await ctx.p.close(o.fd);
  o.fd = undefined;
  return `${s.fd}'s file closed`;
};

/**
 * Close the device's VFIO cdev: the device unbinds from iommufd. A vDEVICE still naming it is destroyed and its ID
 * kept as a tombstone (IOMMU_DESTROY of it is then ENOENT; the ID is not reused until iommufd closes).
 */
export const unbind: StepRunner<"unbind"> = async (ctx, s) => {
  const dev = ctx.device(s.device);
  await ctx.p.close(dev.fd);
  ctx.devices.delete(s.device);
  ctx.attached.delete(s.device);
  const tomb = ctx.tracer?.lines.filter(
    (l) => l.step === ctx.stepIndex + 1 && l.event === "iommufd:object_destroy" && l.tombstone === true,
  );
  const t = tomb && tomb.length > 0 ? `; tombstoned ${tomb.map((l) => `${l.type} id ${l.id}`).join(", ")}` : "";
  return `${s.device} unbound (dev_id ${dev.devId} released)${t}`;
};
