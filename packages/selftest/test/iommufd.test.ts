/**
 * Port of the `iommufd`, `iommufd_ioas` (no_domain, mock_domain, two_mock_domain, mock_domain_limit) and
 * `iommufd_mock_domain` fixtures of tools/testing/selftests/iommu/iommufd.c, through IOMMU_TEST_CMD.
 */
import {
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  iommu_iova_range,
  U64_MAX,
} from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import {
  errnoOf,
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  iommu_test_cmd,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_PAGE_SIZE,
} from "../src/index.js";
import { BUFFER_SIZE, type Env, fillRandom, PAGE_SIZE, SOAK, setup, teardown } from "./helpers.js";

const SIZE_MAX = U64_MAX;

describe("iommufd", () => {
  it("simple_close", async () => {
    await teardown(await setup());
  });

  it("cmd_fail", async () => {
    const env = await setup();
    expect(await errnoOf(env.self.testIoctlDestroy(0))).toBe("ENOENT");
    expect(await errnoOf(env.self.ioctl(IOMMU_DESTROY, null))).toBe("EFAULT");
    expect(await errnoOf(env.self.ioctl(0x3b7f, { size: 8, id: 0 }))).toBe("ENOTTY");
    await teardown(env);
  });

  it("cmd_length of IOMMU_TEST_CMD: EINVAL below 68, E2BIG with a non-zero tail, a zero tail = sizeof", async () => {
    const env = await setup();
    expect(iommu_test_cmd.size).toBe(72);
    expect(iommu_test_cmd.offsetofend("last")).toBe(68);
    const buf = new Uint8Array(73);
    const dv = new DataView(buf.buffer);
    dv.setUint32(4, IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT, true);
    dv.setUint32(16, 65536, true);
    buf[72] = 0xff;
    dv.setUint32(0, 67, true);
    expect(await errnoOf(env.self.ioctl(IOMMU_TEST_CMD, buf))).toBe("EINVAL");
    dv.setUint32(0, 73, true);
    expect(await errnoOf(env.self.ioctl(IOMMU_TEST_CMD, buf))).toBe("E2BIG");
    dv.setUint32(0, 72, true);
    expect(await errnoOf(env.self.ioctl(IOMMU_TEST_CMD, buf))).toBe(0);
    buf[72] = 0;
    dv.setUint32(0, 73, true);
    expect(await errnoOf(env.self.ioctl(IOMMU_TEST_CMD, buf))).toBe(0);
    // An unknown op is EOPNOTSUPP; object form works too, out fields come back by name.
    expect(await errnoOf(env.self.ioctl(IOMMU_TEST_CMD, { size: 0, op: 99, id: 0 }))).toBe("EOPNOTSUPP");
    const ioas = await env.self.testIoctlIoasAlloc();
    const obj: Record<string, unknown> = { size: 0, op: IOMMU_TEST_OP.MOCK_DOMAIN, id: ioas };
    await env.self.ioctl(IOMMU_TEST_CMD, obj);
    expect(obj).toMatchObject({ out_stdev_id: 2, out_hwpt_id: 4, out_idev_id: 3 });
    await teardown(env);
  });
});

interface IoasVariant {
  name: string;
  mock_domains: number;
  memory_limit: number;
}
const IOAS_VARIANTS: IoasVariant[] = [
  { name: "no_domain", mock_domains: 0, memory_limit: 0 },
  { name: "mock_domain", mock_domains: 1, memory_limit: 0 },
  { name: "two_mock_domain", mock_domains: 2, memory_limit: 0 },
  { name: "mock_domain_limit", mock_domains: 1, memory_limit: 16 },
];

interface IoasSelf extends Env {
  stdev_id: number;
  hwpt_id: number;
  device_id: number;
  base_iova: number;
}

async function ioasSetup(variant: IoasVariant): Promise<IoasSelf> {
  const env = await setup();
  const self = env.self;
  self.ioasId = await self.testIoctlIoasAlloc();
  if (!variant.memory_limit) await self.testIoctlSetDefaultMemoryLimit();
  else await self.testIoctlSetTempMemoryLimit(variant.memory_limit);
  const s: IoasSelf = { ...env, stdev_id: 0, hwpt_id: 0, device_id: 0, base_iova: 0 };
  for (let i = 0; i !== variant.mock_domains; i++) {
    const r = await self.testCmdMockDomain(self.ioasId);
    s.stdev_id = r.stdevId;
    s.hwpt_id = r.hwptId;
    s.device_id = r.idevId;
    s.base_iova = MOCK_APERTURE_START;
  }
  return s;
}

async function ioasTeardown(s: IoasSelf) {
  await s.self.testIoctlSetDefaultMemoryLimit();
  await teardown(s);
}

function ffsAlign(length: number): number {
  return length & -length;
}

for (const variant of IOAS_VARIANTS) {
  describe(`iommufd_ioas.${variant.name}`, () => {
    const test = (name: string, fn: (s: IoasSelf) => Promise<void>) =>
      it(name, async () => {
        const s = await ioasSetup(variant);
        await fn(s);
        await ioasTeardown(s);
      });

    test("ioas_auto_destroy", async () => {});

    test("ioas_destroy", async (s) => {
      if (s.stdev_id) expect(await errnoOf(s.self.testIoctlDestroy(s.self.ioasId))).toBe("EBUSY");
      else await s.self.testIoctlDestroy(s.self.ioasId);
    });

    test("hwpt_attach", async (s) => {
      if (s.stdev_id) await s.self.testCmdMockDomain(s.hwpt_id);
      else expect(await errnoOf(s.self.testCmdMockDomain(s.hwpt_id))).toBe("ENOENT");
    });

    test("ioas_area_destroy", async (s) => {
      await s.self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE, s.base_iova);
      if (s.stdev_id) expect(await errnoOf(s.self.testIoctlDestroy(s.self.ioasId))).toBe("EBUSY");
      else await s.self.testIoctlDestroy(s.self.ioasId);
    });

    test("ioas_area_auto_destroy", async (s) => {
      for (let i = 0; i !== 10; i++)
        await s.self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE, s.base_iova + i * PAGE_SIZE);
    });

    test("get_hw_info", async (s) => {
      const info = s.p.mmap(PAGE_SIZE);
      if (s.device_id) {
        await s.self.testCmdGetHwInfo(s.device_id, 0n, 0);
        const r = await s.self.testCmdGetHwInfo(s.device_id, info, 8);
        expect(r.out_data_type).toBe(IOMMU_HW_INFO_TYPE_SELFTEST);
        const dv = new DataView(s.p.readMemory(info, 16).buffer);
        expect(dv.getUint32(4, true)).toBe(IOMMU_HW_INFO_SELFTEST_REGVAL);
        // Request for a wrong data_type, and a correct one (mock_domain_hw_info answers EOPNOTSUPP for a type
        // other than DEFAULT or SELFTEST).
        expect(
          await errnoOf(s.self.testCmdGetHwInfo(s.device_id, info, 8, (IOMMU_HW_INFO_TYPE_SELFTEST + 1) >>> 0)),
        ).toBe("EOPNOTSUPP");
        const typed = await s.self.testCmdGetHwInfo(s.device_id, info, 8, IOMMU_HW_INFO_TYPE_SELFTEST);
        expect(typed.out_data_type).toBe(IOMMU_HW_INFO_TYPE_SELFTEST);
        // A larger buffer: the kernel zeroes the trailing bytes.
        s.p.writeMemory(info + 8n, new Uint8Array(8).fill(0xaa));
        await s.self.testCmdGetHwInfo(s.device_id, info, 16);
        expect([...s.p.readMemory(info + 8n, 8)]).toEqual(new Array(8).fill(0));
        // A smaller one: what fits is still written.
        await s.self.testCmdGetHwInfo(s.device_id, info, 4);
      } else {
        expect(await errnoOf(s.self.testCmdGetHwInfo(s.device_id, info, 8))).toBe("ENOENT");
      }
    });

    test("area", async (s) => {
      const self = s.self;
      for (let i = 0; i !== 10; i++)
        expect(await errnoOf(self.testIoctlIoasUnmap(i * PAGE_SIZE, PAGE_SIZE))).toBe("ENOENT");
      for (let i = 0; i !== 10; i++) await self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE, s.base_iova + i * PAGE_SIZE);
      for (let i = 0; i !== 10; i++) await self.testIoctlIoasUnmap(s.base_iova + i * PAGE_SIZE, PAGE_SIZE);
      // Split fails
      await self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE * 2, s.base_iova + 16 * PAGE_SIZE);
      expect(await errnoOf(self.testIoctlIoasUnmap(s.base_iova + 16 * PAGE_SIZE, PAGE_SIZE))).toBe("ENOENT");
      expect(await errnoOf(self.testIoctlIoasUnmap(s.base_iova + 17 * PAGE_SIZE, PAGE_SIZE))).toBe("ENOENT");
      // Over map fails
      for (const [len, at] of [
        [2, 16],
        [1, 16],
        [1, 17],
        [2, 15],
        [3, 15],
      ] as const) {
        expect(await errnoOf(self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE * len, s.base_iova + at * PAGE_SIZE))).toBe(
          "EEXIST",
        );
      }
      await self.testIoctlIoasUnmap(0, U64_MAX);
      await self.testIoctlIoasUnmap(0, U64_MAX);
    });

    test("unmap_fully_contained_areas", async (s) => {
      const self = s.self;
      s.base_iova += 4 * PAGE_SIZE;
      for (let i = 0; i !== 4; i++)
        await self.testIoctlIoasMapFixed(s.buffer, 8 * PAGE_SIZE, s.base_iova + i * 16 * PAGE_SIZE);
      expect(await errnoOf(self.testIoctlIoasUnmap(s.base_iova - 4 * PAGE_SIZE, 8 * PAGE_SIZE))).toBe("ENOENT");
      expect(
        await errnoOf(
          self.testIoctlIoasUnmap(s.base_iova + 3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE - 4 * PAGE_SIZE, 8 * PAGE_SIZE),
        ),
      ).toBe("ENOENT");
      const unmapLen = await self.testIoctlIoasUnmap(
        s.base_iova - 4 * PAGE_SIZE,
        3 * 16 * PAGE_SIZE + 8 * PAGE_SIZE + 4 * PAGE_SIZE,
      );
      expect(unmapLen).toBe(BigInt(32 * PAGE_SIZE));
    });

    test("area_auto_iova", async (s) => {
      const self = s.self;
      const reserved = { start: PAGE_SIZE * 4, length: PAGE_SIZE * 100 };
      const ranges = s.p.mmap(PAGE_SIZE);
      const allow = { size: 0, ioas_id: self.ioasId, num_iovas: 1, __reserved: 0, allowed_iovas: ranges };
      const iovas: bigint[] = [];
      for (let i = 0; i !== 10; i++) iovas[i] = await self.testIoctlIoasMap(s.buffer, PAGE_SIZE);
      for (let i = 0; i !== 10; i++) await self.testIoctlIoasUnmap(iovas[i]!, PAGE_SIZE);
      for (let i = 0; i !== 10; i++) {
        const length = PAGE_SIZE * (i + 1);
        iovas[i] = s.stdev_id
          ? await self.testIoctlIoasMap(s.buffer, length)
          : await self.testIoctlIoasMap(1n << 31n, length).catch(() => self.testIoctlIoasMap(s.buffer, length));
        expect(iovas[i]! % BigInt(ffsAlign(length))).toBe(0n);
      }
      for (let i = 0; i !== 10; i++) await self.testIoctlIoasUnmap(iovas[i]!, PAGE_SIZE * (i + 1));
      // Avoids a reserved region
      await self.testCmdAddReserved(self.ioasId, reserved.start, reserved.length);
      for (let i = 0; i !== 10; i++) {
        const length = PAGE_SIZE * (i + 1);
        iovas[i] = await self.testIoctlIoasMap(s.buffer, length);
        expect(iovas[i]! % BigInt(ffsAlign(length))).toBe(0n);
        const v = Number(iovas[i]!);
        expect(v > reserved.start && v < reserved.start + reserved.length).toBe(false);
      }
      for (let i = 0; i !== 10; i++) await self.testIoctlIoasUnmap(iovas[i]!, PAGE_SIZE * (i + 1));
      // Allowed region intersects with a reserved region
      s.p.writeMemory(ranges, iommu_iova_range.encode({ start: BigInt(PAGE_SIZE), last: BigInt(PAGE_SIZE * 600) }));
      expect(await errnoOf(self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow))).toBe("EADDRINUSE");
      // Allocate from an allowed region
      const r = s.stdev_id
        ? { start: MOCK_APERTURE_START + PAGE_SIZE, last: MOCK_APERTURE_START + PAGE_SIZE * 600 - 1 }
        : { start: PAGE_SIZE * 200, last: PAGE_SIZE * 600 - 1 };
      s.p.writeMemory(ranges, iommu_iova_range.encode({ start: BigInt(r.start), last: BigInt(r.last) }));
      await self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow);
      for (let i = 0; i !== 10; i++) {
        const length = PAGE_SIZE * (i + 1);
        iovas[i] = await self.testIoctlIoasMap(s.buffer, length);
        const v = Number(iovas[i]!);
        expect(v % ffsAlign(length)).toBe(0);
        expect(v >= r.start && v <= r.last && v + length > r.start && v + length <= r.last + 1).toBe(true);
      }
      for (let i = 0; i !== 10; i++) await self.testIoctlIoasUnmap(iovas[i]!, PAGE_SIZE * (i + 1));
    });

    test("area_allowed", async (s) => {
      const self = s.self;
      const ranges = s.p.mmap(PAGE_SIZE);
      const allow = { size: 0, ioas_id: self.ioasId, num_iovas: 1, __reserved: 0, allowed_iovas: ranges };
      const start = s.base_iova;
      s.p.writeMemory(ranges, iommu_iova_range.encode({ start: BigInt(start), last: BigInt(start + PAGE_SIZE * 600) }));
      await self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow);
      expect(await errnoOf(self.testCmdAddReserved(self.ioasId, start + PAGE_SIZE, PAGE_SIZE))).toBe("EADDRINUSE");
      allow.num_iovas = 0;
      await self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow);
      await self.testCmdAddReserved(self.ioasId, start + PAGE_SIZE, PAGE_SIZE);
      allow.num_iovas = 1;
      expect(await errnoOf(self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow))).toBe("EADDRINUSE");
    });

    test("copy_area", async (s) => {
      const self = s.self;
      const copy = {
        size: 0,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        dst_ioas_id: self.ioasId,
        src_ioas_id: self.ioasId,
        length: BigInt(PAGE_SIZE),
        dst_iova: 0n,
        src_iova: 0n,
      };
      await self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE, s.base_iova);
      copy.src_iova = BigInt(s.base_iova);
      copy.dst_iova = BigInt(s.base_iova + PAGE_SIZE);
      await self.ioctl(IOMMU_IOAS_COPY, copy);
      copy.src_iova = BigInt(s.base_iova);
      copy.dst_iova = 0n;
      copy.dst_ioas_id = await self.testIoctlIoasAlloc();
      await self.ioctl(IOMMU_IOAS_COPY, copy);
    });

    // iommufd_test_add_reserved: iopt_reserve_iova(start, start + length - 1) with the syzbot regression's range
    // (start 6, length 0xffffffffffff8001): it succeeds (clamped to the top of the simulated IOVA space), the IOVA
    // ranges report the hole below it, and an auto-IOVA map has nowhere to go: ENOSPC.
    test("add_reserved_past_the_iova_space", async (s) => {
      const self = s.self;
      // An allowed range with a ULONG_MAX-style end clamps too: accepted without a domain; with one it meets the
      // reservation above the aperture (EADDRINUSE, as in Linux).
      const ranges = s.p.mmap(PAGE_SIZE);
      const allow = { size: 0, ioas_id: self.ioasId, num_iovas: 1, __reserved: 0, allowed_iovas: ranges };
      s.p.writeMemory(ranges, iommu_iova_range.encode({ start: 1n << 60n, last: SIZE_MAX }));
      if (s.stdev_id) expect(await errnoOf(self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow))).toBe("EADDRINUSE");
      else await self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow);
      allow.num_iovas = 0;
      await self.ioctl(IOMMU_IOAS_ALLOW_IOVAS, allow);
      await self.testCmdAddReserved(self.ioasId, 6, 0xffff_ffff_ffff_8001n);
      expect(await errnoOf(self.testIoctlIoasMap(s.buffer, BUFFER_SIZE))).toBe("ENOSPC");
      expect(await errnoOf(self.testIoctlIoasMap(s.buffer, PAGE_SIZE))).toBe("ENOSPC");
      const cmd = {
        size: 0,
        ioas_id: self.ioasId,
        num_iovas: 4,
        __reserved: 0,
        allowed_iovas: s.buffer,
        out_iova_alignment: 0n,
      };
      await self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
      if (s.stdev_id) {
        // The mock aperture's own reservations cover [0, 6) already: nothing is left.
        expect(cmd.num_iovas).toBe(0);
      } else {
        expect(cmd.num_iovas).toBe(1);
        expect(iommu_iova_range.decode(s.p.readMemory(s.buffer, 16))).toEqual({ start: 0n, last: 5n });
      }
      // ULONG_MAX-style ends clamp too; a range wholly past the space reserves nothing.
      await self.testCmdAddReserved(self.ioasId, 0, SIZE_MAX);
      await self.testCmdAddReserved(self.ioasId, 0xffff_ffff_0000_0000n, 0x1000n);
    });

    test("iova_ranges", async (s) => {
      const self = s.self;
      const ranges = s.buffer;
      const cmd = {
        size: 0,
        ioas_id: self.ioasId,
        num_iovas: BUFFER_SIZE / 16,
        __reserved: 0,
        allowed_iovas: ranges,
        out_iova_alignment: 0n,
      };
      const range = (i: number) => iommu_iova_range.decode(s.p.readMemory(ranges + BigInt(i * 16), 16));
      await self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
      expect(cmd.num_iovas).toBe(1);
      if (!s.stdev_id) {
        expect(range(0)).toEqual({ start: 0n, last: SIZE_MAX });
        expect(cmd.out_iova_alignment).toBe(1n);
      } else {
        expect(range(0)).toEqual({ start: BigInt(MOCK_APERTURE_START), last: BigInt(MOCK_APERTURE_LAST) });
        expect(cmd.out_iova_alignment).toBe(BigInt(MOCK_PAGE_SIZE));
      }
      // Buffer too small
      s.p.writeMemory(ranges, new Uint8Array(BUFFER_SIZE));
      cmd.num_iovas = 0;
      expect(await errnoOf(self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd))).toBe("EMSGSIZE");
      expect(cmd.num_iovas).toBe(1);
      expect(range(0)).toEqual({ start: 0n, last: 0n });
      // 2 ranges
      await self.testCmdAddReserved(self.ioasId, PAGE_SIZE, PAGE_SIZE);
      cmd.num_iovas = BUFFER_SIZE / 16;
      await self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
      if (!s.stdev_id) {
        expect(cmd.num_iovas).toBe(2);
        expect(range(0)).toEqual({ start: 0n, last: BigInt(PAGE_SIZE - 1) });
        expect(range(1)).toEqual({ start: BigInt(PAGE_SIZE * 2), last: SIZE_MAX });
      } else {
        expect(cmd.num_iovas).toBe(1);
        expect(range(0)).toEqual({ start: BigInt(MOCK_APERTURE_START), last: BigInt(MOCK_APERTURE_LAST) });
      }
      s.p.writeMemory(ranges, new Uint8Array(BUFFER_SIZE));
      cmd.num_iovas = 1;
      if (!s.stdev_id) {
        expect(await errnoOf(self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd))).toBe("EMSGSIZE");
        expect(cmd.num_iovas).toBe(2);
        expect(range(0)).toEqual({ start: 0n, last: BigInt(PAGE_SIZE - 1) });
      } else {
        await self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
        expect(cmd.num_iovas).toBe(1);
      }
      expect(range(1)).toEqual({ start: 0n, last: 0n });
    });

    test("access_domain_destory", async (s) => {
      const self = s.self;
      const bufSize = 2 * 2 * 1024 * 1024;
      const buf = s.p.mmap(bufSize, { shared: true, populate: true });
      await self.testIoctlIoasMapFixed(buf, bufSize, s.base_iova);
      const access = await self.testCmdCreateAccess(self.ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
      const r = await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, {
        id: access,
        iova: BigInt(s.base_iova + PAGE_SIZE),
        length: BigInt(PAGE_SIZE),
        uptr: buf + BigInt(PAGE_SIZE),
      });
      if (s.stdev_id) await self.testIoctlDestroy(s.stdev_id);
      await self.testCmdDestroyAccessPages(access, r.out_access_pages_id);
      await self.testCmdDestroyAccess(access);
      s.p.munmap(buf, bufSize);
    });

    test("access_pin", async (s) => {
      const self = s.self;
      const access = await self.testCmdCreateAccess(self.ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
      const ap = { id: access, iova: BigInt(MOCK_APERTURE_START), length: 0n, uptr: s.buffer, out_access_pages_id: 0 };
      const maxPages = SOAK ? BUFFER_SIZE / PAGE_SIZE : 5;
      for (let npages = 1; npages < maxPages; npages++) {
        ap.length = BigInt(npages * PAGE_SIZE);
        await self.testIoctlIoasMapFixed(s.buffer, BUFFER_SIZE, MOCK_APERTURE_START);
        await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, ap);
        await self.testCmdDestroyAccessPages(access, ap.out_access_pages_id);
        // Double user
        await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, ap);
        const first = ap.out_access_pages_id;
        await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, ap);
        await self.testCmdDestroyAccessPages(access, ap.out_access_pages_id);
        await self.testCmdDestroyAccessPages(access, first);
        // Add/remove a domain with a user
        await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, ap);
        const md = await self.testCmdMockDomain(self.ioasId);
        await self.testCmdMdCheckMap(md.hwptId, s.buffer, MOCK_APERTURE_START, BUFFER_SIZE);
        await self.testIoctlDestroy(md.stdevId);
        await self.testCmdDestroyAccessPages(access, ap.out_access_pages_id);
        await self.testIoctlIoasUnmap(MOCK_APERTURE_START, BUFFER_SIZE);
      }
      await self.testCmdDestroyAccess(access);
    });

    test("access_pin_unmap", async (s) => {
      const self = s.self;
      const access = await self.testCmdCreateAccess(self.ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
      await self.testIoctlIoasMapFixed(s.buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const r = await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, {
        id: access,
        iova: BigInt(MOCK_APERTURE_START),
        length: BigInt(BUFFER_SIZE),
        uptr: s.buffer,
      });
      // Trigger the unmap op: the kernel removed the item for us
      await self.testIoctlIoasUnmap(MOCK_APERTURE_START, BUFFER_SIZE);
      expect(await errnoOf(self.testCmdDestroyAccessPages(access, r.out_access_pages_id))).toBe("ENOENT");
    });

    async function checkAccessRw(s: IoasSelf, accessId: number, iova: number, defFlags: number) {
      const self = s.self;
      const expected = fillRandom(s.p, s.buffer, BUFFER_SIZE, 7);
      const tmp = s.p.mmap(PAGE_SIZE);
      const span = SOAK ? 50 : 6;
      for (let a = iova + PAGE_SIZE - span; a < iova + PAGE_SIZE + span; a++) {
        for (let length = 1; length < 64; length += SOAK ? 1 : 9) {
          await self.cmd(IOMMU_TEST_OP.ACCESS_RW, {
            id: accessId,
            iova: BigInt(a),
            length: BigInt(length),
            uptr: tmp,
            flags: defFlags,
          });
          expect(s.p.readMemory(tmp, length)).toEqual(expected.subarray(a - iova, a - iova + length));
          const w = fillRandom(s.p, tmp, length, a * 64 + length);
          await self.cmd(IOMMU_TEST_OP.ACCESS_RW, {
            id: accessId,
            iova: BigInt(a),
            length: BigInt(length),
            uptr: tmp,
            flags: defFlags | MOCK_ACCESS_RW_WRITE,
          });
          expect(s.p.readMemory(s.buffer + BigInt(a - iova), length)).toEqual(w);
          expected.set(w, a - iova);
        }
      }
      // Multi-page test
      const tmp2 = s.p.mmap(BUFFER_SIZE);
      await self.cmd(IOMMU_TEST_OP.ACCESS_RW, {
        id: accessId,
        iova: BigInt(iova),
        length: BigInt(BUFFER_SIZE),
        uptr: tmp2,
        flags: defFlags,
      });
      expect(s.p.readMemory(tmp2, BUFFER_SIZE)).toEqual(s.p.readMemory(s.buffer, BUFFER_SIZE));
    }

    test("access_rw", async (s) => {
      const access = await s.self.testCmdCreateAccess(s.self.ioasId, 0);
      const iova = await s.self.testIoctlIoasMap(s.buffer, BUFFER_SIZE);
      await checkAccessRw(s, access, Number(iova), 0);
      await checkAccessRw(s, access, Number(iova), MOCK_ACCESS_RW_SLOW_PATH);
      await s.self.testIoctlIoasUnmap(iova, BUFFER_SIZE);
      await s.self.testCmdDestroyAccess(access);
    });

    test("access_rw_unaligned", async (s) => {
      const access = await s.self.testCmdCreateAccess(s.self.ioasId, 0);
      const iova = s.base_iova + MOCK_PAGE_SIZE;
      await s.self.testIoctlIoasMapFixed(s.buffer, BUFFER_SIZE, iova);
      await checkAccessRw(s, access, iova, 0);
      await s.self.testIoctlIoasUnmap(iova, BUFFER_SIZE);
      await s.self.testCmdDestroyAccess(access);
    });

    test("ioas_option_huge_pages", async (s) => {
      const cmd = {
        size: 0,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_GET,
        __reserved: 0,
        object_id: s.self.ioasId,
        val64: 3n,
      };
      await s.self.ioctl(IOMMU_OPTION, cmd);
      expect(cmd.val64).toBe(1n);
      cmd.op = IOMMU_OPTION_OP_SET;
      cmd.val64 = 0n;
      await s.self.ioctl(IOMMU_OPTION, cmd);
      cmd.op = IOMMU_OPTION_OP_GET;
      cmd.val64 = 3n;
      await s.self.ioctl(IOMMU_OPTION, cmd);
      expect(cmd.val64).toBe(0n);
      cmd.op = IOMMU_OPTION_OP_SET;
      cmd.val64 = 2n;
      expect(await errnoOf(s.self.ioctl(IOMMU_OPTION, cmd))).toBe("EINVAL");
      cmd.val64 = 1n;
      await s.self.ioctl(IOMMU_OPTION, cmd);
    });

    test("ioas_iova_alloc", async (s) => {
      const step = SOAK ? 1 : 97;
      for (let length = 1; length < PAGE_SIZE * 2; length += step) {
        if (variant.mock_domains && length % MOCK_PAGE_SIZE) {
          expect(await errnoOf(s.self.testIoctlIoasMap(s.buffer, length))).toBe("EINVAL");
        } else {
          const iova = await s.self.testIoctlIoasMap(s.buffer, length);
          await s.self.testIoctlIoasUnmap(iova, length);
        }
      }
    });

    test("ioas_align_change", async (s) => {
      const cmd = {
        size: 0,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_SET,
        __reserved: 0,
        object_id: s.self.ioasId,
        val64: 0n,
      };
      if (variant.mock_domains) return;
      await s.self.testIoctlIoasMapFixed(s.buffer, PAGE_SIZE, MOCK_APERTURE_START);
      await s.self.ioctl(IOMMU_OPTION, cmd);
      expect(
        await errnoOf(
          s.self.testIoctlIoasMapFixed(s.buffer + BigInt(MOCK_PAGE_SIZE), PAGE_SIZE, MOCK_APERTURE_START + PAGE_SIZE),
        ),
      ).toBe("EINVAL");
      await s.self.ioctl(IOMMU_OPTION, cmd);
      cmd.val64 = 1n;
      await s.self.ioctl(IOMMU_OPTION, cmd);
      await s.self.testIoctlIoasMapFixed(s.buffer + BigInt(MOCK_PAGE_SIZE), PAGE_SIZE, MOCK_APERTURE_START + PAGE_SIZE);
      cmd.val64 = 0n;
      expect(await errnoOf(s.self.ioctl(IOMMU_OPTION, cmd))).toBe("EADDRINUSE");
      await s.self.testIoctlIoasUnmap(MOCK_APERTURE_START + PAGE_SIZE, PAGE_SIZE);
      await s.self.testIoctlIoasUnmap(MOCK_APERTURE_START, PAGE_SIZE);
    });

    test("copy_sweep", async (s) => {
      const self = s.self;
      const dst = await self.testIoctlIoasAlloc();
      const copy = {
        size: 0,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        dst_ioas_id: dst,
        src_ioas_id: self.ioasId,
        length: BigInt(MOCK_PAGE_SIZE),
        dst_iova: BigInt(MOCK_APERTURE_START),
        src_iova: 0n,
      };
      const lastIova = variant.mock_domains
        ? MOCK_APERTURE_START + BUFFER_SIZE - 1
        : MOCK_APERTURE_START + BUFFER_SIZE - 2;
      await self.testIoctlIoasMapFixed(s.buffer, lastIova - MOCK_APERTURE_START + 1, MOCK_APERTURE_START);
      for (let iova = MOCK_APERTURE_START - PAGE_SIZE; iova <= lastIova; iova += SOAK ? 511 : 2047) {
        copy.src_iova = BigInt(iova);
        if (iova < MOCK_APERTURE_START || iova + MOCK_PAGE_SIZE - 1 > lastIova) {
          expect(await errnoOf(self.ioctl(IOMMU_IOAS_COPY, copy))).toBe("ENOENT");
        } else {
          await self.ioctl(IOMMU_IOAS_COPY, copy);
          await self.testIoctlIoasUnmapId(dst, copy.dst_iova, copy.length);
        }
      }
      await self.testIoctlDestroy(dst);
    });
  });
}

interface MdVariant {
  name: string;
  mock_domains: number;
  hugepages: boolean;
}
const MD_VARIANTS: MdVariant[] = [
  { name: "one_domain", mock_domains: 1, hugepages: false },
  { name: "two_domains", mock_domains: 2, hugepages: false },
  { name: "one_domain_hugepage", mock_domains: 1, hugepages: true },
  { name: "two_domains_hugepage", mock_domains: 2, hugepages: true },
];

interface MdSelf extends Env {
  hwpt_id: number;
  hwpt_ids: number[];
  stdev_ids: number[];
  idev_ids: number[];
  mmap_buf_size: number;
  mmap(): bigint;
}

for (const variant of MD_VARIANTS) {
  describe(`iommufd_mock_domain.${variant.name}`, () => {
    const test = (name: string, fn: (s: MdSelf) => Promise<void>) =>
      it(name, async () => {
        const env = await setup();
        env.self.ioasId = await env.self.testIoctlIoasAlloc();
        const s: MdSelf = {
          ...env,
          hwpt_id: 0,
          hwpt_ids: [0, 0],
          stdev_ids: [0, 0],
          idev_ids: [0, 0],
          mmap_buf_size: variant.hugepages ? 2 * 2 * 1024 * 1024 : PAGE_SIZE * 8,
          mmap: () =>
            env.p.mmap(s.mmap_buf_size, variant.hugepages ? { hugeAligned: true, populate: true } : { shared: true }),
        };
        for (let i = 0; i !== variant.mock_domains; i++) {
          const r = await env.self.testCmdMockDomain(env.self.ioasId);
          s.stdev_ids[i] = r.stdevId;
          s.hwpt_ids[i] = r.hwptId;
          s.idev_ids[i] = r.idevId;
        }
        s.hwpt_id = s.hwpt_ids[0]!;
        await fn(s);
        await teardown(env);
      });

    const checkMockIova = async (s: MdSelf, ptr: bigint, iova: bigint | number, length: number) => {
      await s.self.testCmdMdCheckMap(s.hwpt_id, ptr, iova, length);
      if (s.hwpt_ids[1]) await s.self.testCmdMdCheckMap(s.hwpt_ids[1], ptr, iova, length);
    };

    test("basic", async (s) => {
      const iova = await s.self.testIoctlIoasMap(s.buffer, PAGE_SIZE);
      await checkMockIova(s, s.buffer, iova, PAGE_SIZE);
      const size = s.mmap_buf_size;
      const buf = s.mmap();
      s.p.munmap(buf + BigInt(size / 2), size / 2);
      expect(await errnoOf(s.self.testIoctlIoasMap(buf, size))).toBe("EFAULT");
      s.p.munmap(buf, size / 2);
      expect(await errnoOf(s.self.testIoctlIoasMap(buf, size))).toBe("EFAULT");
    });

    test("ro_unshare", async (s) => {
      const buf = s.p.mmap(PAGE_SIZE);
      const iova = await s.self.testIoctlIoasMapRaw(s.self.ioasId, buf, PAGE_SIZE, 0n, IOMMU_IOAS_MAP_READABLE);
      await checkMockIova(s, buf, iova, PAGE_SIZE);
      s.p.writeMemory(buf, new Uint8Array(PAGE_SIZE).fill(1));
      await checkMockIova(s, buf, iova, PAGE_SIZE);
      s.p.munmap(buf, PAGE_SIZE);
    });

    const allAligns = (copy: boolean) => async (s: MdSelf) => {
      const size = s.mmap_buf_size;
      const step = variant.hugepages ? size / 16 : MOCK_PAGE_SIZE;
      const buf = s.mmap();
      await s.self.checkRefs(buf, size, 0);
      const startStep = SOAK ? step : step * (variant.hugepages ? 7 : 5);
      for (let start = 0; start < size; start += startStep) {
        let end = variant.hugepages ? size : start + MOCK_PAGE_SIZE;
        const endStep = SOAK || variant.hugepages ? MOCK_PAGE_SIZE : MOCK_PAGE_SIZE * 3;
        for (; end < size; end += endStep) {
          const length = end - start;
          const iova = await s.self.testIoctlIoasMap(buf + BigInt(start), length);
          let stdev = 0;
          const old = s.hwpt_ids[1]!;
          if (copy) {
            const r = await s.self.testCmdMockDomain(s.self.ioasId);
            stdev = r.stdevId;
            s.hwpt_ids[1] = r.hwptId;
          }
          await checkMockIova(s, buf + BigInt(start), iova, length);
          const a = Math.floor(start / PAGE_SIZE) * PAGE_SIZE;
          await s.self.checkRefs(buf + BigInt(a), Math.floor(end / PAGE_SIZE) * PAGE_SIZE - a, 1);
          if (copy) {
            await s.self.testIoctlDestroy(stdev);
            s.hwpt_ids[1] = old;
          }
          await s.self.testIoctlIoasUnmap(iova, length);
        }
      }
      await s.self.checkRefs(buf, size, 0);
      s.p.munmap(buf, size);
    };
    test("all_aligns", allAligns(false));
    test("all_aligns_copy", allAligns(true));

    test("user_copy", async (s) => {
      const self = s.self;
      const copy = {
        size: 0,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE,
        dst_ioas_id: self.ioasId,
        src_ioas_id: 0,
        length: BigInt(BUFFER_SIZE),
        dst_iova: BigInt(MOCK_APERTURE_START),
        src_iova: 0n,
      };
      const unmap = { size: 0, ioas_id: self.ioasId, iova: BigInt(MOCK_APERTURE_START), length: BigInt(BUFFER_SIZE) };
      const ioasId = await self.testIoctlIoasAlloc();
      copy.src_iova = await self.testIoctlIoasMapId(ioasId, s.buffer, BUFFER_SIZE);
      const access = await self.testCmdCreateAccess(ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
      const ap = {
        id: access,
        iova: copy.src_iova,
        length: BigInt(BUFFER_SIZE),
        uptr: s.buffer,
        out_access_pages_id: 0,
      };
      await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, ap);
      copy.src_ioas_id = ioasId;
      await self.ioctl(IOMMU_IOAS_COPY, copy);
      await checkMockIova(s, s.buffer, MOCK_APERTURE_START, BUFFER_SIZE);
      // Now replace the ioas with a new one
      const newIoas = await self.testIoctlIoasAlloc();
      copy.src_iova = await self.testIoctlIoasMapId(newIoas, s.buffer, BUFFER_SIZE);
      await self.testCmdAccessReplaceIoas(access, newIoas);
      await self.ioctl(IOMMU_IOAS_UNMAP, unmap);
      await self.testIoctlDestroy(ioasId);
      ap.iova = copy.src_iova;
      await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, ap);
      copy.src_ioas_id = newIoas;
      await self.ioctl(IOMMU_IOAS_COPY, copy);
      await checkMockIova(s, s.buffer, MOCK_APERTURE_START, BUFFER_SIZE);
      await self.testCmdDestroyAccessPages(access, ap.out_access_pages_id);
      await self.testCmdDestroyAccess(access);
      await self.testIoctlDestroy(newIoas);
    });

    test("replace", async (s) => {
      const self = s.self;
      const ioasId = await self.testIoctlIoasAlloc();
      await self.testCmdMockDomainReplace(s.stdev_ids[0]!, ioasId);
      if (variant.mock_domains === 1) {
        expect(await errnoOf(self.testCmdMockDomainReplace(s.stdev_ids[0]!, s.hwpt_ids[0]!))).toBe("ENOENT");
      }
      await self.testCmdMockDomainReplace(s.stdev_ids[0]!, ioasId);
      if (variant.mock_domains >= 2) {
        await self.testCmdMockDomainReplace(s.stdev_ids[0]!, s.hwpt_ids[1]!);
        await self.testCmdMockDomainReplace(s.stdev_ids[0]!, s.hwpt_ids[1]!);
        await self.testCmdMockDomainReplace(s.stdev_ids[0]!, s.hwpt_ids[0]!);
      }
      await self.testCmdMockDomainReplace(s.stdev_ids[0]!, self.ioasId);
      await self.testIoctlDestroy(ioasId);
    });

    test("alloc_hwpt", async (s) => {
      const self = s.self;
      for (let i = 0; i !== variant.mock_domains; i++) {
        expect(
          await errnoOf(self.testCmdHwptAlloc(s.idev_ids[i]!, self.ioasId, ~IOMMU_HWPT_ALLOC_NEST_PARENT >>> 0)),
        ).toBe("EOPNOTSUPP");
        const h0 = await self.testCmdHwptAlloc(s.idev_ids[i]!, self.ioasId, 0);
        const h1 = await self.testCmdHwptAlloc(s.idev_ids[i]!, self.ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT);
        await self.testCmdMockDomainReplace(s.stdev_ids[i]!, h0);
        expect(await errnoOf(self.testIoctlDestroy(h0))).toBe("EBUSY");
        await self.testCmdMockDomainReplace(s.stdev_ids[i]!, h1);
        expect(await errnoOf(self.testIoctlDestroy(h1))).toBe("EBUSY");
        await self.testCmdMockDomainReplace(s.stdev_ids[i]!, self.ioasId);
        await self.testIoctlDestroy(h1);
        const { stdevId } = await self.testCmdMockDomain(h0);
        await self.testIoctlDestroy(stdevId);
        await self.testIoctlDestroy(h0);
      }
    });
  });
}
