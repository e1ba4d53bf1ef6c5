/**
 * The vIOMMU object: a slice of a physical IOMMU that user space (a VMM) drives for one VM, built on a nesting
 * parent HWPT. It holds a users reference on that parent, maps the VM's virtual device IDs to vDEVICEs for the
 * driver, and carries the driver's ops (nested domains, cache invalidation, vDEVICE and HW-queue setup).
 * @linux drivers/iommu/iommufd/viommu.c (iommufd_viommu_alloc_ioctl, iommufd_viommu_destroy),
 * drivers/iommu/iommufd/driver.c (iommufd_viommu_find_dev, iommufd_viommu_get_vdev_id), struct iommufd_viommu
 */
import {
  type Device,
  devIommu,
  devIommuOps,
  type IommuDevice,
  type IommuDomain,
  type IommuUserData,
  type IommuViommu,
  type IommuViommuOps,
  kerr,
  RwSemaphore,
  XArray,
} from "@iommu-sim/core";
import { iommufdGetDevice } from "./device.js";
import { type IommufdHwptPaging, iommufdGetHwptPaging } from "./hw-pagetable.js";
import { iommufdAllocMmap, iommufdDestroyMmap } from "./mmap.js";
import { IOMMUFD_OBJ, IommufdObject, iommufdGetObject, iommufdObjectAllocUcmd, iommufdPutObject } from "./object.js";
import { IOMMU_VIOMMU_TYPE_DEFAULT, type IommuViommuAlloc } from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import type { IommufdVdevice } from "./vdevice.js";
import { iommufdViommuReportEvent } from "./veventq.js";

/** Fault-injection site of the per-vIOMMU vDEVICE table. @linux the xa_cmpxchg allocation of viommu->vdevs */
export const IOMMUFD_VIOMMU_VDEVS_SITE = "iommufd_viommu_vdevs";

/**
 * A vIOMMU.
 * @linux struct iommufd_viommu
 */
export class IommufdViommu extends IommufdObject implements IommuViommu {
  /** @linux iommufd_viommu.type */
  viommuType = IOMMU_VIOMMU_TYPE_DEFAULT;
  /** The nesting parent it holds a users reference on. @linux iommufd_viommu.hwpt */
  hwpt!: IommufdHwptPaging;
  /** @linux iommufd_viommu.iommu_dev */
  iommuDev: IommuDevice | undefined = undefined;
  /** @linux iommufd_viommu.ops */
  ops: IommuViommuOps | undefined = undefined;
  /** Driver state. */
  priv: unknown = undefined;
  /** virt_id -> vDEVICE. @linux iommufd_viommu.vdevs */
  vdevs!: XArray<IommufdVdevice>;
  /**
   * vEVENTQs by type (at most one per type; eventq.ts fills it under {@link veventqsRwsem}).
   * @linux iommufd_viommu.veventqs (a list in Linux, searched by type)
   */
  readonly veventqs = new Map<number, IommufdObject>();
  /** @linux iommufd_viommu.veventqs_rwsem */
  veventqsRwsem!: RwSemaphore;

  /** @linux iommufd_viommu.hwpt->common.domain */
  get parentDomain(): IommuDomain {
    return this.hwpt.domain!;
  }

  /** The physical device whose vDEVICE has `virtId`. @linux iommufd_viommu_find_dev */
  findDev(virtId: number): Device | undefined {
    return this.vdevs.load(virtId)?.idev.dev;
  }

  /** The virtual ID `dev` has in this vIOMMU; ENOENT when it has no vDEVICE here. @linux iommufd_viommu_get_vdev_id */
  getVdevId(dev: Device): number {
    let found: number | undefined;
    this.vdevs.forEach((_id, vdev) => {
      if (found === undefined && vdev.idev.dev === dev) found = vdev.virtId;
    });
    if (found === undefined) throw kerr("ENOENT", `${dev.name} has no vDEVICE in ${this}`);
    return found;
  }

  /**
   * Queue a driver event on this vIOMMU's vEVENTQ of `type` (see {@link iommufdViommuReportEvent}).
   * @linux iommufd_viommu_report_event
   */
  reportEvent(type: number, data: Uint8Array): Promise<void> {
    return iommufdViommuReportEvent(this, type, data);
  }

  /** Register a region of this vIOMMU for mmap (see {@link iommufdAllocMmap}). @linux iommufd_viommu_alloc_mmap */
  allocMmap(mmioAddr: number, length: number): number {
    return iommufdAllocMmap(this.ictx, this, mmioAddr, length);
  }

  /** Unregister it again. @linux iommufd_viommu_destroy_mmap */
  destroyMmap(offset: number): void {
    iommufdDestroyMmap(this.ictx, this, offset);
  }
}

/**
 * Look up a vIOMMU (ENOENT).
 * @linux iommufd_get_viommu
 */
export function iommufdGetViommu(ictx: IommufdUcmd["ictx"], id: number): IommufdViommu {
  return iommufdGetObject<IommufdViommu>(ictx, id, IOMMUFD_OBJ.VIOMMU);
}

/**
 * Destroy a vIOMMU: the driver's part, then the parent reference and the vDEVICE table.
 * @linux iommufd_viommu_destroy
 */
export function iommufdViommuDestroy(obj: IommufdObject): void {
  const viommu = obj as IommufdViommu;
  viommu.ops?.destroy?.(viommu);
  viommu.hwpt.users.dec();
  viommu.vdevs.destroy();
}

/**
 * IOMMU_VIOMMU_ALLOC: a vIOMMU of a driver `type` for the device's physical IOMMU on a nesting-parent paging HWPT,
 * with optional driver data in and out. EOPNOTSUPP for flags, the DEFAULT type or a type the driver lacks; ENOENT
 * for a bad device or HWPT; EINVAL when the HWPT is not a nest parent.
 * @linux iommufd_viommu_alloc_ioctl
 */
export async function iommufdViommuAllocIoctl(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuViommuAlloc;
  const ictx = ucmd.ictx;
  if (cmd.flags || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) throw kerr("EOPNOTSUPP", "bad flags or type");
  const idev = iommufdGetDevice(ictx, cmd.dev_id);
  try {
    const ops = devIommuOps(idev.dev);
    if (!ops.getViommuSize || !ops.viommuInit) throw kerr("EOPNOTSUPP", "driver has no vIOMMU");
    if (!ops.getViommuSize(idev.dev, cmd.type)) throw kerr("EOPNOTSUPP", `driver has no vIOMMU type ${cmd.type}`);
    const hwpt = iommufdGetHwptPaging(ictx, cmd.hwpt_id);
    try {
      if (!hwpt.nestParent) throw kerr("EINVAL", `${hwpt} is not a nesting parent`);
      const viommu = iommufdObjectAllocUcmd(ucmd, IOMMUFD_OBJ.VIOMMU, () => new IommufdViommu());
      viommu.vdevs = new XArray<IommufdVdevice>(ictx.faults, IOMMUFD_VIOMMU_VDEVS_SITE, 0);
      viommu.viommuType = cmd.type;
      viommu.hwpt = hwpt;
      hwpt.users.inc();
      viommu.veventqsRwsem = new RwSemaphore(ictx.sched, "iommufd_viommu.veventqs_rwsem");
      // A physical IOMMU is assumed not to be unplugged under a vIOMMU, as Linux does.
      viommu.iommuDev = devIommu(idev.dev)?.iommuDev;
      let userData: IommuUserData | undefined;
      if (cmd.data_len) {
        const uptr = cmd.data_uptr;
        const len = cmd.data_len;
        userData = {
          type: cmd.type,
          data: ucmd.user.read(uptr, len),
          copyToUser: (bytes) => ucmd.user.write(uptr, bytes.subarray(0, Math.min(len, bytes.length))),
        };
      }
      await ops.viommuInit(viommu, hwpt.domain!, userData);
      if (ictx.diag.warnOn(!viommu.ops, "viommu_init left viommu->ops unset")) throw kerr("EOPNOTSUPP");
      cmd.out_viommu_id = viommu.id;
      ucmd.respond();
    } finally {
      iommufdPutObject(ictx, hwpt);
    }
  } finally {
    iommufdPutObject(ictx, idev);
  }
}
