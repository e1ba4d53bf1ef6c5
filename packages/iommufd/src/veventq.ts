/**
 * vEVENTQs: a queue per event type per vIOMMU through which drivers report events of virtual devices (translated
 * to their virtual IDs) to the VMM. Each record `read()` returns is a `struct iommufd_vevent_header` (flags,
 * sequence number) followed by the type's payload. The queue holds at most `depth` events; beyond that events are
 * dropped and a single LOST_EVENTS header at the tail says so, taking a sequence number of its own each time
 * something is dropped, so the reader sees a gap.
 * @linux the IOMMUFD_OBJ_VEVENTQ functions of drivers/iommu/iommufd/eventq.c, iommufd_vevent_handler and
 * iommufd_viommu_find_veventq (iommufd_private.h), iommufd_viommu_report_event (driver.c)
 */
import { type File, type FileOperations, fdInstallAt, KernelError, kerr, putUnusedFd } from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import {
  eventqCaller,
  IommufdEventq,
  iommufdEventqFopsRelease,
  iommufdEventqInit,
  iommufdEventqPoll,
} from "./eventq.js";
import {
  IOMMUFD_OBJ,
  type IommufdObject,
  iommufdGetObject,
  iommufdObjectAbortAndDestroy,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdPutObject,
} from "./object.js";
import { iommufd_vevent_header } from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";
import { type IommufdViommu, iommufdGetViommu } from "./viommu.js";

/** Reserved; not a queue type. @linux IOMMU_VEVENTQ_TYPE_DEFAULT */
export const IOMMU_VEVENTQ_TYPE_DEFAULT = 0;
/** @linux IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 */
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;
/** @linux IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV */
export const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2;
/** Events were dropped before the event this header precedes. @linux IOMMU_VEVENTQ_FLAG_LOST_EVENTS */
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0;
/** The largest queue depth accepted. @linux the upper bound of "iommufd: Set veventq_depth upper bound" */
export const IOMMUFD_VEVENTQ_MAX_DEPTH = 1 << 19;
/** Sequence numbers run 0..INT_MAX and wrap to 0. @linux INT_MAX */
const INT_MAX = 0x7fff_ffff;

/** The name of a vEVENTQ file. @linux "[iommufd-viommu-event]" */
export const IOMMUFD_VEVENTQ_FILE_NAME = "[iommufd-viommu-event]";
/** Fault-injection site of a vEVENT allocation. @linux the kzalloc(GFP_ATOMIC) of iommufd_viommu_report_event */
export const IOMMUFD_VEVENT_ALLOC_SITE = "iommufd_vevent_alloc";
/** Fault-injection site of the copy of the lost-events header in read(). @linux the kzalloc of deliver_fetch */
export const IOMMUFD_VEVENT_COPY_SITE = "iommufd_vevent_copy";

/** `struct iommu_veventq_alloc` in object form. @linux struct iommu_veventq_alloc */
export interface IommuVeventqAlloc {
  size: number;
  flags: number;
  viommu_id: number;
  type: number;
  veventq_depth: number;
  out_veventq_id: number;
  out_veventq_fd: number;
  __reserved: number;
}

/**
 * One queued event: its header and its payload (none for the lost-events header).
 * @linux struct iommufd_vevent
 */
export interface IommufdVevent {
  header: { flags: number; sequence: number };
  /** @linux iommufd_vevent.event_data / data_len */
  data: Uint8Array;
}

/**
 * A vEVENTQ.
 * @linux struct iommufd_veventq
 */
export class IommufdVeventq extends IommufdEventq<IommufdVevent> {
  /** @linux iommufd_veventq.viommu */
  viommu!: IommufdViommu;
  /** @linux iommufd_veventq.type */
  veventqType = 0;
  /** @linux iommufd_veventq.depth */
  depth = 0;
  /** The preallocated LOST_EVENTS header, on the deliver list (always last) after a drop. @linux lost_events_header */
  readonly lostEventsHeader: IommufdVevent = {
    header: { flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence: 0 },
    data: new Uint8Array(0),
  };
  /** Events queued (the lost-events header not counted). @linux iommufd_veventq.num_events */
  numEvents = 0;
  /** The next sequence number. @linux iommufd_veventq.sequence */
  sequence = 0;
}

/**
 * The vIOMMU's queue of `type`, if any (the caller holds `veventqsRwsem`).
 * @linux iommufd_viommu_find_veventq
 */
export function iommufdViommuFindVeventq(viommu: IommufdViommu, type: number): IommufdVeventq | undefined {
  return viommu.veventqs.get(type) as IommufdVeventq | undefined;
}

/**
 * Queue `vevent` (or the lost-events header again) at the tail, taking the next sequence number; a lost-events
 * header at the tail is replaced. Synchronous: the queue's spinlock section.
 * @linux iommufd_vevent_handler
 */
export function iommufdVeventHandler(veventq: IommufdVeventq, vevent: IommufdVevent): void {
  const d = veventq.deliver;
  if (d.length > 0 && d[d.length - 1] === veventq.lostEventsHeader) d.pop();
  d.push(vevent);
  vevent.header.sequence = veventq.sequence;
  veventq.sequence = (veventq.sequence + 1) & INT_MAX;
  veventq.waitQueue.wakeUp();
}

/**
 * Report an event of `type` on a vIOMMU, typically from the driver's threaded IRQ handler. EOPNOTSUPP when the
 * vIOMMU has no queue of that type; when the queue is full (or the event cannot be allocated, ENOMEM) the event is
 * dropped and the lost-events header queued instead. EINVAL (with a warning) for an empty payload.
 * @linux iommufd_viommu_report_event
 */
export async function iommufdViommuReportEvent(viommu: IommufdViommu, type: number, data: Uint8Array): Promise<void> {
  const ictx = viommu.ictx;
  if (ictx.diag.warnOn(data.length === 0, "iommufd_viommu_report_event without data")) throw kerr("EINVAL");
  const rwsem = viommu.veventqsRwsem;
  await rwsem.downRead();
  let rc: KernelError | undefined;
  try {
    const veventq = iommufdViommuFindVeventq(viommu, type);
    if (!veventq) throw kerr("EOPNOTSUPP", `no vEVENTQ of type ${type} on ${viommu}`);
    let vevent: IommufdVevent;
    if (veventq.numEvents === veventq.depth) {
      vevent = veventq.lostEventsHeader;
    } else if (ictx.faults.shouldFail(IOMMUFD_VEVENT_ALLOC_SITE)) {
      rc = kerr("ENOMEM", "vEVENT allocation");
      vevent = veventq.lostEventsHeader;
    } else {
      vevent = { header: { flags: 0, sequence: 0 }, data: data.slice() };
      veventq.numEvents++;
    }
    iommufdVeventHandler(veventq, vevent);
  } finally {
    rwsem.upRead();
  }
  if (rc) throw rc;
}

/**
 * Undo a vEVENTQ: drop its queued events and its vIOMMU reference, leave the vIOMMU's list. The list's rwsem is
 * held for writing.
 * @linux iommufd_veventq_abort
 */
export function iommufdVeventqAbort(obj: IommufdObject): void {
  const veventq = obj as IommufdVeventq;
  const viommu = veventq.viommu;
  viommu.veventqsRwsem.assertWriteHeld();
  veventq.deliver.length = 0;
  veventq.numEvents = 0;
  viommu.users.dec();
  if (viommu.veventqs.get(veventq.veventqType) === veventq) viommu.veventqs.delete(veventq.veventqType);
}

/**
 * Destroy a vEVENTQ.
 * @linux iommufd_veventq_destroy
 */
export async function iommufdVeventqDestroy(obj: IommufdObject): Promise<void> {
  const rwsem = (obj as IommufdVeventq).viommu.veventqsRwsem;
  await rwsem.downWrite();
  try {
    iommufdVeventqAbort(obj);
  } finally {
    rwsem.upWrite();
  }
}

/** Take the first event off the list; the lost-events header is copied (it stays the queue's). @linux deliver_fetch */
function deliverFetch(veventq: IommufdVeventq): IommufdVevent | undefined {
  const next = veventq.deliver[0];
  if (!next) return undefined;
  if (next === veventq.lostEventsHeader) {
    veventq.ictx.faults.check(IOMMUFD_VEVENT_COPY_SITE);
    veventq.deliver.shift();
    return { header: { ...next.header }, data: next.data };
  }
  veventq.deliver.shift();
  return next;
}

function isLost(v: IommufdVevent): boolean {
  return (v.header.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) !== 0;
}

/** Put back what read() could not copy. @linux iommufd_veventq_deliver_restore */
function deliverRestore(veventq: IommufdVeventq, vevent: IommufdVevent): void {
  if (isLost(vevent)) {
    // The copy goes; an empty list needs the header itself back.
    if (veventq.deliver.length === 0) veventq.deliver.unshift(veventq.lostEventsHeader);
    return;
  }
  veventq.deliver.unshift(vevent);
}

/**
 * read(): as many whole records (header + payload) as fit in `count`. EINVAL when not even the first one fits
 * (including `count` 0 with events queued); an empty queue reads 0 bytes; ENOMEM when the lost-events header
 * cannot be copied.
 * @linux iommufd_veventq_fops_read (with "Reject invalid read count")
 */
export function iommufdVeventqFopsRead(veventq: IommufdVeventq, count: number): Uint8Array {
  const hdrSize = iommufd_vevent_header.size;
  const out = new Uint8Array(count);
  let done = 0;
  let rc: KernelError | undefined;
  for (;;) {
    let cur: IommufdVevent | undefined;
    try {
      cur = deliverFetch(veventq);
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      rc = e;
      break;
    }
    if (!cur) break;
    if (done >= count || hdrSize > count - done || (!isLost(cur) && hdrSize + cur.data.length > count - done)) {
      deliverRestore(veventq, cur);
      if (done === 0) rc = kerr("EINVAL", `read of ${count} bytes is too small for the next vEVENT`);
      break;
    }
    out.set(iommufd_vevent_header.encode(cur.header as never), done);
    done += hdrSize;
    out.set(cur.data, done);
    done += cur.data.length;
    if (!isLost(cur)) veventq.numEvents--;
  }
  if (done === 0 && rc) throw rc;
  return out.subarray(0, done);
}

/**
 * The file operations of vEVENTQ files (read-only).
 * @linux iommufd_veventq_fops (INIT_EVENTQ_FOPS(iommufd_veventq_fops_read, NULL))
 */
export const IOMMUFD_VEVENTQ_FOPS: FileOperations = {
  read: (file: File, length: number) => iommufdVeventqFopsRead(file.privateData as IommufdVeventq, length),
  release: (file: File) => iommufdEventqFopsRelease(file.privateData as IommufdVeventq),
  poll: (file: File) => iommufdEventqPoll(file.privateData as IommufdVeventq, false),
};

/**
 * Look up a vEVENTQ (ENOENT).
 * @linux iommufd_get_veventq
 */
export function iommufdGetVeventq(ictx: IommufdCtx, id: number): IommufdVeventq {
  return iommufdGetObject<IommufdVeventq>(ictx, id, IOMMUFD_OBJ.VEVENTQ);
}

/**
 * IOMMU_VEVENTQ_ALLOC: a queue of `type` events on a vIOMMU, and its file at a new fd of the calling process.
 * EOPNOTSUPP for flags, __reserved or the DEFAULT type; EINVAL for a depth of 0 or above
 * {@link IOMMUFD_VEVENTQ_MAX_DEPTH}; ENOENT for a bad vIOMMU; EEXIST when the vIOMMU has a queue of that type.
 * @linux iommufd_veventq_alloc
 */
export async function iommufdVeventqAlloc(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuVeventqAlloc;
  const ictx = ucmd.ictx;
  if (cmd.flags || cmd.__reserved || cmd.type === IOMMU_VEVENTQ_TYPE_DEFAULT) {
    throw kerr("EOPNOTSUPP", "bad flags, __reserved or type");
  }
  if (!cmd.veventq_depth || cmd.veventq_depth > IOMMUFD_VEVENTQ_MAX_DEPTH) {
    throw kerr("EINVAL", `bad depth ${cmd.veventq_depth}`);
  }
  const process = eventqCaller();
  const viommu = iommufdGetViommu(ictx, cmd.viommu_id);
  const rwsem = viommu.veventqsRwsem;
  await rwsem.downWrite();
  try {
    if (iommufdViommuFindVeventq(viommu, cmd.type)) throw kerr("EEXIST", `a vEVENTQ of type ${cmd.type} exists`);
    const veventq = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.VEVENTQ, () => new IommufdVeventq());
    veventq.veventqType = cmd.type;
    veventq.viommu = viommu;
    viommu.users.inc();
    veventq.depth = cmd.veventq_depth;
    viommu.veventqs.set(cmd.type, veventq);
    let fdno = -1;
    try {
      fdno = iommufdEventqInit(veventq, IOMMUFD_VEVENTQ_FILE_NAME, ictx, IOMMUFD_VEVENTQ_FOPS, process);
      cmd.out_veventq_id = veventq.id;
      cmd.out_veventq_fd = fdno;
      ucmd.respond();
    } catch (e) {
      if (fdno >= 0) putUnusedFd(process, fdno);
      await iommufdObjectAbortAndDestroy(ictx, veventq);
      throw e;
    }
    iommufdObjectFinalize(ictx, veventq);
    fdInstallAt(process, fdno, veventq.filep!);
  } finally {
    rwsem.upWrite();
    iommufdPutObject(ictx, viommu);
  }
}
