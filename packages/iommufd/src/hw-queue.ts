/**
 * HW queues: a queue in guest memory (at a nesting-parent IOVA) that the IOMMU hardware reads directly by
 * physical address, e.g. a virtual command queue. The core pins the queue's pages through an internal access and
 * locks their IOAS range (IOAS_UNMAP of it is EBUSY) for the queue's lifetime; queues may depend on one another
 * (a depended-on queue cannot be destroyed first).
 * @linux drivers/iommu/iommufd/viommu.c (iommufd_hw_queue_alloc_ioctl, iommufd_hw_queue_alloc_phys,
 * iommufd_hw_queue_destroy), include/linux/iommufd.h (struct iommufd_hw_queue, iommufd_hw_queue_depend/undepend)
 */
import { type IommuHwQueue, kerr, Mutex, Refcount } from "@iommu-sim/core";
import {
  IommufdAccess,
  iommufdAccessAttach,
  iommufdAccessDetach,
  iommufdAccessPinPages,
  iommufdAccessUnpinPages,
} from "./access.js";
import type { IommufdCtx } from "./ctx.js";
import { IOMMUFD_OBJ, IommufdObject, iommufdObjectAllocUcmd, iommufdPutObject } from "./object.js";
import { IOMMU_HW_QUEUE_TYPE_DEFAULT, type IommuHwQueueAlloc, U64_MAX } from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import { PAGE_SIZE } from "./user-glue.js";
import { type IommufdViommu, iommufdGetViommu } from "./viommu.js";

/** Fault-injection site of the internal access. @linux the object allocation of iommufd_access_create_internal */
export const IOMMUFD_HW_QUEUE_ACCESS_SITE = "iommufd_access_create_internal";

/**
 * A HW queue.
 * @linux struct iommufd_hw_queue
 */
export class IommufdHwQueue extends IommufdObject implements IommuHwQueue {
  /** @linux iommufd_hw_queue.viommu */
  viommu!: IommufdViommu;
  /** @linux iommufd_hw_queue.type */
  queueType = IOMMU_HW_QUEUE_TYPE_DEFAULT;
  /** @linux iommufd_hw_queue.base_addr */
  baseAddr = 0;
  /** @linux iommufd_hw_queue.length */
  length = 0;
  /** The internal access pinning (and locking) the queue's pages. @linux iommufd_hw_queue.access */
  access: IommufdAccess | undefined = undefined;
  /** Driver state. */
  priv: unknown = undefined;
  /** @linux iommufd_hw_queue.destroy */
  destroy: ((q: IommuHwQueue) => void) | undefined = undefined;

  /** @linux iommufd_hw_queue_depend (_iommufd_object_depend) */
  depend(other: IommuHwQueue): void {
    const o = other as IommufdHwQueue;
    if (this.ictx.diag.warnOn(o === this || o.ictx !== this.ictx, "bad HW queue dependency")) throw kerr("EINVAL");
    o.users.inc();
  }

  /** @linux iommufd_hw_queue_undepend (_iommufd_object_undepend) */
  undepend(other: IommuHwQueue): void {
    (other as IommufdHwQueue).users.dec();
  }
}

/** The page-aligned span a queue pins. */
function pinSpan(base: number, length: number): { iova: number; length: number; offset: number } {
  const offset = base % PAGE_SIZE;
  const iova = base - offset;
  return { iova, offset, length: Math.ceil((offset + length) / PAGE_SIZE) * PAGE_SIZE };
}

/** Lock (+1) or unlock (-1) the IOAS areas under a pinned span against unmap. @linux iopt_area.num_locks */
async function lockAreas(access: IommufdAccess, iova: number, length: number, delta: 1 | -1): Promise<void> {
  const iopt = access.ioasUnpin!.iopt;
  await iopt.iovaRwsem.downWrite();
  try {
    for (const area of iopt.areasIn(iova, iova + length - 1)) {
      if (delta < 0 && access.ictx.diag.warnOn(area.numLocks === 0, "unlock of an unlocked area")) continue;
      area.numLocks += delta;
    }
  } finally {
    iopt.iovaRwsem.upWrite();
  }
}

/**
 * An access that is not a user-visible object and takes no context reference, attached to `ioasId`.
 * @linux iommufd_access_create_internal + iommufd_access_attach_internal
 */
async function accessCreateInternal(ictx: IommufdCtx, ioasId: number): Promise<IommufdAccess> {
  ictx.faults.check(IOMMUFD_HW_QUEUE_ACCESS_SITE);
  const access = new IommufdAccess();
  access.type = IOMMUFD_OBJ.ACCESS;
  access.ictx = ictx;
  access.users = new Refcount(ictx.diag, "iommufd internal access users", 1);
  access.waitCnt = new Refcount(ictx.diag, "iommufd internal access wait_cnt", 1);
  // Locked areas refuse unmap before any access is asked to unpin, so there is nothing to do here.
  access.ops = { needsPinPages: true, unmap: () => {} };
  access.iovaAlignment = PAGE_SIZE;
  access.ioasLock = new Mutex(ictx.sched, "iommufd_access.ioas_lock");
  await iommufdAccessAttach(access, ioasId);
  return access;
}

/**
 * Pin the queue's guest memory (physically contiguous, else EFAULT) and lock its range; returns the access and
 * the queue's physical address. ENOENT when the range is not mapped.
 * @linux iommufd_hw_queue_alloc_phys
 */
async function hwQueueAllocPhys(
  viommu: IommufdViommu,
  base: number,
  length: number,
): Promise<{ access: IommufdAccess; basePa: number }> {
  const span = pinSpan(base, length);
  if (!Number.isSafeInteger(span.iova + span.length)) throw kerr("ERANGE", "queue beyond the IOVA space");
  const access = await accessCreateInternal(viommu.ictx, viommu.hwpt.ioas.id);
  try {
    const pas = await iommufdAccessPinPages(access, span.iova, span.length, 0);
    try {
      for (let i = 1; i < pas.length; i++) {
        if (pas[i] !== pas[i - 1]! + PAGE_SIZE) throw kerr("EFAULT", "queue memory is not physically contiguous");
      }
      await lockAreas(access, span.iova, span.length, 1);
    } catch (e) {
      await iommufdAccessUnpinPages(access, span.iova, span.length);
      throw e;
    }
    return { access, basePa: pas[0]! + span.offset };
  } catch (e) {
    await iommufdAccessDetach(access);
    throw e;
  }
}

/**
 * Destroy a HW queue: the driver's part, then unlock, unpin and drop its access, then the vIOMMU reference.
 * @linux iommufd_hw_queue_destroy
 */
export async function iommufdHwQueueDestroy(obj: IommufdObject): Promise<void> {
  const q = obj as IommufdHwQueue;
  q.destroy?.(q);
  const access = q.access;
  if (access) {
    const span = pinSpan(q.baseAddr, q.length);
    await lockAreas(access, span.iova, span.length, -1);
    await iommufdAccessUnpinPages(access, span.iova, span.length);
    await iommufdAccessDetach(access);
    q.access = undefined;
  }
  q.viommu?.users.dec();
}

/**
 * IOMMU_HW_QUEUE_ALLOC: a HW queue of a driver `type` at `index` over [nesting_parent_iova, +length). EOPNOTSUPP
 * for flags, the DEFAULT type or a type the driver lacks; EINVAL for a zero length; EOVERFLOW when the range
 * wraps; ENOENT for a bad vIOMMU or an unmapped range; the driver's errno for the index rules (EINVAL beyond its
 * queues, EEXIST for a taken index, EIO when the previous index is missing).
 * @linux iommufd_hw_queue_alloc_ioctl
 */
export async function iommufdHwQueueAllocIoctl(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwQueueAlloc;
  const ictx = ucmd.ictx;
  if (cmd.flags || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) throw kerr("EOPNOTSUPP", "bad flags or type");
  if (!cmd.length) throw kerr("EINVAL", "zero length");
  if (cmd.nesting_parent_iova + cmd.length - 1n > U64_MAX) throw kerr("EOVERFLOW", "queue range wraps");
  const viommu = iommufdGetViommu(ictx, cmd.viommu_id);
  try {
    const ops = viommu.ops;
    if (!ops?.getHwQueueSize || !ops.hwQueueInitPhys) throw kerr("EOPNOTSUPP", "vIOMMU has no HW queues");
    if (!ops.getHwQueueSize(viommu, cmd.type)) throw kerr("EOPNOTSUPP", `no HW queue type ${cmd.type}`);
    const q = iommufdObjectAllocUcmd(ucmd, IOMMUFD_OBJ.HW_QUEUE, () => new IommufdHwQueue());
    const last = cmd.nesting_parent_iova + cmd.length - 1n;
    // Nothing can be mapped beyond the exact-integer IOVA space.
    if (last > BigInt(Number.MAX_SAFE_INTEGER)) throw kerr("ENOENT", "queue range is not mapped");
    const base = Number(cmd.nesting_parent_iova);
    const length = Number(cmd.length);
    const { access, basePa } = await hwQueueAllocPhys(viommu, base, length);
    q.viommu = viommu;
    viommu.users.inc();
    q.access = access;
    q.queueType = cmd.type;
    q.length = length;
    q.baseAddr = base;
    await ops.hwQueueInitPhys(q, cmd.index, basePa);
    cmd.out_hw_queue_id = q.id;
    ucmd.respond();
  } finally {
    iommufdPutObject(ictx, viommu);
  }
}
