/**
 * Port of the `iommufd_viommu` fixture of tools/testing/selftests/iommu/iommufd.c (variant mock_viommu, plus the
 * no_viommu variant's ENOENT), with DEV_CHECK_CACHE read through the mock's per-device cache.
 */
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_DEV_CACHE_ID_MAX,
  mockDevCache,
} from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_IOAS_UNMAP,
} from "../src/index.js";
import { finish, ioasAlloc, ioasMap, PAGE_SIZE, setup } from "./helpers.js";
import {
  destroy,
  hwptAlloc,
  hwptAllocNested,
  hwptInvalidate,
  hwQueueAlloc,
  replace,
  u32s,
  vdeviceAlloc,
  viommuAlloc,
  viommuFixture,
} from "./viommu-env.js";

const INV_SIZE = 12; // struct iommu_viommu_invalidate_selftest { flags; vdev_id; cache_id; }
const FLAG_ALL = 1;

describe("iommufd_viommu fixture", () => {
  it("no_viommu variant: VIOMMU_ALLOC and VDEVICE_ALLOC with no device are ENOENT", async () => {
    const env = await setup();
    await ioasAlloc(env);
    await expect(viommuAlloc(env, 0, 0)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(vdeviceAlloc(env, 0, 0, 0x99)).rejects.toMatchObject({ code: "ENOENT" });
    await finish(env);
  });

  it("viommu_negative_tests", async () => {
    const f = await viommuFixture();
    const { env } = f;
    // Invalid hwpt (hwpt_id = 0).
    await expect(viommuAlloc(env, f.deviceId, 0)).rejects.toMatchObject({ code: "ENOENT" });
    // Not a nesting parent.
    const hwpt = await hwptAlloc(env, f.deviceId, f.ioasId, 0);
    await expect(viommuAlloc(env, f.deviceId, hwpt)).rejects.toMatchObject({ code: "EINVAL" });
    await destroy(env, hwpt);
    // Unsupported type, and the reserved DEFAULT type.
    await expect(viommuAlloc(env, f.deviceId, f.hwptId, 0xdead)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(viommuAlloc(env, f.deviceId, f.hwptId, 0)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(destroy(env, f.hwptId)).rejects.toMatchObject({ code: "EBUSY" });
    await expect(destroy(env, f.viommuId)).rejects.toMatchObject({ code: "EBUSY" });
    await finish(env);
  });

  it("viommu_alloc_nested_iopf", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const fq = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
    await env.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fq);
    const opts = { flags: IOMMU_HWPT_FAULT_ID_VALID, faultId: 0xffffffff };
    await expect(hwptAllocNested(env, f.deviceId, f.viommuId, opts)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(
      hwptAllocNested(env, f.deviceId, f.viommuId, {
        flags: (IOMMU_HWPT_FAULT_ID_VALID | (1 << 31)) >>> 0,
        faultId: fq.out_fault_id,
      }),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    const iopfHwpt = await hwptAllocNested(env, f.deviceId, f.viommuId, {
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId: fq.out_fault_id,
    });
    // A vDEVICE must exist before attaching to a nested HWPT of the vIOMMU.
    await expect(replace(f.idev, iopfHwpt)).rejects.toMatchObject({ code: "ENOENT" });
    const vdev = await vdeviceAlloc(env, f.viommuId, f.deviceId, 0x99);
    await replace(f.idev, iopfHwpt);
    await expect(destroy(env, iopfHwpt)).rejects.toMatchObject({ code: "EBUSY" });
    // The fault object is held by the HWPT.
    await expect(destroy(env, fq.out_fault_id)).rejects.toMatchObject({ code: "EBUSY" });
    await replace(f.idev, f.ioasId);
    await destroy(env, iopfHwpt);
    await env.p.close(fq.out_fault_fd);
    await destroy(env, fq.out_fault_id);
    await destroy(env, vdev);
    await finish(env);
  });

  it("viommu_alloc_with_data: out_data loops in_data back", async () => {
    const f = await viommuFixture();
    const { env } = f;
    // struct iommu_viommu_selftest { in_data; out_data; out_mmap_offset; out_mmap_length }
    const data = new Uint8Array(24);
    data.set(u32s(0xbadbeef, 0));
    const { id, va } = await viommuAlloc(env, f.deviceId, f.hwptId, IOMMU_VIOMMU_TYPE_SELFTEST, data);
    const out = new DataView(env.p.readMemory(va, 8).buffer);
    expect(out.getUint32(4, true)).toBe(0xbadbeef);
    // Too short for in_data/out_data.
    await expect(viommuAlloc(env, f.deviceId, f.hwptId, IOMMU_VIOMMU_TYPE_SELFTEST, u32s(1))).rejects.toMatchObject({
      code: "EINVAL",
    });
    await destroy(env, id);
    await finish(env);
  });

  it("vdevice_alloc", async () => {
    const f = await viommuFixture();
    const { env } = f;
    await expect(replace(f.idev, f.nestedHwptId)).rejects.toMatchObject({ code: "ENOENT" });
    let vdev = await vdeviceAlloc(env, f.viommuId, f.deviceId, 0x99);
    await replace(f.idev, f.nestedHwptId);
    await expect(vdeviceAlloc(env, f.viommuId, f.deviceId, 0x99)).rejects.toMatchObject({ code: "EEXIST" });
    // The vDEVICE is not held by the attachment.
    await destroy(env, vdev);
    vdev = await vdeviceAlloc(env, f.viommuId, f.deviceId, 0x88);
    await replace(f.idev, f.nestedHwptId);
    await replace(f.idev, f.ioasId);
    await destroy(env, vdev);
    await finish(env);
  });

  it("vdevice_cache", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const dev = f.idev.dev;
    const cache = mockDevCache(dev);
    const vdev = await vdeviceAlloc(env, f.viommuId, f.deviceId, 0x99);
    const checkAll = (v: number) => expect([...cache]).toEqual([v, v, v, v]);
    checkAll(IOMMU_TEST_DEV_CACHE_DEFAULT);
    const T = IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;
    const inv = (entries: number[][], type: number, len: number, num: number) =>
      hwptInvalidate(env, f.viommuId, u32s(...entries.flat()), type, len, num);

    // Check data_type by passing a zero-length array.
    let r = inv([[0, 0, 0]], T, INV_SIZE, 0);
    await r.run();
    expect(r.cmd.entry_num).toBe(0);
    // Invalid data_type.
    r = inv([[0, 0, 0]], IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Structure size sanity (the zero-extended entry names vDEVICE 0, which does not exist).
    r = inv([[0, 0, 0, 0]], T, INV_SIZE + 1, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    r = inv([[0, 0, 0]], T, 1, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Invalid flag.
    r = inv([[0xffffffff, 0x99, 0]], T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    expect(r.cmd.entry_num).toBe(0);
    // Invalid data_uptr when the array is not empty.
    r = hwptInvalidate(env, f.viommuId, null, T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Invalid entry_len when the array is not empty.
    r = inv([[0, 0x99, 0]], T, 0, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Invalid cache_id.
    r = inv([[0, 0x99, MOCK_DEV_CACHE_ID_MAX + 1]], T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Invalid vdev_id.
    r = inv([[0, 0x9, 0]], T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Invalidate the 1st entry, fail the 2nd on its flags.
    r = inv(
      [
        [0, 0x99, 0],
        [0xffffffff, 0x99, 1],
      ],
      T,
      INV_SIZE,
      2,
    );
    await expect(r.run()).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    expect(r.cmd.entry_num).toBe(1);
    expect([...cache]).toEqual([
      0,
      IOMMU_TEST_DEV_CACHE_DEFAULT,
      IOMMU_TEST_DEV_CACHE_DEFAULT,
      IOMMU_TEST_DEV_CACHE_DEFAULT,
    ]);
    // Invalidate the 1st entry, fail the 2nd on its cache_id.
    r = inv(
      [
        [0, 0x99, 0],
        [0, 0x99, MOCK_DEV_CACHE_ID_MAX + 1],
      ],
      T,
      INV_SIZE,
      2,
    );
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(1);
    // Invalidate the 2nd entry.
    r = inv([[0, 0x99, 1]], T, INV_SIZE, 1);
    await r.run();
    expect(r.cmd.entry_num).toBe(1);
    expect([...cache]).toEqual([0, 0, IOMMU_TEST_DEV_CACHE_DEFAULT, IOMMU_TEST_DEV_CACHE_DEFAULT]);
    // Invalidate the 3rd and 4th entries.
    r = inv(
      [
        [0, 0x99, 2],
        [0, 0x99, 3],
      ],
      T,
      INV_SIZE,
      2,
    );
    await r.run();
    expect(r.cmd.entry_num).toBe(2);
    checkAll(0);
    // Invalidate everything (cache_id ignored).
    cache.fill(IOMMU_TEST_DEV_CACHE_DEFAULT);
    r = inv([[FLAG_ALL, 0x99, 0]], T, INV_SIZE, 1);
    await r.run();
    expect(r.cmd.entry_num).toBe(1);
    checkAll(0);
    await destroy(env, vdev);
    await finish(env);
  });

  it("hw_queue: type/length/overflow/unmapped errnos, index and dependency rules, pinned IOVA", async () => {
    const f = await viommuFixture();
    const { env } = f;
    let iova = BigInt(MOCK_APERTURE_START);
    const Q = IOMMU_HW_QUEUE_TYPE_SELFTEST;
    const P = BigInt(PAGE_SIZE);
    await expect(hwQueueAlloc(env, f.viommuId, IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, P)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await expect(hwQueueAlloc(env, f.viommuId, Q, 0, iova, 0n)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(hwQueueAlloc(env, f.viommuId, Q, 0, 0xffff_ffff_ffff_ffffn, P)).rejects.toMatchObject({
      code: "EOVERFLOW",
    });
    await expect(hwQueueAlloc(env, f.viommuId, Q, 0, iova, P)).rejects.toMatchObject({ code: "ENOENT" });
    const buffer = env.p.mmap(2 * PAGE_SIZE);
    iova = BigInt(await ioasMap(env, f.ioasId, buffer, PAGE_SIZE));
    const iova2 = BigInt(await ioasMap(env, f.ioasId, buffer + P, PAGE_SIZE));
    // Index 1 needs index 0; MAX is beyond the mock's queues.
    await expect(hwQueueAlloc(env, f.viommuId, Q, 1, iova, P)).rejects.toMatchObject({ code: "EIO" });
    await expect(hwQueueAlloc(env, f.viommuId, Q, IOMMU_TEST_HW_QUEUE_MAX, iova, P)).rejects.toMatchObject({
      code: "EINVAL",
    });
    const q0 = await hwQueueAlloc(env, f.viommuId, Q, 0, iova, P);
    await expect(hwQueueAlloc(env, f.viommuId, Q, 0, iova, P)).rejects.toMatchObject({ code: "EEXIST" });
    const unmap = (at: bigint) => env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: f.ioasId, iova: at, length: P });
    await expect(unmap(iova)).rejects.toMatchObject({ code: "EBUSY" });
    // The second page is not pinned by the queue.
    await unmap(iova2);
    const q1 = await hwQueueAlloc(env, f.viommuId, Q, 1, iova, P);
    await expect(destroy(env, q0)).rejects.toMatchObject({ code: "EBUSY" });
    await expect(destroy(env, f.viommuId)).rejects.toMatchObject({ code: "EBUSY" });
    await destroy(env, q1);
    await destroy(env, q0);
    await unmap(iova);
    await finish(env);
  });

  it("vdevice_tombstone: unbinding the device tombstones a live vDEVICE", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const vdev = await vdeviceAlloc(env, f.viommuId, f.deviceId, 0x99);
    await destroy(env, f.stdevId);
    await expect(destroy(env, vdev)).rejects.toMatchObject({ code: "ENOENT" });
    await finish(env);
  });

  it("nested HWPT on a vIOMMU takes only selftest data; the vIOMMU is then busy", async () => {
    const f = await viommuFixture();
    const { env } = f;
    await expect(
      hwptAllocNested(env, f.deviceId, f.viommuId, { dataType: IOMMU_HWPT_DATA_SELFTEST + 1 }),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(destroy(env, f.viommuId)).rejects.toMatchObject({ code: "EBUSY" });
    await destroy(env, f.nestedHwptId);
    await destroy(env, f.viommuId);
    await destroy(env, f.hwptId);
    await finish(env);
  });
});
