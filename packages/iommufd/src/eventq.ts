/**
 * What fault queues and vEVENTQs share: an object that carries an anonymous file, a deliver list the kernel fills
 * and `read()` drains, a wait queue for readers, and a release that drops the file's references on the object and
 * the context.
 * @linux struct iommufd_eventq and the common event-queue functions of drivers/iommu/iommufd/eventq.c
 */
import {
  anonInodeGetFile,
  currentProcess,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDNORM,
  type File,
  type FileOperations,
  fput,
  getUnusedFdFlags,
  kerr,
  O_CLOEXEC,
  O_RDWR,
  type Process,
  WaitQueue,
} from "@iommu-sim/core";
import { type IommufdCtx, iommufdCtxGet, iommufdCtxPut } from "./ctx.js";
import { IommufdObject } from "./object.js";

/** Fault-injection site of the anonymous file. @linux anon_inode_getfile's allocation */
export const IOMMUFD_EVENTQ_FILE_SITE = "iommufd_eventq_file";

/**
 * The common part of a fault object and a vEVENTQ. `E` is what the deliver list holds (IOPF groups, vEVENTs).
 * @linux struct iommufd_eventq
 */
export class IommufdEventq<E = unknown> extends IommufdObject {
  /** The file user space reads (and for faults, writes). @linux iommufd_eventq.filep */
  filep: File | undefined = undefined;
  /** Items waiting to be read, oldest first. Guarded by the (spin)lock: touched only in synchronous sections. @linux iommufd_eventq.deliver */
  readonly deliver: E[] = [];
  /** Woken when something is delivered. @linux iommufd_eventq.wait_queue */
  waitQueue!: WaitQueue;
}

/**
 * The struct file of an event queue, for the object table's `fileOf` (abort_and_destroy fputs it).
 * @linux iommufd_object_ops.file_offset
 */
export function iommufdEventqFileOf(obj: IommufdObject): { fput(): Promise<void> } | undefined {
  const f = (obj as IommufdEventq).filep;
  if (!f) return undefined;
  return { fput: () => fput(f) };
}

/**
 * Release of an event-queue file: drop the file's users reference on the object, then its context reference.
 * @linux iommufd_eventq_fops_release
 */
export async function iommufdEventqFopsRelease(eventq: IommufdEventq): Promise<void> {
  eventq.users.dec();
  await iommufdCtxPut(eventq.ictx);
}

/**
 * Whether `read()` would find something (EPOLLIN); fault files are always writable (EPOLLOUT).
 * @linux iommufd_eventq_fops_poll
 */
export function iommufdEventqPollIn(eventq: IommufdEventq): boolean {
  return eventq.deliver.length > 0;
}

/**
 * The poll mask of an event-queue file: EPOLLIN | EPOLLRDNORM when an event is queued; `writable` files (fault
 * queues, which take responses) add EPOLLOUT always.
 * @linux iommufd_eventq_fops_poll
 */
export function iommufdEventqPoll(eventq: IommufdEventq, writable: boolean): number {
  let mask = writable ? EPOLLOUT : 0;
  if (iommufdEventqPollIn(eventq)) mask |= EPOLLIN | EPOLLRDNORM;
  return mask;
}

/**
 * The calling process, which receives the fd. EFAULT-free: a kernel caller without a process cannot get an fd.
 * @linux current
 */
export function eventqCaller(): Process {
  const p = currentProcess();
  if (!p) throw kerr("EINVAL", "event queues need a calling process for their fd");
  return p;
}

/**
 * Set up the common part: the wait queue, the anonymous file (holding a users reference on the object and a
 * reference on the context), and an fd reserved in the calling process (installed by the caller once nothing can
 * fail). On failure the object keeps its file; the abort path fputs it.
 * @linux iommufd_eventq_init
 */
export function iommufdEventqInit(
  eventq: IommufdEventq,
  name: string,
  ictx: IommufdCtx,
  fops: FileOperations,
  process: Process,
): number {
  eventq.waitQueue = new WaitQueue(ictx.sched, `${name} wait_queue`);
  ictx.faults.check(IOMMUFD_EVENTQ_FILE_SITE);
  const file = anonInodeGetFile(name, fops, eventq, { flags: O_RDWR, ctx: process });
  iommufdCtxGet(ictx);
  eventq.filep = file;
  eventq.users.inc();
  return getUnusedFdFlags(process, O_CLOEXEC);
}
