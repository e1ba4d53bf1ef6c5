/**
 * The data of I/O page faults (PCIe PRI page requests) as the iommu core and drivers exchange them: the fault
 * record a driver reports, the response it is asked to send, and the per-device and per-queue state that
 * `iopf.ts` (drivers/iommu/io-pgfault.c) keeps. Values of constants are the kernel's (include/linux/iommu.h).
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import type { FaultInjector } from "../kernel/fault-inject.js";
import type { Rcu, RcuPointer } from "../kernel/rcu.js";
import { Refcount } from "../kernel/refcount.js";
import { Mutex } from "../kernel/sched/mutex.js";
import type { Scheduler } from "../kernel/sched/scheduler.js";
import type { Device } from "../platform/driver-core/device.js";
import type { IopfWorkqueue } from "./iopf-workqueue.js";
import type { IommuAttachHandle } from "./pasid.js";
import type { IommuOps } from "./types.js";

/**
 * Permissions a page request asks for.
 * @linux IOMMU_FAULT_PERM_READ / _WRITE / _EXEC / _PRIV
 */
export const IOMMU_FAULT_PERM = {
  READ: 1 << 0,
  WRITE: 1 << 1,
  EXEC: 1 << 2,
  PRIV: 1 << 3,
} as const;

/**
 * Fault types; the page request is the only one the core handles.
 * @linux enum iommu_fault_type (IOMMU_FAULT_PAGE_REQ)
 */
export const IOMMU_FAULT_PAGE_REQ = 1;

/**
 * Flags of a page request. Mainline values: PRIV_DATA (old bit 2) was removed and NEEDS_PASID moved to bit 2.
 * @linux IOMMU_FAULT_PAGE_REQUEST_PASID_VALID / _LAST_PAGE, IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID
 */
export const IOMMU_FAULT_PAGE_REQUEST = {
  /** `pasid` is valid. */
  PASID_VALID: 1 << 0,
  /** Last request of its page request group: the group is complete and expects one response. */
  LAST_PAGE: 1 << 1,
  /** The response must carry the request's PASID. @linux IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID */
  RESPONSE_NEEDS_PASID: 1 << 2,
} as const;

/**
 * Response codes of a page request group.
 * @linux enum iommu_page_response_code
 */
export const IOMMU_PAGE_RESP = {
  /** Handled, the page tables are populated: retry the access (PRI "Success"). */
  SUCCESS: 0,
  /** Could not handle it, do not retry (PRI "Invalid Request"). */
  INVALID: 1,
  /** General error; drop later faults from the device if possible (PRI "Response Failure"). */
  FAILURE: 2,
} as const;

/**
 * One of {@link IOMMU_PAGE_RESP}.
 * @linux enum iommu_page_response_code
 */
export type IommuPageResponseCode = (typeof IOMMU_PAGE_RESP)[keyof typeof IOMMU_PAGE_RESP];

/**
 * A page request.
 * @linux struct iommu_fault_page_request
 */
export interface IommuFaultPageRequest {
  /** {@link IOMMU_FAULT_PAGE_REQUEST} bits. */
  flags: number;
  pasid: number;
  /** Page request group index. */
  grpid: number;
  /** {@link IOMMU_FAULT_PERM} bits. */
  perm: number;
  /** Faulting page address. */
  addr: number;
  /** Device-specific data (u64[2]); absent means zeros. */
  privateData?: readonly [bigint, bigint];
}

/**
 * A fault as a driver reports it.
 * @linux struct iommu_fault
 */
export interface IommuFault {
  /** {@link IOMMU_FAULT_PAGE_REQ}. */
  type: number;
  prm: IommuFaultPageRequest;
}

/**
 * A fault record the core keeps on its lists (a partial fault, a group's faults). Drivers pass one to
 * `iommuReportDeviceFault` and get one back in `pageResponse`.
 * @linux struct iopf_fault
 */
export interface IopfFault {
  fault: IommuFault;
}

/**
 * A response to a page request group, built by the core and sent by the driver's `pageResponse`.
 * @linux struct iommu_page_response
 */
export interface IommuPageResponse {
  pasid: number;
  grpid: number;
  /** One of {@link IOMMU_PAGE_RESP}. */
  code: IommuPageResponseCode;
}

/**
 * The per-device IOMMU state the IOPF code touches: the lock, the RCU-published fault parameter, and the IOMMU
 * instance whose ops answer page requests.
 * @linux struct dev_iommu (lock, fault_param, iommu_dev)
 */
export interface IopfDevIommu {
  /** @linux dev_iommu.lock */
  readonly lock: Mutex;
  /** Published by `iopfQueueAddDevice`, cleared by `iopfQueueRemoveDevice`. @linux dev_iommu.fault_param */
  readonly faultParam: RcuPointer<IommuFaultParam | undefined>;
  /** @linux dev_iommu.iommu_dev (its ops are dev_iommu_ops()) */
  readonly iommuDev?: { readonly ops: IommuOps } | undefined;
}

/**
 * The per-machine services the IOPF code uses (a `Machine` provides them).
 * @linux none: the kernel's globals (scheduler, RCU, slab fault injection, KASAN/WARN reporting)
 */
export interface IopfContext {
  readonly scheduler: Scheduler;
  readonly rcu: Rcu;
  readonly diag: Diagnostics;
  readonly faults: FaultInjector;
}

/**
 * A group of page requests with one group index, complete once its last-page request arrived; answered once with
 * `iopfGroupResponse`. Holds a reference on the device's fault parameter until `iopfFreeGroup`.
 * @linux struct iopf_group
 */
export class IopfGroup {
  /** The last-page request; the response's PASID and group index come from it. @linux iopf_group.last_fault */
  readonly lastFault: IopfFault;
  /** Every request of the group in arrival order, the last-page one last. @linux iopf_group.faults */
  readonly faults: IopfFault[];
  /** @linux iopf_group.fault_count */
  faultCount = 0;
  /**
   * Whether the group is on its fault parameter's pending list, i.e. not answered yet.
   * @linux !list_empty(&iopf_group.pending_node)
   */
  pending = false;
  /**
   * The attachment whose domain handles the group (iommufd's own handle object, which embeds it).
   * @linux iopf_group.attach_handle
   */
  attachHandle: IommuAttachHandle | undefined = undefined;
  /** For the handler's owner (iommufd's fault object numbers groups with it). @linux iopf_group.cookie */
  cookie = 0;

  constructor(
    /** The device's fault parameter; the group holds one of its users references. @linux iopf_group.fault_param */
    readonly faultParam: IommuFaultParam,
    lastFault: IopfFault,
  ) {
    this.lastFault = lastFault;
    this.faults = [lastFault];
  }

  /** For diagnostics. */
  get name(): string {
    const prm = this.lastFault.fault.prm;
    return `${this.faultParam.dev.name} grpid ${prm.grpid} pasid ${prm.pasid}`;
  }
}

/**
 * The per-device IOPF state, alive from `iopfQueueAddDevice` until its last user (the queue or an outstanding
 * group) lets go, then freed after an RCU grace period.
 * @linux struct iommu_fault_param
 */
export class IommuFaultParam {
  /** Protects `partial` and `faults`. @linux iommu_fault_param.lock */
  readonly lock: Mutex;
  /** One for the queue, one per unfreed group, one per fault being reported. @linux iommu_fault_param.users */
  readonly users: Refcount;
  /** Non-last requests waiting for their group's last one, newest first. @linux iommu_fault_param.partial */
  readonly partial: IopfFault[] = [];
  /** Groups waiting for a response, newest first. @linux iommu_fault_param.faults */
  readonly faults: IopfGroup[] = [];

  constructor(
    /** @linux iommu_fault_param.dev */
    readonly dev: Device,
    /** @linux iommu_fault_param.queue */
    readonly queue: IopfQueue,
  ) {
    const ctx = queue.ctx;
    this.lock = new Mutex(ctx.scheduler, `fault_param(${dev.name})->lock`, { lockClass: "iommu_fault_param->lock" });
    this.users = new Refcount(ctx.diag, `fault_param(${dev.name})->users`, 1);
  }

  /** For diagnostics. */
  get name(): string {
    return `fault_param(${this.dev.name})`;
  }
}

/**
 * A queue of I/O page faults shared by the devices behind one IOMMU (or one hardware PRI queue).
 * @linux struct iopf_queue
 */
export class IopfQueue {
  /** Protects `devices`. @linux iopf_queue.lock */
  readonly lock: Mutex;
  /** Fault parameters of the devices added to the queue. @linux iopf_queue.devices */
  readonly devices: IommuFaultParam[] = [];
  /** Objects allocated for this queue and not freed yet, each with its leak description, for teardown. @internal */
  readonly allocated = new Map<object, () => string>();

  constructor(
    readonly ctx: IopfContext,
    readonly name: string,
    /** Where domain handlers queue deferred work. @linux iopf_queue.wq */
    readonly wq: IopfWorkqueue,
  ) {
    this.lock = new Mutex(ctx.scheduler, `iopf_queue(${name})->lock`, { lockClass: "iopf_queue->lock" });
  }
}
