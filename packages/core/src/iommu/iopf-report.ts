/**
 * The glue every vendor driver writes between its hardware's page-request record (SMMUv3 PRI queue entry or
 * stall event, VT-d page request descriptor, AMD PPR log entry) and core's IOPF: decode the request's attributes
 * into a {@link IopfFault}, and report it without failing the driver's queue thread when the core has already
 * answered it (no handler attached: the core sends INVALID and the driver only logs).
 * @linux the iommu_fault-building half of arm_smmu_handle_ppr / arm_smmu_handle_evt, intel_prq_report /
 * prq_event_thread, amd iommu_call_iopf_notifier
 */
import { KernelError } from "../kernel/errno.js";
import type { Device } from "../platform/driver-core/device.js";
import { iommuReportDeviceFault } from "./iopf.js";
import { IOMMU_FAULT_PAGE_REQ, IOMMU_FAULT_PAGE_REQUEST, IOMMU_FAULT_PERM, type IopfFault } from "./iopf-types.js";

/**
 * A decoded hardware page request (or stalled transaction).
 * @linux the fields drivers copy out of their page-request records
 */
export interface HwPageRequest {
  /** PASID, or -1 when the request carried none. */
  pasid: number;
  /** Page request group index (PRG index / STAG). */
  grpid: number;
  addr: number;
  read: boolean;
  write: boolean;
  exec: boolean;
  priv: boolean;
  /** Last request of its group (LPIG / L). */
  last: boolean;
  /** The response must carry the PASID (PCIe PRG response PASID required). */
  responseNeedsPasid: boolean;
}

/**
 * The {@link IopfFault} of a hardware page request.
 * @linux the struct iommu_fault a driver fills before iommu_report_device_fault
 */
export function iopfFaultFromRequest(r: HwPageRequest): IopfFault {
  let perm = 0;
  if (r.read) perm |= IOMMU_FAULT_PERM.READ;
  if (r.write) perm |= IOMMU_FAULT_PERM.WRITE;
  if (r.exec) perm |= IOMMU_FAULT_PERM.EXEC;
  if (r.priv) perm |= IOMMU_FAULT_PERM.PRIV;
  let flags = 0;
  if (r.pasid >= 0) {
    flags |= IOMMU_FAULT_PAGE_REQUEST.PASID_VALID;
    if (r.responseNeedsPasid) flags |= IOMMU_FAULT_PAGE_REQUEST.RESPONSE_NEEDS_PASID;
  }
  if (r.last) flags |= IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE;
  return {
    fault: {
      type: IOMMU_FAULT_PAGE_REQ,
      prm: { flags, pasid: r.pasid >= 0 ? r.pasid : 0, grpid: r.grpid, perm, addr: r.addr },
    },
  };
}

/**
 * Report a page request to core's IOPF from a driver's queue thread. A KernelError (no fault handler: the core
 * answered the request INVALID already; a partial request that could not be stored) is logged by Linux and not
 * propagated, so the thread goes on draining its queue; anything else is a bug and is rethrown.
 * @linux iommu_report_device_fault as prq_event_thread / arm_smmu_handle_ppr call it (return value ignored)
 */
export async function iopfReportFromDriver(dev: Device, f: IopfFault): Promise<void> {
  try {
    await iommuReportDeviceFault(dev, f);
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
  }
}
