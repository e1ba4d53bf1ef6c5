/**
 * The vDEVICE object: a device's identity (its virtual ID, e.g. a vSID) inside one vIOMMU. It holds a users
 * reference on its vIOMMU but only the revocable wait count on its device, so unbinding the device is never
 * blocked by user space: the device's pre_destroy step destroys a vDEVICE user space still holds and leaves its
 * ID as a tombstone (IOMMU_DESTROY of it is ENOENT, the ID is never reused, close() frees it).
 * @linux drivers/iommu/iommufd/viommu.c (iommufd_vdevice_alloc_ioctl, iommufd_vdevice_abort,
 * iommufd_vdevice_destroy), drivers/iommu/iommufd/device.c (iommufd_device_remove_vdev), struct iommufd_vdevice
 */
import { type Device, devIommu, type IommuVdevice, kerr } from "@iommu-sim/core";
import { type IommufdDevice, iommufdGetDevice } from "./device.js";
import {
  IOMMUFD_OBJ,
  IommufdObject,
  iommufdLockObj,
  iommufdObjectAbortAndDestroy,
  iommufdObjectAlloc,
  iommufdObjectDestroyUser,
  iommufdObjectFinalize,
  iommufdObjectTombstoneUser,
  iommufdPutObject,
} from "./object.js";
import type { IommuVdeviceAlloc } from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import { type IommufdViommu, iommufdGetViommu } from "./viommu.js";

/**
 * A vDEVICE.
 * @linux struct iommufd_vdevice
 */
export class IommufdVdevice extends IommufdObject implements IommuVdevice {
  /** @linux iommufd_vdevice.viommu */
  viommu!: IommufdViommu;
  /** Held by the wait count only, revoked by the device's pre_destroy. @linux iommufd_vdevice.idev */
  idev!: IommufdDevice;
  /** @linux iommufd_vdevice.virt_id */
  virtId = 0;
  /** Driver state. */
  priv: unknown = undefined;
  /** @linux iommufd_vdevice.destroy */
  destroy: ((vdev: IommuVdevice) => void) | undefined = undefined;

  /** The physical device. */
  get dev(): Device {
    return this.idev.dev;
  }
}

/**
 * Undo a vDEVICE (also the second half of its destroy), under the device's group lock: the driver's part, its
 * slot in the vIOMMU, the vIOMMU reference, the device's back pointer.
 * @linux iommufd_vdevice_abort
 */
export function iommufdVdeviceAbort(obj: IommufdObject): void {
  const vdev = obj as IommufdVdevice;
  const viommu = vdev.viommu;
  const idev = vdev.idev;
  idev.igroup.lock.assertHeld();
  vdev.destroy?.(vdev);
  // May find nothing when the allocation failed at this very slot.
  viommu.vdevs.cmpxchg(vdev.virtId, vdev, undefined);
  viommu.users.dec();
  idev.vdev = undefined;
}

/**
 * Destroy a vDEVICE, then release the device's wait count (which lets a waiting unbind go on).
 * @linux iommufd_vdevice_destroy
 */
export async function iommufdVdeviceDestroy(obj: IommufdObject): Promise<void> {
  const vdev = obj as IommufdVdevice;
  const idev = vdev.idev;
  await idev.igroup.lock.lock();
  try {
    iommufdVdeviceAbort(vdev);
  } finally {
    idev.igroup.lock.unlock();
  }
  // Preemptible after mutex_unlock: a waiting unbind may run before the wait count is released.
  await idev.ictx.sched.preemptionPoint();
  iommufdPutObject(idev.ictx, idev);
}

/**
 * IOMMU_VDEVICE_ALLOC: give a bound device a virtual ID in a vIOMMU. EINVAL when they sit behind different
 * physical IOMMUs or the ID is out of range (the xarray's, or the driver's); EEXIST when the device already has a
 * vDEVICE or the ID is taken; ENOENT for bad IDs or a device being unbound.
 * @linux iommufd_vdevice_alloc_ioctl
 */
export async function iommufdVdeviceAllocIoctl(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuVdeviceAlloc;
  const ictx = ucmd.ictx;
  // virt_id indexes an xarray: ULONG_MAX in Linux, the exact-integer range here.
  if (cmd.virt_id > BigInt(Number.MAX_SAFE_INTEGER)) throw kerr("EINVAL", "virt_id out of range");
  const virtId = Number(cmd.virt_id);
  const viommu = iommufdGetViommu(ictx, cmd.viommu_id);
  try {
    const idev = iommufdGetDevice(ictx, cmd.dev_id);
    let keepIdev = false;
    try {
      if (viommu.iommuDev !== devIommu(idev.dev)?.iommuDev) {
        throw kerr("EINVAL", `${idev.dev.name} is not behind the vIOMMU's physical IOMMU`);
      }
      await idev.igroup.lock.lock();
      try {
        if (idev.destroying) throw kerr("ENOENT", `${idev} is being unbound`);
        if (idev.vdev) throw kerr("EEXIST", `${idev} already has a vDEVICE`);
        const vdev = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.VDEVICE, () => new IommufdVdevice());
        vdev.virtId = virtId;
        vdev.viommu = viommu;
        viommu.users.inc();
        // The wait count taken by the lookup stays with vdev->idev; the device's pre_destroy revokes it.
        vdev.idev = idev;
        idev.vdev = vdev;
        try {
          const curr = viommu.vdevs.cmpxchg(virtId, undefined, vdev);
          if (curr !== undefined) throw kerr("EEXIST", `virt_id ${virtId} is taken in ${viommu}`);
          await viommu.ops?.vdeviceInit?.(vdev);
          cmd.out_vdevice_id = vdev.id;
          ucmd.respond();
        } catch (e) {
          await iommufdObjectAbortAndDestroy(ictx, vdev);
          throw e;
        }
        iommufdObjectFinalize(ictx, vdev);
        keepIdev = true;
      } finally {
        idev.igroup.lock.unlock();
      }
    } finally {
      if (!keepIdev) iommufdPutObject(ictx, idev);
    }
  } finally {
    iommufdPutObject(ictx, viommu);
  }
}

/**
 * The device's pre_destroy step: refuse new vDEVICEs and destroy the one user space still holds, leaving its ID
 * as a tombstone. When a user IOMMU_DESTROY of it already took it out of the table, that destroy finishes on its
 * own and releases the device's wait count, which the unbind then waits for.
 * @linux iommufd_device_remove_vdev (called from iommufd_device_pre_destroy)
 */
export async function iommufdDeviceRemoveVdev(idev: IommufdDevice): Promise<void> {
  const ictx = idev.ictx;
  await idev.igroup.lock.lock();
  let vdev: IommufdVdevice | undefined;
  try {
    idev.destroying = true;
    const cur = idev.vdev;
    if (!cur) return;
    // iommufd_get_vdevice without its fault-injection point: this path must not fail spuriously.
    const obj = ictx.objects.load(cur.id);
    if (obj !== cur || !iommufdLockObj(cur)) return;
    // Hold a users reference against a racing user destroy, drop the short-term one.
    cur.users.inc();
    iommufdPutObject(ictx, cur);
    vdev = cur;
  } finally {
    idev.igroup.lock.unlock();
  }
  if (!vdev) return;
  // Preemptible between mutex_unlock and the tombstone: a racing IOMMU_DESTROY meets the users reference (EBUSY).
  await ictx.sched.preemptionPoint();
  // Test-only mutant "iommufd:missing-tombstone": a plain destroy frees the ID for reuse.
  if (ictx.core.machine.mutant("iommufd:missing-tombstone")) await iommufdObjectDestroyUser(ictx, vdev);
  else await iommufdObjectTombstoneUser(ictx, vdev);
}
