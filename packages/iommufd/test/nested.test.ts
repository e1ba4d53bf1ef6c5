/**
 * Port of the nested parts of the `iommufd_ioas` fixture of tools/testing/selftests/iommu/iommufd.c
 * (alloc_hwpt_nested): nested HWPTs on a nesting parent, FAULT_ID_VALID, and IOMMU_HWPT_INVALIDATE with partial
 * progress. MD_CHECK_IOTLB reads the mock nested domain's fake IOTLB.
 */
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_TEST_IOTLB_DEFAULT,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  type MockNestedDomain,
} from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_FAULT_ID_VALID,
  type IommufdHwPagetable,
} from "../src/index.js";
import { type Env, finish, ioasAlloc, mockDomain, setup } from "./helpers.js";
import { destroy, hwptAlloc, hwptAllocNested, hwptInvalidate, replace, u32s } from "./viommu-env.js";

const INV_SIZE = 8; // struct iommu_hwpt_invalidate_selftest { flags; iotlb_id; }
const T = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;

function iotlbOf(env: Env, hwptId: number): number[] {
  const hwpt = env.ictx.objects.load(hwptId) as IommufdHwPagetable;
  return [...(hwpt.domain as MockNestedDomain).iotlb];
}

describe("iommufd_ioas fixture: nested", () => {
  it("alloc_hwpt_nested", async () => {
    const env = await setup();
    const ioas = await ioasAlloc(env);
    const md = await mockDomain(env, ioas);
    const dev = md.idevId;
    // Negative tests.
    await expect(hwptAlloc(env, ioas, dev, 0)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(hwptAlloc(env, dev, dev, 0)).rejects.toMatchObject({ code: "EINVAL" });
    const parent = await hwptAlloc(env, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const parentNotWork = await hwptAlloc(env, dev, ioas, 0);
    // Negative nested tests.
    await expect(hwptAllocNested(env, dev, parent, { dataType: IOMMU_HWPT_DATA_NONE })).rejects.toMatchObject({
      code: "EINVAL",
    });
    await expect(hwptAllocNested(env, dev, parent, { dataType: IOMMU_HWPT_DATA_SELFTEST + 1 })).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await expect(hwptAllocNested(env, dev, parent, { data: u32s(0).subarray(0, 3) })).rejects.toMatchObject({
      code: "EINVAL",
    });
    await expect(hwptAllocNested(env, dev, parent, { data: null, dataLen: 8 })).rejects.toMatchObject({
      code: "EFAULT",
    });
    await expect(hwptAllocNested(env, dev, parent, { flags: IOMMU_HWPT_ALLOC_NEST_PARENT })).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await expect(hwptAllocNested(env, dev, parentNotWork)).rejects.toMatchObject({ code: "EINVAL" });

    // Two nested HWPTs sharing one parent, and one delivering faults.
    const fq = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
    await env.ioctl(IOMMU_FAULT_QUEUE_ALLOC, fq);
    const nested0 = await hwptAllocNested(env, dev, parent);
    const nested1 = await hwptAllocNested(env, dev, parent);
    await expect(
      hwptAllocNested(env, dev, parent, { flags: IOMMU_HWPT_FAULT_ID_VALID, faultId: 0xffffffff }),
    ).rejects.toMatchObject({ code: "ENOENT" });
    const iopfHwpt = await hwptAllocNested(env, dev, parent, {
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId: fq.out_fault_id,
    });
    const D = IOMMU_TEST_IOTLB_DEFAULT;
    expect(iotlbOf(env, nested0)).toEqual([D, D, D, D]);
    expect(iotlbOf(env, nested1)).toEqual([D, D, D, D]);
    // A nested HWPT on a nested HWPT.
    await expect(hwptAllocNested(env, dev, nested0)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(destroy(env, parent)).rejects.toMatchObject({ code: "EBUSY" });

    const inv = (id: number, entries: number[][], type: number, len: number, num: number) =>
      hwptInvalidate(env, id, u32s(...entries.flat(), 0, 0), type, len, num);
    // Not on a parent HWPT.
    let r = inv(parent, [[0, 0]], T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Zero-length array checks the type only.
    r = inv(nested0, [[0, 0]], T, INV_SIZE, 0);
    await r.run();
    expect(r.cmd.entry_num).toBe(0);
    r = inv(nested0, [[0, 0]], IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // Structure size sanity.
    r = inv(nested0, [[0, 0]], T, INV_SIZE + 1, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    r = inv(nested0, [[0, 0]], T, 1, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    r = inv(nested0, [[0xffffffff, 0]], T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    expect(r.cmd.entry_num).toBe(0);
    r = hwptInvalidate(env, nested0, null, T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    r = inv(nested0, [[0, 0]], T, 0, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    r = inv(nested0, [[0, MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1]], T, INV_SIZE, 1);
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(0);
    // The 1st entry handled, the 2nd failing on its flags.
    r = inv(
      nested0,
      [
        [0, 0],
        [0xffffffff, 1],
      ],
      T,
      INV_SIZE,
      2,
    );
    await expect(r.run()).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    expect(r.cmd.entry_num).toBe(1);
    expect(iotlbOf(env, nested0)).toEqual([0, D, D, D]);
    // The 1st handled, the 2nd failing on its iotlb_id.
    r = inv(
      nested0,
      [
        [0, 0],
        [0, MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1],
      ],
      T,
      INV_SIZE,
      2,
    );
    await expect(r.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(r.cmd.entry_num).toBe(1);
    r = inv(nested0, [[0, 1]], T, INV_SIZE, 1);
    await r.run();
    expect(r.cmd.entry_num).toBe(1);
    expect(iotlbOf(env, nested0)).toEqual([0, 0, D, D]);
    r = inv(
      nested0,
      [
        [0, 2],
        [0, 3],
      ],
      T,
      INV_SIZE,
      2,
    );
    await r.run();
    expect(r.cmd.entry_num).toBe(2);
    expect(iotlbOf(env, nested0)).toEqual([0, 0, 0, 0]);
    r = inv(nested1, [[1, 0]], T, INV_SIZE, 1);
    await r.run();
    expect(iotlbOf(env, nested1)).toEqual([0, 0, 0, 0]);

    // Attached HWPTs are busy; replace moves the reference.
    await replace(md.idev, nested0);
    await expect(destroy(env, nested0)).rejects.toMatchObject({ code: "EBUSY" });
    await replace(md.idev, nested1);
    await expect(destroy(env, nested1)).rejects.toMatchObject({ code: "EBUSY" });
    await destroy(env, nested0);
    await replace(md.idev, iopfHwpt);
    await expect(destroy(env, iopfHwpt)).rejects.toMatchObject({ code: "EBUSY" });
    await replace(md.idev, parent);
    await destroy(env, nested1);
    await destroy(env, iopfHwpt);
    await replace(md.idev, ioas);
    await destroy(env, parent);
    await destroy(env, parentNotWork);
    await env.p.close(fq.out_fault_fd);
    await destroy(env, fq.out_fault_id);
    await finish(env);
  });

  it("HWPT_INVALIDATE: reserved field EOPNOTSUPP, unknown ID ENOENT, entry_num written back", async () => {
    const env = await setup();
    const ioas = await ioasAlloc(env);
    const md = await mockDomain(env, ioas);
    const parent = await hwptAlloc(env, md.idevId, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const nested = await hwptAllocNested(env, md.idevId, parent);
    const r = hwptInvalidate(env, nested, u32s(0, 0), T, INV_SIZE, 1);
    (r.cmd as { __reserved: number }).__reserved = 1;
    await expect(r.run()).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    expect(r.cmd.entry_num).toBe(0);
    const r2 = hwptInvalidate(env, 999, u32s(0, 0), T, INV_SIZE, 1);
    await expect(r2.run()).rejects.toMatchObject({ code: "ENOENT" });
    expect(r2.cmd.entry_num).toBe(0);
    await finish(env);
  });
});
