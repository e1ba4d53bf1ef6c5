/**
 * Hardware page tables: a paging HWPT wraps an iommu_domain that mirrors an IOAS; HWPT_ALLOC creates one for a
 * device (flags NEST_PARENT, DIRTY_TRACKING, PASID), and the dirty-tracking ioctls read its dirty bits. Auto
 * domains (created when a device attaches to an IOAS directly) are freed when their last device detaches.
 * @linux drivers/iommu/iommufd/hw_pagetable.c, iova_bitmap.c
 */
import {
  devIommuOps,
  IOMMU_NO_PASID,
  type IommuDomain,
  type IommuUserData,
  iommuDomainFree,
  iommuPagingDomainAllocFlags,
  kerr,
} from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import { type IommufdDevice, iommufdGetDevice, iommufdHwPagetableAttach, iommufdHwPagetableDetach } from "./device.js";
import { iommufdHwptPutFault, iommufdHwptSetFaultId } from "./fault.js";
import {
  IOPT_IOVA_MAX,
  ioptReadAndClearDirtyData,
  ioptSetDirtyTracking,
  ioptTableAddDomain,
  ioptTableRemoveDomain,
} from "./io-pagetable.js";
import { type IommufdIoas, u64ToNum } from "./ioas.js";
import {
  IOMMUFD_OBJ,
  IOMMUFD_OBJ_ANY,
  IommufdObject,
  iommufdGetObject,
  iommufdObjectAbortAndDestroy,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdPutObject,
} from "./object.js";
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  type IommuHwptAlloc,
  type IommuHwptGetDirtyBitmap,
  type IommuHwptSetDirtyTracking,
  U64_MAX,
} from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";

/**
 * Common part of paging and nested HWPTs.
 * @linux struct iommufd_hw_pagetable
 */
export class IommufdHwPagetable extends IommufdObject {
  /** @linux iommufd_hw_pagetable.domain */
  domain: IommuDomain | undefined = undefined;
  /** Allocated with IOMMU_HWPT_ALLOC_PASID. @linux iommufd_hw_pagetable.pasid_compat */
  pasidCompat = false;
  /** The fault object page requests go to (issue 5). @linux iommufd_hw_pagetable.fault */
  fault: IommufdObject | undefined = undefined;
}

/**
 * A paging HWPT.
 * @linux struct iommufd_hwpt_paging
 */
export class IommufdHwptPaging extends IommufdHwPagetable {
  /** @linux iommufd_hwpt_paging.ioas */
  ioas!: IommufdIoas;
  /** Created for an attach to an IOAS; freed with its last device. @linux auto_domain */
  autoDomain = false;
  /** @linux enforce_cache_coherency */
  enforceCacheCoherency = false;
  /** @linux nest_parent */
  nestParent = false;
  /** Whether it is in the IOAS's hwpt_list (and its domain in the iopt). @linux !list_empty(&hwpt_item) */
  inList = false;
}

/** Find the paging HWPT of a HWPT (itself, or a nested one's parent). @linux find_hwpt_paging */
export function findHwptPaging(hwpt: IommufdHwPagetable): IommufdHwptPaging | undefined {
  if (hwpt instanceof IommufdHwptPaging) return hwpt;
  // A nested HWPT (issue 5, nested.ts) translates through its parent.
  if (hwpt.type === IOMMUFD_OBJ.HWPT_NESTED)
    return (hwpt as IommufdHwPagetable & { parent?: IommufdHwptPaging }).parent;
  return undefined;
}

/**
 * Destroy a paging HWPT: leave the IOAS, free the domain, drop the IOAS reference.
 * @linux iommufd_hwpt_paging_destroy
 */
export async function iommufdHwptPagingDestroy(obj: IommufdObject): Promise<void> {
  const hwpt = obj as IommufdHwptPaging;
  if (hwpt.inList) {
    const ioas = hwpt.ioas;
    await ioas.mutex.lock();
    const i = ioas.hwptList.indexOf(hwpt);
    if (i >= 0) ioas.hwptList.splice(i, 1);
    hwpt.inList = false;
    ioas.mutex.unlock();
    await ioptTableRemoveDomain(ioas.iopt, hwpt.domain!);
  }
  if (hwpt.domain) iommuDomainFree(hwpt.domain);
  // The fault object's reference (issue 5, fault.ts). @linux __iommufd_hwpt_destroy
  iommufdHwptPutFault(hwpt);
  hwpt.ioas.users.dec();
}

/**
 * Abort an unfinalized paging HWPT (the IOAS mutex is held by the creator, so the list is edited directly).
 * @linux iommufd_hwpt_paging_abort
 */
export async function iommufdHwptPagingAbort(obj: IommufdObject): Promise<void> {
  const hwpt = obj as IommufdHwptPaging;
  if (hwpt.inList) {
    const ioas = hwpt.ioas;
    const i = ioas.hwptList.indexOf(hwpt);
    if (i >= 0) ioas.hwptList.splice(i, 1);
    hwpt.inList = false;
    await ioptTableRemoveDomain(ioas.iopt, hwpt.domain!);
  }
  await iommufdHwptPagingDestroy(hwpt);
}

const VALID_PAGING_FLAGS =
  IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_FAULT_ID_VALID;

/**
 * Allocate a paging HWPT on `ioas` for `idev` (caller holds the IOAS mutex). With `immediateAttach` the device is
 * attached before the domain is filled, so its reserved regions are enforced first. EOPNOTSUPP for unknown flags
 * or what the driver cannot do. Returns an unfinalized object.
 * @linux iommufd_hwpt_paging_alloc
 */
export async function iommufdHwptPagingAlloc(
  ictx: IommufdCtx,
  ioas: IommufdIoas,
  idev: IommufdDevice,
  pasid: number,
  flags: number,
  immediateAttach: boolean,
  userData: IommuUserData | undefined,
): Promise<IommufdHwptPaging> {
  ioas.mutex.assertHeld();
  if (flags & ~VALID_PAGING_FLAGS || (userData && flags & IOMMU_HWPT_ALLOC_NEST_PARENT)) {
    throw kerr("EOPNOTSUPP", "unsupported HWPT flags");
  }
  const ops = devIommuOps(idev.dev);
  if (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING && !ops.domainAllocPagingFlags) {
    throw kerr("EOPNOTSUPP", "driver cannot track dirty pages");
  }
  // A nest parent cannot be faultable (upstream "Disallow allocating nested parent domain with fault ID"): refused
  // here, before the caller looks the fault object up.
  if (flags & IOMMU_HWPT_FAULT_ID_VALID && flags & IOMMU_HWPT_ALLOC_NEST_PARENT) {
    throw kerr("EOPNOTSUPP", "a nest parent cannot take a fault ID");
  }
  const hwpt = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.HWPT_PAGING, () => new IommufdHwptPaging());
  hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
  ioas.users.inc();
  hwpt.ioas = ioas;
  hwpt.nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
  try {
    if (userData) {
      if (!ops.domainAllocPagingFlags) throw kerr("EOPNOTSUPP", "driver takes no data");
      hwpt.domain = await ops.domainAllocPagingFlags(idev.dev, flags & ~IOMMU_HWPT_FAULT_ID_VALID, userData);
      const { iommuDomainInit, IOMMU_DOMAIN } = await import("@iommu-sim/core");
      iommuDomainInit(hwpt.domain, IOMMU_DOMAIN.UNMANAGED, ops, ictx.diag);
    } else {
      hwpt.domain = await iommuPagingDomainAllocFlags(idev.dev, flags & ~IOMMU_HWPT_FAULT_ID_VALID);
    }
    hwpt.domain.iommufd = hwpt;
    if (immediateAttach) {
      await idev.igroup.lock.lock();
      try {
        await iommufdHwPagetableAttach(hwpt, idev, pasid);
      } finally {
        idev.igroup.lock.unlock();
      }
      try {
        await ioptTableAddDomain(ioas.iopt, hwpt.domain);
      } catch (e) {
        await idev.igroup.lock.lock();
        const h = await iommufdHwPagetableDetach(idev, pasid);
        idev.igroup.lock.unlock();
        if (h) h.users.dec();
        throw e;
      }
    } else {
      await ioptTableAddDomain(ioas.iopt, hwpt.domain);
    }
    ioas.hwptList.push(hwpt);
    hwpt.inList = true;
    return hwpt;
  } catch (e) {
    await iommufdObjectAbortAndDestroy(ictx, hwpt);
    throw e;
  }
}

/**
 * IOMMU_HWPT_ALLOC for a paging HWPT on an IOAS. EINVAL when `pt_id` is missing or of a type that cannot parent
 * one, or data_type and data_len disagree; ENOENT for a bad device.
 * @linux iommufd_hwpt_alloc
 */
export async function iommufdHwptAlloc(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwptAlloc;
  const ictx = ucmd.ictx;
  if (cmd.__reserved || cmd.__reserved2) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  if (
    (cmd.data_type === IOMMU_HWPT_DATA_NONE && cmd.data_len) ||
    (cmd.data_type !== IOMMU_HWPT_DATA_NONE && !cmd.data_len)
  ) {
    throw kerr("EINVAL", "data_type and data_len disagree");
  }
  const idev = iommufdGetDevice(ictx, cmd.dev_id);
  try {
    let ptObj: IommufdObject;
    try {
      ptObj = iommufdGetObject(ictx, cmd.pt_id, IOMMUFD_OBJ_ANY);
    } catch {
      throw kerr("EINVAL", `pt_id ${cmd.pt_id} is not an IOAS or HWPT`);
    }
    try {
      if (ptObj.type !== IOMMUFD_OBJ.IOAS) {
        // Nested HWPTs on a nest parent or a vIOMMU (issue 5, nested.ts); EINVAL for other types.
        const { iommufdHwptAllocNestedUcmd } = await import("./nested.js");
        await iommufdHwptAllocNestedUcmd(ucmd, idev, ptObj);
        return;
      }
      const ioas = ptObj as IommufdIoas;
      const userData =
        cmd.data_len > 0 ? { type: cmd.data_type, data: ucmd.user.read(cmd.data_uptr, cmd.data_len) } : undefined;
      await ioas.mutex.lock();
      try {
        const hwpt = await iommufdHwptPagingAlloc(ictx, ioas, idev, IOMMU_NO_PASID, cmd.flags, false, userData);
        cmd.out_hwpt_id = hwpt.id;
        try {
          // Fault queues (issue 5, fault.ts): route the HWPT's page requests to the fault object.
          if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) iommufdHwptSetFaultId(ictx, hwpt, cmd.fault_id);
          ucmd.respond();
        } catch (e) {
          await iommufdObjectAbortAndDestroy(ictx, hwpt);
          throw e;
        }
        iommufdObjectFinalize(ictx, hwpt);
      } finally {
        ioas.mutex.unlock();
      }
    } finally {
      iommufdPutObject(ictx, ptObj);
    }
  } finally {
    iommufdPutObject(ictx, idev);
  }
}

/**
 * Look up a paging HWPT (ENOENT).
 * @linux iommufd_get_hwpt_paging
 */
export function iommufdGetHwptPaging(ictx: IommufdCtx, id: number): IommufdHwptPaging {
  return iommufdGetObject<IommufdHwptPaging>(ictx, id, IOMMUFD_OBJ.HWPT_PAGING);
}

/**
 * IOMMU_HWPT_SET_DIRTY_TRACKING.
 * @linux iommufd_hwpt_set_dirty_tracking
 */
export async function iommufdHwptSetDirtyTracking(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwptSetDirtyTracking;
  if (cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE || cmd.__reserved) throw kerr("EOPNOTSUPP", "bad flags");
  const hwpt = iommufdGetHwptPaging(ucmd.ictx, cmd.hwpt_id);
  try {
    await ioptSetDirtyTracking(hwpt.ioas.iopt, hwpt.domain!, (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0);
  } finally {
    iommufdPutObject(ucmd.ictx, hwpt);
  }
}

/**
 * Check a dirty-bitmap request against the IOAS alignment and its own page size.
 * @linux iommufd_check_iova_range
 */
function checkIovaRange(align: number, cmd: IommuHwptGetDirtyBitmap): { iova: number; length: number; pgsize: number } {
  const last = cmd.iova + cmd.length - 1n;
  if (cmd.length === 0n || last > U64_MAX) throw kerr("EOVERFLOW", "range wraps");
  if (cmd.iova > BigInt(IOPT_IOVA_MAX) || last > BigInt(IOPT_IOVA_MAX))
    throw kerr("EOVERFLOW", "beyond the IOVA space");
  const a = BigInt(align);
  if (cmd.iova % a || (last + 1n) % a) throw kerr("EINVAL", "not aligned to the IOAS");
  if (!cmd.page_size) throw kerr("EINVAL", "zero page size");
  if (cmd.iova % cmd.page_size || (last + 1n) % cmd.page_size) throw kerr("EINVAL", "not aligned to the page size");
  return { iova: Number(cmd.iova), length: Number(cmd.length), pgsize: u64ToNum(cmd.page_size) };
}

/**
 * A bitmap of dirty pages in user memory: bit i stands for page i of `pgsize` from `iova`; the user pointer may be
 * unaligned.
 * @linux struct iova_bitmap, iova_bitmap_set
 */
export class IovaBitmap {
  constructor(
    private readonly ucmd: IommufdUcmd,
    readonly iova: number,
    readonly length: number,
    readonly pgsize: number,
    readonly data: bigint,
  ) {}

  /** Mark [iova, iova + length) dirty. @linux iova_bitmap_set */
  set(iova: number, length: number): void {
    const first = Math.floor((Math.max(iova, this.iova) - this.iova) / this.pgsize);
    const lastByte = Math.min(iova + length, this.iova + this.length) - 1;
    const last = Math.floor((lastByte - this.iova) / this.pgsize);
    if (last < first) return;
    const b0 = Math.floor(first / 8);
    const b1 = Math.floor(last / 8);
    const bytes = this.ucmd.user.read(this.data + BigInt(b0), b1 - b0 + 1);
    for (let bit = first; bit <= last; bit++) bytes[Math.floor(bit / 8) - b0]! |= 1 << (bit % 8);
    this.ucmd.user.write(this.data + BigInt(b0), bytes);
  }
}

/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP: set a bit per dirty page in the user bitmap, clearing the dirty bits unless
 * NO_CLEAR.
 * @linux iommufd_hwpt_get_dirty_bitmap / iopt_read_and_clear_dirty_data
 */
export async function iommufdHwptGetDirtyBitmap(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwptGetDirtyBitmap;
  if (cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR || cmd.__reserved) throw kerr("EOPNOTSUPP", "bad flags");
  const hwpt = iommufdGetHwptPaging(ucmd.ictx, cmd.hwpt_id);
  try {
    const iopt = hwpt.ioas.iopt;
    if (!hwpt.domain!.dirtyOps) throw kerr("EOPNOTSUPP", "domain cannot track dirty pages");
    const { iova, length, pgsize } = checkIovaRange(iopt.iovaAlignment, cmd);
    const bitmap = new IovaBitmap(ucmd, iova, length, pgsize, cmd.data);
    await ioptReadAndClearDirtyData(iopt, hwpt.domain!, cmd.flags, iova, length, (i, l) => bitmap.set(i, l));
  } finally {
    iommufdPutObject(ucmd.ictx, hwpt);
  }
}
