/**
 * The `iommufd_viommu` fixture of tools/testing/selftests/iommu/iommufd.c, and the uAPI calls its tests use
 * (test_cmd_viommu_alloc, test_cmd_vdevice_alloc, test_cmd_hwpt_alloc_nested, test_cmd_hwpt_invalidate, ...),
 * over the kernel-API mock domain of helpers.ts.
 */
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_VIOMMU_TYPE_SELFTEST,
} from "@iommu-sim/drivers-mock";
import {
  IOMMU_DESTROY,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  type IommufdDevice,
  iommufdDeviceReplace,
} from "../src/index.js";
import { type Env, ioasAlloc, mockDomain, PAGE_SIZE, setup } from "./helpers.js";

/** Write bytes into fresh user memory and return their VA. */
export function userBytes(env: Env, bytes: Uint8Array): bigint {
  const va = env.p.mmap(Math.max(PAGE_SIZE, bytes.length));
  env.p.writeMemory(va, bytes);
  return va;
}

/** Little-endian u32 words as bytes. */
export function u32s(...words: number[]): Uint8Array {
  const b = new Uint8Array(words.length * 4);
  const v = new DataView(b.buffer);
  for (const [i, w] of words.entries()) v.setUint32(i * 4, w >>> 0, true);
  return b;
}

/** struct iommu_hwpt_selftest { iotlb; pagetable_type } */
export function hwptSelftestData(iotlb = IOMMU_TEST_IOTLB_DEFAULT): Uint8Array {
  return u32s(iotlb, 0);
}

export async function hwptAlloc(env: Env, devId: number, ptId: number, flags = 0): Promise<number> {
  const cmd = { size: 0, flags, dev_id: devId, pt_id: ptId, out_hwpt_id: 0, data_type: 0, data_len: 0, data_uptr: 0n };
  await env.ioctl(IOMMU_HWPT_ALLOC, cmd);
  return cmd.out_hwpt_id;
}

export async function hwptAllocNested(
  env: Env,
  devId: number,
  ptId: number,
  opts: { flags?: number; dataType?: number; data?: Uint8Array | null; dataLen?: number; faultId?: number } = {},
): Promise<number> {
  const data = opts.data === undefined ? hwptSelftestData() : opts.data;
  const cmd = {
    size: 0,
    flags: opts.flags ?? 0,
    dev_id: devId,
    pt_id: ptId,
    out_hwpt_id: 0,
    data_type: opts.dataType ?? IOMMU_HWPT_DATA_SELFTEST,
    data_len: opts.dataLen ?? data?.length ?? 8,
    data_uptr: data ? userBytes(env, data) : 0n,
    fault_id: opts.faultId ?? 0,
  };
  await env.ioctl(IOMMU_HWPT_ALLOC, cmd);
  return cmd.out_hwpt_id;
}

export async function viommuAlloc(
  env: Env,
  devId: number,
  hwptId: number,
  type = IOMMU_VIOMMU_TYPE_SELFTEST,
  data?: Uint8Array,
): Promise<{ id: number; va: bigint }> {
  const va = data ? userBytes(env, data) : 0n;
  const cmd = {
    size: 0,
    flags: 0,
    type,
    dev_id: devId,
    hwpt_id: hwptId,
    out_viommu_id: 0,
    data_len: data?.length ?? 0,
    data_uptr: va,
  };
  await env.ioctl(IOMMU_VIOMMU_ALLOC, cmd);
  return { id: cmd.out_viommu_id, va };
}

export async function vdeviceAlloc(env: Env, viommuId: number, devId: number, virtId: number | bigint) {
  const cmd = { size: 0, viommu_id: viommuId, dev_id: devId, out_vdevice_id: 0, virt_id: BigInt(virtId) };
  await env.ioctl(IOMMU_VDEVICE_ALLOC, cmd);
  return cmd.out_vdevice_id;
}

/** IOMMU_HWPT_INVALIDATE; returns the struct (entry_num written back, on failure too). */
export function hwptInvalidate(
  env: Env,
  id: number,
  entries: Uint8Array | null,
  type: number,
  len: number,
  num: number,
) {
  const cmd = {
    size: 0,
    hwpt_id: id,
    data_uptr: entries ? userBytes(env, entries) : 0n,
    data_type: type,
    entry_len: len,
    entry_num: num,
    __reserved: 0,
  };
  return { cmd, run: () => env.ioctl(IOMMU_HWPT_INVALIDATE, cmd) };
}

export async function hwQueueAlloc(env: Env, viommuId: number, type: number, index: number, iova: bigint, len: bigint) {
  const cmd = {
    size: 0,
    flags: 0,
    viommu_id: viommuId,
    type,
    index,
    out_hw_queue_id: 0,
    nesting_parent_iova: iova,
    length: len,
  };
  await env.ioctl(IOMMU_HW_QUEUE_ALLOC, cmd);
  return cmd.out_hw_queue_id;
}

export function destroy(env: Env, id: number) {
  return env.ioctl(IOMMU_DESTROY, { size: 0, id });
}

/** test_cmd_mock_domain_replace */
export async function replace(idev: IommufdDevice, ptId: number) {
  await iommufdDeviceReplace(idev, 0, { id: ptId });
}

/** FIXTURE(iommufd_viommu) with the `mock_viommu` variant. */
export interface ViommuFixture {
  env: Env;
  ioasId: number;
  stdevId: number;
  deviceId: number;
  idev: IommufdDevice;
  hwptId: number;
  viommuId: number;
  nestedHwptId: number;
}

/** FIXTURE_SETUP(iommufd_viommu). */
export async function viommuFixture(opts: Parameters<typeof setup>[0] = {}): Promise<ViommuFixture> {
  const env = await setup(opts);
  const ioasId = await ioasAlloc(env);
  const md = await mockDomain(env, ioasId);
  const hwptId = await hwptAlloc(env, md.idevId, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT);
  const { id: viommuId } = await viommuAlloc(env, md.idevId, hwptId);
  const nestedHwptId = await hwptAllocNested(env, md.idevId, viommuId);
  return {
    env,
    ioasId,
    stdevId: md.stdevId,
    deviceId: md.idevId,
    idev: md.idev,
    hwptId,
    viommuId,
    nestedHwptId,
  };
}
