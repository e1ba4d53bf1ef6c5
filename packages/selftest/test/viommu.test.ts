/**
 * Port of the `iommufd_viommu` fixture (variants no_viommu and mock_viommu), the `iommufd_device_pasid` fixture
 * (variants no_pasid and has_pasid) and the nested part of `iommufd_ioas` (alloc_hwpt_nested) of
 * tools/testing/selftests/iommu/iommufd.c, through IOMMU_TEST_CMD and the SelftestFixture helpers.
 */
import {
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_FAULT_ID_VALID,
} from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import {
  errnoOf,
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_PASID_RESERVED,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
} from "../src/index.js";
import { type Env, PAGE_SIZE, setup, teardown } from "./helpers.js";

const UINT32_MAX = 0xffff_ffff;

/** Little-endian u32 words as bytes. */
function u32s(...words: number[]): Uint8Array {
  const b = new Uint8Array(words.length * 4);
  const v = new DataView(b.buffer);
  for (const [i, w] of words.entries()) v.setUint32(i * 4, w >>> 0, true);
  return b;
}

/** struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT } */
const hwptSelftest = () => u32s(IOMMU_TEST_IOTLB_DEFAULT, 0);
const HWPT_SELFTEST_SIZE = 8;

// --- iommufd_viommu -----------------------------------------------------------------------------------------

interface ViommuSelf extends Env {
  ioas_id: number;
  stdev_id: number;
  hwpt_id: number;
  nested_hwpt_id: number;
  device_id: number;
  viommu_id: number;
}

/** FIXTURE_SETUP(iommufd_viommu) */
async function viommuSetup(variant: { viommu: boolean }): Promise<ViommuSelf> {
  const env = await setup();
  const self = env.self;
  const s: ViommuSelf = { ...env, ioas_id: 0, stdev_id: 0, hwpt_id: 0, nested_hwpt_id: 0, device_id: 0, viommu_id: 0 };
  s.ioas_id = self.ioasId = await self.testIoctlIoasAlloc();
  await self.testIoctlSetDefaultMemoryLimit();
  if (variant.viommu) {
    ({ stdevId: s.stdev_id, idevId: s.device_id } = await self.testCmdMockDomain(s.ioas_id));
    // Allocate a nesting parent hwpt
    s.hwpt_id = await self.testCmdHwptAlloc(s.device_id, s.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT);
    // Allocate a vIOMMU taking refcount of the parent hwpt
    s.viommu_id = await self.testCmdViommuAlloc(s.device_id, s.hwpt_id, IOMMU_VIOMMU_TYPE_SELFTEST);
    // Allocate a regular nested hwpt
    s.nested_hwpt_id = await self.testCmdHwptAllocNested(
      s.device_id,
      s.viommu_id,
      0,
      IOMMU_HWPT_DATA_SELFTEST,
      hwptSelftest(),
    );
  }
  return s;
}

/** struct iommu_viommu_invalidate_selftest inv_reqs[2] = {}, as the bytes the C test passes. */
class ViommuInvReqs {
  readonly r = [
    { flags: 0, vdev_id: 0, cache_id: 0 },
    { flags: 0, vdev_id: 0, cache_id: 0 },
  ];
  bytes(): Uint8Array {
    return u32s(...this.r.flatMap((e) => [e.flags, e.vdev_id, e.cache_id]));
  }
}
const VIOMMU_INV_SIZE = 12;

for (const variant of [
  { name: "no_viommu", viommu: false },
  { name: "mock_viommu", viommu: true },
]) {
  describe(`iommufd_viommu.${variant.name}`, () => {
    // Tests the kernel SKIP()s for the no_viommu variant are not registered for it at all.
    const test = (name: string, body: (s: ViommuSelf) => Promise<void>, needsViommu = false) => {
      if (needsViommu && !variant.viommu) return;
      it(name, async () => {
        const s = await viommuSetup(variant);
        await body(s);
        // FIXTURE_TEARDOWN: teardown_iommufd
        await teardown(s);
      });
    };

    test("viommu_auto_destroy", async () => {});

    test("viommu_negative_tests", async (s) => {
      const self = s.self;
      const device_id = s.device_id;
      const ioas_id = s.ioas_id;
      if (s.device_id) {
        // Negative test -- invalid hwpt (hwpt_id=0)
        expect(await errnoOf(self.testCmdViommuAlloc(device_id, 0, IOMMU_VIOMMU_TYPE_SELFTEST))).toBe("ENOENT");
        // Negative test -- not a nesting parent hwpt
        const hwpt_id = await self.testCmdHwptAlloc(device_id, ioas_id, 0);
        expect(await errnoOf(self.testCmdViommuAlloc(device_id, hwpt_id, IOMMU_VIOMMU_TYPE_SELFTEST))).toBe("EINVAL");
        await self.testIoctlDestroy(hwpt_id);
        // Negative test -- unsupported viommu type
        expect(await errnoOf(self.testCmdViommuAlloc(device_id, s.hwpt_id, 0xdead))).toBe("EOPNOTSUPP");
        expect(await errnoOf(self.testIoctlDestroy(s.hwpt_id))).toBe("EBUSY");
        expect(await errnoOf(self.testIoctlDestroy(s.viommu_id))).toBe("EBUSY");
      } else {
        expect(await errnoOf(self.testCmdViommuAlloc(s.device_id, s.hwpt_id, IOMMU_VIOMMU_TYPE_SELFTEST))).toBe(
          "ENOENT",
        );
      }
    });

    test(
      "viommu_alloc_nested_iopf",
      async (s) => {
        const self = s.self;
        const viommu_id = s.viommu_id;
        const dev_id = s.device_id;
        const { id: fault_id, fd: fault_fd } = await self.testIoctlFaultAlloc();
        const iopf = (faultId: number, flags: number) =>
          self.testCmdHwptAllocIopf(dev_id, viommu_id, faultId, flags, IOMMU_HWPT_DATA_SELFTEST, hwptSelftest());
        expect(await errnoOf(iopf(UINT32_MAX, IOMMU_HWPT_FAULT_ID_VALID))).toBe("ENOENT");
        expect(await errnoOf(iopf(fault_id, (IOMMU_HWPT_FAULT_ID_VALID | (1 << 31)) >>> 0))).toBe("EOPNOTSUPP");
        const iopf_hwpt_id = await iopf(fault_id, IOMMU_HWPT_FAULT_ID_VALID);

        // Must allocate vdevice before attaching to a nested hwpt
        expect(await errnoOf(self.testCmdMockDomainReplace(s.stdev_id, iopf_hwpt_id))).toBe("ENOENT");
        await self.testCmdVdeviceAlloc(viommu_id, dev_id, 0x99);
        await self.testCmdMockDomainReplace(s.stdev_id, iopf_hwpt_id);
        expect(await errnoOf(self.testIoctlDestroy(iopf_hwpt_id))).toBe("EBUSY");
        // test_cmd_trigger_iopf: PASID 0x1 with PASID_VALID; nothing is attached at PASID 1, so the request reaches
        // the nested HWPT at the RID only because the mock has a user-managed PASID table (find_fault_handler).
        await self.testCmdTriggerIopfRespond(dev_id, 0x1, fault_fd);

        await self.testCmdMockDomainReplace(s.stdev_id, s.ioas_id);
        await self.testIoctlDestroy(iopf_hwpt_id);
        await s.p.close(fault_fd);
        await self.testIoctlDestroy(fault_id);
      },
      true,
    );

    test(
      "viommu_alloc_with_data",
      async (s) => {
        const self = s.self;
        // struct iommu_viommu_selftest data = { .in_data = 0xbeef }
        const data = u32s(0xbeef, 0, 0, 0, 0, 0);
        const va = self.userBuffer(data);
        const cmd = {
          size: 0,
          flags: 0,
          type: IOMMU_VIOMMU_TYPE_SELFTEST,
          dev_id: s.device_id,
          hwpt_id: s.hwpt_id,
          out_viommu_id: 0,
          data_len: data.length,
          __reserved: 0,
          data_uptr: va,
        };
        const { IOMMU_VIOMMU_ALLOC } = await import("@iommu-sim/iommufd");
        await self.ioctl(IOMMU_VIOMMU_ALLOC, cmd);
        const out = new DataView(s.p.readMemory(va, 24).buffer);
        // ASSERT_EQ(data.out_data, data.in_data)
        expect(out.getUint32(4, true)).toBe(out.getUint32(0, true));
        const offset = Number(out.getBigUint64(8, true));
        const length = Number(out.getBigUint64(16, true));

        // Negative mmap tests -- offset and length cannot be changed
        const testErrMmap = (len: number, off: number) =>
          errnoOf(Promise.resolve().then(() => s.p.mmap(len, { fd: self.fd, shared: true, offset: off })));
        expect(await testErrMmap(length, offset + PAGE_SIZE)).toBe("ENXIO");
        expect(await testErrMmap(length, offset + PAGE_SIZE * 2)).toBe("ENXIO");
        expect(await testErrMmap(length / 2, offset)).toBe("ENXIO");
        expect(await testErrMmap(length * 2, offset)).toBe("ENXIO");

        // Now do a correct mmap for a loopback test
        const test = s.p.mmap(length, { fd: self.fd, shared: true, offset });
        expect(new DataView(s.p.readMemory(test, 4).buffer).getUint32(0, true)).toBe(0xbeef);

        // The owner of the mmap region should be blocked
        expect(await errnoOf(self.testIoctlDestroy(cmd.out_viommu_id))).toBe("EBUSY");
        s.p.munmap(test, length);
        await self.testIoctlDestroy(cmd.out_viommu_id);
      },
      true,
    );

    test("vdevice_alloc", async (s) => {
      const self = s.self;
      const viommu_id = s.viommu_id;
      const dev_id = s.device_id;
      const prev_seq = { value: -1 };
      if (dev_id) {
        // Must allocate vdevice before attaching to a nested hwpt
        expect(await errnoOf(self.testCmdMockDomainReplace(s.stdev_id, s.nested_hwpt_id))).toBe("ENOENT");

        // Allocate a vEVENTQ with veventq_depth=2
        const { id: veventq_id, fd: veventq_fd } = await self.testCmdVeventqAlloc(
          viommu_id,
          IOMMU_VEVENTQ_TYPE_SELFTEST,
        );
        expect(await errnoOf(self.testCmdVeventqAlloc(viommu_id, IOMMU_VEVENTQ_TYPE_SELFTEST))).toBe("EEXIST");
        // Set vdev_id to 0x99, unset it, and set to 0x88
        let vdev_id = await self.testCmdVdeviceAlloc(viommu_id, dev_id, 0x99);
        await self.testCmdMockDomainReplace(s.stdev_id, s.nested_hwpt_id);
        await self.testCmdTriggerVevents(dev_id, 1);
        await self.testCmdReadVevents(veventq_fd, 1, 0x99, prev_seq);
        expect(await errnoOf(self.testCmdVdeviceAlloc(viommu_id, dev_id, 0x99))).toBe("EEXIST");
        await self.testCmdMockDomainReplace(s.stdev_id, s.ioas_id);
        await self.testIoctlDestroy(vdev_id);

        // Try again with 0x88
        vdev_id = await self.testCmdVdeviceAlloc(viommu_id, dev_id, 0x88);
        await self.testCmdMockDomainReplace(s.stdev_id, s.nested_hwpt_id);
        // Trigger an overflow with three events
        await self.testCmdTriggerVevents(dev_id, 3);
        expect(await errnoOf(self.testCmdReadVevents(veventq_fd, 3, 0x88, prev_seq))).toBe("EOVERFLOW");
        // Overflow must be gone after the previous reads
        await self.testCmdTriggerVevents(dev_id, 1);
        await self.testCmdReadVevents(veventq_fd, 1, 0x88, prev_seq);
        await s.p.close(veventq_fd);
        await self.testCmdMockDomainReplace(s.stdev_id, s.ioas_id);
        await self.testIoctlDestroy(vdev_id);
        await self.testIoctlDestroy(veventq_id);
      } else {
        expect(await errnoOf(self.testCmdVdeviceAlloc(viommu_id, dev_id, 0x99))).toBe("ENOENT");
      }
    });

    test(
      "vdevice_cache",
      async (s) => {
        const self = s.self;
        const viommu_id = s.viommu_id;
        const dev_id = s.device_id;
        const inv = new ViommuInvReqs();
        const r = inv.r;
        const T = IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;
        const invalidate = (reqs: Uint8Array | null, type: number, len: number, num: number) =>
          self.testCmdHwptInvalidate(viommu_id, reqs, type, len, num);
        const D = IOMMU_TEST_DEV_CACHE_DEFAULT;

        const vdev_id = await self.testCmdVdeviceAlloc(viommu_id, dev_id, 0x99);
        await self.testCmdDevCheckCacheAll(dev_id, D);

        // Check data_type by passing zero-length array
        let res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 0);
        expect(res).toEqual({ errno: 0, entryNum: 0 });
        // Negative test: Invalid data_type
        res = await invalidate(inv.bytes(), IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });
        // Negative test: structure size sanity
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE + 1, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });
        res = await invalidate(inv.bytes(), T, 1, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });
        // Negative test: invalid flag is passed
        r[0] = { flags: 0xffffffff, vdev_id: 0x99, cache_id: 0 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: "EOPNOTSUPP", entryNum: 0 });
        // Negative test: invalid data_uptr when array is not empty
        r[0] = { flags: 0, vdev_id: 0x99, cache_id: 0 };
        res = await invalidate(null, T, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });
        // Negative test: invalid entry_len when array is not empty
        res = await invalidate(inv.bytes(), T, 0, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });
        // Negative test: invalid cache_id
        r[0] = { flags: 0, vdev_id: 0x99, cache_id: MOCK_DEV_CACHE_ID_MAX + 1 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });
        // Negative test: invalid vdev_id
        r[0] = { flags: 0, vdev_id: 0x9, cache_id: 0 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Invalidate the 1st cache entry but fail the 2nd request due to invalid flags configuration
        r[0] = { flags: 0, vdev_id: 0x99, cache_id: 0 };
        r[1] = { flags: 0xffffffff, vdev_id: 0x99, cache_id: 1 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 2);
        expect(res).toEqual({ errno: "EOPNOTSUPP", entryNum: 1 });
        await self.testCmdDevCheckCache(dev_id, 0, 0);
        await self.testCmdDevCheckCache(dev_id, 1, D);
        await self.testCmdDevCheckCache(dev_id, 2, D);
        await self.testCmdDevCheckCache(dev_id, 3, D);

        // Invalidate the 1st cache entry but fail the 2nd request due to invalid cache_id configuration
        r[0] = { flags: 0, vdev_id: 0x99, cache_id: 0 };
        r[1] = { flags: 0, vdev_id: 0x99, cache_id: MOCK_DEV_CACHE_ID_MAX + 1 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 2);
        expect(res).toEqual({ errno: "EINVAL", entryNum: 1 });
        await self.testCmdDevCheckCache(dev_id, 0, 0);
        await self.testCmdDevCheckCache(dev_id, 1, D);
        await self.testCmdDevCheckCache(dev_id, 2, D);
        await self.testCmdDevCheckCache(dev_id, 3, D);

        // Invalidate the 2nd cache entry and verify
        r[0] = { flags: 0, vdev_id: 0x99, cache_id: 1 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: 0, entryNum: 1 });
        await self.testCmdDevCheckCache(dev_id, 0, 0);
        await self.testCmdDevCheckCache(dev_id, 1, 0);
        await self.testCmdDevCheckCache(dev_id, 2, D);
        await self.testCmdDevCheckCache(dev_id, 3, D);

        // Invalidate the 3rd and 4th cache entries and verify
        r[0] = { flags: 0, vdev_id: 0x99, cache_id: 2 };
        r[1] = { flags: 0, vdev_id: 0x99, cache_id: 3 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 2);
        expect(res).toEqual({ errno: 0, entryNum: 2 });
        await self.testCmdDevCheckCacheAll(dev_id, 0);

        // Invalidate all cache entries for nested_dev_id[1] and verify
        r[0] = { flags: IOMMU_TEST_INVALIDATE_FLAG_ALL, vdev_id: 0x99, cache_id: 0 };
        res = await invalidate(inv.bytes(), T, VIOMMU_INV_SIZE, 1);
        expect(res).toEqual({ errno: 0, entryNum: 1 });
        await self.testCmdDevCheckCacheAll(dev_id, 0);
        await self.testIoctlDestroy(vdev_id);
      },
      true,
    );

    test(
      "hw_queue",
      async (s) => {
        const self = s.self;
        let iova = BigInt(MOCK_APERTURE_START);
        const viommu_id = s.viommu_id;
        const P = BigInt(PAGE_SIZE);
        const Q = IOMMU_HW_QUEUE_TYPE_SELFTEST;
        const alloc = (type: number, idx: number, base: bigint, len: bigint) =>
          self.testCmdHwQueueAlloc(viommu_id, type, idx, base, len);
        // Fail IOMMU_HW_QUEUE_TYPE_DEFAULT
        expect(await errnoOf(alloc(IOMMU_HW_QUEUE_TYPE_DEFAULT, 0, iova, P))).toBe("EOPNOTSUPP");
        // Fail queue addr and length
        expect(await errnoOf(alloc(Q, 0, iova, 0n))).toBe("EINVAL");
        expect(await errnoOf(alloc(Q, 0, 0xffff_ffff_ffff_ffffn, P))).toBe("EOVERFLOW");
        // Fail missing iova
        expect(await errnoOf(alloc(Q, 0, iova, P))).toBe("ENOENT");

        // Map iova
        iova = await self.testIoctlIoasMap(s.buffer, PAGE_SIZE);
        const iova2 = await self.testIoctlIoasMap(s.buffer + P, PAGE_SIZE);

        // Fail index=1 and =MAX; must start from index=0
        expect(await errnoOf(alloc(Q, 1, iova, P))).toBe("EIO");
        expect(await errnoOf(alloc(Q, IOMMU_TEST_HW_QUEUE_MAX, iova, P))).toBe("EINVAL");

        // Allocate index=0, declare ownership of the iova
        const hw_queue_id0 = await alloc(Q, 0, iova, P);
        // Fail duplicated index
        expect(await errnoOf(alloc(Q, 0, iova, P))).toBe("EEXIST");
        // Fail unmap, due to iova ownership
        expect(await errnoOf(self.testIoctlIoasUnmap(iova, PAGE_SIZE))).toBe("EBUSY");
        // The 2nd page is not pinned, so it can be unmmap
        await self.testIoctlIoasUnmap(iova2, PAGE_SIZE);

        // Allocate index=1, with an unaligned case
        const hw_queue_id1 = await alloc(Q, 1, iova + P / 2n, P / 2n);
        // Fail to destroy, due to dependency
        expect(await errnoOf(self.testIoctlDestroy(hw_queue_id0))).toBe("EBUSY");

        // Destroy in descending order
        await self.testIoctlDestroy(hw_queue_id1);
        await self.testIoctlDestroy(hw_queue_id0);
        // Now it can unmap the first page
        await self.testIoctlIoasUnmap(iova, PAGE_SIZE);
      },
      true,
    );

    test(
      "vdevice_tombstone",
      async (s) => {
        const self = s.self;
        const vdev_id = await self.testCmdVdeviceAlloc(s.viommu_id, s.device_id, 0x99);
        await self.testIoctlDestroy(s.stdev_id);
        expect(await errnoOf(self.testIoctlDestroy(vdev_id))).toBe("ENOENT");
      },
      true,
    );
  });
}

// --- the scenarios of the vDEVICE threads, through the selftest ------------------------------------------------

describe("vDEVICE lifetime through IOMMU_TEST_CMD", () => {
  it("unbind with a live vDEVICE, then destroy -> ENOENT, the ID is never reused, close() completes", async () => {
    const s = await viommuSetup({ viommu: true });
    const self = s.self;
    const vdev_id = await self.testCmdVdeviceAlloc(s.viommu_id, s.device_id, 0x99);
    await self.testIoctlDestroy(s.stdev_id);
    expect(await errnoOf(self.testIoctlDestroy(vdev_id))).toBe("ENOENT");
    // New objects never get the tombstoned ID.
    const ids = new Set<number>();
    for (let i = 0; i < 4; i++) ids.add(await self.testIoctlIoasAlloc());
    expect(ids.has(vdev_id)).toBe(false);
    // The vIOMMU is no longer held by the vDEVICE.
    await self.testIoctlDestroy(s.nested_hwpt_id);
    await self.testIoctlDestroy(s.viommu_id);
    await teardown(s);
  });

  it("destroying a vIOMMU with a live vDEVICE is EBUSY", async () => {
    const s = await viommuSetup({ viommu: true });
    const self = s.self;
    await self.testIoctlDestroy(s.nested_hwpt_id);
    const vdev_id = await self.testCmdVdeviceAlloc(s.viommu_id, s.device_id, 0x99);
    expect(await errnoOf(self.testIoctlDestroy(s.viommu_id))).toBe("EBUSY");
    await self.testIoctlDestroy(vdev_id);
    await self.testIoctlDestroy(s.viommu_id);
    await teardown(s);
  });

  it("TRIGGER_VEVENT: ENOENT unless attached to a nested HWPT of a vIOMMU with a vDEVICE; EOPNOTSUPP without a queue", async () => {
    const s = await viommuSetup({ viommu: true });
    const self = s.self;
    expect(await errnoOf(self.testCmdTriggerVevents(s.device_id, 1))).toBe("ENOENT");
    const vdev_id = await self.testCmdVdeviceAlloc(s.viommu_id, s.device_id, 0x99);
    expect(await errnoOf(self.testCmdTriggerVevents(s.device_id, 1))).toBe("ENOENT");
    await self.testCmdMockDomainReplace(s.stdev_id, s.nested_hwpt_id);
    expect(await errnoOf(self.testCmdTriggerVevents(s.device_id, 1))).toBe("EOPNOTSUPP");
    await self.testCmdMockDomainReplace(s.stdev_id, s.ioas_id);
    await self.testIoctlDestroy(vdev_id);
    await teardown(s);
  });
});

// --- iommufd_device_pasid -----------------------------------------------------------------------------------

interface PasidSelf extends Env {
  ioas_id: number;
  hwpt_id: number;
  stdev_id: number;
  device_id: number;
  no_pasid_stdev_id: number;
  no_pasid_device_id: number;
}

/** FIXTURE_SETUP(iommufd_device_pasid) */
async function pasidSetup(variant: { pasid_capable: boolean }): Promise<PasidSelf> {
  const env = await setup();
  const self = env.self;
  const s: PasidSelf = {
    ...env,
    ioas_id: 0,
    hwpt_id: 0,
    stdev_id: 0,
    device_id: 0,
    no_pasid_stdev_id: 0,
    no_pasid_device_id: 0,
  };
  s.ioas_id = self.ioasId = await self.testIoctlIoasAlloc();
  ({
    stdevId: s.stdev_id,
    hwptId: s.hwpt_id,
    idevId: s.device_id,
  } = await self.testCmdMockDomainFlags(s.ioas_id, MOCK_FLAGS_DEVICE_PASID));
  if (!variant.pasid_capable) {
    ({ stdevId: s.no_pasid_stdev_id, idevId: s.no_pasid_device_id } = await self.testCmdMockDomainFlags(s.ioas_id, 0));
  }
  return s;
}

for (const variant of [
  { name: "no_pasid", pasid_capable: false },
  { name: "has_pasid", pasid_capable: true },
]) {
  describe(`iommufd_device_pasid.${variant.name}`, () => {
    it("pasid_attach", async () => {
      const s = await pasidSetup(variant);
      const self = s.self;
      const data = hwptSelftest();
      const nested_hwpt_id = [0, 0, 0];
      let pasid = 100;
      const attach = (p: number, pt: number) => self.testCmdPasidAttach(s.stdev_id, p, pt);
      const replace = (p: number, pt: number) => self.testCmdPasidReplace(s.stdev_id, p, pt);
      const detach = (p: number) => self.testCmdPasidDetach(s.stdev_id, p);
      const checkHwpt = (p: number, hwpt: number) => errnoOf(self.testCmdPasidCheckHwpt(s.stdev_id, p, hwpt));

      // Negative, detach pasid without attaching, this is not expected. But it should not result in failure anyway.
      await detach(pasid);

      // Allocate two nested hwpts sharing one common parent hwpt
      const parent_hwpt_id = await self.testCmdHwptAlloc(s.device_id, s.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT);
      for (const i of [0, 1]) {
        nested_hwpt_id[i] = await self.testCmdHwptAllocNested(
          s.device_id,
          parent_hwpt_id,
          IOMMU_HWPT_ALLOC_PASID,
          IOMMU_HWPT_DATA_SELFTEST,
          data,
        );
      }

      // Fault related preparation
      const { id: fault_id, fd: fault_fd } = await self.testIoctlFaultAlloc();
      const iopf_hwpt_id = await self.testCmdHwptAllocIopf(
        s.device_id,
        parent_hwpt_id,
        fault_id,
        IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
      );

      // Allocate a regular nested hwpt based on viommu
      const viommu_id = await self.testCmdViommuAlloc(s.device_id, parent_hwpt_id, IOMMU_VIOMMU_TYPE_SELFTEST);
      nested_hwpt_id[2] = await self.testCmdHwptAllocNested(
        s.device_id,
        viommu_id,
        IOMMU_HWPT_ALLOC_PASID,
        IOMMU_HWPT_DATA_SELFTEST,
        data,
      );

      const s2_hwpt_id = await self.testCmdHwptAlloc(s.device_id, s.ioas_id, IOMMU_HWPT_ALLOC_PASID);

      // Attach RID to non-pasid compat domain,
      await self.testCmdMockDomainReplace(s.stdev_id, parent_hwpt_id);
      // then attach to pasid should fail
      expect(await errnoOf(attach(pasid, s2_hwpt_id))).toBe("EINVAL");

      // Attach RID to pasid compat domain,
      await self.testCmdMockDomainReplace(s.stdev_id, s2_hwpt_id);
      // then attach to pasid should succeed,
      await attach(pasid, nested_hwpt_id[0]!);
      // but attach RID to non-pasid compat domain should fail now.
      expect(await errnoOf(self.testCmdMockDomainReplace(s.stdev_id, parent_hwpt_id))).toBe("EINVAL");
      // Detach hwpt from pasid 100, and check if the pasid 100 has null domain.
      await detach(pasid);
      expect(await checkHwpt(pasid, 0)).toBe(0);
      // RID is attached to pasid-comapt domain, pasid path is not used

      if (!variant.pasid_capable) {
        // PASID-compatible domain can be used by non-PASID-capable device.
        await self.testCmdMockDomainReplace(s.no_pasid_stdev_id, nested_hwpt_id[0]!);
        await self.testCmdMockDomainReplace(s.no_pasid_stdev_id, s.ioas_id);
        // Attach hwpt to pasid 100 of non-PASID-capable device, should fail, no matter domain is pasid-comapt or not.
        expect(await errnoOf(self.testCmdPasidAttach(s.no_pasid_stdev_id, pasid, parent_hwpt_id))).toBe("EINVAL");
        expect(await errnoOf(self.testCmdPasidAttach(s.no_pasid_stdev_id, pasid, s2_hwpt_id))).toBe("EINVAL");
      }

      // Attach non pasid compat hwpt to pasid-capable device, should fail, and have null domain.
      expect(await errnoOf(attach(pasid, parent_hwpt_id))).toBe("EINVAL");
      expect(await checkHwpt(pasid, 0)).toBe(0);

      // Attach ioas to pasid 100, should fail, domain should be null.
      expect(await errnoOf(attach(pasid, s.ioas_id))).toBe("EINVAL");
      expect(await checkHwpt(pasid, 0)).toBe(0);

      // Attach the s2_hwpt to pasid 100, should succeed, domain should be valid.
      await attach(pasid, s2_hwpt_id);
      expect(await checkHwpt(pasid, s2_hwpt_id)).toBe(0);

      // Try attach pasid 100 with another hwpt, should FAIL as attach does not allow overwrite, use REPLACE instead.
      expect(await errnoOf(attach(pasid, nested_hwpt_id[0]!))).toBe("EBUSY");

      // Detach hwpt from pasid 100 for next test, should succeed, and have null domain.
      await detach(pasid);
      expect(await checkHwpt(pasid, 0)).toBe(0);

      // Attach nested hwpt to pasid 100, should succeed, domain should be valid.
      await attach(pasid, nested_hwpt_id[0]!);
      expect(await checkHwpt(pasid, nested_hwpt_id[0]!)).toBe(0);

      // Attach to pasid 100 which has been attached, should fail.
      expect(await errnoOf(attach(pasid, nested_hwpt_id[0]!))).toBe("EBUSY");

      // cleanup pasid 100
      await detach(pasid);

      // Replace tests

      pasid = 200;
      // Replace pasid 200 without attaching it, should fail with -EINVAL.
      expect(await errnoOf(replace(pasid, s2_hwpt_id))).toBe("EINVAL");

      // Attach the s2 hwpt to pasid 200, should succeed, domain should be valid.
      await attach(pasid, s2_hwpt_id);
      expect(await checkHwpt(pasid, s2_hwpt_id)).toBe(0);

      // Replace pasid 200 with self->ioas_id, should fail and domain should be the prior s2 hwpt.
      expect(await errnoOf(replace(pasid, s.ioas_id))).toBe("EINVAL");
      expect(await checkHwpt(pasid, s2_hwpt_id)).toBe(0);

      // Replace a nested hwpt for pasid 200, should succeed, and have valid domain.
      await replace(pasid, nested_hwpt_id[0]!);
      expect(await checkHwpt(pasid, nested_hwpt_id[0]!)).toBe(0);

      // Replace with another nested hwpt for pasid 200, should succeed, and have valid domain.
      await replace(pasid, nested_hwpt_id[1]!);
      expect(await checkHwpt(pasid, nested_hwpt_id[1]!)).toBe(0);

      // cleanup pasid 200
      await detach(pasid);

      // Negative tests for pasid replace, use pasid 1024 (IOMMU_TEST_PASID_RESERVED)

      // Attach the s2 hwpt to pasid 1024, should succeed, domain should be valid.
      pasid = IOMMU_TEST_PASID_RESERVED;
      await attach(pasid, s2_hwpt_id);
      expect(await checkHwpt(pasid, s2_hwpt_id)).toBe(0);

      // Replace pasid 1024, should fail with the mock's designed ENOMEM, but keep the old valid domain. (Upstream
      // replaced with self->ioas_id when that replace was otherwise allowed; it is EINVAL now, see pasid 200, so the
      // nested hwpt that pasid 200 accepted stands in as the replacement that would otherwise succeed.)
      expect(await errnoOf(replace(pasid, nested_hwpt_id[0]!))).toBe("ENOMEM");
      expect(await checkHwpt(pasid, s2_hwpt_id)).toBe(0);

      // Detach hwpt from pasid 1024; the next attach of it succeeds again (the detach re-armed the mock).
      await detach(pasid);
      await attach(pasid, nested_hwpt_id[0]!);
      expect(await checkHwpt(pasid, nested_hwpt_id[0]!)).toBe(0);
      await detach(pasid);

      // Attach to iopf-capable hwpt

      // Attach an iopf hwpt to pasid 2048, should succeed, domain should be valid.
      pasid = 2048;
      await attach(pasid, iopf_hwpt_id);
      expect(await checkHwpt(pasid, iopf_hwpt_id)).toBe(0);

      // test_cmd_trigger_iopf_pasid
      await self.testCmdTriggerIopfRespond(s.device_id, pasid, fault_fd);

      // Replace with s2_hwpt_id for pasid 2048, should succeed, and have valid domain.
      await replace(pasid, s2_hwpt_id);
      expect(await checkHwpt(pasid, s2_hwpt_id)).toBe(0);

      // cleanup pasid 2048
      await detach(pasid);

      await self.testIoctlDestroy(iopf_hwpt_id);
      await s.p.close(fault_fd);
      await self.testIoctlDestroy(fault_id);

      // Detach the s2_hwpt_id from RID
      await self.testCmdMockDomainReplace(s.stdev_id, s.ioas_id);
      await teardown(s);
    });
  });
}

// --- iommufd_ioas: alloc_hwpt_nested ------------------------------------------------------------------------

for (const variant of [
  { name: "no_domain", mock_domains: 0 },
  { name: "mock_domain", mock_domains: 1 },
  { name: "two_mock_domain", mock_domains: 2 },
  { name: "mock_domain_limit", mock_domains: 1, memory_limit: 16 },
]) {
  describe(`iommufd_ioas.${variant.name}`, () => {
    it("alloc_hwpt_nested", async () => {
      const env = await setup();
      const self = env.self;
      const s = { ioas_id: 0, stdev_id: 0, hwpt_id: 0, device_id: 0 };
      s.ioas_id = self.ioasId = await self.testIoctlIoasAlloc();
      if (!variant.memory_limit) await self.testIoctlSetDefaultMemoryLimit();
      else await self.testIoctlSetTempMemoryLimit(variant.memory_limit);
      for (let i = 0; i < variant.mock_domains; i++) {
        ({ stdevId: s.stdev_id, hwptId: s.hwpt_id, idevId: s.device_id } = await self.testCmdMockDomain(s.ioas_id));
      }

      const min_data_len = 4; // offsetofend(struct iommu_hwpt_selftest, iotlb)
      const data = hwptSelftest();
      // struct iommu_hwpt_invalidate_selftest inv_reqs[2] = {}
      const inv_reqs = [
        { flags: 0, iotlb_id: 0 },
        { flags: 0, iotlb_id: 0 },
      ];
      const reqs = () => u32s(...inv_reqs.flatMap((r) => [r.flags, r.iotlb_id]));
      const INV = 8; // sizeof(*inv_reqs)
      const T = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST;
      const nested_hwpt_id = [0, 0];
      let parent_hwpt_id = 0;
      const D = IOMMU_TEST_IOTLB_DEFAULT;
      const nested = (pt: number, flags: number, type: number, d: Uint8Array | null, len = HWPT_SELFTEST_SIZE) =>
        self.testCmdHwptAllocNested(s.device_id, pt, flags, type, d, len);
      const checkIotlb = async (hwpt: number, ...vals: number[]) => {
        for (const [i, v] of vals.entries()) await self.testCmdHwptCheckIotlb(hwpt, i, v);
      };

      if (s.device_id) {
        // Negative tests
        expect(await errnoOf(self.testCmdHwptAlloc(s.ioas_id, s.device_id, 0))).toBe("ENOENT");
        expect(await errnoOf(self.testCmdHwptAlloc(s.device_id, s.device_id, 0))).toBe("EINVAL");
        // iommufd_hwpt_paging_alloc: a nest parent with a fault ID is EOPNOTSUPP before the fault ID (here 0, no
        // such object) is looked up.
        expect(
          await errnoOf(
            self.testCmdHwptAlloc(s.device_id, s.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_FAULT_ID_VALID),
          ),
        ).toBe("EOPNOTSUPP");

        parent_hwpt_id = await self.testCmdHwptAlloc(s.device_id, s.ioas_id, IOMMU_HWPT_ALLOC_NEST_PARENT);
        const parent_hwpt_id_not_work = await self.testCmdHwptAlloc(s.device_id, s.ioas_id, 0);

        // Negative nested tests
        expect(await errnoOf(nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_NONE, data))).toBe("EINVAL");
        expect(await errnoOf(nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_SELFTEST + 1, data))).toBe("EOPNOTSUPP");
        expect(await errnoOf(nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_SELFTEST, data, min_data_len - 1))).toBe(
          "EINVAL",
        );
        expect(await errnoOf(nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_SELFTEST, null))).toBe("EFAULT");
        expect(
          await errnoOf(nested(parent_hwpt_id, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_SELFTEST, data)),
        ).toBe("EOPNOTSUPP");
        expect(await errnoOf(nested(parent_hwpt_id_not_work, 0, IOMMU_HWPT_DATA_SELFTEST, data))).toBe("EINVAL");

        // Allocate two nested hwpts sharing one common parent hwpt
        const { id: fault_id, fd: fault_fd } = await self.testIoctlFaultAlloc();
        nested_hwpt_id[0] = await nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_SELFTEST, data);
        nested_hwpt_id[1] = await nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_SELFTEST, data);
        const iopfAlloc = (faultId: number) =>
          self.testCmdHwptAllocIopf(
            s.device_id,
            parent_hwpt_id,
            faultId,
            IOMMU_HWPT_FAULT_ID_VALID,
            IOMMU_HWPT_DATA_SELFTEST,
            data,
          );
        expect(await errnoOf(iopfAlloc(UINT32_MAX))).toBe("ENOENT");
        const iopf_hwpt_id = await iopfAlloc(fault_id);
        const [n0, n1] = nested_hwpt_id as [number, number];
        await self.testCmdHwptCheckIotlbAll(n0, D);
        await self.testCmdHwptCheckIotlbAll(n1, D);

        // Negative test: a nested hwpt on top of a nested hwpt
        expect(await errnoOf(nested(n0, 0, IOMMU_HWPT_DATA_SELFTEST, data))).toBe("EINVAL");
        // Negative test: parent hwpt now cannot be freed
        expect(await errnoOf(self.testIoctlDestroy(parent_hwpt_id))).toBe("EBUSY");

        // hwpt_invalidate only supports a user-managed hwpt (nested). EINVAL since IOMMU_HWPT_INVALIDATE also takes
        // a vIOMMU ID (the object is looked up as any type, then rejected); ENOENT in the selftests before that.
        let r = await self.testCmdHwptInvalidate(parent_hwpt_id, reqs(), T, INV, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Check data_type by passing zero-length array
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 0);
        expect(r).toEqual({ errno: 0, entryNum: 0 });

        // Negative test: Invalid data_type
        r = await self.testCmdHwptInvalidate(n0, reqs(), IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID, INV, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Negative test: structure size sanity
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV + 1, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, 1, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Negative test: invalid flag is passed
        inv_reqs[0]!.flags = 0xffffffff;
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 1);
        expect(r).toEqual({ errno: "EOPNOTSUPP", entryNum: 0 });

        // Negative test: invalid data_uptr when array is not empty
        inv_reqs[0]!.flags = 0;
        r = await self.testCmdHwptInvalidate(n0, null, T, INV, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Negative test: invalid entry_len when array is not empty
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, 0, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Negative test: invalid iotlb_id
        inv_reqs[0] = { flags: 0, iotlb_id: MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1 };
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 1);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 0 });

        // Invalidate the 1st iotlb entry but fail the 2nd request due to invalid flags configuration in the 2nd request.
        inv_reqs[0] = { flags: 0, iotlb_id: 0 };
        inv_reqs[1] = { flags: 0xffffffff, iotlb_id: 1 };
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 2);
        expect(r).toEqual({ errno: "EOPNOTSUPP", entryNum: 1 });
        await checkIotlb(n0, 0, D, D, D);

        // Invalidate the 1st iotlb entry but fail the 2nd request due to invalid iotlb_id configuration.
        inv_reqs[0] = { flags: 0, iotlb_id: 0 };
        inv_reqs[1] = { flags: 0, iotlb_id: MOCK_NESTED_DOMAIN_IOTLB_ID_MAX + 1 };
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 2);
        expect(r).toEqual({ errno: "EINVAL", entryNum: 1 });
        await checkIotlb(n0, 0, D, D, D);

        // Invalidate the 2nd iotlb entry and verify
        inv_reqs[0] = { flags: 0, iotlb_id: 1 };
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 1);
        expect(r).toEqual({ errno: 0, entryNum: 1 });
        await checkIotlb(n0, 0, 0, D, D);

        // Invalidate the 3rd and 4th iotlb entries and verify
        inv_reqs[0] = { flags: 0, iotlb_id: 2 };
        inv_reqs[1] = { flags: 0, iotlb_id: 3 };
        r = await self.testCmdHwptInvalidate(n0, reqs(), T, INV, 2);
        expect(r).toEqual({ errno: 0, entryNum: 2 });
        await self.testCmdHwptCheckIotlbAll(n0, 0);

        // Invalidate all iotlb entries for nested_hwpt_id[1] and verify
        inv_reqs[0]!.flags = IOMMU_TEST_INVALIDATE_FLAG_ALL;
        r = await self.testCmdHwptInvalidate(n1, reqs(), T, INV, 1);
        expect(r).toEqual({ errno: 0, entryNum: 1 });
        await self.testCmdHwptCheckIotlbAll(n1, 0);

        // Attach device to nested_hwpt_id[0] that then will be busy
        await self.testCmdMockDomainReplace(s.stdev_id, n0);
        expect(await errnoOf(self.testIoctlDestroy(n0))).toBe("EBUSY");

        // Switch from nested_hwpt_id[0] to nested_hwpt_id[1]
        await self.testCmdMockDomainReplace(s.stdev_id, n1);
        expect(await errnoOf(self.testIoctlDestroy(n1))).toBe("EBUSY");
        await self.testIoctlDestroy(n0);

        // Switch from nested_hwpt_id[1] to iopf_hwpt_id
        await self.testCmdMockDomainReplace(s.stdev_id, iopf_hwpt_id);
        expect(await errnoOf(self.testIoctlDestroy(iopf_hwpt_id))).toBe("EBUSY");
        // Trigger an IOPF on the device: test_cmd_trigger_iopf sends PASID 0x1 with PASID_VALID, which reaches the
        // nested HWPT at the RID through the mock's user-managed PASID table (find_fault_handler).
        await self.testCmdTriggerIopfRespond(s.device_id, 0x1, fault_fd);

        // Detach from nested_hwpt_id[1] and destroy it
        await self.testCmdMockDomainReplace(s.stdev_id, parent_hwpt_id);
        await self.testIoctlDestroy(n1);
        await self.testIoctlDestroy(iopf_hwpt_id);

        // Detach from the parent hw_pagetable and destroy it
        await self.testCmdMockDomainReplace(s.stdev_id, s.ioas_id);
        await self.testIoctlDestroy(parent_hwpt_id);
        await self.testIoctlDestroy(parent_hwpt_id_not_work);
      } else {
        expect(await errnoOf(self.testCmdHwptAlloc(s.device_id, s.ioas_id, 0))).toBe("ENOENT");
        expect(await errnoOf(nested(parent_hwpt_id, 0, IOMMU_HWPT_DATA_SELFTEST, data))).toBe("ENOENT");
        expect(await errnoOf(self.testCmdMockDomainReplace(s.stdev_id, nested_hwpt_id[0]!))).toBe("ENOENT");
      }
      await self.testIoctlSetDefaultMemoryLimit();
      await teardown(env);
    });
  });
}

// --- fail_nth over the device / vIOMMU / vDEVICE / fault / vEVENTQ paths ------------------------------------

const SOAK = process.env.IOMMU_SIM_SOAK === "1";

describe("fail_nth: device, vIOMMU, vDEVICE, fault queue and vEVENTQ through IOMMU_TEST_CMD", () => {
  const MAX_N = SOAK ? 5000 : 400;
  it("every injected failure unwinds; teardown finds nothing left behind", async () => {
    let n = 1;
    for (; n <= MAX_N; n++) {
      const env = await setup();
      const self = env.self;
      env.m.faults.reset();
      env.m.faults.failNth(n);
      try {
        self.ioasId = await self.testIoctlIoasAlloc();
        const { stdevId, idevId } = await self.testCmdMockDomain(self.ioasId);
        const parent = await self.testCmdHwptAlloc(idevId, self.ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT);
        const viommu = await self.testCmdViommuAlloc(idevId, parent, IOMMU_VIOMMU_TYPE_SELFTEST);
        const q = await self.testCmdVeventqAlloc(viommu, IOMMU_VEVENTQ_TYPE_SELFTEST);
        const fault = await self.testIoctlFaultAlloc();
        const iopfHwpt = await self.testCmdHwptAllocIopf(
          idevId,
          viommu,
          fault.id,
          IOMMU_HWPT_FAULT_ID_VALID,
          IOMMU_HWPT_DATA_SELFTEST,
          hwptSelftest(),
        );
        const vdev = await self.testCmdVdeviceAlloc(viommu, idevId, 0x99);
        await self.testCmdMockDomainReplace(stdevId, iopfHwpt);
        await self.testCmdTriggerVevents(idevId, 3);
        await errnoOf(self.testCmdReadVevents(q.fd, 3, 0x99, { value: -1 }));
        // _test_cmd_trigger_iopf(self->fd, idev_id, 0x1, fault_fd), as iommufd_fail_nth.c calls it.
        await self.testCmdTriggerIopfRespond(idevId, 0x1, fault.fd);
        await self.testCmdMockDomainReplace(stdevId, self.ioasId);
        await self.testIoctlDestroy(vdev);
        await self.testCmdVdeviceAlloc(viommu, idevId, 0x88);
        // Unbind with a live vDEVICE: it is tombstoned.
        await self.testIoctlDestroy(stdevId);
      } catch (e) {
        expect((e as { code?: string }).code, String(e)).toMatch(/^E[A-Z0-9]+$/);
      }
      const consumed = env.m.faults.nthConsumed;
      env.m.faults.reset();
      // Closing the fd and the process frees whatever the failure left; teardown fails on any leak or warning.
      try {
        await teardown(env);
      } catch (e) {
        throw new Error(`fail_nth ${n}: ${(e as Error).message}`);
      }
      if (!consumed) break;
    }
    expect(n).toBeGreaterThan(20);
    expect(n, "raise MAX_N: the sweep did not reach the end").toBeLessThanOrEqual(MAX_N);
  }, 600_000);
});
