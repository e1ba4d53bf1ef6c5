/**
 * The mock's page-table types in `struct iommu_hwpt_selftest.pagetable_type` (mock_domain_alloc_pgtable): the
 * default one with the mock aperture and 2 KiB pages, MOCK_IOMMUPT_HUGE with the table's whole aperture and only
 * 1 MiB pages plus PAGE_SIZE, MOCK_IOMMUPT_AMDV1 (not modelled) and unknown types refused; and mock_dev_create
 * refusing the MOCK_FLAGS_DEVICE_HUGE_IOVA flag mainline dropped for MOCK_IOMMUPT_HUGE.
 */
import { IOMMU_IOAS_IOVA_RANGES, iommu_iova_range, U64_MAX } from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import {
  errnoOf,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_HUGE_IOVA,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IOMMUPT_AMDV1,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_PAGE_SIZE,
  selftestStateOf,
} from "../src/index.js";
import { type Env, HUGEPAGE_SIZE, PAGE_SIZE, setup, teardown } from "./helpers.js";

/** IOMMU_IOAS_IOVA_RANGES of an IOAS: its usable ranges and its IOVA alignment. */
async function iovaRanges(env: Env, ioasId: number) {
  const buf = env.p.mmap(PAGE_SIZE);
  const cmd = { size: 0, ioas_id: ioasId, num_iovas: 8, __reserved: 0, allowed_iovas: buf, out_iova_alignment: 0n };
  await env.self.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
  const ranges = [];
  for (let i = 0; i < cmd.num_iovas; i++)
    ranges.push(iommu_iova_range.decode(env.p.readMemory(buf + BigInt(16 * i), 16)));
  env.p.munmap(buf, PAGE_SIZE);
  return { ranges, alignment: cmd.out_iova_alignment };
}

describe("mock_domain_alloc_pgtable", () => {
  it("MOCK_IOMMUPT_HUGE: whole aperture, PAGE_SIZE alignment, DMA below the mock aperture; DEFAULT keeps it", async () => {
    const env = await setup();
    const self = env.self;
    const ioas = await self.testIoctlIoasAlloc();
    const { idevId } = await self.testCmdMockDomain(ioas);

    // A HUGE HWPT alone on an IOAS: the table's aperture reaches past the simulated 2^53 (reported to U64_MAX),
    // and PAGE_SIZE is its smallest page (so iommufd accepts the domain).
    const hugeIoas = await self.testIoctlIoasAlloc();
    const huge = await self.testCmdHwptAllocIommupt(idevId, hugeIoas, 0, MOCK_IOMMUPT_HUGE);
    expect(await iovaRanges(env, hugeIoas)).toEqual({
      ranges: [{ start: 0n, last: U64_MAX }],
      alignment: BigInt(PAGE_SIZE),
    });
    const defIoas = await self.testIoctlIoasAlloc();
    const def = await self.testCmdHwptAllocIommupt(idevId, defIoas, 0, MOCK_IOMMUPT_DEFAULT);
    expect(await iovaRanges(env, defIoas)).toEqual({
      ranges: [{ start: BigInt(MOCK_APERTURE_START), last: BigInt(MOCK_APERTURE_LAST) }],
      alignment: BigInt(MOCK_PAGE_SIZE),
    });

    // Below the mock aperture, on THP-backed memory: mapped with 1 MiB leaves where aligned; MD_CHECK_MAP walks it
    // at the domain's smallest page size (iommufd_test_md_check_pa: 1 << __ffs(pgsize_bitmap)).
    const buf = env.p.mmap(HUGEPAGE_SIZE, { hugeAligned: true, populate: true });
    await self.testIoctlIoasMapFixedId(hugeIoas, buf, HUGEPAGE_SIZE, MOCK_HUGE_PAGE_SIZE);
    await self.testCmdMdCheckMap(huge, buf, MOCK_HUGE_PAGE_SIZE, HUGEPAGE_SIZE);
    expect(await errnoOf(self.testCmdMdCheckMap(huge, buf, MOCK_HUGE_PAGE_SIZE, MOCK_PAGE_SIZE))).toBe("EINVAL");
    // A device attached to the HUGE HWPT reaches the buffer through the hardware's walk of the 5-level table.
    const { stdevId } = await self.testCmdMockDomain(huge);
    const md = [...selftestStateOf(env.m).mockDevs.values()].at(-1)!;
    env.p.writeMemory(buf + BigInt(MOCK_HUGE_PAGE_SIZE + 8), new Uint8Array([0xa5, 0x5a]));
    expect([...env.m.device(md.dev.name).dmaRead(2 * MOCK_HUGE_PAGE_SIZE + 8, 2)]).toEqual([0xa5, 0x5a]);
    // A 2 KiB-aligned mapping is refused: the IOAS alignment is PAGE_SIZE now.
    expect(await errnoOf(self.testIoctlIoasMapFixedId(hugeIoas, buf, MOCK_PAGE_SIZE, 4 * MOCK_HUGE_PAGE_SIZE))).toBe(
      "EINVAL",
    );

    await self.testIoctlDestroy(stdevId);
    await self.testIoctlDestroy(huge);
    await self.testIoctlDestroy(def);
    env.p.munmap(buf, HUGEPAGE_SIZE);
    await teardown(env);
  });

  it("refuses MOCK_IOMMUPT_AMDV1 (not modelled) and unknown types with EOPNOTSUPP", async () => {
    const env = await setup();
    const self = env.self;
    const ioas = await self.testIoctlIoasAlloc();
    const { idevId } = await self.testCmdMockDomain(ioas);
    for (const type of [MOCK_IOMMUPT_AMDV1, 3]) {
      expect(await errnoOf(self.testCmdHwptAllocIommupt(idevId, ioas, 0, type))).toBe("EOPNOTSUPP");
    }
    await teardown(env);
  });

  // mock_dev_create: valid_flags no longer has MOCK_FLAGS_DEVICE_HUGE_IOVA (mainline replaced it by
  // MOCK_IOMMUPT_HUGE), so it is an unknown flag.
  it("mock_dev_create refuses MOCK_FLAGS_DEVICE_HUGE_IOVA as an unknown flag (EINVAL)", async () => {
    const env = await setup();
    const ioas = await env.self.testIoctlIoasAlloc();
    expect(await errnoOf(env.self.testCmdMockDomainFlags(ioas, MOCK_FLAGS_DEVICE_HUGE_IOVA))).toBe("EINVAL");
    await teardown(env);
  });
});
