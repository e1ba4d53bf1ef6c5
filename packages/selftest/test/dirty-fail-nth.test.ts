/**
 * Port of the `iommufd_dirty_tracking` fixture (bounded variants; the 128M/256M ones under IOMMU_SIM_SOAK=1) and
 * fail-nth sweeps in the style of tools/testing/selftests/iommu/iommufd_fail_nth.c, all through IOMMU_TEST_CMD.
 */
import {
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  U64_MAX,
} from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import {
  errnoOf,
  IOMMU_TEST_OP,
  MOCK_ACCESS_RW_WRITE,
  MOCK_APERTURE_START,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_PAGE_SIZE,
  type SelftestFixture,
} from "../src/index.js";
import { BUFFER_SIZE, type Env, PAGE_SIZE, SOAK, setup, teardown } from "./helpers.js";

const DIRTY_VARIANTS: { name: string; buffer_size: number; hugepages?: boolean }[] = [
  { name: "domain_dirty128k", buffer_size: 128 * 1024 },
  { name: "domain_dirty256k", buffer_size: 256 * 1024 },
  { name: "domain_dirty640k", buffer_size: 640 * 1024 },
  // Not a Linux variant: a huge-page one small enough for every run (the Linux ones are 128M/256M, under SOAK).
  { name: "domain_dirty4M_huge", buffer_size: 4 * 1024 * 1024, hugepages: true },
  ...(SOAK
    ? [
        { name: "domain_dirty128M", buffer_size: 128 * 1024 * 1024 },
        { name: "domain_dirty128M_huge", buffer_size: 128 * 1024 * 1024, hugepages: true },
        { name: "domain_dirty256M", buffer_size: 256 * 1024 * 1024 },
        { name: "domain_dirty256M_huge", buffer_size: 256 * 1024 * 1024, hugepages: true },
      ]
    : []),
];

function testBit(bm: Uint8Array, i: number): boolean {
  return ((bm[i >> 3]! >> (i & 7)) & 1) === 1;
}

/**
 * Mark the first bit of every other PTE dirty in the mock domain (`pteSize` bytes per PTE, `pageSize` per bit), then
 * read the bitmap twice: each marked PTE reports all its bits dirty, then nothing (all again with NO_CLEAR).
 * @linux test_mock_dirty_bitmaps / _test_mock_dirty_bitmaps (iommufd_utils.h)
 */
async function testMockDirtyBitmaps(
  env: Env,
  hwptId: number,
  length: number,
  iova: number,
  pageSize: number,
  pteSize: number,
  bitmap: bigint,
  nbits: number,
  flags: number,
) {
  const self = env.self;
  const npte = pteSize / pageSize;
  const pteset = 2 * npte;
  const nr = Math.floor(nbits / pteset) || 1;
  const bitmapSize = Math.ceil(nbits / 8);
  const bm = new Uint8Array(bitmapSize);
  for (let i = 0; i < nbits; i += pteset) bm[i >> 3]! |= 1 << (i & 7);
  env.p.writeMemory(bitmap, bm);
  const out = await self.testCmdMockDomainSetDirty(hwptId, length, iova, pageSize, bitmap);
  expect(out).toBe(BigInt(nr));
  // Expect the marked PTEs' bits dirty in the user bitmap
  env.p.writeMemory(bitmap, new Uint8Array(bitmapSize));
  await self.testCmdGetDirtyBitmap(hwptId, length, iova, pageSize, bitmap, flags);
  let got = env.p.readMemory(bitmap, bitmapSize + 8);
  for (let i = 0; i < nbits; i += pteset) {
    for (let j = 0; j < pteset && i + j < nbits; j++) expect(testBit(got, i + j)).toBe(j < npte);
  }
  env.p.writeMemory(bitmap, new Uint8Array(bitmapSize));
  await self.testCmdGetDirtyBitmap(hwptId, length, iova, pageSize, bitmap, flags);
  got = env.p.readMemory(bitmap, bitmapSize + 8);
  // It was read already: all zeroes, unless NO_CLEAR
  for (let i = 0; i < nbits; i += pteset) {
    for (let j = 0; j < pteset && i + j < nbits; j++) {
      expect(testBit(got, i + j)).toBe(j < npte && (flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0);
    }
  }
}

for (const variant of DIRTY_VARIANTS) {
  describe(`iommufd_dirty_tracking.${variant.name}`, () => {
    interface DSelf extends Env {
      hwpt_id: number;
      stdev_id: number;
      idev_id: number;
      page_size: number;
      bitmap_size: number;
      bitmap: bigint;
      dbuf: bigint;
    }
    const test = (name: string, fn: (s: DSelf) => Promise<void>) =>
      it(name, async () => {
        const env = await setup();
        const self = env.self;
        // MAP_HUGETLB | MAP_POPULATE for the huge variants.
        const dbuf = variant.hugepages
          ? env.p.mmap(variant.buffer_size, { hugeAligned: true, populate: true })
          : env.p.mmap(variant.buffer_size, { shared: true });
        const page_size = MOCK_PAGE_SIZE;
        // In bits; provision an extra PAGE_SIZE for the unaligned case.
        const bitmap_size = variant.buffer_size / page_size;
        const bitmap = env.p.mmap(Math.ceil(bitmap_size / 8) + PAGE_SIZE);
        self.ioasId = await self.testIoctlIoasAlloc();
        // For dirty testing the page size fed into the IOMMU page tables must match what the dirty logic expects:
        // the small variants turn huge pages off (IOMMU_OPTION_HUGE_PAGES = 0).
        if (!variant.hugepages) {
          await self.ioctl(IOMMU_OPTION, {
            size: 0,
            option_id: IOMMU_OPTION_HUGE_PAGES,
            op: IOMMU_OPTION_OP_SET,
            __reserved: 0,
            object_id: self.ioasId,
            val64: 0n,
          });
        }
        const r = await self.testCmdMockDomain(self.ioasId);
        await fn({
          ...env,
          hwpt_id: r.hwptId,
          stdev_id: r.stdevId,
          idev_id: r.idevId,
          page_size,
          bitmap_size,
          bitmap,
          dbuf,
        });
        await teardown(env);
      });

    test("enforce_dirty", async (s) => {
      const self = s.self;
      const hwpt = await self.testCmdHwptAlloc(s.idev_id, self.ioasId, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
      const { stdevId } = await self.testCmdMockDomain(hwpt);
      expect(await errnoOf(self.testCmdMockDomainFlags(hwpt, MOCK_FLAGS_DEVICE_NO_DIRTY))).toBe("EINVAL");
      await self.testIoctlDestroy(stdevId);
      await self.testIoctlDestroy(hwpt);
      // IOMMU device does not support dirty tracking
      const ioas = await self.testIoctlIoasAlloc();
      const nd = await self.testCmdMockDomainFlags(ioas, MOCK_FLAGS_DEVICE_NO_DIRTY);
      expect(await errnoOf(self.testCmdHwptAlloc(nd.idevId, ioas, IOMMU_HWPT_ALLOC_DIRTY_TRACKING))).toBe("EOPNOTSUPP");
      await self.testIoctlDestroy(nd.stdevId);
    });

    test("set_dirty_tracking", async (s) => {
      const hwpt = await s.self.testCmdHwptAlloc(s.idev_id, s.self.ioasId, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
      const { stdevId } = await s.self.testCmdMockDomain(hwpt);
      await s.self.testCmdSetDirtyTracking(hwpt, true);
      await s.self.testCmdSetDirtyTracking(hwpt, false);
      await s.self.testIoctlDestroy(stdevId);
      await s.self.testIoctlDestroy(hwpt);
    });

    test("device_dirty_capability", async (s) => {
      const hwpt = await s.self.testCmdHwptAlloc(s.idev_id, s.self.ioasId, 0);
      const { stdevId } = await s.self.testCmdMockDomain(hwpt);
      const caps = await s.self.testCmdGetHwCapabilities(s.idev_id);
      expect(caps & IOMMU_HW_CAP_DIRTY_TRACKING).toBe(IOMMU_HW_CAP_DIRTY_TRACKING);
      await s.self.testIoctlDestroy(stdevId);
      await s.self.testIoctlDestroy(hwpt);
    });

    // The huge variants allocate the HWPT with the MOCK_IOMMUPT_HUGE page table, whose PTEs are exactly 1 MiB
    // (test_cmd_hwpt_alloc_iommupt): one set_dirty marks a whole PTE, which the bitmap reports in full.
    for (const noClear of [false, true]) {
      test(noClear ? "get_dirty_bitmap_no_clear" : "get_dirty_bitmap", async (s) => {
        const self = s.self;
        const flags = noClear ? IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0;
        const pte = variant.hugepages ? MOCK_HUGE_PAGE_SIZE : MOCK_PAGE_SIZE;
        const ioas = self.ioasId;
        await self.testIoctlIoasMapFixedId(ioas, s.dbuf, variant.buffer_size, MOCK_APERTURE_START);
        const hwpt = await self.testCmdHwptAllocIommupt(
          s.idev_id,
          ioas,
          IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
          variant.hugepages ? MOCK_IOMMUPT_HUGE : MOCK_IOMMUPT_DEFAULT,
        );
        await self.testCmdSetDirtyTracking(hwpt, true);
        const run = (bitmap: bigint) =>
          testMockDirtyBitmaps(
            s,
            hwpt,
            variant.buffer_size,
            MOCK_APERTURE_START,
            s.page_size,
            pte,
            bitmap,
            s.bitmap_size,
            flags,
          );
        await run(s.bitmap);
        // PAGE_SIZE unaligned bitmap
        await run(s.bitmap + BigInt(MOCK_PAGE_SIZE));
        await self.testIoctlDestroy(hwpt);
      });
    }
  });
}

// --- fail_nth -----------------------------------------------------------------------------------------------

const MAX_N = SOAK ? 5000 : 400;

/**
 * Sweep N = 1, 2, … failing the Nth injection point inside `path`, until a run consumes no injected failure; each
 * run gets a fresh machine, and its teardown must find nothing leaked and no warning.
 * @linux iommufd_fail_nth.c (TEST_FAIL_NTH, fail_nth_first / fail_nth_next)
 */
async function sweep(prepare: (env: Env) => Promise<void>, path: (env: Env) => Promise<void>): Promise<number> {
  for (let n = 1; n <= MAX_N; n++) {
    const env = await setup();
    await prepare(env);
    env.m.faults.reset();
    env.m.faults.failNth(n);
    try {
      await path(env);
    } catch (e) {
      expect((e as { code?: string }).code, String(e)).toMatch(/^E[A-Z0-9]+$/);
    }
    const consumed = env.m.faults.nthConsumed;
    env.m.faults.reset();
    await teardown(env);
    if (!consumed) return n;
  }
  throw new Error(`fail_nth did not converge within ${MAX_N} runs`);
}

async function prepIoas(env: Env) {
  env.self.ioasId = await env.self.testIoctlIoasAlloc();
  await env.self.testIoctlSetTempMemoryLimit(32);
}

function copyCmd(self: SelftestFixture, dst: number, src: bigint, dstIova = 0n) {
  return {
    size: 0,
    flags: IOMMU_IOAS_MAP_WRITEABLE | (dstIova ? IOMMU_IOAS_MAP_FIXED_IOVA : 0),
    dst_ioas_id: dst,
    src_ioas_id: self.ioasId,
    length: BigInt(BUFFER_SIZE),
    dst_iova: dstIova,
    src_iova: src,
  };
}

// Each sweep runs a path once per injection point (the pin and map paths have several): allow for a loaded machine.
describe("iommufd_fail_nth", { timeout: 60_000 }, () => {
  it("basic: map, copy, unmap in IOASes without domains", async () => {
    const runs = await sweep(prepIoas, async ({ self, buffer }) => {
      const iova = await self.testIoctlIoasMap(buffer, BUFFER_SIZE);
      const dst = await self.testIoctlIoasAlloc();
      await self.ioctl(IOMMU_IOAS_COPY, copyCmd(self, dst, iova));
      await self.testIoctlIoasUnmap(0, U64_MAX);
      await self.testIoctlIoasUnmapId(dst, 0, U64_MAX);
    });
    expect(runs).toBeGreaterThan(3);
  });

  it("map_domain: a mock domain, map, destroy the device", async () => {
    const runs = await sweep(prepIoas, async ({ self, buffer }) => {
      const md = await self.testCmdMockDomain(self.ioasId);
      await self.testIoctlIoasMapFixed(buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      await self.testIoctlDestroy(md.stdevId);
      const md2 = await self.testCmdMockDomain(self.ioasId);
      await self.testIoctlIoasUnmap(MOCK_APERTURE_START, BUFFER_SIZE);
      await self.testIoctlDestroy(md2.stdevId);
    });
    expect(runs).toBeGreaterThan(5);
  });

  it("map_two_domains: two mock domains share the pages", async () => {
    const runs = await sweep(prepIoas, async ({ self, buffer }) => {
      const md = await self.testCmdMockDomain(self.ioasId);
      await self.testIoctlIoasMapFixed(buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const md2 = await self.testCmdMockDomain(self.ioasId);
      await self.testIoctlDestroy(md.stdevId);
      await self.testIoctlDestroy(md2.stdevId);
      await self.testIoctlIoasUnmap(MOCK_APERTURE_START, BUFFER_SIZE);
    });
    expect(runs).toBeGreaterThan(5);
  });

  it("access_rw: read and write through an access", async () => {
    const runs = await sweep(prepIoas, async ({ self, buffer, p }) => {
      const tmp = p.mmap(PAGE_SIZE);
      await self.testIoctlIoasMapFixed(buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const access = await self.testCmdCreateAccess(self.ioasId, 0);
      try {
        for (const flags of [0, MOCK_ACCESS_RW_WRITE]) {
          await self.cmd(IOMMU_TEST_OP.ACCESS_RW, {
            id: access,
            iova: BigInt(MOCK_APERTURE_START + 100),
            length: 64n,
            uptr: tmp,
            flags,
          });
        }
        await self.testIoctlIoasUnmap(0, U64_MAX);
      } finally {
        await self.testCmdDestroyAccess(access);
      }
    });
    expect(runs).toBeGreaterThan(2);
  });

  it("access_pin: pin pages, add a domain, unmap while pinned", async () => {
    const runs = await sweep(prepIoas, async ({ self, buffer }) => {
      await self.testIoctlIoasMapFixed(buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const access = await self.testCmdCreateAccess(self.ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
      try {
        await self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, {
          id: access,
          iova: BigInt(MOCK_APERTURE_START),
          length: BigInt(BUFFER_SIZE),
          uptr: buffer,
        });
        const md = await self.testCmdMockDomain(self.ioasId);
        await self.testIoctlDestroy(md.stdevId);
        await self.testIoctlIoasUnmap(0, U64_MAX);
      } finally {
        await self.testCmdDestroyAccess(access);
      }
    });
    expect(runs).toBeGreaterThan(3);
  });

  it("device: mock domain, hwpt alloc, replace, hw info", async () => {
    const runs = await sweep(prepIoas, async ({ self, buffer, p }) => {
      await self.testIoctlIoasMapFixed(buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const md = await self.testCmdMockDomain(self.ioasId);
      const info = p.mmap(PAGE_SIZE);
      await self.testCmdGetHwInfo(md.idevId, info, 8);
      const hwpt = await self.testCmdHwptAlloc(md.idevId, self.ioasId, 0);
      await self.testCmdMockDomainReplace(md.stdevId, hwpt);
      await self.testCmdMockDomainReplace(md.stdevId, self.ioasId);
      await self.testIoctlDestroy(hwpt);
      await self.testIoctlDestroy(md.stdevId);
    });
    expect(runs).toBeGreaterThan(5);
  });
});
