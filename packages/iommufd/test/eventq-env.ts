/**
 * Shared setup of the fault-queue and vEVENTQ tests: a machine with the mock driver and iommufd, a real user
 * process that opened /dev/iommu (event queues hand out fds of the calling process), and the selftest mock
 * domain (a mock device bound under a SELFTEST object) from helpers.ts.
 */
import { devIommuOps, fget, fput, type IommuViommu, type Machine, type Process } from "@iommu-sim/core";
import {
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_PAGE_SIZE,
  type MockIommu,
  type MockIommuHw,
  mockIommuDriver,
} from "@iommu-sim/drivers-mock";
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  type IommufdCtx,
  iommu_hwpt_page_response,
  iommu_hwpt_pgfault,
} from "../src/index.js";
import { bootMachine, mockDomain } from "./helpers.js";

export const PG = MOCK_PAGE_SIZE;
export const PGFAULT_SIZE = iommu_hwpt_pgfault.size;
export const RESP_SIZE = iommu_hwpt_page_response.size;

/** A machine, a process with /dev/iommu open, and the context behind its fd. */
export interface Ev {
  m: Machine;
  p: Process;
  fd: number;
  ictx: IommufdCtx;
  iommu: MockIommu;
  hw: MockIommuHw;
  ioctl(cmd: number, arg: object | Uint8Array | null): Promise<number>;
}

export async function evSetup(opts: { devices?: number } = {}): Promise<Ev> {
  const m = await bootMachine({ devices: opts.devices ?? 3 });
  const p = m.spawnProcess();
  const fd = await p.open("/dev/iommu");
  const file = fget(p, fd);
  const ictx = file.privateData as IommufdCtx;
  await fput(file);
  const iommu = mockIommuDriver.instanceFor(m, "mock0") as MockIommu;
  const hw = m.hw.get("mock0") as MockIommuHw;
  return { m, p, fd, ictx, iommu, hw, ioctl: (cmd, arg) => p.ioctl(fd, cmd, arg) };
}

/** Close every fd the process still has, then tear the machine down (which fails on any leak or warning). */
export async function evFinish(ev: Ev): Promise<void> {
  const fds: number[] = [];
  for (let i = 0; i < 64; i++) if (ev.p.files.lookup(i)) fds.push(i);
  // Event-queue files first: they hold references on the iommufd file.
  for (const fd of fds.reverse()) await ev.p.close(fd);
  await ev.m.teardown();
}

export async function ioasAlloc(ev: Ev): Promise<number> {
  const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
  await ev.ioctl(IOMMU_IOAS_ALLOC, cmd);
  return cmd.out_ioas_id;
}

/** Map `length` bytes of fresh process memory at `iova`; returns the user VA. */
export async function mapFixed(ev: Ev, ioas: number, iova: number, length: number): Promise<bigint> {
  const va = ev.p.mmap(length);
  await ev.ioctl(IOMMU_IOAS_MAP, {
    size: 0,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: ioas,
    __reserved: 0,
    user_va: va,
    length: BigInt(length),
    iova: BigInt(iova),
  });
  return va;
}

export async function faultAlloc(ev: Ev): Promise<{ id: number; fd: number }> {
  const cmd = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
  await ev.ioctl(IOMMU_FAULT_QUEUE_ALLOC, cmd);
  return { id: cmd.out_fault_id, fd: cmd.out_fault_fd };
}

export async function hwptAlloc(ev: Ev, devId: number, ptId: number, flags: number, faultId = 0): Promise<number> {
  const cmd = {
    size: 0,
    flags,
    dev_id: devId,
    pt_id: ptId,
    out_hwpt_id: 0,
    __reserved: 0,
    data_type: 0,
    data_len: 0,
    data_uptr: 0n,
    fault_id: faultId,
    __reserved2: 0,
  };
  await ev.ioctl(IOMMU_HWPT_ALLOC, cmd);
  return cmd.out_hwpt_id;
}

/** The selftest mock domain, through helpers.ts. */
export function bindMock(ev: Ev, ptId: number, devName: string) {
  return mockDomain({ m: ev.m, ictx: ev.ictx } as never, ptId, devName);
}

/** A fault-capable HWPT on `ioas` for a freshly bound mock device, which is moved onto it. */
export async function faultRig(ev: Ev, devName = "mock-t0") {
  const ioas = await ioasAlloc(ev);
  const fault = await faultAlloc(ev);
  const md = await bindMock(ev, ioas, devName);
  const hwpt = await hwptAlloc(ev, md.idevId, ioas, IOMMU_HWPT_FAULT_ID_VALID, fault.id);
  const { iommufdDeviceReplace } = await import("../src/index.js");
  await iommufdDeviceReplace(md.idev, 0, { id: hwpt });
  return { ioas, fault, md, hwpt };
}

/** Decode what a fault fd read returned. */
export function decodePgfaults(bytes: Uint8Array) {
  const out = [];
  for (let off = 0; off < bytes.length; off += PGFAULT_SIZE) {
    out.push(
      iommu_hwpt_pgfault.decode(bytes.subarray(off, off + PGFAULT_SIZE)) as unknown as {
        flags: number;
        dev_id: number;
        pasid: number;
        grpid: number;
        perm: number;
        addr: bigint;
        length: number;
        cookie: number;
      },
    );
  }
  return out;
}

/** Encode page responses. */
export function encodeResponses(...rs: { cookie: number; code: number }[]): Uint8Array {
  const b = new Uint8Array(rs.length * RESP_SIZE);
  for (const [i, r] of rs.entries()) b.set(iommu_hwpt_page_response.encode(r as never), i * RESP_SIZE);
  return b;
}

export const IOVA = MOCK_APERTURE_START + 64 * PG;

/**
 * Give the mock driver vIOMMU ops when it has none yet (the vIOMMU work of issue 5 adds them for real; these only
 * stand in so the vEVENTQ tests have a vIOMMU), then allocate a selftest vIOMMU on a nest-parent HWPT.
 */
export async function viommuRig(ev: Ev, devName = "mock-t0") {
  const ioas = await ioasAlloc(ev);
  const md = await bindMock(ev, ioas, devName);
  const ops = devIommuOps(md.dev) as { getViommuSize?: unknown; viommuInit?: unknown };
  ops.getViommuSize ??= (_dev: unknown, type: number) => (type === IOMMU_VIOMMU_TYPE_SELFTEST ? 1 : 0);
  ops.viommuInit ??= async (v: IommuViommu) => {
    v.ops = {};
  };
  const parent = await hwptAlloc(ev, md.idevId, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT);
  const cmd = {
    size: 0,
    flags: 0,
    type: IOMMU_VIOMMU_TYPE_SELFTEST,
    dev_id: md.idevId,
    hwpt_id: parent,
    out_viommu_id: 0,
    data_len: 0,
    __reserved: 0,
    data_uptr: 0n,
  };
  await ev.ioctl(IOMMU_VIOMMU_ALLOC, cmd);
  return { ioas, md, parent, viommuId: cmd.out_viommu_id };
}

export async function veventqAlloc(ev: Ev, viommuId: number, type: number, depth: number, extra: object = {}) {
  const cmd = {
    size: 0,
    flags: 0,
    viommu_id: viommuId,
    type,
    veventq_depth: depth,
    out_veventq_id: 0,
    out_veventq_fd: 0,
    __reserved: 0,
    ...extra,
  };
  await ev.ioctl(IOMMU_VEVENTQ_ALLOC, cmd);
  return { id: cmd.out_veventq_id, fd: cmd.out_veventq_fd };
}
