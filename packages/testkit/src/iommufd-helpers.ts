/**
 * Typed helpers for the iommufd uAPI calls a VMM test makes beyond iommufd's own helpers: vIOMMU, vDEVICE, nested
 * HWPT allocation with driver data, HWPT/vIOMMU invalidation arrays, vEVENTQ and fault-queue allocation, and the
 * records read from (and responses written to) their fds. Each builds the kernel struct with the kernel's field
 * names, so no test file hand-builds them.
 */
import type { Process } from "@iommu-sim/core";
import {
  hwptAlloc,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
} from "@iommu-sim/iommufd";

/** Copy `bytes` into fresh user memory of `p` and return its VA (0n for empty data). */
export function userBuffer(p: Process, bytes: Uint8Array): bigint {
  if (bytes.length === 0) return 0n;
  const va = p.mmap(Math.ceil(bytes.length / 4096) * 4096);
  p.writeMemory(va, bytes);
  return va;
}

/**
 * IOMMU_VIOMMU_ALLOC on a nesting-parent HWPT; resolves to the vIOMMU ID (driver output, if any, is written back
 * into `data`'s user copy and returned in `out`).
 * @linux IOMMU_VIOMMU_ALLOC (struct iommu_viommu_alloc)
 */
export async function viommuAlloc(
  p: Process,
  fd: number,
  a: { type: number; devId: number; hwptId: number; data?: Uint8Array },
): Promise<{ viommuId: number; out: Uint8Array }> {
  const data = a.data ?? new Uint8Array(0);
  const uptr = userBuffer(p, data);
  const cmd = {
    size: 0,
    flags: 0,
    type: a.type,
    dev_id: a.devId,
    hwpt_id: a.hwptId,
    out_viommu_id: 0,
    data_len: data.length,
    __reserved: 0,
    data_uptr: uptr,
  };
  await p.ioctl(fd, IOMMU_VIOMMU_ALLOC, cmd);
  return { viommuId: cmd.out_viommu_id, out: uptr ? p.readMemory(uptr, data.length) : new Uint8Array(0) };
}

/**
 * IOMMU_VDEVICE_ALLOC: the device's virtual ID in the vIOMMU; resolves to the vDEVICE ID.
 * @linux IOMMU_VDEVICE_ALLOC (struct iommu_vdevice_alloc)
 */
export async function vdeviceAlloc(
  p: Process,
  fd: number,
  a: { viommuId: number; devId: number; virtId: bigint | number },
): Promise<number> {
  const cmd = { size: 0, viommu_id: a.viommuId, dev_id: a.devId, out_vdevice_id: 0, virt_id: BigInt(a.virtId) };
  await p.ioctl(fd, IOMMU_VDEVICE_ALLOC, cmd);
  return cmd.out_vdevice_id;
}

/**
 * IOMMU_HWPT_ALLOC of a nested HWPT on a nesting parent or a vIOMMU (`ptId`), with driver data of `dataType`.
 * @linux IOMMU_HWPT_ALLOC with data_type/data_uptr
 */
export function nestedHwptAlloc(
  p: Process,
  fd: number,
  a: { devId: number; ptId: number; dataType: number; data: Uint8Array; flags?: number; faultId?: number },
): Promise<number> {
  return hwptAlloc(p, fd, {
    devId: a.devId,
    ptId: a.ptId,
    dataType: a.dataType,
    dataUptr: userBuffer(p, a.data),
    dataLen: a.data.length,
    ...(a.flags !== undefined ? { flags: a.flags } : {}),
    ...(a.faultId !== undefined ? { faultId: a.faultId } : {}),
  });
}

/**
 * IOMMU_HWPT_INVALIDATE with `entries` (each `entryLen` bytes) of `dataType` on a nested HWPT or a vIOMMU;
 * resolves to the number of entries the kernel handled (`entry_num` out, also set when it fails part way).
 * @linux IOMMU_HWPT_INVALIDATE (struct iommu_hwpt_invalidate)
 */
export async function hwptInvalidate(
  p: Process,
  fd: number,
  a: { hwptId: number; dataType: number; entryLen: number; entries: readonly Uint8Array[] },
): Promise<number> {
  const all = new Uint8Array(a.entryLen * a.entries.length);
  a.entries.forEach((e, i) => {
    all.set(e.subarray(0, a.entryLen), i * a.entryLen);
  });
  const cmd = {
    size: 0,
    hwpt_id: a.hwptId,
    data_uptr: userBuffer(p, all),
    data_type: a.dataType,
    entry_len: a.entryLen,
    entry_num: a.entries.length,
    __reserved: 0,
  };
  await p.ioctl(fd, IOMMU_HWPT_INVALIDATE, cmd);
  return cmd.entry_num;
}

/**
 * IOMMU_VEVENTQ_ALLOC; resolves to the vEVENTQ's object ID and fd (read it with {@link readVevents}).
 * @linux IOMMU_VEVENTQ_ALLOC (struct iommu_veventq_alloc)
 */
export async function veventqAlloc(
  p: Process,
  fd: number,
  a: { viommuId: number; type: number; depth: number },
): Promise<{ id: number; fd: number }> {
  const cmd = {
    size: 0,
    flags: 0,
    viommu_id: a.viommuId,
    type: a.type,
    veventq_depth: a.depth,
    out_veventq_id: 0,
    out_veventq_fd: 0,
    __reserved: 0,
  };
  await p.ioctl(fd, IOMMU_VEVENTQ_ALLOC, cmd);
  return { id: cmd.out_veventq_id, fd: cmd.out_veventq_fd };
}

/** One vEVENT read from a vEVENTQ. @linux struct iommufd_vevent_header + payload */
export interface Vevent {
  flags: number;
  sequence: number;
  /** The type-specific payload (`payloadLen` bytes); empty for a lost-events record. */
  data: Uint8Array;
}

/** IOMMUFD_VEVENTQ_FLAG_LOST_EVENTS. @linux enum iommu_veventq_flag */
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1;

/**
 * Read what a vEVENTQ holds (up to `maxBytes`) and split it into records of `payloadLen`-byte payloads.
 * @linux read() on a vEVENTQ fd (iommufd_veventq_fops_read)
 */
export async function readVevents(p: Process, fd: number, payloadLen: number, maxBytes = 4096): Promise<Vevent[]> {
  const bytes = await p.read(fd, maxBytes);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Vevent[] = [];
  for (let o = 0; o + 8 <= bytes.length; ) {
    const flags = dv.getUint32(o, true);
    const sequence = dv.getUint32(o + 4, true);
    const len = flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS ? 0 : payloadLen;
    out.push({ flags, sequence, data: bytes.slice(o + 8, o + 8 + len) });
    o += 8 + len;
  }
  return out;
}

/**
 * IOMMU_FAULT_QUEUE_ALLOC; resolves to the fault object's ID (for HWPT_ALLOC's `fault_id`) and its fd.
 * @linux IOMMU_FAULT_QUEUE_ALLOC (struct iommu_fault_alloc)
 */
export async function faultQueueAlloc(p: Process, fd: number): Promise<{ id: number; fd: number }> {
  const cmd = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
  await p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, cmd);
  return { id: cmd.out_fault_id, fd: cmd.out_fault_fd };
}

/** One page fault read from a fault queue. @linux struct iommu_hwpt_pgfault */
export interface Pgfault {
  flags: number;
  dev_id: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
  length: number;
  cookie: number;
}

/** sizeof(struct iommu_hwpt_pgfault). */
export const IOMMU_HWPT_PGFAULT_SIZE = 40;

/**
 * Read the page faults a fault queue holds.
 * @linux read() on a fault fd (iommufd_fault_fops_read)
 */
export async function readFaults(p: Process, fd: number, max = 16): Promise<Pgfault[]> {
  const bytes = await p.read(fd, max * IOMMU_HWPT_PGFAULT_SIZE);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Pgfault[] = [];
  for (let o = 0; o + IOMMU_HWPT_PGFAULT_SIZE <= bytes.length; o += IOMMU_HWPT_PGFAULT_SIZE) {
    out.push({
      flags: dv.getUint32(o, true),
      dev_id: dv.getUint32(o + 4, true),
      pasid: dv.getUint32(o + 8, true),
      grpid: dv.getUint32(o + 12, true),
      perm: dv.getUint32(o + 16, true),
      addr: dv.getBigUint64(o + 24, true),
      length: dv.getUint32(o + 32, true),
      cookie: dv.getUint32(o + 36, true),
    });
  }
  return out;
}

/**
 * Answer a page fault group by its cookie (IOMMU_PAGE_RESP_SUCCESS = 0, INVALID = 1).
 * @linux write() of struct iommu_hwpt_page_response on a fault fd
 */
export async function writeFaultResponse(p: Process, fd: number, cookie: number, code: number): Promise<void> {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, cookie, true);
  dv.setUint32(4, code, true);
  await p.write(fd, b);
}
