/**
 * A small model of VFIO's device character devices (`/dev/vfio/devices/vfioN`), the way a VMM reaches iommufd for
 * a physical device: open the node, VFIO_DEVICE_BIND_IOMMUFD to an iommufd fd of the same process (returns the
 * device object ID), VFIO_DEVICE_ATTACH_IOMMUFD_PT / DETACH_IOMMUFD_PT (optionally for a PASID), and close →
 * unbind. Only the physical-device ops of vfio-pci are modelled (no regions, no irqs, no legacy group path).
 * @linux drivers/vfio/device_cdev.c, drivers/vfio/vfio_main.c (vfio_device_fops, vfio_df_open/close),
 * drivers/vfio/iommufd.c (vfio_iommufd_physical_*), include/uapi/linux/vfio.h
 */
import {
  type IoctlArg as CoreIoctlArg,
  createToken,
  currentProcess,
  type Device,
  type File,
  type FileOperations,
  IOMMU_NO_PASID,
  kerr,
  type Machine,
  type Module,
  Mutex,
  type Process,
  provide,
  UapiStruct,
} from "@iommu-sim/core";
import { type IommufdCtx, iommufdCtxPut } from "./ctx.js";
import {
  type IommufdDevice,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "./device.js";
import { iommufdCtxFromFd } from "./module.js";
import { _IO } from "./uapi.js";
import { isUserPointer, userPointer } from "./user-ptr.js";
import { VFIO_BASE, VFIO_TYPE } from "./vfio-compat.js";

/** @linux VFIO_DEVICE_BIND_IOMMUFD */
export const VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18);
/** @linux VFIO_DEVICE_ATTACH_IOMMUFD_PT */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19);
/** @linux VFIO_DEVICE_DETACH_IOMMUFD_PT */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 20);
/** Attach a PASID of the device rather than its RID. @linux VFIO_DEVICE_ATTACH_PASID */
export const VFIO_DEVICE_ATTACH_PASID = 1 << 0;
/** @linux VFIO_DEVICE_DETACH_PASID */
export const VFIO_DEVICE_DETACH_PASID = 1 << 0;
/** Where VFIO device nodes live. @linux vfio_device_devnode ("vfio/devices/%s") */
export const VFIO_DEVICES_DIR = "/dev/vfio/devices";

/** @linux struct vfio_device_bind_iommufd */
export interface VfioDeviceBindIommufd {
  argsz: number;
  flags: number;
  iommufd: number;
  out_devid: number;
}
/** @linux struct vfio_device_bind_iommufd */
export const vfio_device_bind_iommufd = new UapiStruct<VfioDeviceBindIommufd>("vfio_device_bind_iommufd", [
  { name: "argsz", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "iommufd", type: "s32" },
  { name: "out_devid", type: "u32" },
]);

/** @linux struct vfio_device_attach_iommufd_pt */
export interface VfioDeviceAttachIommufdPt {
  argsz: number;
  flags: number;
  pt_id: number;
  pasid: number;
}
/** @linux struct vfio_device_attach_iommufd_pt */
export const vfio_device_attach_iommufd_pt = new UapiStruct<VfioDeviceAttachIommufdPt>(
  "vfio_device_attach_iommufd_pt",
  [
    { name: "argsz", type: "u32" },
    { name: "flags", type: "u32" },
    { name: "pt_id", type: "u32" },
    { name: "pasid", type: "u32" },
  ],
);

/** @linux struct vfio_device_detach_iommufd_pt */
export interface VfioDeviceDetachIommufdPt {
  argsz: number;
  flags: number;
  pasid: number;
}
/** @linux struct vfio_device_detach_iommufd_pt */
export const vfio_device_detach_iommufd_pt = new UapiStruct<VfioDeviceDetachIommufdPt>(
  "vfio_device_detach_iommufd_pt",
  [
    { name: "argsz", type: "u32" },
    { name: "flags", type: "u32" },
    { name: "pasid", type: "u32" },
  ],
);

/**
 * A device registered with VFIO (as vfio-pci does for the devices it binds).
 * @linux struct vfio_device
 */
export class VfioDevice {
  /** Bound files of the cdev path (at most one). @linux vfio_device.open_count */
  openCount = 0;
  /** @linux vfio_device.iommufd_device */
  iommufdDevice: IommufdDevice | undefined = undefined;
  /** @linux vfio_device.iommufd_attached */
  iommufdAttached = false;
  /** PASIDs attached through VFIO_DEVICE_ATTACH_PASID. @linux vfio_device.pasids */
  readonly pasids = new Set<number>();
  /** @linux vfio_device.dev_set->lock */
  readonly devSetLock: Mutex;

  constructor(
    machine: Machine,
    /** @linux vfio_device.dev */
    readonly dev: Device,
    /** @linux vfio_device.index */
    readonly index: number,
  ) {
    this.devSetLock = new Mutex(machine.scheduler, `vfio${index} dev_set lock`);
  }

  /** `vfioN`. @linux dev_name(&vfio_device.device) */
  get name(): string {
    return `vfio${this.index}`;
  }

  /** The node's path. */
  get path(): string {
    return `${VFIO_DEVICES_DIR}/${this.name}`;
  }
}

/**
 * One open file of a VFIO device node.
 * @linux struct vfio_device_file
 */
export class VfioDeviceFile {
  /** Set by a successful bind: other ioctls are refused before. @linux vfio_device_file.access_granted */
  accessGranted = false;
  /** @linux vfio_device_file.iommufd */
  iommufd: IommufdCtx | undefined = undefined;
  /** @linux vfio_device_file.devid */
  devid = 0;

  constructor(readonly device: VfioDevice) {}
}

/** The machine's VFIO devices. */
interface VfioCdevState {
  owner: Module | undefined;
  readonly byDev: Map<Device, VfioDevice>;
  readonly usedIndexes: Set<number>;
}

const VfioCdevToken = createToken<VfioCdevState>("iommufd.vfioCdev");

function stateOf(machine: Machine): VfioCdevState {
  const c = machine.container;
  if (!c.isRegistered(VfioCdevToken, true)) {
    provide(c, VfioCdevToken, { owner: undefined, byDev: new Map(), usedIndexes: new Set<number>() });
  }
  return c.resolve(VfioCdevToken);
}

function callerMm() {
  const p = currentProcess();
  if (!p) throw kerr("EFAULT", "no calling process");
  return p.mm;
}

/** An argument in object form, bytes or a user pointer, decoded; `argsz` of 0 in object form means the whole struct. */
function copyIn<T extends { argsz: number }>(arg: CoreIoctlArg, st: UapiStruct<T>, minsz: number): T {
  if (arg === null) throw kerr("EFAULT", "null ioctl argument");
  if (isUserPointer(arg)) {
    // copy_from_user(minsz), then the fields past minsz the caller's argsz covers.
    const va = userPointer(arg);
    const mm = callerMm();
    const head = mm.read(va, minsz);
    const argsz = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
    arg = argsz > minsz ? mm.read(va, Math.min(argsz, st.size)) : head;
  }
  if (arg instanceof Uint8Array) {
    if (arg.byteLength < minsz) throw kerr("EFAULT", "argument shorter than its minimum size");
    const full = new Uint8Array(st.size);
    full.set(arg.subarray(0, Math.min(arg.byteLength, st.size)));
    return st.decode(full);
  }
  const cmd = st.decode(st.encode(arg as Partial<Record<keyof T & string, never>>));
  if ((arg as { argsz?: unknown }).argsz === undefined || (arg as { argsz?: unknown }).argsz === 0) {
    cmd.argsz = st.size;
  }
  return cmd;
}

/** Write one u32 field back to the caller. @linux copy_to_user(&arg->field, ...) */
function copyOutU32<T extends object>(
  arg: CoreIoctlArg,
  st: UapiStruct<T>,
  name: keyof T & string,
  value: number,
): void {
  if (isUserPointer(arg)) {
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, value >>> 0, true);
    callerMm().write(userPointer(arg) + BigInt(st.field(name).offset), out);
  } else if (arg instanceof Uint8Array) {
    const f = st.field(name);
    if (f.offset + 4 > arg.byteLength) throw kerr("EFAULT", `${name} is beyond the caller's buffer`);
    new DataView(arg.buffer, arg.byteOffset, arg.byteLength).setUint32(f.offset, value >>> 0, true);
  } else if (arg !== null) {
    (arg as Record<string, unknown>)[name] = value;
  }
}

/**
 * VFIO_DEVICE_BIND_IOMMUFD: bind the device to the iommufd behind fd `iommufd` of the calling process and return
 * the device object ID in `out_devid`. EINVAL for a short argsz, non-zero flags, a negative fd, a file already
 * bound, or a device another file has bound; EBADF / EBADFD for an fd that is not open / not /dev/iommu; the
 * errno of iommufd_device_bind otherwise (EPERM or EBUSY when DMA ownership cannot be claimed).
 * @linux vfio_df_ioctl_bind_iommufd
 */
export async function vfioDfIoctlBindIommufd(df: VfioDeviceFile, arg: CoreIoctlArg, current: Process): Promise<void> {
  const device = df.device;
  const minsz = vfio_device_bind_iommufd.offsetofend("out_devid");
  const bind = copyIn(arg, vfio_device_bind_iommufd, minsz);
  if (bind.argsz < minsz || bind.flags || bind.iommufd < 0) throw kerr("EINVAL", "bad argsz, flags or fd");
  await device.devSetLock.lock();
  try {
    // One file binds once.
    if (df.accessGranted) throw kerr("EINVAL", `${device.name} file is already bound`);
    const ictx = iommufdCtxFromFd(current, bind.iommufd);
    try {
      await vfioDfOpen(df, ictx);
    } catch (e) {
      await iommufdCtxPut(ictx);
      throw e;
    }
    df.iommufd = ictx;
    try {
      copyOutU32(arg, vfio_device_bind_iommufd, "out_devid", df.devid);
    } catch (e) {
      await vfioDfClose(df);
      df.iommufd = undefined;
      await iommufdCtxPut(ictx);
      throw e;
    }
    df.accessGranted = true;
  } finally {
    device.devSetLock.unlock();
  }
}

/**
 * Open the device for a cdev file: the cdev path allows one opener; the first open binds the device to iommufd.
 * @linux vfio_df_open / vfio_df_device_first_open / vfio_iommufd_physical_bind
 */
async function vfioDfOpen(df: VfioDeviceFile, ictx: IommufdCtx): Promise<void> {
  const device = df.device;
  device.devSetLock.assertHeld();
  // Only the group path may open a device twice; the cdev path has no safe way to.
  if (device.openCount !== 0) throw kerr("EINVAL", `${device.name} is already open`);
  const { idev, id } = await iommufdDeviceBind(ictx, device.dev);
  device.iommufdDevice = idev;
  device.openCount++;
  df.devid = id;
}

/**
 * Close the device: detach everything it attached and unbind it from iommufd.
 * @linux vfio_df_close / vfio_iommufd_physical_unbind
 */
async function vfioDfClose(df: VfioDeviceFile): Promise<void> {
  const device = df.device;
  device.devSetLock.assertHeld();
  const idev = device.iommufdDevice;
  if (!idev) return;
  for (const pasid of [...device.pasids]) {
    await iommufdDeviceDetach(idev, pasid);
    device.pasids.delete(pasid);
  }
  if (device.iommufdAttached) {
    await iommufdDeviceDetach(idev, IOMMU_NO_PASID);
    device.iommufdAttached = false;
  }
  await iommufdDeviceUnbind(idev);
  device.iommufdDevice = undefined;
  device.openCount--;
  df.devid = 0;
}

/**
 * Undo a bind when the file goes away.
 * @linux vfio_df_unbind_iommufd
 */
export async function vfioDfUnbindIommufd(df: VfioDeviceFile): Promise<void> {
  if (!df.accessGranted) return;
  const device = df.device;
  await device.devSetLock.lock();
  try {
    await vfioDfClose(df);
    df.accessGranted = false;
  } finally {
    device.devSetLock.unlock();
  }
  const ictx = df.iommufd;
  df.iommufd = undefined;
  if (ictx) await iommufdCtxPut(ictx);
}

/**
 * VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach (or replace the attachment of) the device, or one PASID of it, to an
 * IOAS or HWPT; `pt_id` returns the HWPT used. EINVAL for a short argsz or unknown flags; errno of
 * iommufd_device_attach / replace otherwise.
 * @linux vfio_df_ioctl_attach_pt / vfio_iommufd_physical_attach_ioas / vfio_iommufd_physical_pasid_attach_ioas
 */
export async function vfioDfIoctlAttachPt(df: VfioDeviceFile, arg: CoreIoctlArg): Promise<void> {
  const device = df.device;
  const minsz = vfio_device_attach_iommufd_pt.offsetofend("pt_id");
  const attach = copyIn(arg, vfio_device_attach_iommufd_pt, minsz);
  if (attach.argsz < minsz) throw kerr("EINVAL", "argsz too small");
  if (attach.flags & ~VFIO_DEVICE_ATTACH_PASID) throw kerr("EINVAL", "unknown flags");
  const withPasid = (attach.flags & VFIO_DEVICE_ATTACH_PASID) !== 0;
  if (withPasid && attach.argsz < vfio_device_attach_iommufd_pt.offsetofend("pasid")) {
    throw kerr("EINVAL", "argsz too small for a PASID");
  }
  await device.devSetLock.lock();
  try {
    const idev = device.iommufdDevice;
    if (!idev) throw kerr("EINVAL", `${device.name} is not bound`);
    const pt = { id: attach.pt_id };
    if (withPasid) {
      if (device.pasids.has(attach.pasid)) {
        await iommufdDeviceReplace(idev, attach.pasid, pt);
      } else {
        await iommufdDeviceAttach(idev, attach.pasid, pt);
        device.pasids.add(attach.pasid);
      }
    } else {
      if (device.iommufdAttached) await iommufdDeviceReplace(idev, IOMMU_NO_PASID, pt);
      else await iommufdDeviceAttach(idev, IOMMU_NO_PASID, pt);
      device.iommufdAttached = true;
    }
    copyOutU32(arg, vfio_device_attach_iommufd_pt, "pt_id", pt.id);
  } finally {
    device.devSetLock.unlock();
  }
}

/**
 * VFIO_DEVICE_DETACH_IOMMUFD_PT: detach the device (or one PASID); detaching what is not attached does nothing.
 * EINVAL for a short argsz or unknown flags.
 * @linux vfio_df_ioctl_detach_pt / vfio_iommufd_physical_detach_ioas / vfio_iommufd_physical_pasid_detach_ioas
 */
export async function vfioDfIoctlDetachPt(df: VfioDeviceFile, arg: CoreIoctlArg): Promise<void> {
  const device = df.device;
  const minsz = vfio_device_detach_iommufd_pt.offsetofend("flags");
  const detach = copyIn(arg, vfio_device_detach_iommufd_pt, minsz);
  if (detach.argsz < minsz) throw kerr("EINVAL", "argsz too small");
  if (detach.flags & ~VFIO_DEVICE_DETACH_PASID) throw kerr("EINVAL", "unknown flags");
  const withPasid = (detach.flags & VFIO_DEVICE_DETACH_PASID) !== 0;
  if (withPasid && detach.argsz < vfio_device_detach_iommufd_pt.offsetofend("pasid")) {
    throw kerr("EINVAL", "argsz too small for a PASID");
  }
  await device.devSetLock.lock();
  try {
    const idev = device.iommufdDevice;
    if (!idev) return;
    if (withPasid) {
      if (!device.pasids.has(detach.pasid)) return;
      await iommufdDeviceDetach(idev, detach.pasid);
      device.pasids.delete(detach.pasid);
    } else if (device.iommufdAttached) {
      await iommufdDeviceDetach(idev, IOMMU_NO_PASID);
      device.iommufdAttached = false;
    }
  } finally {
    device.devSetLock.unlock();
  }
}

function vfioDeviceFops(device: VfioDevice, owner: Module | undefined): FileOperations {
  return {
    ...(owner ? { owner } : {}),
    open: (file: File): void => {
      file.privateData = new VfioDeviceFile(device);
    },
    release: async (file: File): Promise<void> => {
      await vfioDfUnbindIommufd(file.privateData as VfioDeviceFile);
    },
    ioctl: async (file: File, cmd: number, arg: CoreIoctlArg, current: Process): Promise<number> => {
      const df = file.privateData as VfioDeviceFile;
      if (cmd === VFIO_DEVICE_BIND_IOMMUFD) {
        await vfioDfIoctlBindIommufd(df, arg, current);
        return 0;
      }
      // Everything else needs a bound device.
      if (!df.accessGranted) throw kerr("EINVAL", `${device.name}: not bound to iommufd`);
      switch (cmd) {
        case VFIO_DEVICE_ATTACH_IOMMUFD_PT:
          await vfioDfIoctlAttachPt(df, arg);
          return 0;
        case VFIO_DEVICE_DETACH_IOMMUFD_PT:
          await vfioDfIoctlDetachPt(df, arg);
          return 0;
        default:
          throw kerr("ENOTTY", `${device.name}: unknown ioctl 0x${cmd.toString(16)}`);
      }
    },
  };
}

/**
 * Register `dev` with VFIO and create its node `/dev/vfio/devices/vfioN` (lowest free N). EINVAL for a device
 * without an IOMMU group; EEXIST when it is registered already.
 * @linux vfio_register_group_dev (vfio_device_add: cdev_device_add)
 */
export function vfioRegisterDevice(machine: Machine, dev: Device): VfioDevice {
  const st = stateOf(machine);
  if (st.byDev.has(dev)) throw kerr("EEXIST", `${dev.name} is already a VFIO device`);
  if (dev.iommuGroup === undefined) throw kerr("EINVAL", `${dev.name} has no IOMMU group`);
  let index = 0;
  while (st.usedIndexes.has(index)) index++;
  const vdev = new VfioDevice(machine, dev, index);
  machine.chrdevs.register(vdev.path, vfioDeviceFops(vdev, st.owner));
  st.usedIndexes.add(index);
  st.byDev.set(dev, vdev);
  return vdev;
}

/**
 * Remove a device's VFIO node (files already open keep working until closed).
 * @linux vfio_unregister_group_dev
 */
export function vfioUnregisterDevice(machine: Machine, dev: Device): void {
  const st = stateOf(machine);
  const vdev = st.byDev.get(dev);
  if (!vdev) return;
  machine.chrdevs.unregister(vdev.path);
  st.byDev.delete(dev);
  st.usedIndexes.delete(vdev.index);
}

/** The VFIO device of `dev`, if registered. */
export function vfioDeviceOf(machine: Machine, dev: Device): VfioDevice | undefined {
  return stateOf(machine).byDev.get(dev);
}

/**
 * Register every device that sits in an IOMMU group (module init).
 * @linux vfio_init + vfio-pci binding the devices it drives
 */
export function vfioCdevInit(machine: Machine, owner?: Module): void {
  const st = stateOf(machine);
  st.owner = owner;
  for (const dev of machine.driverCore.devices()) {
    if (dev.iommuGroup !== undefined && !st.byDev.has(dev)) vfioRegisterDevice(machine, dev);
  }
}

/**
 * Remove every VFIO node (module exit).
 * @linux vfio_cleanup
 */
export function vfioCdevExit(machine: Machine): void {
  const st = stateOf(machine);
  for (const dev of [...st.byDev.keys()]) vfioUnregisterDevice(machine, dev);
}
