/**
 * An ioctl argument given as a number: a user pointer into the calling process's memory, as the kernel sees every
 * ioctl argument. The struct is read from that address (EFAULT when unmapped) and out fields are written back there.
 * Bytes past the kernel's struct are checked in page-sized pieces, never copied whole, so a huge `size` costs what
 * the caller actually mapped.
 * @linux get_user / copy_struct_from_user / check_zeroed_user / copy_to_user on `(void __user *)arg`
 */
import { kerr } from "@iommu-sim/core";
import type { IommufdUser } from "./user-glue.js";
import { PAGE_SIZE } from "./user-glue.js";

/** Whether an ioctl argument is a user pointer (a number or a bigint) rather than a struct object or its bytes. */
export function isUserPointer(arg: unknown): arg is number | bigint {
  return typeof arg === "number" || typeof arg === "bigint";
}

/**
 * The address of a pointer argument as a bigint; EFAULT for a value that is not an unsigned 64-bit address.
 * @linux the `unsigned long arg` cast to `void __user *`
 */
export function userPointer(arg: number | bigint): bigint {
  if (typeof arg === "number" && (!Number.isSafeInteger(arg) || arg < 0)) throw kerr("EFAULT", `bad pointer ${arg}`);
  const va = BigInt(arg);
  if (va < 0n || va >= 1n << 64n) throw kerr("EFAULT", `bad pointer ${arg}`);
  return va;
}

/**
 * Read a u32 at user address `va`.
 * @linux get_user(u32)
 */
export function getUserU32(user: IommufdUser, va: bigint): number {
  const b = user.read(va, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

/**
 * Check that `length` user bytes from `va` are zero: E2BIG at the first non-zero byte, EFAULT at the first
 * unmapped page (whichever comes first, in address order). Reads a page at a time.
 * @linux check_zeroed_user
 */
export function checkZeroedUser(user: IommufdUser, va: bigint, length: number): void {
  let at = va;
  let left = length;
  while (left > 0) {
    const inPage = Number(at % BigInt(PAGE_SIZE));
    const n = Math.min(PAGE_SIZE - inPage, left);
    const b = user.read(at, n);
    for (let i = 0; i < n; i++) if (b[i] !== 0) throw kerr("E2BIG", "non-zero bytes past the struct");
    at += BigInt(n);
    left -= n;
  }
}

/**
 * Copy a `usize`-byte user struct at `va` into a `ksize`-byte kernel struct: zero-extend a shorter one; a longer
 * one must be zero past `ksize`.
 * @linux copy_struct_from_user
 */
export function copyStructFromUserPtr(user: IommufdUser, va: bigint, ksize: number, usize: number): Uint8Array {
  const k = new Uint8Array(ksize);
  k.set(user.read(va, Math.min(ksize, usize)));
  if (usize > ksize) checkZeroedUser(user, va + BigInt(ksize), usize - ksize);
  return k;
}
