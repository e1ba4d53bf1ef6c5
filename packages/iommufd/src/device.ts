/**
 * Devices bound to an iommufd context (the kernel API VFIO uses) and their groups: bind claims DMA ownership,
 * attach/replace/detach move the device (or one of its PASIDs) between HWPTs, an attach to an IOAS finds or
 * creates an automatic domain. Also IOMMU_GET_HW_INFO.
 * @linux drivers/iommu/iommufd/device.c
 */
import {
  type Device,
  devIommu,
  devIommuOps,
  IOMMU_CAP,
  IOMMU_NO_PASID,
  type IommuAttachHandle,
  type IommuGroup,
  iommuAttachDevicePasid,
  iommuAttachGroupHandle,
  iommuAttachHandleGet,
  iommuDetachDevicePasid,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuGroupGet,
  iommuGroupPut,
  iommuReplaceDevicePasid,
  iommuReplaceGroupHandle,
  kerr,
  kfree,
  Mutex,
  Refcount,
} from "@iommu-sim/core";
import { type IommufdCtx, iommufdCtxGet, iommufdCtxPut } from "./ctx.js";
import { iommufdAutoResponseFaults } from "./fault.js";
import {
  findHwptPaging,
  type IommufdHwPagetable,
  type IommufdHwptPaging,
  iommufdHwptPagingAlloc,
} from "./hw-pagetable.js";
import { ioptRemoveReservedIova, ioptTableEnforceDevResvRegions } from "./io-pagetable.js";
import type { IommufdIoas } from "./ioas.js";
import {
  IOMMUFD_OBJ,
  IOMMUFD_OBJ_ANY,
  IommufdObject,
  iommufdGetObject,
  iommufdLockObj,
  iommufdObjectAbortAndDestroy,
  iommufdObjectAlloc,
  iommufdObjectDestroyUser,
  iommufdObjectFinalize,
  iommufdObjectPutAndTryDestroy,
  iommufdPutObject,
} from "./object.js";
import {
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_NONE,
  type IommuHwInfo,
} from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import type { IommufdVdevice } from "./vdevice.js";

/** Fault-injection site of the attach bookkeeping. @linux the kzalloc of struct iommufd_attach / handle */
export const IOMMUFD_ATTACH_ALLOC_SITE = "iommufd_attach_alloc";

/**
 * What is attached to one PASID (or the RID) of a group: the HWPT and the devices that attached.
 * @linux struct iommufd_attach
 */
export interface IommufdAttach {
  hwpt: IommufdHwPagetable | undefined;
  /** Devices by object ID. @linux iommufd_attach.device_array */
  devices: Map<number, IommufdDevice>;
}

/**
 * The context's view of an iommu_group.
 * @linux struct iommufd_group
 */
export class IommufdGroup {
  /** @linux iommufd_group.ref */
  readonly ref: Refcount;
  /** @linux iommufd_group.lock */
  readonly lock: Mutex;
  /** @linux iommufd_group.pasid_attach */
  readonly pasidAttach = new Map<number, IommufdAttach>();
  /** @linux iommufd_group.sw_msi_start */
  swMsiStart: number | undefined = undefined;

  constructor(
    readonly ictx: IommufdCtx,
    /** @linux iommufd_group.group */
    readonly group: IommuGroup,
  ) {
    this.ref = new Refcount(ictx.diag, `iommufd_group ${group.id}`, 1);
    this.lock = new Mutex(ictx.sched, "iommufd_group.lock");
  }
}

const GROUP_HOLDER = "iommufd_group";

/**
 * The iommufd group of `dev`'s iommu_group in this context, created on first use (takes a reference). ENODEV
 * without an iommu group.
 * @linux iommufd_get_group
 */
export function iommufdGetGroup(ictx: IommufdCtx, dev: Device): IommufdGroup {
  const group = iommuGroupGet(dev, GROUP_HOLDER);
  if (!group) throw kerr("ENODEV", `${dev.name} has no IOMMU group`);
  const cur = ictx.groups.get(group.id);
  if (cur?.ref.incNotZero()) {
    iommuGroupPut(group, GROUP_HOLDER);
    return cur;
  }
  try {
    ictx.faults.check("iommufd_group_alloc");
  } catch (e) {
    iommuGroupPut(group, GROUP_HOLDER);
    throw e;
  }
  const ig = new IommufdGroup(ictx, group);
  ictx.groups.set(group.id, ig);
  return ig;
}

/**
 * Drop a group reference; the last frees it.
 * @linux iommufd_put_group
 */
export function iommufdPutGroup(ig: IommufdGroup): void {
  if (!ig.ref.decAndTest()) return;
  ig.ictx.diag.warnOn(ig.pasidAttach.size !== 0, "iommufd_group freed while attached");
  if (ig.ictx.groups.get(ig.group.id) === ig) ig.ictx.groups.delete(ig.group.id);
  iommuGroupPut(ig.group, GROUP_HOLDER);
  kfree(ig.ictx.diag, ig, "iommufd_group");
}

/**
 * A device bound to a context.
 * @linux struct iommufd_device
 */
export class IommufdDevice extends IommufdObject {
  dev!: Device;
  igroup!: IommufdGroup;
  /** @linux iommufd_device.enforce_cache_coherency */
  enforceCacheCoherency = false;
  /** Set while being unbound (issue 5 uses it to refuse new vDEVICEs). @linux iommufd_device.destroying */
  destroying = false;
  /** Whether the binder holds a file reference on the context (not for selftest mock devices). */
  holdsCtx = true;
  /** The device's vDEVICE (issue 5, vdevice.ts), under the group lock. @linux iommufd_device.vdev */
  vdev: IommufdVdevice | undefined = undefined;
}

/** Options of {@link iommufdDeviceBind}. */
export interface IommufdBindOptions {
  /** Do not take a reference on the context's file (selftest mock devices). @linux iommufd_selftest_is_mock_dev */
  noCtxRef?: boolean;
}

/**
 * Bind `dev` to the context: claim its DMA ownership for the context (EPERM when another owner has it, EBUSY when
 * the group is not on its default domain) and publish a device object, on which the caller keeps a users
 * reference until {@link iommufdDeviceUnbind}. EINVAL when the IOMMU cannot enforce cache coherency.
 * @linux iommufd_device_bind
 */
export async function iommufdDeviceBind(
  ictx: IommufdCtx,
  dev: Device,
  opts: IommufdBindOptions = {},
): Promise<{ idev: IommufdDevice; id: number }> {
  if (!devIommu(dev)) throw kerr("ENODEV", `${dev.name} has no IOMMU`);
  const ops = devIommuOps(dev);
  if (!ops.capable?.(dev, IOMMU_CAP.CACHE_COHERENCY)) throw kerr("EINVAL", "no cache coherency");
  const igroup = iommufdGetGroup(ictx, dev);
  try {
    await iommuDeviceClaimDmaOwner(dev, ictx);
  } catch (e) {
    iommufdPutGroup(igroup);
    throw e;
  }
  let idev: IommufdDevice;
  try {
    idev = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.DEVICE, () => new IommufdDevice());
  } catch (e) {
    await iommuDeviceReleaseDmaOwner(dev);
    iommufdPutGroup(igroup);
    throw e;
  }
  idev.holdsCtx = !opts.noCtxRef;
  if (idev.holdsCtx) iommufdCtxGet(ictx);
  idev.dev = dev;
  idev.enforceCacheCoherency = ops.capable?.(dev, IOMMU_CAP.ENFORCE_CACHE_COHERENCY) ?? false;
  // The binding driver is a user until unbind.
  idev.users.inc();
  idev.igroup = igroup;
  iommufdObjectFinalize(ictx, idev);
  return { idev, id: idev.id };
}

/**
 * Unbind: destroy the device object once short-term users are gone (pre_destroy runs first). The device must be
 * detached by now.
 * @linux iommufd_device_unbind
 */
export async function iommufdDeviceUnbind(idev: IommufdDevice): Promise<void> {
  const ictx = idev.ictx;
  // The context reference goes last, after the object is gone (Linux defers that fput to task work).
  if ((await iommufdObjectDestroyUser(ictx, idev)) && idev.holdsCtx) await iommufdCtxPut(ictx);
}

/**
 * Mark the device as being destroyed before waiting for its short-term users (issue 5 revokes vDEVICEs here).
 * @linux iommufd_device_pre_destroy
 */
export async function iommufdDevicePreDestroy(obj: IommufdObject): Promise<void> {
  // Sets `destroying` and tombstones a live vDEVICE, releasing the wait count it holds (issue 5).
  const { iommufdDeviceRemoveVdev } = await import("./vdevice.js");
  await iommufdDeviceRemoveVdev(obj as IommufdDevice);
}

/**
 * Free a device object: release DMA ownership, the group, and the context reference.
 * @linux iommufd_device_destroy
 */
export async function iommufdDeviceDestroy(obj: IommufdObject): Promise<void> {
  const idev = obj as IommufdDevice;
  await iommuDeviceReleaseDmaOwner(idev.dev);
  iommufdPutGroup(idev.igroup);
}

/**
 * Look up a device object (ENOENT).
 * @linux iommufd_get_device
 */
export function iommufdGetDevice(ictx: IommufdCtx, id: number): IommufdDevice {
  return iommufdGetObject<IommufdDevice>(ictx, id, IOMMUFD_OBJ.DEVICE);
}

/** The context a device is bound to. @linux iommufd_device_to_ictx */
export function iommufdDeviceToIctx(idev: IommufdDevice): IommufdCtx {
  return idev.ictx;
}

/** The device's object ID. @linux iommufd_device_to_id */
export function iommufdDeviceToId(idev: IommufdDevice): number {
  return idev.id;
}

/** An attach handle of iommufd. @linux struct iommufd_attach_handle */
interface IommufdAttachHandle extends IommuAttachHandle {
  idev: IommufdDevice;
}

function groupFirstAttach(igroup: IommufdGroup, pasid: number): boolean {
  const a = igroup.pasidAttach.get(pasid);
  return !a || a.devices.size === 0;
}

function isAttached(idev: IommufdDevice, pasid: number): boolean {
  return igroupAttach(idev.igroup, pasid)?.devices.get(idev.id) === idev;
}

function igroupAttach(igroup: IommufdGroup, pasid: number): IommufdAttach | undefined {
  return igroup.pasidAttach.get(pasid);
}

/** EINVAL when the HWPT cannot serve this PASID (or RID) of the device. @linux iommufd_hwpt_pasid_compat */
function hwptPasidCompat(hwpt: IommufdHwPagetable, idev: IommufdDevice, pasid: number): void {
  if (pasid === IOMMU_NO_PASID) {
    // A RID attach of a PASID-compatible HWPT is fine; one without it blocks PASID use of the group.
    for (const [p, a] of idev.igroup.pasidAttach) {
      if (p !== IOMMU_NO_PASID && a.hwpt && !hwpt.pasidCompat) throw kerr("EINVAL", "group has PASID attachments");
    }
    return;
  }
  if (!hwpt.pasidCompat) throw kerr("EINVAL", "HWPT was not allocated for PASID use");
  const rid = idev.igroup.pasidAttach.get(IOMMU_NO_PASID);
  if (rid?.hwpt && !rid.hwpt.pasidCompat) throw kerr("EINVAL", "the RID is attached to a non-PASID HWPT");
}

async function attachReservedIova(idev: IommufdDevice, hwptPaging: IommufdHwptPaging | undefined): Promise<void> {
  if (!hwptPaging) return;
  const { swMsiStart } = await ioptTableEnforceDevResvRegions(hwptPaging.ioas.iopt, idev.dev);
  if (swMsiStart !== undefined) idev.igroup.swMsiStart ??= swMsiStart;
}

async function hwptAttachDevice(hwpt: IommufdHwPagetable, idev: IommufdDevice, pasid: number): Promise<void> {
  idev.ictx.faults.check(IOMMUFD_ATTACH_ALLOC_SITE);
  const handle: IommufdAttachHandle = { domain: undefined, idev };
  if (pasid === IOMMU_NO_PASID) await iommuAttachGroupHandle(hwpt.domain!, idev.igroup.group, handle);
  else await iommuAttachDevicePasid(hwpt.domain!, idev.dev, pasid, handle);
}

/** The attach handle recorded for the device's PASID (or RID), if any. @linux iommufd_device_get_attach_handle */
function deviceGetAttachHandle(idev: IommufdDevice, pasid: number): IommuAttachHandle | undefined {
  try {
    return iommuAttachHandleGet(idev.igroup.group, pasid, 0);
  } catch {
    return undefined;
  }
}

async function hwptDetachDevice(hwpt: IommufdHwPagetable, idev: IommufdDevice, pasid: number): Promise<void> {
  const handle = deviceGetAttachHandle(idev, pasid);
  if (pasid === IOMMU_NO_PASID) await iommuDetachGroupHandle(hwpt.domain!, idev.igroup.group);
  else await iommuDetachDevicePasid(hwpt.domain!, idev.dev, pasid);
  // Fault queues (issue 5): answer what the device left outstanding on this HWPT.
  await iommufdAutoResponseFaults(hwpt, handle);
}

async function hwptReplaceDevice(
  idev: IommufdDevice,
  pasid: number,
  hwpt: IommufdHwPagetable,
  old: IommufdHwPagetable,
): Promise<void> {
  idev.ictx.faults.check(IOMMUFD_ATTACH_ALLOC_SITE);
  const oldHandle = deviceGetAttachHandle(idev, pasid);
  const handle: IommufdAttachHandle = { domain: undefined, idev };
  if (pasid === IOMMU_NO_PASID) await iommuReplaceGroupHandle(idev.igroup.group, hwpt.domain, handle);
  else await iommuReplaceDevicePasid(hwpt.domain!, idev.dev, pasid, handle);
  // Fault queues (issue 5): the old attachment's outstanding groups are answered on the old HWPT's queue.
  await iommufdAutoResponseFaults(old, oldHandle);
}

/**
 * Attach the device (or its PASID) to `hwpt`, under the group lock. The group is attached once, by its first
 * device; the others follow (EINVAL when the group is on another HWPT). Reserved regions of the device are
 * enforced in the IOAS first. Takes a users reference on the HWPT.
 * @linux iommufd_hw_pagetable_attach
 */
export async function iommufdHwPagetableAttach(
  hwpt: IommufdHwPagetable,
  idev: IommufdDevice,
  pasid: number,
): Promise<void> {
  const igroup = idev.igroup;
  igroup.lock.assertHeld();
  const hwptPaging = findHwptPaging(hwpt);
  hwptPasidCompat(hwpt, idev, pasid);
  let attach = igroup.pasidAttach.get(pasid);
  const created = !attach;
  if (!attach) {
    idev.ictx.faults.check(IOMMUFD_ATTACH_ALLOC_SITE);
    attach = { hwpt: undefined, devices: new Map() };
    igroup.pasidAttach.set(pasid, attach);
  }
  const oldHwpt = attach.hwpt;
  try {
    if (attach.devices.has(idev.id)) throw kerr("EBUSY", `${idev} is already attached`);
    if (oldHwpt && oldHwpt !== hwpt) throw kerr("EINVAL", "the group is attached to another HWPT");
    const resv = pasid === IOMMU_NO_PASID;
    if (resv) await attachReservedIova(idev, hwptPaging);
    try {
      if (groupFirstAttach(igroup, pasid)) {
        await hwptAttachDevice(hwpt, idev, pasid);
        attach.hwpt = hwpt;
      }
    } catch (e) {
      if (resv && hwptPaging) await ioptRemoveReservedIova(hwptPaging.ioas.iopt, idev.dev);
      throw e;
    }
  } catch (e) {
    if (created) igroup.pasidAttach.delete(pasid);
    throw e;
  }
  hwpt.users.inc();
  attach.devices.set(idev.id, idev);
}

/**
 * Detach the device (or its PASID) from whatever it is attached to, under the group lock; the last device of the
 * group detaches the group. Returns the HWPT whose reference the caller must drop.
 * @linux iommufd_hw_pagetable_detach
 */
export async function iommufdHwPagetableDetach(
  idev: IommufdDevice,
  pasid: number,
): Promise<IommufdHwPagetable | undefined> {
  const igroup = idev.igroup;
  igroup.lock.assertHeld();
  const attach = igroup.pasidAttach.get(pasid);
  if (!attach?.devices.has(idev.id)) return undefined;
  const hwpt = attach.hwpt!;
  attach.devices.delete(idev.id);
  if (attach.devices.size === 0) {
    await hwptDetachDevice(hwpt, idev, pasid);
    igroup.pasidAttach.delete(pasid);
  }
  const paging = findHwptPaging(hwpt);
  if (paging && pasid === IOMMU_NO_PASID) await ioptRemoveReservedIova(paging.ioas.iopt, idev.dev);
  return hwpt;
}

/**
 * Drop the reference an attachment held: an auto domain is destroyed with its last device.
 * @linux iommufd_hw_pagetable_put
 */
export async function iommufdHwPagetablePut(ictx: IommufdCtx, hwpt: IommufdHwPagetable): Promise<void> {
  const paging = findHwptPaging(hwpt);
  if (paging?.autoDomain) {
    await iommufdObjectPutAndTryDestroy(ictx, hwpt);
    return;
  }
  hwpt.users.dec();
}

type DoAttach = (
  idev: IommufdDevice,
  pasid: number,
  hwpt: IommufdHwPagetable,
) => Promise<IommufdHwPagetable | undefined>;

/** @linux iommufd_device_do_attach */
async function doAttach(idev: IommufdDevice, pasid: number, hwpt: IommufdHwPagetable) {
  await idev.igroup.lock.lock();
  try {
    await iommufdHwPagetableAttach(hwpt, idev, pasid);
  } finally {
    idev.igroup.lock.unlock();
  }
  return undefined;
}

/**
 * Move the device's attachment to `hwpt` without going through blocking; returns the old HWPT for the caller to
 * put. EINVAL when the device is not attached.
 * @linux iommufd_device_do_replace
 */
async function doReplace(idev: IommufdDevice, pasid: number, hwpt: IommufdHwPagetable) {
  const igroup = idev.igroup;
  await igroup.lock.lock();
  try {
    const attach = igroup.pasidAttach.get(pasid);
    if (!attach) throw kerr("EINVAL", "not attached");
    const oldHwpt = attach.hwpt!;
    igroup.ictx.diag.warnOn(!oldHwpt || attach.devices.size === 0, "attach without HWPT or devices");
    if (!isAttached(idev, pasid)) throw kerr("EINVAL", `${idev} is not attached`);
    hwptPasidCompat(hwpt, idev, pasid);
    if (hwpt === oldHwpt) return undefined;
    const paging = findHwptPaging(hwpt);
    const oldPaging = findHwptPaging(oldHwpt);
    const resv = pasid === IOMMU_NO_PASID && paging !== undefined && paging.ioas !== oldPaging?.ioas;
    const done: IommufdDevice[] = [];
    try {
      if (resv) {
        for (const d of attach.devices.values()) {
          await attachReservedIova(d, paging);
          done.push(d);
        }
      }
      await hwptReplaceDevice(idev, pasid, hwpt, oldHwpt);
    } catch (e) {
      for (const d of done) await ioptRemoveReservedIova(paging!.ioas.iopt, d.dev);
      throw e;
    }
    if (oldPaging && pasid === IOMMU_NO_PASID && (!paging || paging.ioas !== oldPaging.ioas)) {
      for (const d of attach.devices.values()) await ioptRemoveReservedIova(oldPaging.ioas.iopt, d.dev);
    }
    attach.hwpt = hwpt;
    const n = attach.devices.size;
    // The device array's references move to the new HWPT; one stays for the caller to put.
    hwpt.users.add(n);
    if (n > 1) igroup.ictx.diag.warnOn(oldHwpt.users.subAndTest(n - 1), "old HWPT lost its last reference");
    return oldHwpt;
  } finally {
    igroup.lock.unlock();
  }
}

/**
 * Attach to an IOAS through an automatic paging HWPT: reuse a compatible auto domain of the IOAS (EINVAL from one
 * means incompatible, try the next), else allocate one. Writes the HWPT ID to `ptId`.
 * @linux iommufd_device_auto_get_domain
 */
async function autoGetDomain(
  idev: IommufdDevice,
  pasid: number,
  ioas: IommufdIoas,
  ptId: { id: number },
  attachFn: DoAttach,
): Promise<IommufdHwPagetable | undefined> {
  const immediate = attachFn === doAttach;
  await ioas.mutex.lock();
  try {
    for (const hwpt of [...ioas.hwptList]) {
      if (!hwpt.autoDomain) continue;
      if (!iommufdLockObj(hwpt)) continue;
      let destroy: IommufdHwPagetable | undefined;
      try {
        destroy = await attachFn(idev, pasid, hwpt);
      } catch (e) {
        iommufdPutObject(idev.ictx, hwpt);
        if ((e as { code?: string }).code === "EINVAL") continue;
        throw e;
      }
      ptId.id = hwpt.id;
      iommufdPutObject(idev.ictx, hwpt);
      return destroy;
    }
    const hwpt = await iommufdHwptPagingAlloc(idev.ictx, ioas, idev, pasid, 0, immediate, undefined);
    let destroy: IommufdHwPagetable | undefined;
    if (!immediate) {
      try {
        destroy = await attachFn(idev, pasid, hwpt);
      } catch (e) {
        await iommufdObjectAbortAndDestroy(idev.ictx, hwpt);
        throw e;
      }
    }
    hwpt.autoDomain = true;
    ptId.id = hwpt.id;
    iommufdObjectFinalize(idev.ictx, hwpt);
    return destroy;
  } finally {
    ioas.mutex.unlock();
  }
}

async function changePt(idev: IommufdDevice, pasid: number, ptId: { id: number }, fn: DoAttach): Promise<void> {
  const ictx = idev.ictx;
  const ptObj = iommufdGetObject(ictx, ptId.id, IOMMUFD_OBJ_ANY);
  let destroy: IommufdHwPagetable | undefined;
  try {
    switch (ptObj.type) {
      case IOMMUFD_OBJ.HWPT_NESTED:
      case IOMMUFD_OBJ.HWPT_PAGING:
        destroy = await fn(idev, pasid, ptObj as IommufdHwPagetable);
        break;
      case IOMMUFD_OBJ.IOAS:
        destroy = await autoGetDomain(idev, pasid, ptObj as IommufdIoas, ptId, fn);
        break;
      default:
        throw kerr("EINVAL", `object ${ptId.id} is not an IOAS or HWPT`);
    }
  } finally {
    iommufdPutObject(ictx, ptObj);
  }
  if (destroy) await iommufdHwPagetablePut(ictx, destroy);
}

/**
 * Attach the device (PASID `pasid`, or IOMMU_NO_PASID for the RID) to an IOAS or HWPT; for an IOAS, `ptId.id`
 * becomes the automatic HWPT's ID. ENOENT for a missing ID, EINVAL for a wrong type or an incompatible HWPT.
 * @linux iommufd_device_attach
 */
export async function iommufdDeviceAttach(idev: IommufdDevice, pasid: number, ptId: { id: number }): Promise<void> {
  await changePt(idev, pasid, ptId, doAttach);
}

/**
 * Replace the device's attachment with another IOAS or HWPT, without a window of blocked DMA.
 * @linux iommufd_device_replace
 */
export async function iommufdDeviceReplace(idev: IommufdDevice, pasid: number, ptId: { id: number }): Promise<void> {
  await changePt(idev, pasid, ptId, doReplace);
}

/**
 * Detach the device (or its PASID).
 * @linux iommufd_device_detach
 */
export async function iommufdDeviceDetach(idev: IommufdDevice, pasid: number): Promise<void> {
  await idev.igroup.lock.lock();
  let hwpt: IommufdHwPagetable | undefined;
  try {
    hwpt = await iommufdHwPagetableDetach(idev, pasid);
  } finally {
    idev.igroup.lock.unlock();
  }
  if (!hwpt) return;
  await iommufdHwPagetablePut(idev.ictx, hwpt);
}

/** The HWPT the device (or PASID) is attached to, if any. */
export function iommufdDeviceAttachedHwpt(idev: IommufdDevice, pasid = IOMMU_NO_PASID): IommufdHwPagetable | undefined {
  const a = idev.igroup.pasidAttach.get(pasid);
  return a?.devices.has(idev.id) ? a.hwpt : undefined;
}

/**
 * IOMMU_GET_HW_INFO: driver data into the user buffer (zero-filling the rest), its full length back in
 * `data_len`, the capabilities and PASID width.
 * @linux iommufd_get_hw_info
 */
export async function iommufdGetHwInfo(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwInfo;
  if (cmd.flags & ~IOMMU_HW_INFO_FLAG_INPUT_TYPE) throw kerr("EOPNOTSUPP", "unknown flags");
  if (cmd.__reserved.some((b) => b !== 0)) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  if (!(cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE)) cmd.out_data_type = IOMMU_HW_INFO_TYPE_DEFAULT;
  const idev = iommufdGetDevice(ucmd.ictx, cmd.dev_id);
  try {
    const ops = devIommuOps(idev.dev);
    let data: Uint8Array = new Uint8Array(0);
    if (ops.hwInfo) {
      const info = ops.hwInfo(idev.dev, cmd.out_data_type);
      if (ucmd.ictx.diag.warnOn(info.type === IOMMU_HW_INFO_TYPE_NONE, "hw_info without a type")) {
        throw kerr("EOPNOTSUPP");
      }
      data = info.data;
      cmd.out_data_type = info.type;
    } else {
      cmd.out_data_type = IOMMU_HW_INFO_TYPE_NONE;
    }
    const copyLen = Math.min(cmd.data_len, data.length);
    if (copyLen) ucmd.user.write(cmd.data_uptr, data.subarray(0, copyLen));
    if (copyLen < cmd.data_len)
      ucmd.user.write(cmd.data_uptr + BigInt(copyLen), new Uint8Array(cmd.data_len - copyLen));
    cmd.data_len = data.length;
    cmd.out_capabilities = 0n;
    if (ops.capable?.(idev.dev, IOMMU_CAP.DIRTY_TRACKING)) cmd.out_capabilities |= IOMMU_HW_CAP_DIRTY_TRACKING;
    cmd.out_max_pasid_log2 = 0;
    const maxPasids = devIommu(idev.dev)?.maxPasids ?? 0;
    if (maxPasids) cmd.out_max_pasid_log2 = Math.floor(Math.log2(maxPasids));
    ucmd.respond();
  } finally {
    iommufdPutObject(ucmd.ictx, idev);
  }
}
