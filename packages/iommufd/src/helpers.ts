/**
 * Typed helpers for TypeScript users: each issues one ioctl through `p.ioctl` (so it takes the same path as a C
 * program's ioctl(2)) and returns the out fields. Errors reject with the ioctl's KernelError.
 * @linux the test_ioctl_* / test_cmd_* wrappers of tools/testing/selftests/iommu/iommufd_utils.h
 */
import type { Process } from "@iommu-sim/core";
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_VFIO_IOAS,
  type IommuIovaRange,
  iommu_iova_range,
  U64_MAX,
} from "./uapi.js";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_PASID,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_PASID,
} from "./vfio-cdev.js";

const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/**
 * IOMMU_IOAS_ALLOC: a new IOAS; resolves to its ID.
 * @linux IOMMU_IOAS_ALLOC
 */
export async function ioasAlloc(p: Process, fd: number): Promise<number> {
  const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
  await p.ioctl(fd, IOMMU_IOAS_ALLOC, cmd);
  return cmd.out_ioas_id;
}

/** What {@link ioasMap} maps. */
export interface IoasMapArgs {
  ioasId: number;
  /** User VA of the memory. */
  userVa: bigint;
  length: bigint | number;
  /** Fixed IOVA (sets IOMMU_IOAS_MAP_FIXED_IOVA); allocated when absent. */
  iova?: bigint | number;
  /** IOMMU_IOAS_MAP_* access flags (default READABLE | WRITEABLE). */
  access?: number;
}

/**
 * IOMMU_IOAS_MAP: map user memory; resolves to the IOVA used.
 * @linux IOMMU_IOAS_MAP
 */
export async function ioasMap(p: Process, fd: number, a: IoasMapArgs): Promise<bigint> {
  const cmd = {
    size: 0,
    flags: (a.access ?? RW) | (a.iova !== undefined ? IOMMU_IOAS_MAP_FIXED_IOVA : 0),
    ioas_id: a.ioasId,
    __reserved: 0,
    user_va: a.userVa,
    length: BigInt(a.length),
    iova: BigInt(a.iova ?? 0),
  };
  await p.ioctl(fd, IOMMU_IOAS_MAP, cmd);
  return cmd.iova;
}

/** What {@link ioasMapFile} maps. */
export interface IoasMapFileArgs {
  ioasId: number;
  /** A memfd of the same process. */
  memfd: number;
  /** Byte offset in the file. */
  start: bigint | number;
  length: bigint | number;
  iova?: bigint | number;
  access?: number;
}

/**
 * IOMMU_IOAS_MAP_FILE: map a memfd range; resolves to the IOVA used.
 * @linux IOMMU_IOAS_MAP_FILE
 */
export async function ioasMapFile(p: Process, fd: number, a: IoasMapFileArgs): Promise<bigint> {
  const cmd = {
    size: 0,
    flags: (a.access ?? RW) | (a.iova !== undefined ? IOMMU_IOAS_MAP_FIXED_IOVA : 0),
    ioas_id: a.ioasId,
    fd: a.memfd,
    start: BigInt(a.start),
    length: BigInt(a.length),
    iova: BigInt(a.iova ?? 0),
  };
  await p.ioctl(fd, IOMMU_IOAS_MAP_FILE, cmd);
  return cmd.iova;
}

/**
 * IOMMU_IOAS_UNMAP of [iova, iova + length) (default: everything); resolves to the bytes unmapped.
 * @linux IOMMU_IOAS_UNMAP
 */
export async function ioasUnmap(
  p: Process,
  fd: number,
  ioasId: number,
  iova: bigint | number = 0n,
  length: bigint | number = U64_MAX,
): Promise<bigint> {
  const cmd = { size: 0, ioas_id: ioasId, iova: BigInt(iova), length: BigInt(length) };
  await p.ioctl(fd, IOMMU_IOAS_UNMAP, cmd);
  return cmd.length;
}

/** What {@link ioasCopy} copies. */
export interface IoasCopyArgs {
  srcIoasId: number;
  srcIova: bigint | number;
  dstIoasId: number;
  /** Fixed destination IOVA; allocated when absent. */
  dstIova?: bigint | number;
  length: bigint | number;
  access?: number;
}

/**
 * IOMMU_IOAS_COPY: map the pages behind a source range into another IOAS; resolves to the destination IOVA.
 * @linux IOMMU_IOAS_COPY
 */
export async function ioasCopy(p: Process, fd: number, a: IoasCopyArgs): Promise<bigint> {
  const cmd = {
    size: 0,
    flags: (a.access ?? RW) | (a.dstIova !== undefined ? IOMMU_IOAS_MAP_FIXED_IOVA : 0),
    dst_ioas_id: a.dstIoasId,
    src_ioas_id: a.srcIoasId,
    length: BigInt(a.length),
    dst_iova: BigInt(a.dstIova ?? 0),
    src_iova: BigInt(a.srcIova),
  };
  await p.ioctl(fd, IOMMU_IOAS_COPY, cmd);
  return cmd.dst_iova;
}

/**
 * IOMMU_IOAS_IOVA_RANGES: the usable IOVA ranges and the required alignment. Asks twice when the first buffer
 * (room for `hint` ranges) is too small, as the EMSGSIZE protocol intends.
 * @linux IOMMU_IOAS_IOVA_RANGES
 */
export async function ioasIovaRanges(
  p: Process,
  fd: number,
  ioasId: number,
  hint = 8,
): Promise<{ ranges: IommuIovaRange[]; alignment: bigint }> {
  let room = hint;
  for (;;) {
    const len = Math.max(1, room) * iommu_iova_range.size;
    const buf = p.mmap(len);
    try {
      const cmd = {
        size: 0,
        ioas_id: ioasId,
        num_iovas: room,
        __reserved: 0,
        allowed_iovas: buf,
        out_iova_alignment: 0n,
      };
      try {
        await p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, cmd);
      } catch (e) {
        if ((e as { code?: string }).code !== "EMSGSIZE" || cmd.num_iovas <= room) throw e;
        room = cmd.num_iovas;
        continue;
      }
      const ranges: IommuIovaRange[] = [];
      for (let i = 0; i < cmd.num_iovas; i++) {
        ranges.push(
          iommu_iova_range.decode(p.readMemory(buf + BigInt(i * iommu_iova_range.size), iommu_iova_range.size)),
        );
      }
      return { ranges, alignment: cmd.out_iova_alignment };
    } finally {
      p.munmap(buf, len);
    }
  }
}

/**
 * IOMMU_IOAS_ALLOW_IOVAS: restrict IOVA allocation to `ranges` (empty: no restriction).
 * @linux IOMMU_IOAS_ALLOW_IOVAS
 */
export async function ioasAllowIovas(
  p: Process,
  fd: number,
  ioasId: number,
  ranges: readonly { start: bigint; last: bigint }[],
): Promise<void> {
  const len = Math.max(1, ranges.length) * iommu_iova_range.size;
  const buf = p.mmap(len);
  try {
    ranges.forEach((r, i) => {
      p.writeMemory(buf + BigInt(i * iommu_iova_range.size), iommu_iova_range.encode(r));
    });
    await p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, {
      size: 0,
      ioas_id: ioasId,
      num_iovas: ranges.length,
      __reserved: 0,
      allowed_iovas: buf,
    });
  } finally {
    p.munmap(buf, len);
  }
}

/**
 * IOMMU_IOAS_CHANGE_PROCESS: charge every mapping of the context to the calling process.
 * @linux IOMMU_IOAS_CHANGE_PROCESS
 */
export async function ioasChangeProcess(p: Process, fd: number): Promise<void> {
  await p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, { size: 0, __reserved: 0 });
}

/** What {@link hwptAlloc} allocates. */
export interface HwptAllocArgs {
  devId: number;
  /** An IOAS (or a parent HWPT / vIOMMU for nested HWPTs). */
  ptId: number;
  flags?: number;
  dataType?: number;
  /** User VA and length of driver data. */
  dataUptr?: bigint;
  dataLen?: number;
  faultId?: number;
}

/**
 * IOMMU_HWPT_ALLOC: resolves to the new HWPT's ID.
 * @linux IOMMU_HWPT_ALLOC
 */
export async function hwptAlloc(p: Process, fd: number, a: HwptAllocArgs): Promise<number> {
  const cmd = {
    size: 0,
    flags: a.flags ?? 0,
    dev_id: a.devId,
    pt_id: a.ptId,
    out_hwpt_id: 0,
    __reserved: 0,
    data_type: a.dataType ?? 0,
    data_len: a.dataLen ?? 0,
    data_uptr: a.dataUptr ?? 0n,
    fault_id: a.faultId ?? 0,
    __reserved2: 0,
  };
  await p.ioctl(fd, IOMMU_HWPT_ALLOC, cmd);
  return cmd.out_hwpt_id;
}

/** The out fields of IOMMU_GET_HW_INFO. */
export interface HwInfo {
  /** The driver's data (up to the buffer given). */
  data: Uint8Array;
  /** The driver data's full length. */
  dataLen: number;
  dataType: number;
  maxPasidLog2: number;
  capabilities: bigint;
}

/**
 * IOMMU_GET_HW_INFO with a `bufLen`-byte buffer (0: no data copied).
 * @linux IOMMU_GET_HW_INFO
 */
export async function getHwInfo(p: Process, fd: number, devId: number, bufLen = 64): Promise<HwInfo> {
  const buf = bufLen ? p.mmap(bufLen) : 0n;
  try {
    const cmd = {
      size: 0,
      flags: 0,
      dev_id: devId,
      data_len: bufLen,
      data_uptr: buf,
      out_data_type: 0,
      out_max_pasid_log2: 0,
      __reserved: [0, 0, 0],
      out_capabilities: 0n,
    };
    await p.ioctl(fd, IOMMU_GET_HW_INFO, cmd);
    const data = bufLen ? p.readMemory(buf, Math.min(bufLen, cmd.data_len)) : new Uint8Array(0);
    return {
      data,
      dataLen: cmd.data_len,
      dataType: cmd.out_data_type,
      maxPasidLog2: cmd.out_max_pasid_log2,
      capabilities: cmd.out_capabilities,
    };
  } finally {
    if (bufLen) p.munmap(buf, bufLen);
  }
}

/**
 * IOMMU_HWPT_SET_DIRTY_TRACKING.
 * @linux IOMMU_HWPT_SET_DIRTY_TRACKING
 */
export async function hwptSetDirtyTracking(p: Process, fd: number, hwptId: number, enable: boolean): Promise<void> {
  await p.ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, { size: 0, flags: enable ? 1 : 0, hwpt_id: hwptId, __reserved: 0 });
}

/** What {@link hwptGetDirtyBitmap} reads. */
export interface DirtyBitmapArgs {
  hwptId: number;
  iova: bigint | number;
  length: bigint | number;
  pageSize: bigint | number;
  /** User VA of the bitmap (one bit per page, any alignment). */
  data: bigint;
  /** IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR and friends. */
  flags?: number;
}

/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP: set the bits of dirty pages in the user bitmap.
 * @linux IOMMU_HWPT_GET_DIRTY_BITMAP
 */
export async function hwptGetDirtyBitmap(p: Process, fd: number, a: DirtyBitmapArgs): Promise<void> {
  await p.ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, {
    size: 0,
    hwpt_id: a.hwptId,
    flags: a.flags ?? 0,
    __reserved: 0,
    iova: BigInt(a.iova),
    length: BigInt(a.length),
    page_size: BigInt(a.pageSize),
    data: a.data,
  });
}

/**
 * IOMMU_DESTROY of an object.
 * @linux IOMMU_DESTROY
 */
export async function destroy(p: Process, fd: number, id: number): Promise<void> {
  await p.ioctl(fd, IOMMU_DESTROY, { size: 0, id });
}

/**
 * IOMMU_OPTION: SET `val` when given, else GET; resolves to val64.
 * @linux IOMMU_OPTION
 */
export async function option(
  p: Process,
  fd: number,
  optionId: number,
  objectId = 0,
  val?: bigint | number,
): Promise<bigint> {
  const cmd = {
    size: 0,
    option_id: optionId,
    op: val === undefined ? IOMMU_OPTION_OP_GET : IOMMU_OPTION_OP_SET,
    __reserved: 0,
    object_id: objectId,
    val64: BigInt(val ?? 0),
  };
  await p.ioctl(fd, IOMMU_OPTION, cmd);
  return cmd.val64;
}

/**
 * IOMMU_VFIO_IOAS: `op` GET (resolves to the ID), SET or CLEAR.
 * @linux IOMMU_VFIO_IOAS
 */
export async function vfioIoas(p: Process, fd: number, op: number, ioasId = 0): Promise<number> {
  const cmd = { size: 0, ioas_id: ioasId, op, __reserved: 0 };
  await p.ioctl(fd, IOMMU_VFIO_IOAS, cmd);
  return cmd.ioas_id;
}

/**
 * VFIO_DEVICE_BIND_IOMMUFD on a VFIO device fd; resolves to the device ID in iommufd.
 * @linux VFIO_DEVICE_BIND_IOMMUFD
 */
export async function vfioDeviceBindIommufd(p: Process, deviceFd: number, iommufd: number): Promise<number> {
  const cmd = { argsz: 0, flags: 0, iommufd, out_devid: 0 };
  await p.ioctl(deviceFd, VFIO_DEVICE_BIND_IOMMUFD, cmd);
  return cmd.out_devid;
}

/**
 * VFIO_DEVICE_ATTACH_IOMMUFD_PT (with a PASID when given); resolves to the HWPT ID used.
 * @linux VFIO_DEVICE_ATTACH_IOMMUFD_PT
 */
export async function vfioDeviceAttachPt(p: Process, deviceFd: number, ptId: number, pasid?: number): Promise<number> {
  const cmd = { argsz: 0, flags: pasid === undefined ? 0 : VFIO_DEVICE_ATTACH_PASID, pt_id: ptId, pasid: pasid ?? 0 };
  await p.ioctl(deviceFd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, cmd);
  return cmd.pt_id;
}

/**
 * VFIO_DEVICE_DETACH_IOMMUFD_PT (of a PASID when given).
 * @linux VFIO_DEVICE_DETACH_IOMMUFD_PT
 */
export async function vfioDeviceDetachPt(p: Process, deviceFd: number, pasid?: number): Promise<void> {
  await p.ioctl(deviceFd, VFIO_DEVICE_DETACH_IOMMUFD_PT, {
    argsz: 0,
    flags: pasid === undefined ? 0 : VFIO_DEVICE_DETACH_PASID,
    pasid: pasid ?? 0,
  });
}
