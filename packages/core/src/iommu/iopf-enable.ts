/**
 * The per-device count vendor drivers keep of attachments that use page requests: the first such attachment
 * puts the device on its IOMMU's IOPF queue, the last one to go drains the hardware page-request queue and takes
 * the device off again. The checks that decide whether a device can do page requests at all (and their errno)
 * stay with each driver.
 * @linux the iopf_refcount bookkeeping of intel_iommu_enable_iopf / intel_iommu_disable_iopf and
 * arm_smmu_enable_iopf / arm_smmu_disable_iopf
 */
import type { Device } from "../platform/driver-core/device.js";
import { iopfQueueAddDevice, iopfQueueRemoveDevice } from "./iopf.js";
import type { IopfQueue } from "./iopf-types.js";

/**
 * A driver's per-device state that counts page-request attachments.
 * @linux device_domain_info.iopf_refcount / arm_smmu_master.iopf_refcount
 */
export interface IopfRefcounted {
  iopfRefcount: number;
  readonly dev: Device;
}

/**
 * Count one more attachment that uses page requests; the first adds the device to `queue`. When adding fails the
 * count goes back to zero and the error propagates.
 * @linux the iopf_refcount / iopf_queue_add_device part of intel_iommu_enable_iopf and arm_smmu_enable_iopf
 */
export async function iopfRefcountGet(d: IopfRefcounted, queue: IopfQueue): Promise<void> {
  if (d.iopfRefcount++ > 0) return;
  try {
    await iopfQueueAddDevice(queue, d.dev);
  } catch (e) {
    d.iopfRefcount = 0;
    throw e;
  }
}

/**
 * Drop one attachment that used page requests (nothing when none is counted); the last one runs `drain` (the
 * driver flushes its hardware page-request queue) and then removes the device from `queue`.
 * @linux the iopf_refcount / iopf_queue_remove_device part of intel_iommu_disable_iopf and arm_smmu_disable_iopf
 */
export async function iopfRefcountPut(
  d: IopfRefcounted,
  queue: () => IopfQueue | undefined,
  drain: () => Promise<void>,
): Promise<void> {
  if (d.iopfRefcount === 0) return;
  if (--d.iopfRefcount > 0) return;
  await drain();
  const q = queue();
  if (q) await iopfQueueRemoveDevice(q, d.dev);
}
