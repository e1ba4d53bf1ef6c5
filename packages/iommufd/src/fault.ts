/**
 * Fault queues: IOMMU_FAULT_QUEUE_ALLOC gives user space a fault object and a file. HWPTs allocated with
 * FAULT_ID_VALID route their devices' page requests (complete IOPF groups from io-pgfault) to the object;
 * `read()` hands each group out as `struct iommu_hwpt_pgfault` records carrying a cookie, `write()` of
 * `struct iommu_hwpt_page_response` records answers groups by cookie. Detaching or replacing a device answers its
 * outstanding groups INVALID; destroying the object answers everything left.
 * @linux the IOMMUFD_OBJ_FAULT functions of drivers/iommu/iommufd/eventq.c, iommufd_get_fault, and the fault parts
 * of iommufd_hwpt_alloc / __iommufd_hwpt_destroy (hw_pagetable.c)
 */
import {
  type File,
  type FileOperations,
  fdInstallAt,
  IOMMU_PAGE_RESP,
  type IommuAttachHandle,
  type IommuPageResponseCode,
  type IopfGroup,
  iopfFreeGroup,
  iopfGroupResponse,
  KernelError,
  kerr,
  Mutex,
  putUnusedFd,
  XArray,
  xaLimit32b,
} from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import type { IommufdDevice } from "./device.js";
import {
  eventqCaller,
  IommufdEventq,
  iommufdEventqFopsRelease,
  iommufdEventqInit,
  iommufdEventqPoll,
} from "./eventq.js";
import type { IommufdHwPagetable } from "./hw-pagetable.js";
import {
  IOMMUFD_OBJ,
  type IommufdObject,
  iommufdGetObject,
  iommufdObjectAllocUcmd,
  iommufdPutObject,
} from "./object.js";
import { iommu_hwpt_page_response, iommu_hwpt_pgfault } from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";

/** The page was made present: retry. @linux IOMMUFD_PAGE_RESP_SUCCESS */
export const IOMMUFD_PAGE_RESP_SUCCESS = 0;
/** The request cannot be served. @linux IOMMUFD_PAGE_RESP_INVALID */
export const IOMMUFD_PAGE_RESP_INVALID = 1;
/** `pasid` is valid. @linux IOMMU_PGFAULT_FLAGS_PASID_VALID */
export const IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0;
/** Last request of its group. @linux IOMMU_PGFAULT_FLAGS_LAST_PAGE */
export const IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1;
/** @linux IOMMU_PGFAULT_PERM_READ */
export const IOMMU_PGFAULT_PERM_READ = 1 << 0;
/** @linux IOMMU_PGFAULT_PERM_WRITE */
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1;
/** @linux IOMMU_PGFAULT_PERM_EXEC */
export const IOMMU_PGFAULT_PERM_EXEC = 1 << 2;
/** @linux IOMMU_PGFAULT_PERM_PRIV */
export const IOMMU_PGFAULT_PERM_PRIV = 1 << 3;

/** The name of the fault file. @linux "[iommufd-pgfault]" */
export const IOMMUFD_FAULT_FILE_NAME = "[iommufd-pgfault]";
/** Fault-injection site of the cookie allocation in `read()`. @linux the xa_alloc of iommufd_fault_fops_read */
export const IOMMUFD_FAULT_COOKIE_SITE = "iommufd_fault_response_xa_alloc";

/** `struct iommu_fault_alloc` in object form. @linux struct iommu_fault_alloc */
export interface IommuFaultAlloc {
  size: number;
  flags: number;
  out_fault_id: number;
  out_fault_fd: number;
}

/** `struct iommu_hwpt_pgfault` in object form. @linux struct iommu_hwpt_pgfault */
export interface IommuHwptPgfault {
  flags: number;
  dev_id: number;
  pasid: number;
  grpid: number;
  perm: number;
  __reserved: number;
  addr: bigint;
  length: number;
  cookie: number;
}

/** `struct iommu_hwpt_page_response` in object form. @linux struct iommu_hwpt_page_response */
export interface IommuHwptPageResponse {
  cookie: number;
  code: number;
}

/**
 * The attach handle iommufd records for a device's attachment; io-pgfault hands it back in each group.
 * @linux struct iommufd_attach_handle
 */
export interface IommufdAttachHandleLike extends IommuAttachHandle {
  idev: IommufdDevice;
}

/**
 * A fault object.
 * @linux struct iommufd_fault
 */
export class IommufdFault extends IommufdEventq<IopfGroup> {
  /** Serializes read, write and the auto-responses, around `response`. @linux iommufd_fault.mutex */
  mutex!: Mutex;
  /** Groups handed to user space, by cookie, waiting for an answer. @linux iommufd_fault.response */
  response!: XArray<IopfGroup>;
}

/**
 * Look up a fault object (ENOENT); release with iommufdPutObject.
 * @linux iommufd_get_fault
 */
export function iommufdGetFault(ictx: IommufdCtx, id: number): IommufdFault {
  return iommufdGetObject<IommufdFault>(ictx, id, IOMMUFD_OBJ.FAULT);
}

/**
 * For IOMMU_HWPT_ALLOC with FAULT_ID_VALID: look up the fault object `faultId` (ENOENT for a bad ID) with a
 * short-term reference, as iommufd_get_fault does, and make `hwpt`'s domain deliver its page requests to fault
 * queues. The caller then records it (`hwpt.fault = fault`), takes the HWPT's long-term users reference
 * (`fault.users.inc()`, dropped by {@link iommufdHwptPutFault} when the HWPT goes) and releases the short-term one
 * with iommufdPutObject. Call it before any device is attached, so the driver enables page requests at attach.
 * @linux iommufd_get_fault + the FAULT_ID_VALID part of iommufd_hwpt_alloc (iopf_handler, fault_data)
 */
export function iommufdFaultGetForHwpt(ictx: IommufdCtx, faultId: number, hwpt?: IommufdHwPagetable): IommufdFault {
  const fault = iommufdGetFault(ictx, faultId);
  if (hwpt) iommufdHwptRouteFaults(hwpt);
  return fault;
}

/**
 * Make the HWPT's domain hand complete IOPF groups to {@link iommufdFaultIopfHandler}, which finds the fault
 * object through `hwpt.fault`.
 * @linux hwpt->domain->iopf_handler = iommufd_fault_iopf_handler; hwpt->domain->fault_data = hwpt
 */
export function iommufdHwptRouteFaults(hwpt: IommufdHwPagetable): void {
  const domain = hwpt.domain;
  if (!domain) throw kerr("EINVAL", `${hwpt} has no domain`);
  domain.iopfHandler = iommufdFaultIopfHandler;
  domain.faultData = hwpt;
}

/**
 * The whole FAULT_ID_VALID step of HWPT_ALLOC: look up `faultId`, route the HWPT's page requests to it and keep a
 * users reference on it for the HWPT's lifetime. ENOENT for a bad ID.
 * @linux the IOMMU_HWPT_FAULT_ID_VALID block of iommufd_hwpt_alloc
 */
export function iommufdHwptSetFaultId(ictx: IommufdCtx, hwpt: IommufdHwPagetable, faultId: number): void {
  const fault = iommufdFaultGetForHwpt(ictx, faultId, hwpt);
  hwpt.fault = fault;
  fault.users.inc();
  iommufdPutObject(ictx, fault);
}

/**
 * Drop the HWPT's reference on its fault object (HWPT destroy and abort); idempotent.
 * @linux the hwpt->fault part of __iommufd_hwpt_destroy
 */
export function iommufdHwptPutFault(hwpt: IommufdHwPagetable): void {
  const fault = hwpt.fault;
  if (!fault) return;
  hwpt.fault = undefined;
  fault.users.dec();
}

function faultOfHwpt(hwpt: IommufdHwPagetable | undefined): IommufdFault | undefined {
  const f = hwpt?.fault;
  return f instanceof IommufdFault ? f : undefined;
}

/**
 * The domain IOPF handler of fault-capable HWPTs: queue the group for `read()` and wake readers. The group now
 * belongs to the fault object until answered.
 * @linux iommufd_fault_iopf_handler
 */
export function iommufdFaultIopfHandler(group: IopfGroup): void {
  const domain = group.attachHandle?.domain;
  const hwpt = (domain?.faultData ?? domain?.iommufd) as IommufdHwPagetable | undefined;
  const fault = faultOfHwpt(hwpt);
  if (!fault) throw kerr("ENODEV", "iopf for a HWPT without a fault object");
  fault.deliver.push(group);
  fault.waitQueue.wakeUp();
}

async function respondAndFree(group: IopfGroup, code: IommuPageResponseCode): Promise<void> {
  await iopfGroupResponse(group, code);
  iopfFreeGroup(group);
}

/**
 * Answer INVALID, and free, every group of `fault` that arrived through `handle` (all of them when `handle` is
 * undefined): the undelivered ones and those user space read but did not answer. The fault mutex is held.
 */
async function answerGroups(fault: IommufdFault, handle: IommuAttachHandle | undefined): Promise<void> {
  const mine = (g: IopfGroup) => handle === undefined || g.attachHandle === handle;
  const freeList: IopfGroup[] = [];
  // Under the spinlock: a quick move to a private list.
  for (let i = 0; i < fault.deliver.length; ) {
    const g = fault.deliver[i]!;
    if (mine(g)) {
      fault.deliver.splice(i, 1);
      freeList.push(g);
    } else {
      i++;
    }
  }
  for (const g of freeList) await respondAndFree(g, IOMMU_PAGE_RESP.INVALID);
  const answered: [number, IopfGroup][] = [];
  fault.response.forEach((cookie, g) => {
    if (mine(g)) answered.push([cookie, g]);
  });
  for (const [cookie, g] of answered) {
    fault.response.erase(cookie);
    await respondAndFree(g, IOMMU_PAGE_RESP.INVALID);
  }
}

/**
 * After a device left (or was moved off) `hwpt`, answer INVALID the groups it still had outstanding there, so
 * nothing keeps waiting on an attachment that is gone.
 * @linux iommufd_auto_response_faults
 */
export async function iommufdAutoResponseFaults(
  hwpt: IommufdHwPagetable,
  handle: IommuAttachHandle | undefined,
): Promise<void> {
  const fault = faultOfHwpt(hwpt);
  if (!fault || !handle) return;
  await fault.mutex.lock();
  try {
    await answerGroups(fault, handle);
  } finally {
    fault.mutex.unlock();
  }
}

/**
 * Destroy a fault object: answer INVALID and free every group it still holds.
 * @linux iommufd_fault_destroy
 */
export async function iommufdFaultDestroy(obj: IommufdObject): Promise<void> {
  const fault = obj as IommufdFault;
  // The users count is 0: nobody else can reach the object, so no mutex is needed (as Linux notes).
  await answerGroups(fault, undefined);
  fault.response.destroy();
}

function composeFaultMessage(group: IopfGroup, idx: number, idev: IommufdDevice, cookie: number): IommuHwptPgfault {
  const prm = group.faults[idx]!.fault.prm;
  return {
    flags: prm.flags,
    dev_id: idev.id,
    pasid: prm.pasid,
    grpid: prm.grpid,
    perm: prm.perm,
    __reserved: 0,
    addr: BigInt(prm.addr),
    length: 0,
    cookie,
  };
}

/**
 * read(): whole groups only, each fault of a group as one `struct iommu_hwpt_pgfault`, with the group's new
 * cookie. EINVAL when `count` is not a multiple of the record size, or too small for the first group; an empty
 * queue reads 0 bytes. A group that cannot get a cookie stays queued.
 * @linux iommufd_fault_fops_read
 */
export async function iommufdFaultFopsRead(fault: IommufdFault, count: number): Promise<Uint8Array> {
  const size = iommu_hwpt_pgfault.size;
  // Linux: ESPIPE; this errno table has no ESPIPE, EINVAL is what the newest kernels use for a bad count.
  if (count % size) throw kerr("EINVAL", `read of ${count} bytes is not a multiple of ${size}`);
  const out = new Uint8Array(count);
  let done = 0;
  let rc: KernelError | undefined;
  await fault.mutex.lock();
  try {
    for (;;) {
      const group = fault.deliver.shift();
      if (!group) break;
      if (done >= count || group.faultCount * size > count - done) {
        fault.deliver.unshift(group);
        if (done === 0) rc = kerr("EINVAL", `a group of ${group.faultCount} faults does not fit in ${count} bytes`);
        break;
      }
      try {
        group.cookie = fault.response.alloc(group, xaLimit32b);
      } catch (e) {
        fault.deliver.unshift(group);
        if (!(e instanceof KernelError)) throw e;
        rc = e;
        break;
      }
      const idev = (group.attachHandle as IommufdAttachHandleLike).idev;
      for (let i = 0; i < group.faults.length; i++) {
        out.set(iommu_hwpt_pgfault.encode(composeFaultMessage(group, i, idev, group.cookie) as never), done);
        done += size;
      }
    }
  } finally {
    fault.mutex.unlock();
  }
  if (done === 0 && rc) throw rc;
  return out.subarray(0, done);
}

/**
 * write(): answer groups by cookie, in order, stopping at the first bad record (EINVAL for an unknown cookie or a
 * code other than SUCCESS/INVALID, or a length that is not a multiple of the record size). Returns the bytes
 * consumed; fails only when nothing was.
 * @linux iommufd_fault_fops_write
 */
export async function iommufdFaultFopsWrite(fault: IommufdFault, bytes: Uint8Array): Promise<number> {
  const size = iommu_hwpt_page_response.size;
  if (bytes.length % size) throw kerr("EINVAL", `write of ${bytes.length} bytes is not a multiple of ${size}`);
  let done = 0;
  let rc: KernelError | undefined;
  await fault.mutex.lock();
  try {
    while (bytes.length > done) {
      const resp = iommu_hwpt_page_response.decode(
        bytes.subarray(done, done + size),
      ) as unknown as IommuHwptPageResponse;
      if (resp.code !== IOMMUFD_PAGE_RESP_SUCCESS && resp.code !== IOMMUFD_PAGE_RESP_INVALID) {
        rc = kerr("EINVAL", `bad response code ${resp.code}`);
        break;
      }
      const group = fault.response.erase(resp.cookie);
      if (!group) {
        rc = kerr("EINVAL", `no fault group with cookie ${resp.cookie}`);
        break;
      }
      await respondAndFree(group, resp.code as IommuPageResponseCode);
      done += size;
    }
  } finally {
    fault.mutex.unlock();
  }
  if (done === 0 && rc) throw rc;
  return done;
}

/**
 * Release of the fault file: answer INVALID every group still pending (nobody can answer them any more), then the
 * common release.
 * @linux iommufd_eventq_fops_release (answering on close: see docs/divergences.md)
 */
export async function iommufdFaultFopsRelease(fault: IommufdFault): Promise<void> {
  await fault.mutex.lock();
  try {
    await answerGroups(fault, undefined);
  } finally {
    fault.mutex.unlock();
  }
  await iommufdEventqFopsRelease(fault);
}

/**
 * The file operations of fault files.
 * @linux iommufd_fault_fops (INIT_EVENTQ_FOPS(iommufd_fault_fops_read, iommufd_fault_fops_write))
 */
export const IOMMUFD_FAULT_FOPS: FileOperations = {
  read: (file: File, length: number) => iommufdFaultFopsRead(file.privateData as IommufdFault, length),
  write: (file: File, bytes: Uint8Array) => iommufdFaultFopsWrite(file.privateData as IommufdFault, bytes),
  release: (file: File) => iommufdFaultFopsRelease(file.privateData as IommufdFault),
  poll: (file: File) => iommufdEventqPoll(file.privateData as IommufdFault, true),
};

/**
 * IOMMU_FAULT_QUEUE_ALLOC: a fault object (finalized by the ioctl core) and its file, installed at a new fd of
 * the calling process. EOPNOTSUPP for non-zero flags.
 * @linux iommufd_fault_alloc
 */
export async function iommufdFaultAlloc(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuFaultAlloc;
  if (cmd.flags) throw kerr("EOPNOTSUPP", "flags must be 0");
  const ictx = ucmd.ictx;
  const process = eventqCaller();
  const fault = iommufdObjectAllocUcmd(ucmd, IOMMUFD_OBJ.FAULT, () => new IommufdFault());
  fault.response = new XArray<IopfGroup>(ictx.faults, IOMMUFD_FAULT_COOKIE_SITE);
  fault.mutex = new Mutex(ictx.sched, "iommufd_fault.mutex");
  const fdno = iommufdEventqInit(fault, IOMMUFD_FAULT_FILE_NAME, ictx, IOMMUFD_FAULT_FOPS, process);
  cmd.out_fault_id = fault.id;
  cmd.out_fault_fd = fdno;
  try {
    ucmd.respond();
  } catch (e) {
    putUnusedFd(process, fdno);
    throw e;
  }
  fdInstallAt(process, fdno, fault.filep!);
}
