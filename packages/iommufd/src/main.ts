/**
 * The object table and the command table: which object types exist (with their destroy/abort/pre_destroy ops)
 * and which ioctls, with their structs and minimum sizes. Both are DI multi-registrations, so other packages add
 * their own next to these.
 * @linux iommufd_object_ops[] and iommufd_ioctl_ops[] (drivers/iommu/iommufd/main.c)
 */
import type { DependencyContainer } from "@iommu-sim/core";
import { iommufdAccessDestroyObject } from "./access.js";
import type { UapiStruct } from "./core-user.js";
import { iommufdDeviceDestroy, iommufdDevicePreDestroy, iommufdGetHwInfo } from "./device.js";
import { iommufdEventqFileOf } from "./eventq.js";
import { iommufdFaultAlloc, iommufdFaultDestroy } from "./fault.js";
import {
  iommufdHwptAlloc,
  iommufdHwptGetDirtyBitmap,
  iommufdHwptPagingAbort,
  iommufdHwptPagingDestroy,
  iommufdHwptSetDirtyTracking,
} from "./hw-pagetable.js";
// issue 5: nested HWPTs, vIOMMU, vDEVICE, HW queue
import { iommufdHwQueueAllocIoctl, iommufdHwQueueDestroy } from "./hw-queue.js";
import {
  iommufdIoasAllocIoctl,
  iommufdIoasAllowIovas,
  iommufdIoasChangeProcess,
  iommufdIoasCopy,
  iommufdIoasDestroy,
  iommufdIoasIovaRanges,
  iommufdIoasMap,
  iommufdIoasMapFile,
  iommufdIoasUnmap,
} from "./ioas.js";
import { iommufdHwptInvalidate, iommufdHwptNestedAbort, iommufdHwptNestedDestroy } from "./nested.js";
import { IOMMUFD_OBJ, iommufdObjectRemove } from "./object.js";
import { iommufdOption } from "./option.js";
import { type IommufdIoctlOp, type IommufdObjectTypeOps, IommufdTokens } from "./tokens.js";
import * as U from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import { iommufdVdeviceAbort, iommufdVdeviceAllocIoctl, iommufdVdeviceDestroy } from "./vdevice.js";
import { iommufdVeventqAbort, iommufdVeventqAlloc, iommufdVeventqDestroy } from "./veventq.js";
import { iommufdVfioIoas } from "./vfio-compat.js";
import { iommufdViommuAllocIoctl, iommufdViommuDestroy } from "./viommu.js";

/**
 * IOMMU_DESTROY: remove an object user space created; EBUSY while others use it, ENOENT for an unknown ID.
 * @linux iommufd_destroy
 */
export function iommufdDestroy(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as U.IommuDestroy;
  return iommufdObjectRemove(ucmd.ictx, undefined, cmd.id, 0);
}

/** The object types of this package. @linux iommufd_object_ops[] */
export const IOMMUFD_OBJECT_TYPES: readonly IommufdObjectTypeOps[] = [
  { type: IOMMUFD_OBJ.ACCESS, destroy: iommufdAccessDestroyObject },
  { type: IOMMUFD_OBJ.DEVICE, destroy: iommufdDeviceDestroy, preDestroy: iommufdDevicePreDestroy },
  { type: IOMMUFD_OBJ.IOAS, destroy: iommufdIoasDestroy },
  { type: IOMMUFD_OBJ.HWPT_PAGING, destroy: iommufdHwptPagingDestroy, abort: iommufdHwptPagingAbort },
  { type: IOMMUFD_OBJ.HWPT_NESTED, destroy: iommufdHwptNestedDestroy, abort: iommufdHwptNestedAbort },
  { type: IOMMUFD_OBJ.VIOMMU, destroy: iommufdViommuDestroy },
  { type: IOMMUFD_OBJ.VDEVICE, destroy: iommufdVdeviceDestroy, abort: iommufdVdeviceAbort },
  { type: IOMMUFD_OBJ.HW_QUEUE, destroy: iommufdHwQueueDestroy },
  // Fault queues and vEVENTQs carry a file (file_offset).
  { type: IOMMUFD_OBJ.FAULT, destroy: iommufdFaultDestroy, fileOf: iommufdEventqFileOf },
  {
    type: IOMMUFD_OBJ.VEVENTQ,
    destroy: iommufdVeventqDestroy,
    abort: iommufdVeventqAbort,
    fileOf: iommufdEventqFileOf,
  },
];

function op<T extends object>(
  nr: number,
  struct: UapiStruct<T>,
  last: keyof T & string,
  execute: (ucmd: IommufdUcmd) => Promise<void> | void,
): IommufdIoctlOp {
  return {
    nr,
    ioctlNum: U._IO(U.IOMMUFD_TYPE, nr),
    struct: struct as unknown as UapiStruct<object>,
    minSize: struct.offsetofend(last),
    execute,
  };
}

const C = U.IOMMUFD_CMD;

/** The commands of this package. @linux iommufd_ioctl_ops[] */
export const IOMMUFD_IOCTL_OPS: readonly IommufdIoctlOp[] = [
  op(C.DESTROY, U.iommu_destroy, "id", iommufdDestroy),
  op(C.IOAS_ALLOC, U.iommu_ioas_alloc, "out_ioas_id", iommufdIoasAllocIoctl),
  op(C.IOAS_ALLOW_IOVAS, U.iommu_ioas_allow_iovas, "allowed_iovas", iommufdIoasAllowIovas),
  op(C.IOAS_COPY, U.iommu_ioas_copy, "src_iova", iommufdIoasCopy),
  op(C.IOAS_IOVA_RANGES, U.iommu_ioas_iova_ranges, "out_iova_alignment", iommufdIoasIovaRanges),
  op(C.IOAS_MAP, U.iommu_ioas_map, "iova", iommufdIoasMap),
  op(C.IOAS_UNMAP, U.iommu_ioas_unmap, "length", iommufdIoasUnmap),
  op(C.OPTION, U.iommu_option, "val64", iommufdOption),
  op(C.VFIO_IOAS, U.iommu_vfio_ioas, "__reserved", iommufdVfioIoas),
  op(C.HWPT_ALLOC, U.iommu_hwpt_alloc, "__reserved", iommufdHwptAlloc),
  op(C.GET_HW_INFO, U.iommu_hw_info, "__reserved", iommufdGetHwInfo),
  op(C.HWPT_SET_DIRTY_TRACKING, U.iommu_hwpt_set_dirty_tracking, "__reserved", iommufdHwptSetDirtyTracking),
  op(C.HWPT_GET_DIRTY_BITMAP, U.iommu_hwpt_get_dirty_bitmap, "data", iommufdHwptGetDirtyBitmap),
  op(C.FAULT_QUEUE_ALLOC, U.iommu_fault_alloc, "out_fault_fd", iommufdFaultAlloc),
  op(C.IOAS_MAP_FILE, U.iommu_ioas_map_file, "iova", iommufdIoasMapFile),
  op(C.IOAS_CHANGE_PROCESS, U.iommu_ioas_change_process, "__reserved", iommufdIoasChangeProcess),
  op(C.HWPT_INVALIDATE, U.iommu_hwpt_invalidate, "__reserved", iommufdHwptInvalidate),
  op(C.VIOMMU_ALLOC, U.iommu_viommu_alloc, "out_viommu_id", iommufdViommuAllocIoctl),
  op(C.VDEVICE_ALLOC, U.iommu_vdevice_alloc, "virt_id", iommufdVdeviceAllocIoctl),
  op(C.HW_QUEUE_ALLOC, U.iommu_hw_queue_alloc, "length", iommufdHwQueueAllocIoctl),
  op(C.VEVENTQ_ALLOC, U.iommu_veventq_alloc, "out_veventq_fd", iommufdVeventqAlloc),
];

/** Register this package's object types and commands in a machine's container. */
export function registerIommufdTables(c: DependencyContainer): void {
  for (const t of IOMMUFD_OBJECT_TYPES) c.register(IommufdTokens.objectType, { useValue: t });
  for (const o of IOMMUFD_IOCTL_OPS) c.register(IommufdTokens.ioctlOp, { useValue: o });
}
