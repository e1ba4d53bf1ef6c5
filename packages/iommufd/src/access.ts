/**
 * In-kernel access to an IOAS for emulated devices (mdev-style drivers): pin pages by IOVA, read and write through
 * the IOAS, and be told to unpin when user space unmaps what the access pinned.
 * @linux struct iommufd_access, iommufd_access_create / _destroy / _attach / _replace / _detach,
 * iommufd_access_pin_pages / _unpin_pages / _rw, iommufd_access_notify_unmap (drivers/iommu/iommufd/device.c)
 */
import { IOMMU_WRITE, kerr, Mutex } from "@iommu-sim/core";
import { type IommufdCtx, iommufdCtxGet, iommufdCtxPut } from "./ctx.js";
import { IOPT_IOVA_MAX, type IoPagetable, ioptRecalcAlignment } from "./io-pagetable.js";
import { type IommufdIoas, iommufdGetIoas } from "./ioas.js";
import {
  IOMMUFD_OBJ,
  IommufdObject,
  iommufdLockObj,
  iommufdObjectAlloc,
  iommufdObjectDestroyUser,
  iommufdObjectFinalize,
  iommufdPutObject,
} from "./object.js";
import { ioptPagesAddUsers, ioptPagesRemoveUsers, ioptPagesRw } from "./pages.js";
import { PAGE_SIZE } from "./user-glue.js";

/** Write through the access (else read). @linux IOMMUFD_ACCESS_RW_WRITE */
export const IOMMUFD_ACCESS_RW_WRITE = 1 << 0;
/** The caller may sleep (always true here). @linux IOMMUFD_ACCESS_RW_KTHREAD */
export const IOMMUFD_ACCESS_RW_KTHREAD = 1 << 1;

/**
 * What the driver of an access provides.
 * @linux struct iommufd_access_ops
 */
export interface IommufdAccessOps {
  /** The driver pins pages (needs `unmap`). @linux needs_pin_pages */
  needsPinPages?: boolean;
  /** Unpin everything the driver pinned in [iova, iova + length). @linux iommufd_access_ops.unmap */
  unmap?(data: unknown, iova: number, length: number): void | Promise<void>;
}

/**
 * @linux struct iommufd_access
 */
export class IommufdAccess extends IommufdObject {
  ops!: IommufdAccessOps;
  data: unknown;
  /** @linux iommufd_access.ioas */
  ioas: IommufdIoas | undefined = undefined;
  /** Where unpins go while a detach is in progress. @linux iommufd_access.ioas_unpin */
  ioasUnpin: IommufdIoas | undefined = undefined;
  /** @linux iommufd_access.ioas_lock */
  ioasLock!: Mutex;
  /** @linux iommufd_access.iova_alignment */
  iovaAlignment = 1;
  /** @linux iommufd_access.iopt_access_list_id */
  ioptAccessListId = 0;
}

/**
 * Create an access: the caller keeps a users reference until {@link iommufdAccessDestroy}; it holds a reference on
 * the context.
 * @linux iommufd_access_create
 */
export function iommufdAccessCreate(
  ictx: IommufdCtx,
  ops: IommufdAccessOps,
  data: unknown,
): { access: IommufdAccess; id: number } {
  const access = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.ACCESS, () => new IommufdAccess());
  access.ops = ops;
  access.data = data;
  access.iovaAlignment = ops.needsPinPages ? PAGE_SIZE : 1;
  access.ioasLock = new Mutex(ictx.sched, "iommufd_access.ioas_lock");
  access.users.inc();
  iommufdCtxGet(ictx);
  iommufdObjectFinalize(ictx, access);
  return { access, id: access.id };
}

/**
 * Destroy an access (waiting for short-term users), then drop its context reference.
 * @linux iommufd_access_destroy
 */
export async function iommufdAccessDestroy(access: IommufdAccess): Promise<void> {
  const ictx = access.ictx;
  if (await iommufdObjectDestroyUser(ictx, access)) await iommufdCtxPut(ictx);
}

/** @linux iopt_add_access */
async function ioptAddAccess(iopt: IoPagetable, access: IommufdAccess): Promise<void> {
  await iopt.domainsRwsem.downWrite();
  await iopt.iovaRwsem.downWrite();
  try {
    access.ictx.faults.check("iopt_access_list");
    const listId = iopt.addAccessEntry(access);
    try {
      ioptRecalcAlignment(iopt);
    } catch (e) {
      iopt.accesses.delete(listId);
      throw e;
    }
    // Only a successful add overwrites the ID: a failed one leaves the old IOAS's ID for its removal.
    access.ioptAccessListId = listId;
  } finally {
    iopt.iovaRwsem.upWrite();
    iopt.domainsRwsem.upWrite();
  }
}

/** @linux iopt_remove_access */
async function ioptRemoveAccess(iopt: IoPagetable, access: IommufdAccess, listId: number): Promise<void> {
  await iopt.domainsRwsem.downWrite();
  await iopt.iovaRwsem.downWrite();
  access.ictx.diag.warnOn(iopt.accesses.get(listId) !== access, "access not on the IOAS list");
  iopt.accesses.delete(listId);
  ioptRecalcAlignment(iopt);
  iopt.iovaRwsem.upWrite();
  iopt.domainsRwsem.upWrite();
}

/**
 * Switch the access to `newIoas` (or none): the driver is told to unpin everything of the old one.
 * @linux iommufd_access_change_ioas
 */
async function changeIoas(access: IommufdAccess, newIoas: IommufdIoas | undefined): Promise<void> {
  // The slot ID in the old IOAS's list, saved before adding to the new IOAS overwrites it.
  const curListId = access.ioptAccessListId;
  const cur = access.ioas;
  access.ioasLock.assertHeld();
  if (cur !== access.ioasUnpin) throw kerr("EBUSY", "a detach is in progress");
  if (cur === newIoas) return;
  // Block new pins; unpins still reach the old IOAS through ioasUnpin.
  access.ioas = undefined;
  if (newIoas) {
    try {
      await ioptAddAccess(newIoas.iopt, access);
    } catch (e) {
      access.ioas = cur;
      throw e;
    }
    newIoas.users.inc();
  }
  if (cur) {
    if (access.ops.unmap) {
      access.ioasLock.unlock();
      await access.ops.unmap(access.data, 0, IOPT_IOVA_MAX);
      await access.ioasLock.lock();
    }
    await ioptRemoveAccess(cur.iopt, access, curListId);
    cur.users.dec();
  }
  access.ioas = newIoas;
  access.ioasUnpin = newIoas;
}

async function changeIoasId(access: IommufdAccess, id: number): Promise<void> {
  const ioas = iommufdGetIoas(access.ictx, id);
  try {
    await changeIoas(access, ioas);
  } finally {
    iommufdPutObject(access.ictx, ioas);
  }
}

/**
 * Attach the access to an IOAS (EINVAL when already attached, ENOENT for a bad ID).
 * @linux iommufd_access_attach
 */
export async function iommufdAccessAttach(access: IommufdAccess, ioasId: number): Promise<void> {
  await access.ioasLock.lock();
  try {
    if (access.ictx.diag.warnOn(access.ioas !== undefined, "access already attached")) throw kerr("EINVAL");
    await changeIoasId(access, ioasId);
  } finally {
    access.ioasLock.unlock();
  }
}

/**
 * Move the access to another IOAS (EINVAL when not attached).
 * @linux iommufd_access_replace
 */
export async function iommufdAccessReplace(access: IommufdAccess, ioasId: number): Promise<void> {
  await access.ioasLock.lock();
  try {
    if (!access.ioas) throw kerr("EINVAL", "access is not attached");
    await changeIoasId(access, ioasId);
  } finally {
    access.ioasLock.unlock();
  }
}

/**
 * Detach the access from its IOAS.
 * @linux iommufd_access_detach
 */
export async function iommufdAccessDetach(access: IommufdAccess): Promise<void> {
  await access.ioasLock.lock();
  try {
    if (access.ictx.diag.warnOn(!access.ioas, "detach of an unattached access")) return;
    await changeIoas(access, undefined);
  } finally {
    access.ioasLock.unlock();
  }
}

/**
 * Destroy op of the access object: detach if still attached.
 * @linux iommufd_access_destroy_object
 */
export async function iommufdAccessDestroyObject(obj: IommufdObject): Promise<void> {
  const access = obj as IommufdAccess;
  await access.ioasLock.lock();
  try {
    if (access.ioas) await changeIoas(access, undefined);
  } finally {
    access.ioasLock.unlock();
  }
}

/**
 * Tell every access of the IOAS to unpin [iova, iova + length): called by unmap when an area has pins.
 * @linux iommufd_access_notify_unmap
 */
export async function iommufdAccessNotifyUnmap(iopt: IoPagetable, iova: number, length: number): Promise<void> {
  await iopt.iovaRwsem.downRead();
  const list = [...iopt.accesses.values()];
  iopt.iovaRwsem.upRead();
  for (const access of list) {
    if (!iommufdLockObj(access)) continue;
    try {
      await access.ops.unmap?.(access.data, iova, length);
    } finally {
      iommufdPutObject(access.ictx, access);
    }
  }
}

/** Walk the areas covering [iova, last] contiguously; ENOENT at a hole. */
function contigAreas(iopt: IoPagetable, iova: number, last: number) {
  const out = [];
  let cur = iova;
  for (const area of iopt.areasIn(iova, last)) {
    if (area.iova > cur || !area.pages) break;
    const end = Math.min(last, area.last);
    out.push({ area, from: cur, to: end });
    cur = end + 1;
    if (cur > last) break;
  }
  return { parts: out, done: cur > last };
}

/**
 * Pin the pages behind [iova, iova + length) and return their physical addresses (page-aligned IOVA only).
 * EINVAL for a zero length, misalignment or an area being unmapped; EPERM for a write pin of a read-only area;
 * ENOENT for a hole or without an IOAS.
 * @linux iommufd_access_pin_pages
 */
export async function iommufdAccessPinPages(
  access: IommufdAccess,
  iova: number,
  length: number,
  flags: number,
): Promise<number[]> {
  if (access.ictx.diag.warnOn(access.iovaAlignment !== PAGE_SIZE || !access.ops.unmap, "access cannot pin")) {
    throw kerr("EINVAL");
  }
  if (!length) throw kerr("EINVAL", "zero length");
  const last = iova + length - 1;
  if (!Number.isSafeInteger(last)) throw kerr("EOVERFLOW", "range wraps");
  await access.ioasLock.lock();
  try {
    const ioas = access.ioas;
    if (!ioas) throw kerr("ENOENT", "access is not attached");
    const iopt = ioas.iopt;
    await iopt.iovaRwsem.downRead();
    const done: { area: (typeof parts)[number]["area"]; first: number; lastIdx: number }[] = [];
    const { parts, done: complete } = contigAreas(iopt, iova, last);
    try {
      const out: number[] = [];
      for (const p of parts) {
        const area = p.area;
        const startByte = area.startByte + (p.from - area.iova);
        const endByte = area.startByte + (p.to - area.iova) + 1;
        if (area.preventAccess || startByte % PAGE_SIZE || (p.to !== area.last && endByte % PAGE_SIZE)) {
          throw kerr("EINVAL", "area cannot be pinned");
        }
        if (flags & IOMMUFD_ACCESS_RW_WRITE && !(area.prot & IOMMU_WRITE)) throw kerr("EPERM", "area is read-only");
        const first = area.iovaToIndex(p.from);
        const lastIdx = area.iovaToIndex(p.to);
        await area.pages!.mutex.lock();
        try {
          ioptPagesAddUsers(area.pages!, first, lastIdx, "access");
        } finally {
          area.pages!.mutex.unlock();
        }
        area.numAccesses++;
        done.push({ area, first, lastIdx });
        for (let i = first; i <= lastIdx; i++) out.push(area.pages!.pa(i));
      }
      if (!complete) throw kerr("ENOENT", "range is not fully mapped");
      return out;
    } catch (e) {
      for (const d of done) {
        ioptPagesRemoveUsers(d.area.pages!, d.first, d.lastIdx);
        d.area.numAccesses--;
      }
      throw e;
    } finally {
      iopt.iovaRwsem.upRead();
    }
  } finally {
    access.ioasLock.unlock();
  }
}

/**
 * Unpin what {@link iommufdAccessPinPages} pinned (WARN when the range is not fully mapped).
 * @linux iommufd_access_unpin_pages
 */
export async function iommufdAccessUnpinPages(access: IommufdAccess, iova: number, length: number): Promise<void> {
  if (!length) return;
  const last = iova + length - 1;
  await access.ioasLock.lock();
  try {
    const ioas = access.ioasUnpin;
    if (access.ictx.diag.warnOn(!ioas, "unpin without an IOAS")) return;
    const iopt = ioas!.iopt;
    await iopt.iovaRwsem.downRead();
    try {
      const { parts, done } = contigAreas(iopt, iova, last);
      for (const p of parts) {
        const area = p.area;
        if (access.ictx.diag.warnOn(area.numAccesses === 0, "unpin of an area without accesses")) continue;
        ioptPagesRemoveUsers(area.pages!, area.iovaToIndex(p.from), area.iovaToIndex(p.to));
        area.numAccesses--;
      }
      access.ictx.diag.warnOn(!done, "unpin of a range that is not fully mapped");
    } finally {
      iopt.iovaRwsem.upRead();
    }
  } finally {
    access.ioasLock.unlock();
  }
}

/**
 * Read or write `data.length` bytes at `iova` through the IOAS. EINVAL for a zero length or an area being
 * unmapped, EPERM for a write to a read-only area, ENOENT for a hole or without an IOAS.
 * @linux iommufd_access_rw
 */
export async function iommufdAccessRw(
  access: IommufdAccess,
  iova: number,
  data: Uint8Array,
  flags: number,
): Promise<void> {
  if (!data.length) throw kerr("EINVAL", "zero length");
  const last = iova + data.length - 1;
  if (!Number.isSafeInteger(last)) throw kerr("EOVERFLOW", "range wraps");
  await access.ioasLock.lock();
  try {
    const ioas = access.ioas;
    if (!ioas) throw kerr("ENOENT", "access is not attached");
    const iopt = ioas.iopt;
    await iopt.iovaRwsem.downRead();
    try {
      const { parts, done } = contigAreas(iopt, iova, last);
      let off = 0;
      for (const p of parts) {
        const area = p.area;
        if (area.preventAccess) throw kerr("EINVAL", "area is being unmapped");
        const write = (flags & IOMMUFD_ACCESS_RW_WRITE) !== 0;
        if (write && !(area.prot & IOMMU_WRITE)) throw kerr("EPERM", "area is read-only");
        const n = p.to - p.from + 1;
        ioptPagesRw(area.pages!, area.startByte + (p.from - area.iova), data.subarray(off, off + n), write);
        off += n;
      }
      if (!done) throw kerr("ENOENT", "range is not fully mapped");
    } finally {
      iopt.iovaRwsem.upRead();
    }
  } finally {
    access.ioasLock.unlock();
  }
}
