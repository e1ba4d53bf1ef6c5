/**
 * Port of the `vfio_compat_mock_domain` fixture (variants Ver1v2 and Ver1v0) of tools/testing/selftests/iommu/
 * iommufd.c: the VFIO type1 container ioctls served on /dev/iommu by drivers/iommu/iommufd/vfio_compat.c, against
 * a mock domain attached to the compat IOAS.
 */
import {
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_SET,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import { errnoOf, MOCK_APERTURE_LAST, MOCK_APERTURE_START } from "../src/index.js";
import { BUFFER_SIZE, type Env, HUGEPAGE_SIZE, PAGE_SIZE, setup, teardown } from "./helpers.js";

/** sizeof(struct vfio_iommu_type1_info) */
const INFO_SIZE = 24;
/** offsetof(struct vfio_iommu_type1_info, cap_offset) */
const INFO_CAP_OFFSET = 16;
/** sizeof(struct vfio_iommu_type1_info_dma_avail) */
const DMA_AVAIL_SIZE = 12;

interface Self extends Env {
  ioas_id: number;
}

/** FIXTURE_SETUP(vfio_compat_mock_domain): an IOAS with a mock domain, set as the compat IOAS, then SET_IOMMU. */
async function fixtureSetup(version: number): Promise<Self> {
  const env = await setup();
  const self = env.self;
  // Create what VFIO would consider a group.
  const ioas_id = await self.testIoctlIoasAlloc();
  await self.testCmdMockDomain(ioas_id);
  // Attach it to the vfio compat.
  await self.ioctl(IOMMU_VFIO_IOAS, { size: 0, ioas_id, op: IOMMU_VFIO_IOAS_SET, __reserved: 0 });
  await self.ioctl(VFIO_SET_IOMMU, { arg: version });
  return { ...env, ioas_id };
}

/** The vfio_iommu_type1_info header in a buffer. */
function info(buf: Uint8Array) {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    argsz: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    iova_pgsizes: v.getBigUint64(8, true),
    cap_offset: v.getUint32(16, true),
  };
}

/** ioctl_check_buf: run GET_INFO on a buffer whose bytes past argsz are 0xAA, and check none was written. */
async function ioctlCheckBuf(s: Self, argsz: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(BUFFER_SIZE).fill(0xaa, argsz);
  buffer.fill(0, 0, argsz);
  new DataView(buffer.buffer).setUint32(0, argsz, true);
  await s.self.ioctl(VFIO_IOMMU_GET_INFO, buffer);
  expect(buffer.subarray(argsz).every((b) => b === 0xaa)).toBe(true);
  return buffer;
}

/** check_vfio_info_cap_chain: walk the chain; each capability is one the kernel defines and well formed. */
function checkVfioInfoCapChain(buffer: Uint8Array): void {
  const v = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const hdr = info(buffer);
  expect(hdr.argsz).toBeGreaterThanOrEqual(hdr.cap_offset + 8);
  let cap = hdr.cap_offset;
  for (;;) {
    const id = v.getUint16(cap, true);
    const version = v.getUint16(cap + 2, true);
    const next = v.getUint32(cap + 4, true);
    const capSize = next ? next - cap : hdr.argsz - cap;
    switch (id) {
      case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
        expect(version).toBe(1);
        expect(v.getUint32(cap + 8, true)).toBe(1); // nr_iovas
        expect(v.getBigUint64(cap + 16, true)).toBe(BigInt(MOCK_APERTURE_START));
        expect(v.getBigUint64(cap + 24, true)).toBe(BigInt(MOCK_APERTURE_LAST));
        break;
      case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
        expect(version).toBe(1);
        expect(capSize).toBe(DMA_AVAIL_SIZE);
        break;
      default:
        expect.unreachable(`unknown capability ${id}`);
    }
    if (!next) break;
    expect(hdr.argsz).toBeGreaterThanOrEqual(next + 8);
    expect(next).toBeGreaterThanOrEqual(cap);
    cap = next;
  }
}

/** shuffle_array, with a seeded generator in place of rand(). */
function shuffleArray(a: number[], seed: number): void {
  let x = seed;
  for (let i = 0; i !== a.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const other = x % (a.length - i);
    const tmp = a[i]!;
    a[i] = a[other]!;
    a[other] = tmp;
  }
}

for (const variant of [
  { name: "Ver1v2", version: VFIO_TYPE1v2_IOMMU },
  { name: "Ver1v0", version: VFIO_TYPE1_IOMMU },
]) {
  describe(`vfio_compat_mock_domain.${variant.name}`, () => {
    const test = (name: string, fn: (s: Self) => Promise<void>) =>
      it(name, async () => {
        const s = await fixtureSetup(variant.version);
        await fn(s);
        await teardown(s);
      });

    test("simple_close", async () => {});

    // iommufd_vfio_set_iommu: type1 (v1) emulates unmapping inside a mapping by disabling large pages.
    test("option_huge_pages", async (s) => {
      const cmd = {
        size: 0,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_GET,
        __reserved: 0,
        object_id: s.ioas_id,
        val64: 3n,
      };
      await s.self.ioctl(IOMMU_OPTION, cmd);
      expect(cmd.val64).toBe(variant.version === VFIO_TYPE1_IOMMU ? 0n : 1n);
    });

    // iommufd_vfio_iommu_get_info: pre-cap ABI, chain size, then every argsz in between never corrupts the chain.
    test("get_info", async (s) => {
      // Pre-cap ABI
      let buf = await ioctlCheckBuf(s, INFO_CAP_OFFSET);
      expect(info(buf).iova_pgsizes).not.toBe(0n);
      expect(info(buf).flags).toBe(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);

      // Read the cap chain size
      buf = await ioctlCheckBuf(s, INFO_SIZE);
      expect(info(buf).iova_pgsizes).not.toBe(0n);
      expect(info(buf).flags).toBe(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
      expect(info(buf).cap_offset).toBe(0);
      expect(info(buf).argsz).toBeGreaterThan(INFO_SIZE);

      // Read the caps, kernel should never create a corrupted caps (the C loop stops below caplen; going up to it
      // also walks the complete chain once)
      const caplen = info(buf).argsz;
      let chains = 0;
      for (let i = INFO_SIZE; i < caplen + 1; i++) {
        buf = await ioctlCheckBuf(s, i);
        expect(info(buf).flags).toBe(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
        if (!info(buf).cap_offset) continue;
        checkVfioInfoCapChain(buf);
        chains++;
      }
      // The last size (the one the kernel asked for) returns the whole chain.
      expect(chains).toBe(1);
    });

    // iommufd_vfio_map_dma / iommufd_vfio_unmap_dma, unmap-all needing iova = size = 0, then page-sized mappings
    // unmapped one by one in random order.
    test("map", async (s) => {
      const map_cmd = {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: s.buffer,
        size: BigInt(BUFFER_SIZE),
        iova: BigInt(MOCK_APERTURE_START),
      };
      const unmap_cmd = { argsz: 24, flags: 0, size: BigInt(BUFFER_SIZE), iova: BigInt(MOCK_APERTURE_START) };

      // Simple map/unmap
      await s.self.ioctl(VFIO_IOMMU_MAP_DMA, map_cmd);
      await s.self.ioctl(VFIO_IOMMU_UNMAP_DMA, unmap_cmd);
      expect(unmap_cmd.size).toBe(BigInt(BUFFER_SIZE));

      // UNMAP_FLAG_ALL requires 0 iova/size
      await s.self.ioctl(VFIO_IOMMU_MAP_DMA, map_cmd);
      unmap_cmd.flags = VFIO_DMA_UNMAP_FLAG_ALL;
      expect(await errnoOf(s.self.ioctl(VFIO_IOMMU_UNMAP_DMA, unmap_cmd))).toBe("EINVAL");
      unmap_cmd.iova = 0n;
      unmap_cmd.size = 0n;
      await s.self.ioctl(VFIO_IOMMU_UNMAP_DMA, unmap_cmd);
      expect(unmap_cmd.size).toBe(BigInt(BUFFER_SIZE));

      // Small pages
      const pages_iova: number[] = [];
      for (let i = 0; i !== BUFFER_SIZE / PAGE_SIZE; i++) {
        pages_iova.push(MOCK_APERTURE_START + i * PAGE_SIZE);
        map_cmd.iova = BigInt(pages_iova[i]!);
        map_cmd.vaddr = s.buffer + BigInt(i * PAGE_SIZE);
        map_cmd.size = BigInt(PAGE_SIZE);
        await s.self.ioctl(VFIO_IOMMU_MAP_DMA, map_cmd);
      }
      shuffleArray(pages_iova, 1);
      unmap_cmd.flags = 0;
      unmap_cmd.size = BigInt(PAGE_SIZE);
      for (const iova of pages_iova) {
        unmap_cmd.iova = BigInt(iova);
        await s.self.ioctl(VFIO_IOMMU_UNMAP_DMA, unmap_cmd);
      }
    });

    // Type1 (v1) cuts a huge mapping up (iopt_cut_iova); type1v2 refuses to unmap part of one (ENOENT).
    test("huge_map", async (s) => {
      const buf_size = HUGEPAGE_SIZE * 2;
      const buf = s.p.mmap(buf_size, { hugeAligned: true, populate: true });
      const map_cmd = {
        argsz: 32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: buf,
        size: BigInt(buf_size),
        iova: BigInt(MOCK_APERTURE_START),
      };
      await s.self.ioctl(VFIO_IOMMU_MAP_DMA, map_cmd);
      const chunk = buf_size / 16;
      const pages_iova = Array.from({ length: 16 }, (_, i) => MOCK_APERTURE_START + i * chunk);
      shuffleArray(pages_iova, 2);
      for (const iova of pages_iova) {
        const unmap_cmd = { argsz: 24, flags: 0, iova: BigInt(iova), size: BigInt(chunk) };
        if (variant.version === VFIO_TYPE1_IOMMU) {
          await s.self.ioctl(VFIO_IOMMU_UNMAP_DMA, unmap_cmd);
          expect(unmap_cmd.size).toBe(BigInt(chunk));
        } else {
          expect(await errnoOf(s.self.ioctl(VFIO_IOMMU_UNMAP_DMA, unmap_cmd))).toBe("ENOENT");
        }
      }
    });
  });
}
