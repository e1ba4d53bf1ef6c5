/**
 * VFIO compatibility: IOMMU_VFIO_IOAS selects the IOAS the type1 emulation uses, and the VFIO container ioctls
 * (API version, extensions, SET_IOMMU, GET_INFO, MAP_DMA, UNMAP_DMA) are served on an iommufd file for VFIO users.
 * What iommufd does not serve is refused as Linux refuses it: the VADDR flags (EINVAL, extension 0), the dirty
 * bitmap ioctl and unmap flag (ENOTTY, EINVAL), the nesting type (extension 0).
 * @linux drivers/iommu/iommufd/vfio_compat.c, include/uapi/linux/vfio.h
 */
import { kerr } from "@iommu-sim/core";
import { UapiStruct } from "./core-user.js";
import type { IommufdCtx } from "./ctx.js";
import {
  IOPT_IOVA_MAX,
  ioptCutIova,
  ioptDisableLargePages,
  ioptReservedHoles,
  ioptUnmapAll,
  ioptUnmapIovaRange,
} from "./io-pagetable.js";
import { convIommuProt, type IommufdIoas, iommufdGetIoas, ioptMapUserPages, iovaToU64 } from "./ioas.js";
import { iommufdLockObj, iommufdPutObject } from "./object.js";
import {
  _IO,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  type IommuVfioIoas,
  U64_MAX,
} from "./uapi.js";
import type { IoctlArg, IommufdUcmd } from "./ucmd.js";
import { type IommufdUser, PAGE_SIZE } from "./user-glue.js";
import { isUserPointer, userPointer } from "./user-ptr.js";

/** @linux VFIO_TYPE */
export const VFIO_TYPE = 0x3b;
/** @linux VFIO_BASE */
export const VFIO_BASE = 100;
/** @linux VFIO_API_VERSION */
export const VFIO_API_VERSION = 0;
/** @linux VFIO_TYPE1_IOMMU */
export const VFIO_TYPE1_IOMMU = 1;
/** @linux VFIO_TYPE1v2_IOMMU */
export const VFIO_TYPE1v2_IOMMU = 3;
/** @linux VFIO_DMA_CC_IOMMU (extension: DMA is cache coherent) */
export const VFIO_DMA_CC_IOMMU = 4;
/** @linux VFIO_TYPE1_NESTING_IOMMU (obsolete; iommufd answers 0) */
export const VFIO_TYPE1_NESTING_IOMMU = 6;
/** @linux VFIO_UNMAP_ALL (extension) */
export const VFIO_UNMAP_ALL = 9;
/** @linux VFIO_UPDATE_VADDR (extension; iommufd answers 0) */
export const VFIO_UPDATE_VADDR = 10;
/** @linux VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (not served by iommufd) */
export const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0;
/** @linux VFIO_DMA_UNMAP_FLAG_ALL */
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;
/** @linux VFIO_DMA_UNMAP_FLAG_VADDR (not served by iommufd) */
export const VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2;
/** @linux VFIO_DMA_MAP_FLAG_READ */
export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
/** @linux VFIO_DMA_MAP_FLAG_WRITE */
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
/** @linux VFIO_DMA_MAP_FLAG_VADDR (not served by iommufd) */
export const VFIO_DMA_MAP_FLAG_VADDR = 1 << 2;
/** `vfio_iommu_type1_info.flags`: iova_pgsizes is valid. @linux VFIO_IOMMU_INFO_PGSIZES */
export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
/** `vfio_iommu_type1_info.flags`: cap_offset / a capability chain is there. @linux VFIO_IOMMU_INFO_CAPS */
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;
/** Capability ID of the usable IOVA ranges. @linux VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE */
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
/** Capability ID of the number of DMA mappings left. @linux VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL */
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;
/** @linux VFIO_GET_API_VERSION */
export const VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0);
/** @linux VFIO_CHECK_EXTENSION */
export const VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1);
/** @linux VFIO_SET_IOMMU */
export const VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2);
/** @linux VFIO_IOMMU_GET_INFO */
export const VFIO_IOMMU_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12);
/** @linux VFIO_IOMMU_MAP_DMA */
export const VFIO_IOMMU_MAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 13);
/** @linux VFIO_IOMMU_UNMAP_DMA */
export const VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 14);
/** Not served by iommufd (ENOTTY). @linux VFIO_IOMMU_DIRTY_PAGES */
export const VFIO_IOMMU_DIRTY_PAGES = _IO(VFIO_TYPE, VFIO_BASE + 17);

/** @linux struct vfio_iommu_type1_info */
export const vfio_iommu_type1_info = new UapiStruct("vfio_iommu_type1_info", [
  { name: "argsz", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "iova_pgsizes", type: "u64" },
  { name: "cap_offset", type: "u32" },
  { name: "pad", type: "u32" },
]);
/** struct_size(struct vfio_iommu_type1_info_cap_iova_range, iova_ranges, 0): header, nr_iovas, reserved. */
export const VFIO_CAP_IOVA_RANGE_SIZE = 16;
/** sizeof(struct vfio_iova_range { __u64 start, end; }). */
export const VFIO_IOVA_RANGE_SIZE = 16;
/** sizeof(struct vfio_iommu_type1_info_dma_avail { header; __u32 avail; }). */
export const VFIO_CAP_DMA_AVAIL_SIZE = 12;

/** @linux struct vfio_iommu_type1_dma_map */
export const vfio_iommu_type1_dma_map = new UapiStruct("vfio_iommu_type1_dma_map", [
  { name: "argsz", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "vaddr", type: "u64" },
  { name: "iova", type: "u64" },
  { name: "size", type: "u64" },
]);
/** @linux struct vfio_iommu_type1_dma_unmap */
export const vfio_iommu_type1_dma_unmap = new UapiStruct("vfio_iommu_type1_dma_unmap", [
  { name: "argsz", type: "u32" },
  { name: "flags", type: "u32" },
  { name: "iova", type: "u64" },
  { name: "size", type: "u64" },
]);

/**
 * The IOAS VFIO compatibility uses (ENODEV when none is set), with a short-term reference.
 * @linux get_compat_ioas
 */
export function iommufdVfioGetIoas(ictx: IommufdCtx): IommufdIoas {
  const ioas = ictx.vfioIoas;
  if (!ioas) throw kerr("ENODEV", "no VFIO compatibility IOAS");
  if (!iommufdLockObj(ioas)) throw kerr("ENODEV", "VFIO compatibility IOAS is going away");
  return ioas;
}

/**
 * IOMMU_VFIO_IOAS: get, set or clear the compatibility IOAS. GET on an unset context is ENODEV (get_compat_ioas).
 * @linux iommufd_vfio_ioas
 */
export async function iommufdVfioIoas(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuVfioIoas;
  const ictx = ucmd.ictx;
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET: {
      const ioas = iommufdVfioGetIoas(ictx);
      cmd.ioas_id = ioas.id;
      iommufdPutObject(ictx, ioas);
      ucmd.respond();
      return;
    }
    case IOMMU_VFIO_IOAS_SET: {
      const ioas = iommufdGetIoas(ictx, cmd.ioas_id);
      ictx.vfioIoas = ioas;
      iommufdPutObject(ictx, ioas);
      return;
    }
    case IOMMU_VFIO_IOAS_CLEAR:
      ictx.vfioIoas = undefined;
      return;
    default:
      throw kerr("EOPNOTSUPP", "unknown op");
  }
}

/** A struct argument in object or byte form (user pointers are copied in first). */
type StructArg = Exclude<IoctlArg, number | bigint>;

function argBytes(arg: StructArg | null | undefined, st: UapiStruct): { cmd: Record<string, unknown>; argsz: number } {
  if (arg === null || arg === undefined) throw kerr("EFAULT", "null argument");
  if (arg instanceof Uint8Array) {
    if (arg.byteLength < st.size) throw kerr("EFAULT", "short argument");
    return { cmd: st.decode(arg) as Record<string, unknown>, argsz: (st.decode(arg) as { argsz: number }).argsz };
  }
  const argsz = typeof arg.argsz === "number" && arg.argsz ? arg.argsz : st.size;
  return { cmd: st.decode(st.encode(arg as never)) as Record<string, unknown>, argsz };
}

/** The `unsigned long arg` of an ioctl that takes a value (SET_IOMMU, CHECK_EXTENSION): a number or `{ arg }`. */
function argValue(arg: IoctlArg | number | null | undefined): number {
  if (typeof arg === "number") return arg;
  if (typeof arg === "bigint") return Number(BigInt.asUintN(64, arg));
  return Number((arg as Record<string, unknown> | null)?.arg ?? 0);
}

/**
 * A struct ioctl called with a user pointer: copy `argsz` bytes in (at least `minsz`; EFAULT when unmapped), run
 * the command on those bytes, and copy back the bytes it changed (copy_to_user of its out fields).
 */
async function viaUserPointer(
  user: IommufdUser,
  ptr: number | bigint,
  minsz: number,
  run: (bytes: Uint8Array) => Promise<number>,
): Promise<number> {
  const va = userPointer(ptr);
  const head = user.read(va, 4);
  const argsz = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
  // Only what the caller declared (capped to a page past the struct) is ever read or written.
  const len = Math.max(minsz, Math.min(argsz, minsz + PAGE_SIZE));
  const bytes = user.read(va, len);
  const before = bytes.slice();
  const r = await run(bytes);
  let i = 0;
  while (i < len) {
    if (bytes[i] === before[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j < len && bytes[j] !== before[j]) j++;
    user.write(va + BigInt(i), bytes.subarray(i, j));
    i = j;
  }
  return r;
}

/**
 * Whether every paging HWPT of the compatibility IOAS enforces cache coherency (1) or not (0); ENODEV without one.
 * @linux iommufd_vfio_cc_iommu
 */
async function iommufdVfioCcIommu(ictx: IommufdCtx): Promise<number> {
  const ioas = iommufdVfioGetIoas(ictx);
  try {
    await ioas.mutex.lock();
    const rc = ioas.hwptList.every((h) => h.enforceCacheCoherency) ? 1 : 0;
    ioas.mutex.unlock();
    return rc;
  } finally {
    iommufdPutObject(ictx, ioas);
  }
}

/**
 * VFIO_CHECK_EXTENSION: 1 for the two type1 flavours and unmap-all, the coherency of the compat IOAS for
 * DMA_CC_IOMMU, 0 for everything else (the nesting type and VADDR updates included).
 * @linux iommufd_vfio_check_extension
 */
async function iommufdVfioCheckExtension(ictx: IommufdCtx, type: number): Promise<number> {
  switch (type) {
    case VFIO_TYPE1_IOMMU:
    case VFIO_TYPE1v2_IOMMU:
    case VFIO_UNMAP_ALL:
      return 1;
    case VFIO_DMA_CC_IOMMU:
      return iommufdVfioCcIommu(ictx);
    case VFIO_TYPE1_NESTING_IOMMU:
    case VFIO_UPDATE_VADDR:
      return 0;
    default:
      return 0;
  }
}

/**
 * VFIO_SET_IOMMU: EINVAL for a type other than type1/type1v2; ENODEV without a compat IOAS (VFIO refuses
 * set_iommu without a group). Type1 (v1) disables large pages so any mapping can later be unmapped in part.
 * @linux iommufd_vfio_set_iommu
 */
async function iommufdVfioSetIommu(ictx: IommufdCtx, type: number): Promise<number> {
  if (type !== VFIO_TYPE1_IOMMU && type !== VFIO_TYPE1v2_IOMMU) throw kerr("EINVAL", "unsupported IOMMU type");
  const ioas = iommufdVfioGetIoas(ictx);
  try {
    if (type === VFIO_TYPE1_IOMMU) await ioptDisableLargePages(ioas.iopt);
  } finally {
    iommufdPutObject(ictx, ioas);
  }
  return 0;
}

/**
 * The page sizes every domain of the IOAS can map, with the sub-CPU-page sizes folded into PAGE_SIZE, at least the
 * IOAS alignment (all sizes from PAGE_SIZE up without a domain).
 * @linux iommufd_get_pagesizes
 */
async function iommufdGetPagesizes(ioas: IommufdIoas): Promise<bigint> {
  const iopt = ioas.iopt;
  await iopt.domainsRwsem.downRead();
  try {
    let bitmap = U64_MAX;
    for (const d of iopt.domains) bitmap &= BigInt(d.pgsizeBitmap);
    const pageMask = ~BigInt(PAGE_SIZE - 1) & U64_MAX;
    // vfio_update_pgsize_bitmap: sizes below the CPU page are served as PAGE_SIZE.
    if (bitmap & ~pageMask & U64_MAX) bitmap = (bitmap & pageMask) | BigInt(PAGE_SIZE);
    const align = BigInt(iopt.iovaAlignment);
    return bitmap > align ? bitmap : align;
  } finally {
    iopt.domainsRwsem.upRead();
  }
}

/** The caller's argument as user memory of `argsz` bytes: writes past a byte buffer's end are EFAULT. */
class InfoUserBuffer {
  /** The object form's bytes (the struct and the capability chain after it). */
  readonly bytes: Uint8Array;
  constructor(
    readonly arg: IoctlArg,
    argsz: number,
  ) {
    if (arg instanceof Uint8Array) {
      this.bytes = arg;
    } else {
      this.bytes = new Uint8Array(Math.max(argsz, vfio_iommu_type1_info.size));
      this.bytes.set(vfio_iommu_type1_info.encode(arg as never));
    }
  }
  /** @linux copy_to_user / put_user into the caller's buffer */
  write(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.bytes.byteLength) throw kerr("EFAULT", "capability beyond the caller's buffer");
    this.bytes.set(data, offset);
  }
  writeU32(offset: number, v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.write(offset, b);
  }
}

/** A capability header `{ id, version: 1, next: 0 }` at the start of `cap`. */
function capHeader(cap: Uint8Array, id: number): DataView {
  const v = new DataView(cap.buffer, cap.byteOffset, cap.byteLength);
  v.setUint16(0, id, true);
  v.setUint16(2, 1, true);
  return v;
}

/**
 * The IOVA-range capability: the holes between reserved ranges. Ranges that fit in `avail` are written, the header
 * once the whole capability fits; returns its full size either way.
 * @linux iommufd_fill_cap_iova
 */
function iommufdFillCapIova(ioas: IommufdIoas, ubuf: InfoUserBuffer | undefined, at: number, avail: number): number {
  let nr = 0;
  for (const h of ioptReservedHoles(ioas.iopt)) {
    const size = VFIO_CAP_IOVA_RANGE_SIZE + (nr + 1) * VFIO_IOVA_RANGE_SIZE;
    if (ubuf && avail >= size) {
      const r = new Uint8Array(VFIO_IOVA_RANGE_SIZE);
      const v = new DataView(r.buffer);
      v.setBigUint64(0, BigInt(h.start), true);
      v.setBigUint64(8, iovaToU64(h.last), true);
      ubuf.write(at + VFIO_CAP_IOVA_RANGE_SIZE + nr * VFIO_IOVA_RANGE_SIZE, r);
    }
    nr++;
  }
  const total = VFIO_CAP_IOVA_RANGE_SIZE + nr * VFIO_IOVA_RANGE_SIZE;
  if (ubuf && avail >= total) {
    const hdr = new Uint8Array(VFIO_CAP_IOVA_RANGE_SIZE);
    capHeader(hdr, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE).setUint32(8, nr, true);
    ubuf.write(at, hdr);
  }
  return total;
}

/**
 * The DMA-available capability: U32_MAX (iommufd's limit is the memory cgroup, not a mapping count).
 * @linux iommufd_fill_cap_dma_avail
 */
function iommufdFillCapDmaAvail(
  _ioas: IommufdIoas,
  ubuf: InfoUserBuffer | undefined,
  at: number,
  avail: number,
): number {
  if (ubuf && avail >= VFIO_CAP_DMA_AVAIL_SIZE) {
    const cap = new Uint8Array(VFIO_CAP_DMA_AVAIL_SIZE);
    capHeader(cap, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL).setUint32(8, 0xffffffff, true);
    ubuf.write(at, cap);
  }
  return VFIO_CAP_DMA_AVAIL_SIZE;
}

/**
 * VFIO_IOMMU_GET_INFO: flags (PGSIZES | CAPS), iova_pgsizes, and the capability chain (DMA_AVAIL, then
 * IOVA_RANGE) after the struct. EINVAL when argsz is below offsetofend(iova_pgsizes); ENODEV without a compat
 * IOAS. When the caller's argsz is too small for the chain, only what fits is written, cap_offset stays 0 and
 * argsz returns the size needed. In object form the bytes after the struct come back as `caps` (a Uint8Array).
 * @linux iommufd_vfio_iommu_get_info
 */
async function iommufdVfioIommuGetInfo(ictx: IommufdCtx, arg: StructArg | null | undefined): Promise<number> {
  const info = vfio_iommu_type1_info;
  const minsz = 16; // offsetofend(struct vfio_iommu_type1_info, iova_pgsizes)
  if (arg === null || arg === undefined) throw kerr("EFAULT", "null argument");
  if (arg instanceof Uint8Array && arg.byteLength < minsz) throw kerr("EFAULT", "short argument");
  let head: Uint8Array | undefined;
  if (arg instanceof Uint8Array) {
    head = new Uint8Array(info.size);
    head.set(arg.subarray(0, Math.min(info.size, arg.byteLength)));
  }
  const cmd = (head ? info.decode(head) : info.decode(info.encode(arg as never))) as {
    argsz: number;
    flags: number;
    iova_pgsizes: bigint;
    cap_offset: number;
  };
  const argsz = cmd.argsz;
  if (argsz < minsz) throw kerr("EINVAL", `argsz ${argsz} below ${minsz}`);
  const outsz = Math.min(argsz, info.size);
  const ioas = iommufdVfioGetIoas(ictx);
  try {
    cmd.flags = VFIO_IOMMU_INFO_PGSIZES;
    cmd.iova_pgsizes = await iommufdGetPagesizes(ioas);
    cmd.cap_offset = 0;
    const ubuf = new InfoUserBuffer(arg, argsz);
    await ioas.iopt.iovaRwsem.downRead();
    try {
      const fills = [iommufdFillCapDmaAvail, iommufdFillCapIova];
      let total = info.size;
      let lastCap = -1;
      for (const fill of fills) {
        const capSize = argsz > total ? fill(ioas, ubuf, total, argsz - total) : fill(ioas, undefined, 0, 0);
        // Chain the previous capability to this one (its `next`), when the caller's buffer reaches this far.
        if (lastCap >= 0 && argsz >= total) ubuf.writeU32(lastCap + 4, total);
        lastCap = total;
        total += capSize;
      }
      if (argsz >= total) cmd.cap_offset = info.size;
      cmd.argsz = total;
      cmd.flags |= VFIO_IOMMU_INFO_CAPS;
      ubuf.write(0, info.encode(cmd as never).subarray(0, outsz));
    } finally {
      ioas.iopt.iovaRwsem.upRead();
    }
    if (!(arg instanceof Uint8Array)) {
      const out = info.decode(ubuf.bytes) as Record<string, unknown>;
      for (const f of info.fields) if (f.offset + f.size <= outsz) arg[f.name] = out[f.name];
      if (argsz > info.size) arg.caps = ubuf.bytes.slice(info.size, argsz);
    }
  } finally {
    iommufdPutObject(ictx, ioas);
  }
  return 0;
}

/**
 * VFIO_IOMMU_MAP_DMA: map at the fixed IOVA; EINVAL for a short argsz or a flag other than READ/WRITE (VADDR
 * included); ENODEV without a compat IOAS.
 * @linux iommufd_vfio_map_dma
 */
async function iommufdVfioMapDma(ictx: IommufdCtx, arg: StructArg | null | undefined, user: IommufdUser) {
  const { cmd: m, argsz } = argBytes(arg, vfio_iommu_type1_dma_map);
  const flags = m.flags as number;
  if (argsz < vfio_iommu_type1_dma_map.size || flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) {
    throw kerr("EINVAL", "bad argsz or flags");
  }
  let f = 0;
  if (flags & VFIO_DMA_MAP_FLAG_READ) f |= IOMMU_IOAS_MAP_READABLE;
  if (flags & VFIO_DMA_MAP_FLAG_WRITE) f |= IOMMU_IOAS_MAP_WRITEABLE;
  const ioas = iommufdVfioGetIoas(ictx);
  try {
    // No ioas->mutex: the io_pagetable's own locks serialise the map against attach (as in Linux).
    await ioptMapUserPages(
      ictx,
      ioas,
      user,
      Number(m.iova as bigint),
      Number(m.vaddr as bigint),
      Number(m.size as bigint),
      convIommuProt(f),
      0,
    );
  } finally {
    iommufdPutObject(ictx, ioas);
  }
  return 0;
}

/**
 * VFIO_IOMMU_UNMAP_DMA: unmap whole mappings inside the range (with type1 v1, cut at the range's ends first, so
 * part of a mapping can go); unmap-all with iova and size 0. An empty range succeeds with size 0. EINVAL for a
 * short argsz or a flag other than ALL (GET_DIRTY_BITMAP and VADDR included); ENODEV without a compat IOAS.
 * `size` returns the bytes unmapped.
 * @linux iommufd_vfio_unmap_dma
 */
async function iommufdVfioUnmapDma(ictx: IommufdCtx, arg: StructArg | null | undefined) {
  const { cmd: u, argsz } = argBytes(arg, vfio_iommu_type1_dma_unmap);
  const flags = u.flags as number;
  if (argsz < vfio_iommu_type1_dma_unmap.size || flags & ~VFIO_DMA_UNMAP_FLAG_ALL) {
    throw kerr("EINVAL", "bad argsz or flags");
  }
  const ioas = iommufdVfioGetIoas(ictx);
  try {
    let n: number;
    const iova = u.iova as bigint;
    const size = u.size as bigint;
    if (flags & VFIO_DMA_UNMAP_FLAG_ALL) {
      if (iova || size) throw kerr("EINVAL", "UNMAP_ALL takes no range");
      n = await ioptUnmapAll(ioas.iopt);
    } else {
      // iopt_unmap_iova's checks, on the u64 values: nothing can be mapped past the simulated IOVA space.
      if (!size) throw kerr("EINVAL", "zero length");
      if (iova + size - 1n > U64_MAX) throw kerr("EOVERFLOW", "IOVA range wraps");
      const max = BigInt(IOPT_IOVA_MAX);
      const last = Number(iova + size - 1n > max ? max : iova + size - 1n);
      if (iova > max) {
        n = 0;
      } else {
        if (ioas.iopt.disableLargePages) {
          // Type1 v1: make the range's last IOVA and the IOVA before it area ends (no cut needed before IOVA 0).
          const cuts = [last];
          if (iova) cuts.push(Number(iova) - 1);
          await ioptCutIova(ioas.iopt, cuts);
        }
        n = await ioptUnmapIovaRange(ioas.iopt, Number(iova), last);
      }
    }
    if (arg && !(arg instanceof Uint8Array)) (arg as Record<string, unknown>).size = BigInt(n);
    else if (arg instanceof Uint8Array) new DataView(arg.buffer, arg.byteOffset).setBigUint64(16, BigInt(n), true);
  } finally {
    iommufdPutObject(ictx, ioas);
  }
  return 0;
}

/**
 * A VFIO container ioctl on an iommufd file; unknown ones (VFIO_IOMMU_DIRTY_PAGES included) are ENOTTY. Returns
 * the ioctl's value.
 * @linux iommufd_vfio_ioctl
 */
export async function iommufdVfioIoctl(
  ictx: IommufdCtx,
  cmd: number,
  arg: IoctlArg | null | undefined,
  user: IommufdUser,
): Promise<number> {
  switch (cmd) {
    case VFIO_GET_API_VERSION:
      return VFIO_API_VERSION;
    case VFIO_SET_IOMMU:
      return iommufdVfioSetIommu(ictx, argValue(arg));
    case VFIO_CHECK_EXTENSION:
      return iommufdVfioCheckExtension(ictx, argValue(arg));
    case VFIO_IOMMU_GET_INFO:
      if (isUserPointer(arg)) {
        return viaUserPointer(user, arg, vfio_iommu_type1_info.size, (b) => iommufdVfioIommuGetInfo(ictx, b));
      }
      return iommufdVfioIommuGetInfo(ictx, arg);
    case VFIO_IOMMU_MAP_DMA:
      if (isUserPointer(arg)) {
        return viaUserPointer(user, arg, vfio_iommu_type1_dma_map.size, (b) => iommufdVfioMapDma(ictx, b, user));
      }
      return iommufdVfioMapDma(ictx, arg, user);
    case VFIO_IOMMU_UNMAP_DMA:
      if (isUserPointer(arg)) {
        return viaUserPointer(user, arg, vfio_iommu_type1_dma_unmap.size, (b) => iommufdVfioUnmapDma(ictx, b));
      }
      return iommufdVfioUnmapDma(ictx, arg);
    default:
      // VFIO_IOMMU_DIRTY_PAGES among them: -ENOIOCTLCMD, which user space sees as ENOTTY.
      throw kerr("ENOTTY", `unknown ioctl 0x${cmd.toString(16)}`);
  }
}
