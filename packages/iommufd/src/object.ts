/**
 * The iommufd object: an ID in the context's xarray, a type, and two counts. `users` counts every reference
 * (the xarray's own, long-term dependents, short-term ioctl references); `waitCnt` counts the xarray's own plus the
 * short-term ones, which destruction waits for. Allocation reserves the ID with the zero entry; the object is
 * visible only once finalized; abort undoes an unfinalized one; remove is the single destroy primitive.
 * @linux struct iommufd_object and the object functions of drivers/iommu/iommufd/main.c
 */
import { kerr, kfree, Refcount, XA_ZERO_ENTRY } from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";

/** Any type, for untyped lookups. @linux IOMMUFD_OBJ_ANY */
export const IOMMUFD_OBJ_ANY = "ANY";

/** Object types of this package. @linux enum iommufd_object_type */
export const IOMMUFD_OBJ = {
  ACCESS: "ACCESS",
  DEVICE: "DEVICE",
  FAULT: "FAULT",
  HW_QUEUE: "HW_QUEUE",
  HWPT_PAGING: "HWPT_PAGING",
  HWPT_NESTED: "HWPT_NESTED",
  IOAS: "IOAS",
  VDEVICE: "VDEVICE",
  VEVENTQ: "VEVENTQ",
  VIOMMU: "VIOMMU",
  SELFTEST: "SELFTEST",
} as const;

/** The fault-injection site of object allocation. @linux the kzalloc of _iommufd_object_alloc */
export const IOMMUFD_OBJ_ALLOC_SITE = "iommufd_object_alloc";
/** The fault-injection site of the ID reservation. @linux the xa_alloc of _iommufd_object_alloc */
export const IOMMUFD_OBJ_XA_SITE = "iommufd_object_xa_alloc";
/** The fault-injection site of object lookups (failing returns ENOENT). @linux iommufd_should_fail in iommufd_get_object */
export const IOMMUFD_GET_OBJECT_SITE = "iommufd_get_object";

/**
 * Base of every object. Subclasses add their state; the core sets `id`, `type`, `ictx` and the counts.
 * @linux struct iommufd_object
 */
export class IommufdObject {
  /** @linux iommufd_object.id */
  id = 0;
  /** @linux iommufd_object.type */
  type: string = IOMMUFD_OBJ_ANY;
  /** @linux iommufd_object.users */
  users!: Refcount;
  /** @linux iommufd_object.wait_cnt */
  waitCnt!: Refcount;
  /** The context the object lives in. */
  ictx!: IommufdCtx;

  /** `TYPE#id`, for messages. */
  toString(): string {
    return `${this.type}#${this.id}`;
  }
}

/**
 * Allocate an object of `type` built by `make`, reserving its ID (invisible until finalized). ENOMEM under fault
 * injection; EBUSY when the ID space is exhausted.
 * @linux _iommufd_object_alloc
 */
export function iommufdObjectAlloc<T extends IommufdObject>(ictx: IommufdCtx, type: string, make: () => T): T {
  ictx.faults.check(IOMMUFD_OBJ_ALLOC_SITE);
  const obj = make();
  obj.type = type;
  obj.ictx = ictx;
  obj.users = new Refcount(ictx.diag, `iommufd ${type} users`, 1);
  obj.waitCnt = new Refcount(ictx.diag, `iommufd ${type} wait_cnt`, 1);
  // The ID is reserved but invisible to lookups until finalize stores the object.
  obj.id = ictx.objects.alloc(XA_ZERO_ENTRY);
  ictx.core.liveObjects.add(obj);
  return obj;
}

/**
 * Allocate an object that the ioctl core finalizes on success or aborts on failure. Types with an abort op must
 * not use it (WARN, EOPNOTSUPP).
 * @linux iommufd_object_alloc_ucmd
 */
export function iommufdObjectAllocUcmd<T extends IommufdObject>(
  ucmd: { ictx: IommufdCtx; newObj: IommufdObject | undefined },
  type: string,
  make: () => T,
): T {
  const ictx = ucmd.ictx;
  if (ictx.diag.warnOn(ucmd.newObj !== undefined, "iommufd_object_alloc_ucmd twice in one ioctl")) {
    throw kerr("EFAULT");
  }
  if (ictx.diag.warnOn(ictx.core.objectOps(type).abort !== undefined, `${type} has an abort op`)) {
    throw kerr("EOPNOTSUPP");
  }
  const obj = iommufdObjectAlloc(ictx, type, make);
  ucmd.newObj = obj;
  return obj;
}

/**
 * Publish an object: its ID now resolves to it. Call only once creation can no longer fail.
 * @linux iommufd_object_finalize
 */
export function iommufdObjectFinalize(ictx: IommufdCtx, obj: IommufdObject): void {
  const old = ictx.objects.cmpxchgRaw(obj.id, XA_ZERO_ENTRY, obj);
  if (old !== XA_ZERO_ENTRY) ictx.diag.warnOn(true, `finalize of ${obj}: its ID was not reserved`);
  const trace = ictx.diag.trace;
  if (trace.enabled) trace.emit("iommufd:object_create", { ctx: ictx.name, id: obj.id, type: obj.type });
}

/**
 * Drop an unfinalized object that holds nothing: release its ID and free it.
 * @linux iommufd_object_abort
 */
export function iommufdObjectAbort(ictx: IommufdCtx, obj: IommufdObject): void {
  const old = ictx.objects.cmpxchgRaw(obj.id, XA_ZERO_ENTRY, undefined);
  ictx.diag.warnOn(old !== XA_ZERO_ENTRY, `abort of ${obj}: its ID was not reserved`);
  // Nothing may still use it (the users count drops 1 -> 0).
  ictx.diag.warnOn(!obj.users.decAndTest(), `abort of ${obj} with users left`);
  freeObject(ictx, obj);
}

/**
 * Undo a fully initialised but unfinalized object: close its file, run abort (or destroy), then abort.
 * @linux iommufd_object_abort_and_destroy
 */
export async function iommufdObjectAbortAndDestroy(ictx: IommufdCtx, obj: IommufdObject): Promise<void> {
  const ops = ictx.core.objectOps(obj.type);
  const file = ops.fileOf?.(obj);
  if (file) await file.fput();
  if (ops.abort) await ops.abort(obj);
  else await ops.destroy(obj);
  iommufdObjectAbort(ictx, obj);
}

/**
 * Take the users and wait references of a live object; false when it is being destroyed.
 * @linux iommufd_lock_obj
 */
export function iommufdLockObj(obj: IommufdObject): boolean {
  if (!obj.users.incNotZero()) return false;
  if (!obj.waitCnt.incNotZero()) {
    obj.users.dec();
    return false;
  }
  return true;
}

/**
 * Look up a finalized object of `type` (or any type) and take a short-term reference, released with
 * {@link iommufdPutObject}. ENOENT when it is missing, unfinalized, of another type, dying, or when fault injection
 * says so.
 * @linux iommufd_get_object
 */
export function iommufdGetObject<T extends IommufdObject = IommufdObject>(
  ictx: IommufdCtx,
  id: number,
  type: string,
): T {
  if (ictx.faults.shouldFail(IOMMUFD_GET_OBJECT_SITE)) throw kerr("ENOENT", `injected lookup failure of ${id}`);
  const obj = Number.isSafeInteger(id) && id >= 0 ? ictx.objects.load(id) : undefined;
  if (!obj || (type !== IOMMUFD_OBJ_ANY && obj.type !== type) || !iommufdLockObj(obj)) {
    throw kerr("ENOENT", `no ${type === IOMMUFD_OBJ_ANY ? "object" : type} with id ${id}`);
  }
  return obj as T;
}

/**
 * Release the short-term reference of {@link iommufdGetObject}; wakes destroyers waiting for it.
 * @linux iommufd_put_object
 */
export function iommufdPutObject(ictx: IommufdCtx, obj: IommufdObject): void {
  // Users first, so a waiter never sees wait_cnt at 0 with a stale users reference.
  obj.users.dec();
  if (obj.waitCnt.decAndTest()) ictx.destroyWait.wakeUp();
}

/** Flags of {@link iommufdObjectRemove}. @linux enum REMOVE_WAIT / REMOVE_OBJ_TOMBSTONE */
export const REMOVE_WAIT = 1 << 0;
/** Leave the ID reserved (unusable) until the file closes. @linux REMOVE_OBJ_TOMBSTONE */
export const REMOVE_OBJ_TOMBSTONE = 1 << 1;

/** How long a destroyer waits for short-term users (60 s of virtual time). */
const DESTROY_WAIT_NS = 60_000_000_000;

/**
 * Drop the xarray's wait reference and wait for other short-term users to go, running pre_destroy first. EBUSY
 * (after a critical message) when they do not within 60 s; the reference is restored then.
 * @linux iommufd_object_dec_wait
 */
async function objectDecWait(ictx: IommufdCtx, obj: IommufdObject): Promise<void> {
  if (obj.waitCnt.decAndTest()) return;
  await objectWaitShortTermUsers(ictx, obj);
}

/** The slow half of {@link objectDecWait}: wait_cnt did not drop to zero. */
async function objectWaitShortTermUsers(ictx: IommufdCtx, obj: IommufdObject): Promise<void> {
  const ops = ictx.core.objectOps(obj.type);
  // Linux may be preempted (or sleep in pre_destroy's locks) anywhere from here on: racing tasks get a turn.
  await ictx.sched.preemptionPoint();
  if (ops.preDestroy) await ops.preDestroy(obj);
  await ictx.sched.preemptionPoint();
  const left = await ictx.destroyWait.waitEventTimeout(() => obj.waitCnt.read() === 0, DESTROY_WAIT_NS);
  if (left > 0) return;
  ictx.diag.report("warning", `iommufd: time out waiting for ${obj} to become free`, { culprit: String(obj) });
  obj.waitCnt.inc();
  throw kerr("EBUSY", `${obj} still has short-term users`);
}

/**
 * Remove an object: with `toDestroy` the caller's users reference is dropped here; the object must then be left
 * with only the xarray's reference (EBUSY otherwise, nothing changed); its slot is emptied (or tombstoned), the
 * short-term users are drained (before the removal with REMOVE_WAIT), then it is destroyed and freed. ENOENT for
 * an ID that is missing, reserved or a tombstone.
 * @linux iommufd_object_remove
 */
export function iommufdObjectRemove(
  ictx: IommufdCtx,
  toDestroy: IommufdObject | undefined,
  id: number,
  flags: number,
): Promise<void> {
  // The ioctl (or unbind) path up to the xa_lock is preemptible in Linux; REMOVE_WAIT sleeps before it.
  if (ictx.sched.preemptive || flags & REMOVE_WAIT) return objectRemoveSlow(ictx, toDestroy, id, flags);
  // Otherwise nothing sleeps before the slot is emptied, and the common case (no short-term user left, a destroy
  // that does not sleep) completes without an asynchronous step of its own.
  try {
    const o = objectRemoveSlot(ictx, toDestroy, id, flags, false);
    if (!o.waitCnt.decAndTest()) return objectWaitThenDestroy(ictx, o);
    const d = ictx.core.objectOps(o.type).destroy(o);
    if (d) return d.then(() => freeObject(ictx, o));
    freeObject(ictx, o);
    return REMOVED;
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The settled result of a removal that completed without an asynchronous step (shared: it never changes). */
const REMOVED: Promise<void> = Promise.resolve();

/** {@link iommufdObjectRemove} with its preemption point and REMOVE_WAIT's wait before the slot is emptied. */
async function objectRemoveSlow(
  ictx: IommufdCtx,
  toDestroy: IommufdObject | undefined,
  id: number,
  flags: number,
): Promise<void> {
  let zeroedWait = false;
  if (ictx.sched.preemptive) await ictx.sched.preemptionPoint();
  if (flags & REMOVE_WAIT) {
    if (!toDestroy) throw kerr("EINVAL", "REMOVE_WAIT needs the object");
    await objectDecWait(ictx, toDestroy);
    zeroedWait = true;
  }
  const o = objectRemoveSlot(ictx, toDestroy, id, flags, zeroedWait);
  // users is 0: any wait reference left belongs to a racing iommufd_put_object.
  if (!zeroedWait && !o.waitCnt.decAndTest()) return objectWaitThenDestroy(ictx, o);
  await ictx.core.objectOps(o.type).destroy(o);
  freeObject(ictx, o);
}

/**
 * The xa_lock part of {@link iommufdObjectRemove}: drop the users reference (EBUSY when others use the object,
 * ENOENT when the ID holds no finalized object; nothing changed then) and empty or tombstone the slot.
 */
function objectRemoveSlot(
  ictx: IommufdCtx,
  toDestroy: IommufdObject | undefined,
  id: number,
  flags: number,
  zeroedWait: boolean,
): IommufdObject {
  // xa_lock: nothing below sleeps until the slot is emptied.
  const raw = Number.isSafeInteger(id) && id >= 0 ? ictx.objects.load(id) : undefined;
  let fail: string | undefined;
  let obj: IommufdObject | undefined;
  if (toDestroy) {
    toDestroy.users.dec();
    obj = toDestroy;
    if (raw !== toDestroy) {
      ictx.diag.warnOn(true, `remove of ${toDestroy}: slot ${id} holds something else`);
      fail = "ENOENT";
    }
  } else if (raw === undefined) {
    // Missing, reserved for an object being built, or a tombstone.
    fail = "ENOENT";
  } else {
    obj = raw;
  }
  if (!fail && !obj!.users.decIfOne()) fail = "EBUSY";
  if (fail) {
    // Restore the xarray's wait reference.
    if (zeroedWait && obj) obj.waitCnt.set(1);
    throw kerr(fail as "ENOENT" | "EBUSY", fail === "EBUSY" ? `${obj} is in use` : `no object with id ${id}`);
  }
  const o = obj!;
  if (flags & REMOVE_OBJ_TOMBSTONE) ictx.objects.store(id, XA_ZERO_ENTRY);
  else ictx.objects.erase(id);
  const trace = ictx.diag.trace;
  if (trace.enabled) {
    trace.emit("iommufd:object_destroy", {
      ctx: ictx.name,
      id,
      type: o.type,
      tombstone: (flags & REMOVE_OBJ_TOMBSTONE) !== 0,
    });
  }
  if (ictx.vfioIoas === o) ictx.vfioIoas = undefined;
  return o;
}

/** Wait for the short-term users a racing lookup still holds, then destroy and free (EBUSY after the timeout). */
async function objectWaitThenDestroy(ictx: IommufdCtx, o: IommufdObject): Promise<void> {
  try {
    await objectWaitShortTermUsers(ictx, o);
  } catch (e) {
    ictx.diag.warnOn(true, `${o}: ${(e as Error).message}`);
    throw e;
  }
  await ictx.core.objectOps(o.type).destroy(o);
  freeObject(ictx, o);
}

/**
 * Kernel-initiated destroy of an object the caller holds a users reference on (device unbind, access destroy):
 * waits for short-term users.
 * @linux iommufd_object_destroy_user
 */
export async function iommufdObjectDestroyUser(ictx: IommufdCtx, obj: IommufdObject): Promise<boolean> {
  try {
    await iommufdObjectRemove(ictx, obj, obj.id, REMOVE_WAIT);
    return true;
  } catch (e) {
    // A failure here is a reference-counting bug; the object is left for close() to sweep.
    ictx.diag.warnOn(true, `destroy of ${obj} failed: ${(e as Error).message}`);
    return false;
  }
}

/**
 * Like {@link iommufdObjectDestroyUser} but leave the ID reserved until the file closes.
 * @linux iommufd_object_tombstone_user
 */
export async function iommufdObjectTombstoneUser(ictx: IommufdCtx, obj: IommufdObject): Promise<boolean> {
  try {
    await iommufdObjectRemove(ictx, obj, obj.id, REMOVE_WAIT | REMOVE_OBJ_TOMBSTONE);
    return true;
  } catch (e) {
    ictx.diag.warnOn(true, `tombstone of ${obj} failed: ${(e as Error).message}`);
    return false;
  }
}

/**
 * Drop the caller's users reference and destroy the object if that was the last user; silently keep it otherwise.
 * @linux iommufd_object_put_and_try_destroy
 */
export async function iommufdObjectPutAndTryDestroy(ictx: IommufdCtx, obj: IommufdObject): Promise<void> {
  try {
    await iommufdObjectRemove(ictx, obj, obj.id, 0);
  } catch {
    // Still used by someone else: that one destroys it later.
  }
}

/** Free an object's memory (the kfree after destroy / abort). */
export function freeObject(ictx: IommufdCtx, obj: IommufdObject): void {
  ictx.core.liveObjects.delete(obj);
  kfree(ictx.diag, obj, `iommufd object ${obj}`);
}
