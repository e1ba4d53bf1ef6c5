/**
 * The ioctl entry point: command lookup, the size rules of copy_struct_from_user, and finalize/abort of an object
 * the command allocated through its ucmd.
 * @linux iommufd_fops_ioctl (drivers/iommu/iommufd/main.c)
 */
import { kerr } from "@iommu-sim/core";
import { copyStructFromUser } from "./core-user.js";
import { assertCtxLive, type IommufdCtx } from "./ctx.js";
import { iommufdObjectAbortAndDestroy, iommufdObjectFinalize } from "./object.js";
import type { IommufdIoctlOp } from "./tokens.js";
import { _IOC_NR, _IOC_TYPE, IOMMUFD_CMD_BASE, IOMMUFD_TYPE } from "./uapi.js";
import { type IoctlArg, IommufdUcmd } from "./ucmd.js";
import type { IommufdUser } from "./user-glue.js";
import { copyStructFromUserPtr, getUserU32, isUserPointer, userPointer } from "./user-ptr.js";
import { iommufdVfioIoctl } from "./vfio-compat.js";

/**
 * Dispatch an ioctl on an iommufd file. `arg` is the struct in object form (a `size` of 0 meaning the full
 * struct; out fields written back in place) or its bytes (`size` read from the first u32, out fields written
 * back). EFAULT for a null argument, ENOTTY for an unknown command, EINVAL below the command's minimum size, E2BIG
 * for non-zero bytes past the kernel's struct.
 * @linux iommufd_fops_ioctl
 */
export function iommufdFopsIoctl(
  ictx: IommufdCtx,
  cmd: number,
  arg: IoctlArg | null | undefined,
  user: IommufdUser,
): Promise<number> {
  // The checks up to the command are synchronous: one asynchronous step (the command's), errors still reject.
  try {
    return dispatch(ictx, cmd, arg, user);
  } catch (e) {
    return Promise.reject(e);
  }
}

function dispatch(ictx: IommufdCtx, cmd: number, arg: IoctlArg | null | undefined, user: IommufdUser): Promise<number> {
  assertCtxLive(ictx);
  const nr = _IOC_NR(cmd);
  if (nr < IOMMUFD_CMD_BASE || _IOC_TYPE(cmd) !== IOMMUFD_TYPE) {
    return iommufdVfioIoctl(ictx, cmd, arg, user);
  }
  if (arg === null || arg === undefined) throw kerr("EFAULT", "null ioctl argument");
  if (isUserPointer(arg)) return ioctlFromUserPointer(ictx, cmd, nr, userPointer(arg), user);
  // get_user(user_size, arg)
  let userSize: number;
  let ubytes: Uint8Array | undefined;
  if (arg instanceof Uint8Array) {
    if (arg.byteLength < 4) throw kerr("EFAULT", "argument shorter than its size field");
    userSize = new DataView(arg.buffer, arg.byteOffset, arg.byteLength).getUint32(0, true);
    ubytes = arg;
  } else {
    const s = arg.size;
    userSize = typeof s === "number" ? s : typeof s === "bigint" ? Number(s) : 0;
  }
  const op = ictx.core.ioctlOps.get(nr);
  if (!op || op.ioctlNum !== cmd) throw kerr("ENOTTY", `unknown iommufd ioctl 0x${cmd.toString(16)}`);
  if (!(arg instanceof Uint8Array) && userSize === 0) userSize = op.struct.size;
  if (userSize < op.minSize) throw kerr("EINVAL", `size ${userSize} below the minimum ${op.minSize}`);
  if (ubytes === undefined && userSize >= op.struct.size && op.struct.fields[0]?.name === "size") {
    // The object form covering the whole struct: nothing is cut off and nothing lies past the struct, so the
    // command is the checked object itself, with the size the caller gave (no encode to bytes and back).
    const kcmd = op.struct.normalize(arg as Record<string, never>) as Record<string, unknown>;
    kcmd.size = userSize;
    return runUcmd(ictx, op, new IommufdUcmd(ictx, user, kcmd, userSize, op.struct as never, arg));
  }
  if (ubytes === undefined) {
    // The object form has no bytes past the struct: what the caller did not send reads as zero, so a huge `size`
    // costs nothing (copy_struct_from_user checks only bytes that exist).
    const full = new Uint8Array(op.struct.size);
    op.struct.encode(arg as Record<string, never>, full);
    new DataView(full.buffer).setUint32(0, userSize, true);
    ubytes = full.subarray(0, Math.min(userSize, op.struct.size));
  } else if (userSize > ubytes.byteLength) {
    throw kerr("EFAULT", `size ${userSize} beyond the ${ubytes.byteLength}-byte buffer`);
  } else {
    ubytes = ubytes.subarray(0, userSize);
  }
  const kbuf = copyStructFromUser(ubytes, op.struct.size);
  return runUcmd(ictx, op, new IommufdUcmd(ictx, user, kbufDecode(op, kbuf), userSize, op.struct as never, arg));
}

function kbufDecode(op: IommufdIoctlOp, kbuf: Uint8Array): Record<string, unknown> {
  return op.struct.decode(kbuf) as Record<string, unknown>;
}

/** The pointer form: the same steps on the process's memory at `va`. */
async function ioctlFromUserPointer(
  ictx: IommufdCtx,
  cmd: number,
  nr: number,
  va: bigint,
  user: IommufdUser,
): Promise<number> {
  const userSize = getUserU32(user, va);
  const op = ictx.core.ioctlOps.get(nr);
  if (!op || op.ioctlNum !== cmd) throw kerr("ENOTTY", `unknown iommufd ioctl 0x${cmd.toString(16)}`);
  if (userSize < op.minSize) throw kerr("EINVAL", `size ${userSize} below the minimum ${op.minSize}`);
  const kbuf = copyStructFromUserPtr(user, va, op.struct.size, userSize);
  return runUcmd(ictx, op, new IommufdUcmd(ictx, user, kbufDecode(op, kbuf), userSize, op.struct as never, va));
}

/** The settled result of a command that completed without an asynchronous step (shared: it never changes). */
const DONE: Promise<number> = Promise.resolve(0);

function runUcmd(ictx: IommufdCtx, op: IommufdIoctlOp, ucmd: IommufdUcmd): Promise<number> {
  // A command that finishes without sleeping (IOAS_ALLOC uncontended) completes here with no promise of its own.
  let pending: Promise<void> | void;
  try {
    pending = op.execute(ucmd as IommufdUcmd);
  } catch (e) {
    return finishUcmd(ictx, ucmd, e);
  }
  if (pending) {
    return pending.then(
      () => finalizeUcmd(ictx, ucmd),
      (e) => finishUcmd(ictx, ucmd, e),
    );
  }
  finalizeUcmd(ictx, ucmd);
  return DONE;
}

/** Success: publish the object the command allocated through its ucmd (no asynchronous step). */
function finalizeUcmd(ictx: IommufdCtx, ucmd: IommufdUcmd): number {
  if (ucmd.newObj) iommufdObjectFinalize(ictx, ucmd.newObj);
  return 0;
}

async function finishUcmd(ictx: IommufdCtx, ucmd: IommufdUcmd, failed: unknown): Promise<number> {
  if (ucmd.newObj) {
    if (failed !== undefined) await iommufdObjectAbortAndDestroy(ictx, ucmd.newObj);
    else iommufdObjectFinalize(ictx, ucmd.newObj);
  }
  if (failed !== undefined) throw failed;
  return 0;
}
