/**
 * Nested translation: HWPTs whose stage-1 table user space owns, allocated on a nesting-parent paging HWPT or on a
 * vIOMMU from driver-typed data, and IOMMU_HWPT_INVALIDATE, which hands user-owned cache invalidations (an array
 * of driver-typed entries) to the nested domain or the vIOMMU and reports how many were handled.
 * @linux drivers/iommu/iommufd/hw_pagetable.c (iommufd_hwpt_nested_alloc, iommufd_viommu_alloc_hwpt_nested, the
 * nested and fault parts of iommufd_hwpt_alloc, iommufd_hwpt_nested_destroy / _abort, iommufd_hwpt_invalidate),
 * include/linux/iommu.h (iommu_copy_struct_from_user_array)
 */
import {
  copyStructFromUser,
  devIommu,
  devIommuOps,
  IOMMU_DOMAIN,
  type IommuUserData,
  type IommuUserDataArray,
  iommuDomainFree,
  kerr,
} from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import type { IommufdDevice } from "./device.js";
import { iommufdHwptPutFault, iommufdHwptSetFaultId } from "./fault.js";
import { IommufdHwPagetable, type IommufdHwptPaging } from "./hw-pagetable.js";
import {
  IOMMUFD_OBJ,
  IOMMUFD_OBJ_ANY,
  type IommufdObject,
  iommufdGetObject,
  iommufdObjectAbortAndDestroy,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdPutObject,
} from "./object.js";
import {
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
  type IommuHwptAlloc,
  type IommuHwptInvalidate,
} from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import type { IommufdUser } from "./user-glue.js";
import type { IommufdViommu } from "./viommu.js";

/**
 * A nested HWPT: a driver nested domain over its parent's stage 2, on the parent directly or through a vIOMMU.
 * @linux struct iommufd_hwpt_nested
 */
export class IommufdHwptNested extends IommufdHwPagetable {
  /** The nesting parent (the vIOMMU's for one allocated on a vIOMMU). @linux iommufd_hwpt_nested.parent */
  parent!: IommufdHwptPaging;
  /** The vIOMMU it was allocated on, which it holds instead of the parent. @linux iommufd_hwpt_nested.viommu */
  viommu: IommufdViommu | undefined = undefined;
}

/**
 * Free what every HWPT holds: its domain and its fault object reference.
 * @linux __iommufd_hwpt_destroy
 */
function hwptDestroyCommon(hwpt: IommufdHwPagetable): void {
  if (hwpt.domain) iommuDomainFree(hwpt.domain);
  hwpt.domain = undefined;
  iommufdHwptPutFault(hwpt);
}

/**
 * Destroy a nested HWPT: domain, fault reference, then the vIOMMU or parent reference.
 * @linux iommufd_hwpt_nested_destroy
 */
export function iommufdHwptNestedDestroy(obj: IommufdObject): void {
  const hwpt = obj as IommufdHwptNested;
  hwptDestroyCommon(hwpt);
  if (hwpt.viommu) hwpt.viommu.users.dec();
  else hwpt.parent.users.dec();
}

/**
 * Abort an unfinalized nested HWPT (the same as destroying it).
 * @linux iommufd_hwpt_nested_abort
 */
export function iommufdHwptNestedAbort(obj: IommufdObject): void {
  iommufdHwptNestedDestroy(obj);
}

/**
 * A nested HWPT on a nesting-parent paging HWPT through the device's driver. EOPNOTSUPP for flags other than
 * FAULT_ID_VALID and PASID, missing data or a driver without nesting; EINVAL for a parent that is an auto domain,
 * not a nest parent, or another driver's. Returns an unfinalized object.
 * @linux iommufd_hwpt_nested_alloc
 */
export async function iommufdHwptNestedAlloc(
  ictx: IommufdCtx,
  parent: IommufdHwptPaging,
  idev: IommufdDevice,
  flags: number,
  userData: IommuUserData | undefined,
): Promise<IommufdHwptNested> {
  const ops = devIommuOps(idev.dev);
  if (flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) || !userData || !ops.domainAllocNested) {
    throw kerr("EOPNOTSUPP", "cannot allocate a nested HWPT");
  }
  if (parent.autoDomain || !parent.nestParent || parent.domain?.owner !== ops) {
    throw kerr("EINVAL", `${parent} cannot parent a nested HWPT`);
  }
  const hwpt = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.HWPT_NESTED, () => new IommufdHwptNested());
  hwpt.parent = parent;
  parent.users.inc();
  try {
    // The fault object is iommufd's business, not the driver's.
    hwpt.domain = await ops.domainAllocNested(idev.dev, parent.domain!, flags & ~IOMMU_HWPT_FAULT_ID_VALID, userData);
    hwpt.domain.owner = ops;
    hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
    if (ictx.diag.warnOn(hwpt.domain.type !== IOMMU_DOMAIN.NESTED, "nested alloc returned a non-nested domain")) {
      throw kerr("EINVAL");
    }
  } catch (e) {
    await iommufdObjectAbortAndDestroy(ictx, hwpt);
    throw e;
  }
  return hwpt;
}

/**
 * A nested HWPT on a vIOMMU through the vIOMMU's ops (its parent is the vIOMMU's). EOPNOTSUPP without data or
 * without `allocDomainNested`; EINVAL for a device behind another physical IOMMU. Returns an unfinalized object.
 * @linux iommufd_viommu_alloc_hwpt_nested
 */
export async function iommufdViommuAllocHwptNested(
  ictx: IommufdCtx,
  viommu: IommufdViommu,
  idev: IommufdDevice,
  flags: number,
  userData: IommuUserData | undefined,
): Promise<IommufdHwptNested> {
  if (!userData) throw kerr("EOPNOTSUPP", "nested HWPT without data");
  const allocNested = viommu.ops?.allocDomainNested;
  if (!allocNested) throw kerr("EOPNOTSUPP", "vIOMMU cannot allocate nested domains");
  if (viommu.iommuDev !== devIommu(idev.dev)?.iommuDev) {
    throw kerr("EINVAL", `${idev.dev.name} is not behind the vIOMMU's physical IOMMU`);
  }
  const hwpt = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.HWPT_NESTED, () => new IommufdHwptNested());
  hwpt.viommu = viommu;
  viommu.users.inc();
  hwpt.parent = viommu.hwpt;
  try {
    hwpt.domain = await allocNested.call(viommu.ops, viommu, flags & ~IOMMU_HWPT_FAULT_ID_VALID, userData);
    hwpt.domain.owner = devIommuOps(idev.dev);
    hwpt.pasidCompat = (flags & IOMMU_HWPT_ALLOC_PASID) !== 0;
    if (ictx.diag.warnOn(hwpt.domain.type !== IOMMU_DOMAIN.NESTED, "nested alloc returned a non-nested domain")) {
      throw kerr("EINVAL");
    }
  } catch (e) {
    await iommufdObjectAbortAndDestroy(ictx, hwpt);
    throw e;
  }
  return hwpt;
}

/**
 * The nested branch of IOMMU_HWPT_ALLOC: `ptObj` (referenced by the caller) is a paging HWPT or a vIOMMU; any
 * other type is EINVAL. Allocates, attaches the fault object, responds and finalizes.
 * @linux iommufd_hwpt_alloc (the HWPT_PAGING and VIOMMU cases)
 */
export async function iommufdHwptAllocNestedUcmd(
  ucmd: IommufdUcmd,
  idev: IommufdDevice,
  ptObj: IommufdObject,
): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwptAlloc;
  const ictx = ucmd.ictx;
  const userData = cmd.data_len
    ? { type: cmd.data_type, data: ucmd.user.read(cmd.data_uptr, cmd.data_len) }
    : undefined;
  let hwpt: IommufdHwptNested;
  if (ptObj.type === IOMMUFD_OBJ.HWPT_PAGING) {
    hwpt = await iommufdHwptNestedAlloc(ictx, ptObj as IommufdHwptPaging, idev, cmd.flags, userData);
  } else if (ptObj.type === IOMMUFD_OBJ.VIOMMU) {
    hwpt = await iommufdViommuAllocHwptNested(ictx, ptObj as IommufdViommu, idev, cmd.flags, userData);
  } else {
    throw kerr("EINVAL", `pt_id ${cmd.pt_id} cannot parent a HWPT`);
  }
  try {
    // Fault queues (fault.ts): route the HWPT's page requests to the fault object.
    if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) iommufdHwptSetFaultId(ictx, hwpt, cmd.fault_id);
    hwpt.domain!.iommufd = hwpt;
    cmd.out_hwpt_id = hwpt.id;
    ucmd.respond();
  } catch (e) {
    await iommufdObjectAbortAndDestroy(ictx, hwpt);
    throw e;
  }
  iommufdObjectFinalize(ictx, hwpt);
}

/**
 * The user array of IOMMU_HWPT_INVALIDATE as drivers read it.
 * @linux struct iommu_user_data_array, iommu_copy_struct_from_user_array
 */
export class IommufdUserDataArray implements IommuUserDataArray {
  constructor(
    private readonly user: IommufdUser,
    private readonly uptr: bigint,
    readonly type: number,
    readonly entryLen: number,
    public entryNum: number,
  ) {}

  /** Entry `i`: copy_struct_from_user semantics, or the min/max length rule with `minLen`. */
  entry(i: number, size: number, minLen?: number): Uint8Array {
    if (i >= this.entryNum || !this.entryNum) throw kerr("EINVAL", `entry ${i} beyond the array`);
    if (minLen !== undefined && (this.entryLen < minLen || this.entryLen > size)) {
      throw kerr("EINVAL", `entry_len ${this.entryLen} does not fit [${minLen}, ${size}]`);
    }
    const bytes = this.user.read(this.uptr + BigInt(this.entryLen) * BigInt(i), this.entryLen);
    return copyStructFromUser(bytes, size);
  }
}

/**
 * IOMMU_HWPT_INVALIDATE: pass an array of driver-typed invalidation entries to a nested HWPT's domain or to a
 * vIOMMU. `entry_num` is written back with the number handled, on failure too. EOPNOTSUPP for a reserved field
 * or an object that cannot invalidate; EINVAL for entries without a pointer or length, or an object of another
 * type; ENOENT for a bad ID.
 * @linux iommufd_hwpt_invalidate
 */
export async function iommufdHwptInvalidate(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuHwptInvalidate;
  const ictx = ucmd.ictx;
  const array = new IommufdUserDataArray(ucmd.user, cmd.data_uptr, cmd.data_type, cmd.entry_len, cmd.entry_num);
  let done = 0;
  let failed: unknown;
  try {
    if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
    if (cmd.entry_num && (!cmd.data_uptr || !cmd.entry_len)) throw kerr("EINVAL", "entries without data");
    const ptObj = iommufdGetObject(ictx, cmd.hwpt_id, IOMMUFD_OBJ_ANY);
    try {
      let invalidate: () => Promise<void>;
      if (ptObj.type === IOMMUFD_OBJ.HWPT_NESTED) {
        const domain = (ptObj as IommufdHwptNested).domain;
        const inv = domain?.ops.cacheInvalidateUser;
        if (!domain || !inv) throw kerr("EOPNOTSUPP", `${ptObj} cannot invalidate`);
        invalidate = () => inv.call(domain.ops, domain, array);
      } else if (ptObj.type === IOMMUFD_OBJ.VIOMMU) {
        const viommu = ptObj as IommufdViommu;
        const inv = viommu.ops?.cacheInvalidate;
        if (!inv) throw kerr("EOPNOTSUPP", `${viommu} cannot invalidate`);
        invalidate = () => inv.call(viommu.ops, viommu, array);
      } else {
        throw kerr("EINVAL", `${ptObj} is not a nested HWPT or a vIOMMU`);
      }
      try {
        await invalidate();
      } finally {
        // A driver failing part-way still reports its progress.
        done = array.entryNum;
      }
    } finally {
      iommufdPutObject(ictx, ptObj);
    }
  } catch (e) {
    failed = e;
  }
  cmd.entry_num = done;
  ucmd.respond();
  if (failed !== undefined) throw failed;
}
