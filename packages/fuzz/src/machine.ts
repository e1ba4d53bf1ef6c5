/**
 * The machine a fuzz program runs on, and the helpers reproducers use to pass an ioctl argument in each of its
 * three forms: the struct object, its bytes, or an integer user pointer to it in the caller's memory.
 * @linux a syzkaller VM with CONFIG_IOMMUFD_TEST, booted fresh for each program
 */
import {
  createMachine,
  defaultPlatformInput,
  KernelError,
  type Machine,
  type PlatformDescription,
  type Process,
  parsePlatform,
  type SchedulerChoice,
  type UapiStruct,
} from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import { IOMMU_DESTROY, iommufdModule } from "@iommu-sim/iommufd";
import { iommufdSelftestModule } from "@iommu-sim/selftest";

/** Options of {@link bootFuzzMachine}. */
export interface FuzzMachineOptions {
  seed?: number;
  scheduler?: SchedulerChoice;
}

/**
 * The fuzz platform's description (parsed once; machines only read it): the default platform's mock IOMMUs and
 * their devices, in 512 MiB of memory.
 * @linux none (the test VM's firmware description)
 */
export function fuzzPlatform(): PlatformDescription {
  if (platform) return platform;
  const input = defaultPlatformInput() as { memory: { size: string }; devices: { iommus?: { iommu: string }[] }[] };
  input.memory.size = "512MiB";
  input.devices = input.devices.filter((d) => d.iommus?.some((x) => x.iommu.startsWith("mock")));
  platform = parsePlatform(input);
  return platform;
}
let platform: PlatformDescription | undefined;

/**
 * The fuzz platform: the default one's mock IOMMUs and their platform devices (each a VFIO cdev node), with the
 * mock driver, iommufd and CONFIG_IOMMUFD_TEST loaded. Memory is small and sparse.
 * @linux a test VM's kernel with CONFIG_IOMMUFD_TEST=y
 */
export async function bootFuzzMachine(opts: FuzzMachineOptions = {}): Promise<Machine> {
  const m = await createMachine({
    platform: fuzzPlatform(),
    modules: [mockIommuDriver, iommufdModule, iommufdSelftestModule],
    seed: opts.seed ?? 1,
    trackFreeStacks: false,
    ...(opts.scheduler ? { scheduler: opts.scheduler } : {}),
  });
  await m.boot();
  return m;
}

/**
 * The bytes form of an ioctl argument: `obj` encoded in the kernel's layout with its `size` (or `argsz`) field as
 * given, in a buffer of max(size, sizeof) bytes.
 * @linux copy_struct_from_user (the bytes the kernel reads)
 */
export function asBytes(struct: UapiStruct<object>, obj: Record<string, unknown>): Uint8Array {
  const sz = Number((obj.size ?? obj.argsz ?? 0) as number | bigint);
  const len = Math.min(Math.max(struct.size, Number.isFinite(sz) ? sz : 0), struct.size + 64);
  const out = new Uint8Array(len);
  struct.encode(obj as never, out);
  return out;
}

/**
 * Write `obj` in the kernel's layout to user memory at `va` of `p`, and return `va` as the integer user pointer an
 * ioctl takes (`ioctl(fd, cmd, (unsigned long)&cmd)` in C).
 * @linux ioctl(fd, cmd, (unsigned long)&arg) in C
 */
export function atUserPointer(
  p: Process,
  va: bigint,
  struct: UapiStruct<object>,
  obj: Record<string, unknown>,
): number {
  p.writeMemory(va, asBytes(struct, obj));
  return Number(va);
}

/** Copy the out fields of the struct at `va` back into `obj` (what a C caller reads after the ioctl). @linux copy_to_user of the ioctl's out fields, as the caller sees them */
export function readBackUserPointer(
  p: Process,
  va: bigint,
  struct: UapiStruct<object>,
  obj: Record<string, unknown>,
): void {
  Object.assign(obj, struct.decode(p.readMemory(va, struct.size)));
}

/** A `__u32` as the ABI holds it. @linux __u32 (include/uapi/linux/types.h) */
export function u32(v: unknown): number {
  return typeof v === "bigint" ? Number(BigInt.asUintN(32, v)) : Number(v) >>> 0;
}
/** A `__s32` as the ABI holds it. @linux __s32 (include/uapi/linux/types.h) */
export function s32(v: unknown): number {
  return typeof v === "bigint" ? Number(BigInt.asIntN(32, v)) : Number(v) | 0;
}
/** A `__u64` as the ABI holds it. @linux __u64 (include/uapi/linux/types.h) */
export function u64(v: unknown): bigint {
  if (typeof v === "bigint") return BigInt.asUintN(64, v);
  const n = Number(v);
  return Number.isFinite(n) ? BigInt.asUintN(64, BigInt(Math.trunc(n))) : 0n;
}

/** Decode a hex string (the bytes a reproducer writes or pokes). @linux none (syzkaller data arguments) */
export function hex(h: string): Uint8Array {
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Run a system call the way a fuzz program does: a KernelError (the `-1` and errno of C) is swallowed and
 * `fallback` returned; anything else is a bug and propagates.
 * @linux a C caller checking ioctl() == -1 and errno
 */
export async function sys<T, F = undefined>(fn: () => T | Promise<T>, fallback?: F): Promise<T | F> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof KernelError) return fallback as F;
    throw e;
  }
}

/** An ioctl with the struct passed as bytes; out fields (and partial copies back) land in `obj`. @linux ioctl with a struct buffer (copy_struct_from_user / copy_to_user) */
export async function ioctlBytes(
  p: Process,
  fd: number,
  cmd: number,
  struct: UapiStruct<object>,
  obj: Record<string, unknown>,
): Promise<number> {
  const bytes = asBytes(struct, obj);
  try {
    return await p.ioctl(fd, cmd, bytes);
  } finally {
    const full = new Uint8Array(Math.max(bytes.byteLength, struct.size));
    full.set(bytes);
    Object.assign(obj, struct.decode(full));
  }
}

/** An ioctl with the struct written at user VA `va` and its address passed as an integer; out fields land in `obj`. @linux ioctl(fd, cmd, (unsigned long)&arg) in C */
export async function ioctlUptr(
  p: Process,
  fd: number,
  cmd: number,
  struct: UapiStruct<object>,
  obj: Record<string, unknown>,
  va: bigint,
): Promise<number> {
  const ptr = atUserPointer(p, va, struct, obj);
  try {
    return await p.ioctl(fd, cmd, ptr as never);
  } finally {
    if (!p.exited) readBackUserPointer(p, va, struct, obj);
  }
}

/**
 * Whether `p.ioctl` takes an integer user pointer (the third argument form). Probed without side effects: an
 * `iommu_destroy` whose `size` (4) is below the minimum, at a pointer, must answer EINVAL when the kernel reads the
 * struct from memory; a caller that ignores the pointer sees some other answer.
 * @linux none (a probe of this build's ioctl argument forms)
 */
export async function supportsIntegerPointer(p: Process, iommufd: number, va: bigint): Promise<boolean> {
  try {
    p.writeMemory(va, new Uint8Array([4, 0, 0, 0, 0, 0, 0, 0]));
    await p.ioctl(iommufd, IOMMU_DESTROY, Number(va) as never);
    return false;
  } catch (e) {
    return e instanceof KernelError && e.code === "EINVAL";
  }
}

/** Await `p` and swallow a KernelError (what a C program's ignored `-1` return is); resolves to its code or 0. @linux errno after a failed system call */
export async function errnoOf(p: Promise<unknown> | (() => unknown)): Promise<string | 0> {
  try {
    await (typeof p === "function" ? p() : p);
    return 0;
  } catch (e) {
    if (e instanceof KernelError) return e.code;
    throw e;
  }
}
