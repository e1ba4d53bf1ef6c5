/**
 * Events the mock reports to user space: a vEVENT for a virtual device (what the selftest's TRIGGER_VEVENT does)
 * and a page request from a device (what TRIGGER_IOPF stands for, sent through the hardware model so it takes the
 * real path: endpoint, fault queue, fault thread, io-pgfault). The driver reaches iommufd only through the vIOMMU object it
 * was handed (`IommuViommu.reportEvent`); this package never imports iommufd.
 * @linux iommufd_test_trigger_vevent, iommufd_test_trigger_iopf (drivers/iommu/iommufd/selftest.c)
 */
import type { EndpointDevice, IommuViommu } from "@iommu-sim/core";
import type { MockIommu } from "./mock-iommu.js";

/** The selftest vEVENTQ type. @linux IOMMU_VEVENTQ_TYPE_SELFTEST (iommufd_test.h) */
export const IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeefbeef;
/** sizeof(struct iommu_viommu_event_selftest). @linux struct iommu_viommu_event_selftest { __u32 virt_id; } */
export const IOMMU_VIOMMU_EVENT_SELFTEST_SIZE = 4;

/**
 * Encode a `struct iommu_viommu_event_selftest`.
 * @linux struct iommu_viommu_event_selftest
 */
export function encodeViommuEventSelftest(virtId: number): Uint8Array {
  const b = new Uint8Array(IOMMU_VIOMMU_EVENT_SELFTEST_SIZE);
  new DataView(b.buffer).setUint32(0, virtId >>> 0, true);
  return b;
}

/**
 * Report a selftest vEVENT for the virtual device `virtId` on `viommu` (the vIOMMU object the driver was given in
 * `viommuInit`). EOPNOTSUPP when the vIOMMU has no vEVENTQ of the selftest type, ENOMEM when the event was dropped
 * for want of memory (a lost-events record is queued then).
 * @linux iommufd_test_trigger_vevent -> iommufd_viommu_report_event(IOMMU_VEVENTQ_TYPE_SELFTEST)
 */
export async function mockViommuReportVevent(viommu: IommuViommu, virtId: number): Promise<void> {
  await viommu.reportEvent(IOMMU_VEVENTQ_TYPE_SELFTEST, encodeViommuEventSelftest(virtId));
}

/**
 * A device sends one page request through its endpoint (the platform's DMA side: the request carries the device's
 * requester ID to its IOMMU) and the driver's fault thread handles it (reports it to io-pgfault) before this
 * resolves. Returns whether the hardware queued it (it answers INVALID itself when PRI is off for the device).
 * @linux the Page Request Message behind iommufd_test_trigger_iopf (which reports the fault directly)
 */
export async function mockTriggerPageRequest(
  iommu: MockIommu,
  device: EndpointDevice,
  req: { pasid?: number; addr: number; read?: boolean; write?: boolean; grpid: number; last?: boolean },
): Promise<boolean> {
  const queued = device.pageRequest(req);
  await iommu.drainFaultQueue();
  return queued;
}
