/**
 * I/O page fault delivery: drivers report page requests, the core groups them by page request group, hands each
 * complete group to the fault handler of the domain attached to the device (or PASID), and routes the handler's
 * single response back to the driver's `pageResponse`.
 *
 * Lifetime (upstream "iommu: Use refcount for fault data access"): the per-device fault parameter is published
 * with RCU in `dev.iommu.faultParam`; its `users` count holds one reference for the queue and one for each
 * outstanding group (and one, briefly, for a fault being reported). Lookups run under `rcu_read_lock` with
 * `refcount_inc_not_zero`; the last put frees it with `kfree_rcu`. So a handler may still answer a group after
 * the device left the queue: the answer goes nowhere, and nothing is used after being freed.
 *
 * Sleep = async: everything that takes a mutex is async; the lookup, the put and freeing a group are sync.
 * @linux drivers/iommu/io-pgfault.c
 */
import { KernelError, kerr } from "../kernel/errno.js";
import { rcuAssignPointer, rcuDereference, rcuDereferenceProtected } from "../kernel/rcu.js";
import { assertLive, freedAt, kfree } from "../kernel/slab.js";
import { traceHex } from "../kernel/trace.js";
import type { Device } from "../platform/driver-core/device.js";
import type { DevIommu } from "./dev-iommu.js";
import type { IommuGroup } from "./group.js";
import {
  IOMMU_FAULT_PAGE_REQ,
  IOMMU_FAULT_PAGE_REQUEST,
  IOMMU_PAGE_RESP,
  type IommuFault,
  IommuFaultParam,
  type IommuPageResponse,
  type IommuPageResponseCode,
  type IopfContext,
  type IopfDevIommu,
  type IopfFault,
  IopfGroup,
  IopfQueue,
} from "./iopf-types.js";
import { IopfWorkqueue } from "./iopf-workqueue.js";
import { IOMMU_NO_PASID, type IommuAttachHandle, iommuAttachHandleGet } from "./pasid.js";
import { IOMMU_DOMAIN, type IommuOps } from "./types.js";

// ---------------------------------------------------------------------------------------------------------------
// Device accessors (the dev->iommu fields this file touches)

function devIommu(dev: Device): IopfDevIommu {
  // The core's DevIommu; typed through it so a change there that breaks what IOPF reads fails to compile.
  const p: IopfDevIommu | undefined = dev.iommu as DevIommu | undefined;
  // Linux dereferences dev->iommu unconditionally here; a device without one is a caller bug.
  if (p === undefined) throw kerr("ENODEV", `${dev.name} has no dev_iommu`);
  return p;
}

/** @linux dev_iommu_ops */
function devIommuOps(dev: Device): IommuOps {
  const ops = devIommu(dev).iommuDev?.ops;
  if (ops === undefined) throw kerr("ENODEV", `${dev.name} is not probed by an IOMMU driver`);
  return ops;
}

/** iommu_attach_handle_get on the device's group, with its ERR_PTR (ENOENT, EBUSY) as undefined. */
function attachHandleGet(dev: Device, pasid: number, type: number): IommuAttachHandle | undefined {
  const group = dev.iommuGroup as IommuGroup | undefined;
  if (group === undefined) return undefined;
  try {
    return iommuAttachHandleGet(group, pasid, type);
  } catch (e) {
    if (e instanceof KernelError) return undefined;
    throw e;
  }
}

function copyFault(f: IommuFault): IommuFault {
  return { type: f.type, prm: { ...f.prm } };
}

/** Allocate a tracked object for `queue` (kzalloc at `site`, which the fault injector may fail). */
function iopfAlloc<T extends object>(queue: IopfQueue, site: string, obj: () => T, what: () => string): T {
  queue.ctx.faults.check(site);
  const o = obj();
  queue.allocated.set(o, what);
  return o;
}

function iopfFree(queue: IopfQueue, obj: object, what: string): void {
  kfree(queue.ctx.diag, obj, what);
  queue.allocated.delete(obj);
}

function partialName(dev: Device, iopf: IopfFault): string {
  return `partial iopf_fault(${dev.name} grpid ${iopf.fault.prm.grpid} addr 0x${iopf.fault.prm.addr.toString(16)})`;
}

// ---------------------------------------------------------------------------------------------------------------
// Fault parameter lifetime

/**
 * Take a reference on the device's fault parameter, or return undefined when it has none or it is going away.
 * The caller drops it with {@link iopfPutDevFaultParam}. Atomic: an RCU read-side section, no sleeping.
 * @linux iopf_get_dev_fault_param
 */
export function iopfGetDevFaultParam(dev: Device): IommuFaultParam | undefined {
  const p = devIommu(dev).faultParam;
  const rcu = p.rcu;
  rcu.readLock();
  let fp = rcuDereference(p);
  if (fp !== undefined && !fp.users.incNotZero()) fp = undefined;
  rcu.readUnlock();
  return fp;
}

/**
 * Drop a reference on a fault parameter; the last one frees it after an RCU grace period.
 * @linux iopf_put_dev_fault_param
 */
export function iopfPutDevFaultParam(fp: IommuFaultParam): void {
  const ctx = fp.queue.ctx;
  assertLive(ctx.diag, fp, fp.name);
  if (fp.users.decAndTest()) ctx.rcu.kfreeRcu(fp, fp.name);
}

// ---------------------------------------------------------------------------------------------------------------
// Groups

/** Free what a group owns (its partial faults, its reference on the fault parameter), not the group itself. */
function iopfFreeGroupContents(group: IopfGroup): void {
  const fp = group.faultParam;
  for (const iopf of group.faults) {
    // The last-page request is part of the group itself; only the partial ones were allocated separately.
    if (!(iopf.fault.prm.flags & IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE))
      iopfFree(fp.queue, iopf, partialName(fp.dev, iopf));
  }
  group.faults.length = 0;
  iopfPutDevFaultParam(fp);
}

/**
 * Free a group the domain's handler took, once it has answered it: frees its faults and drops its reference on
 * the device's fault parameter (which may free it).
 * @linux iopf_free_group
 */
export function iopfFreeGroup(group: IopfGroup): void {
  const queue = group.faultParam.queue;
  if (!assertLive(queue.ctx.diag, group, `iopf_group(${group.name})`)) return;
  iopfFreeGroupContents(group);
  iopfFree(queue, group, `iopf_group(${group.name})`);
}

/** Keep a non-last request until its group's last one arrives. @linux report_partial_fault */
async function reportPartialFault(fp: IommuFaultParam, fault: IommuFault): Promise<void> {
  const queue = fp.queue;
  const iopf: IopfFault = iopfAlloc(
    queue,
    "report_partial_fault",
    () => ({ fault: copyFault(fault) }),
    () => partialName(fp.dev, iopf),
  );
  await fp.lock.lock();
  fp.partial.unshift(iopf);
  fp.lock.unlock();
}

/**
 * Build the group of `evt` (a last-page request) with the partial requests of the same group index, and put it
 * on the pending list. When the allocation fails the group is still built, as the "abort group" that only serves
 * to answer the request: `aborted` is then true and the group itself must not be freed.
 * @linux iopf_group_alloc
 */
async function iopfGroupAlloc(fp: IommuFaultParam, evt: IopfFault): Promise<{ group: IopfGroup; aborted: boolean }> {
  const queue = fp.queue;
  let group: IopfGroup;
  let aborted = false;
  const make = () => new IopfGroup(fp, { fault: copyFault(evt.fault) });
  try {
    group = iopfAlloc(queue, "iopf_group_alloc", make, () => `iopf_group(${group.name})`);
  } catch (e) {
    if (!(e instanceof KernelError)) throw e;
    // Linux falls back to a group on its stack, so the request can still be answered.
    group = make();
    aborted = true;
  }
  const grpid = evt.fault.prm.grpid;
  await fp.lock.lock();
  for (let i = 0; i < fp.partial.length; ) {
    const iopf = fp.partial[i]!;
    if (iopf.fault.prm.grpid === grpid) {
      fp.partial.splice(i, 1);
      // Partial faults are newest first; moving each to the front restores arrival order, last page at the end.
      group.faults.unshift(iopf);
    } else {
      i++;
    }
  }
  fp.faults.unshift(group);
  group.pending = true;
  fp.lock.unlock();
  group.faultCount = group.faults.length;
  return { group, aborted };
}

/**
 * The attachment whose domain handles `evt`: the one at its PASID, or for a driver with a user-managed PASID
 * table the nested domain at the RID; the RID's for a request without PASID. Undefined when there is none or its
 * domain has no fault handler.
 * @linux find_fault_handler
 */
function findFaultHandler(dev: Device, evt: IopfFault): IommuAttachHandle | undefined {
  const prm = evt.fault.prm;
  let handle: IommuAttachHandle | undefined;
  if (prm.flags & IOMMU_FAULT_PAGE_REQUEST.PASID_VALID) {
    handle = attachHandleGet(dev, prm.pasid, 0);
    if (handle === undefined) {
      if (!devIommuOps(dev).userPasidTable) return undefined;
      handle = attachHandleGet(dev, IOMMU_NO_PASID, IOMMU_DOMAIN.NESTED);
      if (handle === undefined) return undefined;
    }
  } else {
    handle = attachHandleGet(dev, IOMMU_NO_PASID, 0);
    if (handle === undefined) return undefined;
  }
  if (!handle.domain?.iopfHandler) return undefined;
  return handle;
}

/** Answer a request nobody can handle with INVALID. @linux iopf_error_response */
function iopfErrorResponse(dev: Device, evt: IopfFault): void {
  const ops = devIommuOps(dev);
  const prm = evt.fault.prm;
  const resp: IommuPageResponse = { pasid: prm.pasid, grpid: prm.grpid, code: IOMMU_PAGE_RESP.INVALID };
  ops.pageResponse?.(dev, evt, resp);
}

/**
 * Report a fault, typically from the driver's threaded PRI/event-queue handler (it sleeps). A non-last request is
 * kept until its group completes; a last-page request completes a group, which goes to the handler of the
 * domain attached at the request's PASID (or the RID). When the handler refuses the group, or the group cannot
 * be allocated, the group is answered FAILURE here and freed; the call still succeeds.
 *
 * Throws EINVAL after answering the request INVALID when no domain with a fault handler is attached, or (with a
 * warning) when the device was never added to an IOPF queue; ENOMEM when a partial fault cannot be stored.
 * @linux iommu_report_device_fault
 */
export async function iommuReportDeviceFault(dev: Device, evt: IopfFault): Promise<void> {
  const fault = evt.fault;
  const trace = devIommu(dev)?.faultParam.rcu.diag.trace;
  if (trace?.enabled) {
    trace.emit("iommu:io_page_fault", {
      device: dev.name,
      iova: traceHex(fault.prm.addr),
      pasid: fault.prm.pasid,
      grpid: fault.prm.grpid,
      flags: fault.prm.flags,
      perm: fault.prm.perm,
    });
  }
  const handle = findFaultHandler(dev, evt);
  if (handle === undefined) return badIopf(dev, evt);

  const fp = iopfGetDevFaultParam(dev);
  // A fault-capable domain is attached but the driver never set the device up for IOPF.
  if (devIommu(dev).faultParam.rcu.diag.warnOn(fp === undefined, `iopf for ${dev.name} without a fault parameter`)) {
    return badIopf(dev, evt);
  }
  const param = fp!;

  if (!(fault.prm.flags & IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE)) {
    // A request that is not the last of its group is never answered on its own.
    try {
      await reportPartialFault(param, fault);
    } finally {
      iopfPutDevFaultParam(param);
    }
    return;
  }

  // From here the group owns the reference taken above, until iopfFreeGroup.
  const { group, aborted } = await iopfGroupAlloc(param, evt);
  if (!aborted) {
    group.attachHandle = handle;
    try {
      // On success the handler owns the group: it answers with iopfGroupResponse and frees it.
      await handle.domain!.iopfHandler!(group);
      return;
    } catch (e) {
      if (!(e instanceof KernelError)) {
        param.queue.ctx.diag.report("warning", `iopf handler threw a non-kernel error: ${String(e)}`, {
          culprit: dev.name,
        });
      }
    }
  }
  // err_abort: a log line (dev_warn_ratelimited), not a WARN splat; the device is answered FAILURE.
  param.queue.ctx.diag.printkRatelimited(
    "iommu_report_device_fault",
    "warn",
    `iopf with pasid ${fault.prm.pasid} aborted`,
    dev.name,
  );
  await iopfGroupResponse(group, IOMMU_PAGE_RESP.FAILURE);
  if (aborted) iopfFreeGroupContents(group);
  else iopfFreeGroup(group);
}

/**
 * err_bad_iopf: no domain with a fault handler takes the request (or the device has no fault parameter). A page
 * request is answered INVALID, and the drop is logged (ratelimited) so it is never silent: Linux leaves that log to
 * the reporting driver through the -EINVAL it returns, which a caller like the selftest's TRIGGER_IOPF ignores.
 */
function badIopf(dev: Device, evt: IopfFault): never {
  const prm = evt.fault.prm;
  const pasid = prm.flags & IOMMU_FAULT_PAGE_REQUEST.PASID_VALID ? `pasid ${prm.pasid}` : "no pasid";
  devIommu(dev).faultParam.rcu.diag.printkRatelimited(
    "iopf_error_response",
    "warn",
    `iopf (${pasid}, grpid ${prm.grpid}) has no fault handler: dropped` +
      (evt.fault.type === IOMMU_FAULT_PAGE_REQ ? ", answered INVALID" : ""),
    dev.name,
  );
  if (evt.fault.type === IOMMU_FAULT_PAGE_REQ) iopfErrorResponse(dev, evt);
  throw kerr("EINVAL", `no fault handler for ${dev.name} pasid ${prm.pasid}`);
}

/**
 * Answer a group once, through the driver's `pageResponse`. Does nothing when the group was already answered,
 * e.g. with INVALID by {@link iopfQueueRemoveDevice}: the fault parameter stays alive for the group's sake, but
 * the device has left the queue.
 * @linux iopf_group_response
 */
export async function iopfGroupResponse(group: IopfGroup, status: IommuPageResponseCode): Promise<void> {
  const fp = group.faultParam;
  const diag = fp.queue.ctx.diag;
  assertLive(diag, group, `iopf_group(${group.name})`);
  assertLive(diag, fp, fp.name);
  const dev = fp.dev;
  const ops = devIommuOps(dev);
  const last = group.lastFault.fault.prm;
  const resp: IommuPageResponse = { pasid: last.pasid, grpid: last.grpid, code: status };
  await fp.lock.lock();
  if (group.pending) {
    ops.pageResponse?.(dev, group.lastFault, resp);
    unlinkPending(fp, group);
  }
  fp.lock.unlock();
}

function unlinkPending(fp: IommuFaultParam, group: IopfGroup): void {
  const i = fp.faults.indexOf(group);
  if (i >= 0) fp.faults.splice(i, 1);
  group.pending = false;
}

// ---------------------------------------------------------------------------------------------------------------
// Queues

/**
 * Wait until every fault queued on the device's IOPF workqueue has been handled. Drivers call it before
 * releasing a PASID, after making sure no new fault comes in. Calling it for a device not on a queue is a driver
 * bug: a warning and ENODEV.
 * @linux iopf_queue_flush_dev
 */
export async function iopfQueueFlushDev(dev: Device): Promise<void> {
  const p = devIommu(dev).faultParam;
  // The caller guarantees the device stays on its queue meanwhile, so no lock is needed.
  const fp = rcuDereferenceProtected(p, true);
  if (p.rcu.diag.warnOn(fp === undefined, `iopf_queue_flush_dev: ${dev.name} is on no IOPF queue`)) {
    throw kerr("ENODEV", `${dev.name} is on no IOPF queue`);
  }
  await fp!.queue.wq.flush();
}

/**
 * Drop every partial fault of every device on the queue, without answering (the hardware queue overflowed and
 * last-page requests may be lost). Throws EINVAL without a queue.
 * @linux iopf_queue_discard_partial
 */
export async function iopfQueueDiscardPartial(queue: IopfQueue | undefined): Promise<void> {
  if (queue === undefined) throw kerr("EINVAL", "no queue");
  await queue.lock.lock();
  try {
    for (const fp of queue.devices) {
      await fp.lock.lock();
      for (const iopf of fp.partial) iopfFree(queue, iopf, partialName(fp.dev, iopf));
      fp.partial.length = 0;
      fp.lock.unlock();
    }
  } finally {
    queue.lock.unlock();
  }
}

/**
 * Add a device to an IOPF queue: allocate and publish its fault parameter, the queue holding the first
 * reference. Throws ENODEV when the driver cannot answer page requests (no `pageResponse`), EBUSY when the
 * device is on a queue already, ENOMEM when the allocation fails.
 * @linux iopf_queue_add_device
 */
export async function iopfQueueAddDevice(queue: IopfQueue, dev: Device): Promise<void> {
  const param = devIommu(dev);
  const ops = devIommuOps(dev);
  if (!ops.pageResponse) throw kerr("ENODEV", `the IOMMU driver of ${dev.name} has no page_response`);

  const sched = queue.ctx.scheduler;
  await queue.lock.lock();
  try {
    await param.lock.lock();
    try {
      if (rcuDereferenceProtected(param.faultParam, param.lock.owner === sched.current()) !== undefined) {
        throw kerr("EBUSY", `${dev.name} is already on an IOPF queue`);
      }
      const fp: IommuFaultParam = iopfAlloc(
        queue,
        "iopf_queue_add_device",
        () => new IommuFaultParam(dev, queue),
        (): string => `${fp.name} (users ${fp.users.read()})`,
      );
      queue.devices.unshift(fp);
      // Published last: from here on the fault path may use it.
      rcuAssignPointer(param.faultParam, fp);
    } finally {
      param.lock.unlock();
    }
  } finally {
    queue.lock.unlock();
  }
}

/**
 * Remove a device from its IOPF queue. The driver has stopped new page requests (and flushed its hardware queue)
 * before; this answers every outstanding group INVALID, frees the partial faults, unpublishes the fault parameter
 * and drops the queue's reference. Groups still held by a handler keep the fault parameter alive; their later
 * response does nothing and freeing them drops the last references. A device not on this queue is a driver bug
 * (a warning).
 * @linux iopf_queue_remove_device
 */
export async function iopfQueueRemoveDevice(queue: IopfQueue, dev: Device): Promise<void> {
  const param = devIommu(dev);
  const ops = devIommuOps(dev);
  const sched = queue.ctx.scheduler;
  await queue.lock.lock();
  try {
    await param.lock.lock();
    try {
      const fp = rcuDereferenceProtected(param.faultParam, param.lock.owner === sched.current());
      if (
        queue.ctx.diag.warnOn(
          fp === undefined || fp.queue !== queue,
          `iopf_queue_remove_device: ${dev.name} is not on queue ${queue.name}`,
        )
      ) {
        return;
      }
      const f = fp!;
      await f.lock.lock();
      for (const iopf of f.partial) iopfFree(queue, iopf, partialName(dev, iopf));
      f.partial.length = 0;
      for (const group of [...f.faults]) {
        const last = group.lastFault.fault.prm;
        const resp: IommuPageResponse = { pasid: last.pasid, grpid: last.grpid, code: IOMMU_PAGE_RESP.INVALID };
        ops.pageResponse?.(dev, group.lastFault, resp);
        unlinkPending(f, group);
      }
      f.lock.unlock();

      const i = queue.devices.indexOf(f);
      if (i >= 0) queue.devices.splice(i, 1);
      rcuAssignPointer(param.faultParam, undefined);
      // The reference iopfQueueAddDevice gave the queue.
      iopfPutDevFaultParam(f);
    } finally {
      param.lock.unlock();
    }
  } finally {
    queue.lock.unlock();
  }
}

/**
 * Allocate an IOPF queue with its workqueue (`iopf_queue/<name>`). Throws ENOMEM where Linux returns NULL.
 * At machine teardown, anything allocated for the queue and not freed (the queue, fault parameters, groups,
 * partial faults) is reported as a leak.
 * @linux iopf_queue_alloc
 */
export function iopfQueueAlloc(ctx: IopfContext, name: string): IopfQueue {
  ctx.faults.check("iopf_queue_alloc");
  ctx.faults.check("alloc_workqueue");
  const queue = new IopfQueue(ctx, name, new IopfWorkqueue(ctx.scheduler, ctx.diag, `iopf_queue/${name}`));
  queue.allocated.set(queue, () => `iopf_queue(${name})`);
  ctx.diag.addTeardownCheck(`iopf_queue(${name})`, () => {
    const leaks: string[] = [];
    for (const [obj, what] of queue.allocated) if (freedAt(obj) === undefined) leaks.push(`${what()} was never freed`);
    return leaks;
  });
  return queue;
}

/**
 * Free an IOPF queue: remove every device still on it, drain its workqueue, free it. The driver must no longer
 * report faults nor add devices. Nothing happens without a queue.
 * @linux iopf_queue_free
 */
export async function iopfQueueFree(queue: IopfQueue | undefined): Promise<void> {
  if (queue === undefined) return;
  for (const fp of [...queue.devices]) await iopfQueueRemoveDevice(queue, fp.dev);
  await queue.wq.destroy();
  iopfFree(queue, queue, `iopf_queue(${queue.name})`);
}

/**
 * Defer a group's handling to the queue's workqueue, as the SVA fault handler does; `iopfQueueFlushDev` waits
 * for it. Returns false when the group's work is already queued.
 * @linux queue_work(fault_param->queue->wq, &group->work)
 */
export function iopfQueueGroupWork(group: IopfGroup, fn: (group: IopfGroup) => Promise<void> | void): boolean {
  return group.faultParam.queue.wq.queueWork(group, () => fn(group));
}
