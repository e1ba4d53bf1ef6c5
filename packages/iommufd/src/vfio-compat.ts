/**
 * VFIO compatibility: IOMMU_VFIO_IOAS selects the IOAS the type1 emulation uses, and the VFIO container ioctls
 * (API version, extensions, SET_IOMMU, MAP_DMA, UNMAP_DMA) are served on an iommufd file for VFIO users.
 * @linux drivers/iommu/iommufd/vfio_compat.c, include/uapi/linux/vfio.h
 */
import { kerr } from "@iommu-sim/core";
import { UapiStruct } from "./core-user.js";
import type { IommufdCtx } from "./ctx.js";
import { ioptUnmapAll, ioptUnmapIova } from "./io-pagetable.js";
import { convIommuProt, type IommufdIoas, iommufdGetIoas, iommufdIoasAlloc, ioptMapUserPages } from "./ioas.js";
import { iommufdLockObj, iommufdObjectFinalize, iommufdPutObject } from "./object.js";
import {
  _IO,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  type IommuVfioIoas,
} from "./uapi.js";
import type { IoctlArg, IommufdUcmd } from "./ucmd.js";
import type { IommufdUser } from "./user-glue.js";
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
/** @linux VFIO_UNMAP_ALL */
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;
/** @linux VFIO_DMA_MAP_FLAG_READ */
export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
/** @linux VFIO_DMA_MAP_FLAG_WRITE */
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
/** @linux VFIO_GET_API_VERSION */
export const VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0);
/** @linux VFIO_CHECK_EXTENSION */
export const VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1);
/** @linux VFIO_SET_IOMMU */
export const VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2);
/** @linux VFIO_IOMMU_MAP_DMA */
export const VFIO_IOMMU_MAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 13);
/** @linux VFIO_IOMMU_UNMAP_DMA */
export const VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 14);

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
 * @linux iommufd_vfio_get_ioas
 */
export function iommufdVfioGetIoas(ictx: IommufdCtx): IommufdIoas {
  const ioas = ictx.vfioIoas;
  if (!ioas) throw kerr("ENODEV", "no VFIO compatibility IOAS");
  if (!iommufdLockObj(ioas)) throw kerr("ENODEV", "VFIO compatibility IOAS is going away");
  return ioas;
}

/**
 * IOMMU_VFIO_IOAS: get, set or clear the compatibility IOAS. GET on an unset context is ENOENT.
 * @linux iommufd_vfio_ioas
 */
export async function iommufdVfioIoas(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuVfioIoas;
  const ictx = ucmd.ictx;
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET: {
      let ioas: IommufdIoas;
      try {
        ioas = iommufdVfioGetIoas(ictx);
      } catch {
        throw kerr("ENOENT", "no VFIO compatibility IOAS");
      }
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

function argBytes(
  arg: IoctlArg | null | undefined,
  st: UapiStruct,
  user: IommufdUser,
): { cmd: Record<string, unknown>; argsz: number } {
  if (arg === null || arg === undefined) throw kerr("EFAULT", "null argument");
  // A user pointer: copy_from_user(minsz) from the caller's memory.
  if (isUserPointer(arg)) arg = user.read(userPointer(arg), st.size);
  if (arg instanceof Uint8Array) {
    if (arg.byteLength < st.size) throw kerr("EFAULT", "short argument");
    return { cmd: st.decode(arg) as Record<string, unknown>, argsz: (st.decode(arg) as { argsz: number }).argsz };
  }
  const argsz = typeof arg.argsz === "number" && arg.argsz ? arg.argsz : st.size;
  return { cmd: st.decode(st.encode(arg as never)) as Record<string, unknown>, argsz };
}

/**
 * A VFIO container ioctl on an iommufd file; unknown ones are ENOTTY. Returns the ioctl's value.
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
    case VFIO_CHECK_EXTENSION: {
      const type = typeof arg === "number" ? arg : Number((arg as Record<string, unknown> | null)?.arg ?? 0);
      return type === VFIO_TYPE1_IOMMU || type === VFIO_TYPE1v2_IOMMU ? 1 : 0;
    }
    case VFIO_SET_IOMMU: {
      const type = typeof arg === "number" ? arg : Number((arg as Record<string, unknown> | null)?.arg ?? 0);
      if (type !== VFIO_TYPE1_IOMMU && type !== VFIO_TYPE1v2_IOMMU) throw kerr("EINVAL", "unsupported IOMMU type");
      // Without a compatibility IOAS the container gets a fresh one.
      if (!ictx.vfioIoas) {
        const ioas = iommufdIoasAlloc(ictx);
        iommufdObjectFinalize(ictx, ioas);
        ictx.vfioIoas = ioas;
      }
      return 0;
    }
    case VFIO_IOMMU_MAP_DMA: {
      const { cmd: m, argsz } = argBytes(arg, vfio_iommu_type1_dma_map, user);
      const flags = m.flags as number;
      if (argsz < vfio_iommu_type1_dma_map.size || flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)) {
        throw kerr("EINVAL", "bad argsz or flags");
      }
      const ioas = iommufdVfioGetIoas(ictx);
      try {
        let f = 0;
        if (flags & VFIO_DMA_MAP_FLAG_READ) f |= IOMMU_IOAS_MAP_READABLE;
        if (flags & VFIO_DMA_MAP_FLAG_WRITE) f |= IOMMU_IOAS_MAP_WRITEABLE;
        await ioas.mutex.lock();
        try {
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
          ioas.mutex.unlock();
        }
      } finally {
        iommufdPutObject(ictx, ioas);
      }
      return 0;
    }
    case VFIO_IOMMU_UNMAP_DMA: {
      const { cmd: u, argsz } = argBytes(arg, vfio_iommu_type1_dma_unmap, user);
      const flags = u.flags as number;
      if (argsz < vfio_iommu_type1_dma_unmap.size || flags & ~VFIO_DMA_UNMAP_FLAG_ALL) {
        throw kerr("EINVAL", "bad argsz or flags");
      }
      const ioas = iommufdVfioGetIoas(ictx);
      try {
        let n: number;
        if (flags & VFIO_DMA_UNMAP_FLAG_ALL) {
          if (u.iova || u.size) throw kerr("EINVAL", "UNMAP_ALL takes no range");
          n = await ioptUnmapAll(ioas.iopt);
        } else {
          n = await ioptUnmapIova(ioas.iopt, Number(u.iova as bigint), Number(u.size as bigint));
        }
        if (isUserPointer(arg)) {
          const out = new Uint8Array(8);
          new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
          user.write(userPointer(arg) + 16n, out);
        } else if (arg && !(arg instanceof Uint8Array)) (arg as Record<string, unknown>).size = BigInt(n);
        else if (arg instanceof Uint8Array) new DataView(arg.buffer, arg.byteOffset).setBigUint64(16, BigInt(n), true);
      } finally {
        iommufdPutObject(ictx, ioas);
      }
      return 0;
    }
    default:
      throw kerr("ENOTTY", `unknown ioctl 0x${cmd.toString(16)}`);
  }
}
