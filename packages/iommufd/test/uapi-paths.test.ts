/**
 * Ports of the selftest scenarios for GET_HW_INFO, the `iommufd_dirty_tracking` fixture, IOAS_MAP_FILE, the
 * `change_process` fixture and the `vfio_compat_mock_domain` fixture, all through p.ioctl.
 */
import { CAPABILITIES, type Machine, type Process } from "@iommu-sim/core";
import {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_PAGE_SIZE,
} from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import {
  getHwInfo,
  hwptAlloc,
  hwptGetDirtyBitmap,
  hwptSetDirtyTracking,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  ioasAlloc,
  ioasChangeProcess,
  ioasMap,
  ioasMapFile,
  ioasUnmap,
  option,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_VADDR,
  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  VFIO_DMA_UNMAP_FLAG_VADDR,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1_NESTING_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  VFIO_UNMAP_ALL,
  VFIO_UPDATE_VADDR,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
  vfioIoas,
  vfioRegisterDevice,
} from "../src/index.js";
import { addMockDevice, bootMachine, mockDomain, openEnv, PAGE_SIZE } from "./helpers.js";

/** A process with /dev/iommu and a bound VFIO device (mock-t0, or a device added with `flags`). */
async function vfioEnv(opts: { flags?: number; spawnCaps?: string[] } = {}) {
  const m = await bootMachine({ devices: 1 });
  let dev = m.driverCore.deviceFor("mock-t0")!;
  if (opts.flags !== undefined) dev = await addMockDevice(m, "flag-dev", 50, { "mock-dev-flags": opts.flags });
  const v = vfioDeviceOf(m, dev) ?? vfioRegisterDevice(m, dev);
  const p = m.spawnProcess(opts.spawnCaps ? { capabilities: opts.spawnCaps } : {});
  const fd = await p.open("/dev/iommu");
  const devfd = await p.open(v.path);
  const devid = await vfioDeviceBindIommufd(p, devfd, fd);
  return { m, p, fd, devfd, devid, name: dev.name };
}

async function done(m: Machine, p: Process) {
  await p.exit();
  expect(m.userSpace.pages.pinnedCount).toBe(0);
  await m.teardown();
}

describe("get_hw_info", () => {
  it("mock data, zero-filled tail, short buffer, capabilities; ENOENT / EOPNOTSUPP", async () => {
    const { m, p, fd, devid } = await vfioEnv();
    const info = await getHwInfo(p, fd, devid, 8);
    expect(info.dataType).toBe(IOMMU_HW_INFO_TYPE_SELFTEST);
    expect(info.dataLen).toBe(8);
    const dv = new DataView(info.data.buffer, info.data.byteOffset);
    expect(dv.getUint32(4, true)).toBe(IOMMU_HW_INFO_SELFTEST_REGVAL);
    expect(info.capabilities & IOMMU_HW_CAP_DIRTY_TRACKING).toBe(IOMMU_HW_CAP_DIRTY_TRACKING);
    // Zero-size buffer: data_len still reports the full length.
    expect((await getHwInfo(p, fd, devid, 0)).dataLen).toBe(8);
    // Larger buffer: the kernel zeroes the tail.
    const big = p.mmap(PAGE_SIZE);
    p.writeMemory(big, new Uint8Array(16).fill(0xee));
    const cmd = {
      size: 0,
      flags: 0,
      dev_id: devid,
      data_len: 16,
      data_uptr: big,
      out_data_type: 0,
      out_max_pasid_log2: 0,
      __reserved: [0, 0, 0],
      out_capabilities: 0n,
    };
    await p.ioctl(fd, IOMMU_GET_HW_INFO, cmd);
    expect([...p.readMemory(big + 8n, 8)]).toEqual(new Array(8).fill(0));
    // Smaller buffer: only its bytes are written.
    p.writeMemory(big, new Uint8Array(16).fill(0xee));
    await p.ioctl(fd, IOMMU_GET_HW_INFO, { ...cmd, data_len: 4 });
    expect([...p.readMemory(big, 6)]).toEqual([0, 0, 0, 0, 0xee, 0xee]);
    await expect(getHwInfo(p, fd, devid + 100)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(p.ioctl(fd, IOMMU_GET_HW_INFO, { ...cmd, flags: 2 })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(p.ioctl(fd, IOMMU_GET_HW_INFO, { ...cmd, __reserved: [0, 1, 0] })).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    // A device without dirty tracking does not report it.
    await done(m, p);
    const nd = await vfioEnv({ flags: MOCK_FLAGS_DEVICE_NO_DIRTY });
    expect((await getHwInfo(nd.p, nd.fd, nd.devid)).capabilities & IOMMU_HW_CAP_DIRTY_TRACKING).toBe(0n);
    await done(nd.m, nd.p);
  });
});

for (const buffer of [64 * MOCK_PAGE_SIZE, 320 * MOCK_PAGE_SIZE]) {
  describe(`iommufd_dirty_tracking (${buffer / 1024} KiB)`, () => {
    async function dirtyEnv() {
      const e = await vfioEnv();
      const ioas = await ioasAlloc(e.p, e.fd);
      const buf = e.p.mmap(buffer);
      await ioasMap(e.p, e.fd, { ioasId: ioas, userVa: buf, length: buffer, iova: MOCK_APERTURE_START });
      const hwpt = await hwptAlloc(e.p, e.fd, { devId: e.devid, ptId: ioas, flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING });
      await vfioDeviceAttachPt(e.p, e.devfd, hwpt);
      return { ...e, ioas, hwpt };
    }

    it("enable, DMA writes mark pages dirty, bitmap with and without NO_CLEAR, unaligned bitmap", async () => {
      const { m, p, fd, hwpt, name } = await dirtyEnv();
      const npages = buffer / MOCK_PAGE_SIZE;
      await hwptSetDirtyTracking(p, fd, hwpt, true);
      const dev = m.device(name);
      const dirty = new Set<number>();
      for (let i = 0; i < npages; i += 3) dirty.add(i);
      dirty.add(npages - 1);
      for (const i of dirty) dev.dmaWrite(MOCK_APERTURE_START + i * MOCK_PAGE_SIZE + 7, new Uint8Array([i & 0xff]));
      const bitmapLen = Math.ceil(npages / 8);
      const area = p.mmap(bitmapLen + PAGE_SIZE);
      for (const skew of [0, 3]) {
        const data = area + BigInt(skew);
        const read = async (flags: number) => {
          p.writeMemory(data, new Uint8Array(bitmapLen));
          await hwptGetDirtyBitmap(p, fd, {
            hwptId: hwpt,
            iova: MOCK_APERTURE_START,
            length: buffer,
            pageSize: MOCK_PAGE_SIZE,
            data,
            flags,
          });
          const bits = p.readMemory(data, bitmapLen);
          const got = new Set<number>();
          for (let i = 0; i < npages; i++) if (bits[i >> 3]! & (1 << (i & 7))) got.add(i);
          return got;
        };
        expect(await read(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)).toEqual(dirty);
        expect(await read(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)).toEqual(dirty);
        expect(await read(0)).toEqual(dirty);
        expect(await read(0)).toEqual(new Set());
        for (const i of dirty) dev.dmaWrite(MOCK_APERTURE_START + i * MOCK_PAGE_SIZE, new Uint8Array([1]));
      }
      await hwptSetDirtyTracking(p, fd, hwpt, false);
      await done(m, p);
    });

    it("errno: EOPNOTSUPP for bad flags / no dirty ops, EINVAL for misaligned ranges and page size, EOVERFLOW", async () => {
      const { m, p, fd, hwpt, ioas, devid } = await dirtyEnv();
      const data = p.mmap(PAGE_SIZE);
      const base = {
        size: 0,
        hwpt_id: hwpt,
        flags: 0,
        __reserved: 0,
        iova: BigInt(MOCK_APERTURE_START),
        length: BigInt(buffer),
        page_size: BigInt(MOCK_PAGE_SIZE),
        data,
      };
      const get = (o: Partial<typeof base>) => p.ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { ...base, ...o });
      await expect(get({ flags: 2 })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
      await expect(get({ iova: base.iova + 1n })).rejects.toMatchObject({ code: "EINVAL" });
      await expect(get({ page_size: 0n })).rejects.toMatchObject({ code: "EINVAL" });
      await expect(get({ page_size: BigInt(MOCK_PAGE_SIZE * 3) })).rejects.toMatchObject({ code: "EINVAL" });
      await expect(get({ length: 0xffff_ffff_ffff_f000n })).rejects.toMatchObject({ code: "EOVERFLOW" });
      await expect(get({ hwpt_id: ioas })).rejects.toMatchObject({ code: "ENOENT" });
      const set = { size: 0, flags: 1, hwpt_id: hwpt, __reserved: 0 };
      await expect(p.ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, { ...set, flags: 2 })).rejects.toMatchObject({
        code: "EOPNOTSUPP",
      });
      await expect(p.ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, { ...set, __reserved: 1 })).rejects.toMatchObject({
        code: "EOPNOTSUPP",
      });
      // A HWPT without DIRTY_TRACKING has no dirty ops.
      const plain = await hwptAlloc(p, fd, { devId: devid, ptId: ioas });
      await expect(hwptSetDirtyTracking(p, fd, plain, true)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
      await expect(get({ hwpt_id: plain })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
      await done(m, p);
    });
  });
}

describe("dirty tracking and MOCK_FLAGS_DEVICE_NO_DIRTY", () => {
  it("HWPT_ALLOC(DIRTY_TRACKING) for the device is EOPNOTSUPP; attaching it to a dirty HWPT is EINVAL", async () => {
    const e = await vfioEnv({ flags: MOCK_FLAGS_DEVICE_NO_DIRTY });
    const ioas = await ioasAlloc(e.p, e.fd);
    await expect(
      hwptAlloc(e.p, e.fd, { devId: e.devid, ptId: ioas, flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING }),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    // A dirty HWPT made for a capable device, then the NO_DIRTY device attached to it.
    const good = e.m.driverCore.deviceFor("mock-t0")!;
    const gfd = await e.p.open(vfioDeviceOf(e.m, good)!.path);
    const gid = await vfioDeviceBindIommufd(e.p, gfd, e.fd);
    const hwpt = await hwptAlloc(e.p, e.fd, { devId: gid, ptId: ioas, flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING });
    await expect(vfioDeviceAttachPt(e.p, e.devfd, hwpt)).rejects.toMatchObject({ code: "EINVAL" });
    await done(e.m, e.p);
  });
});

describe("IOAS_MAP_FILE", () => {
  it("memfd pages are what the device sees; errno EBADF / EINVAL; pins go with the unmap", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const { p, fd } = env;
    const ioas = await ioasAlloc(p, fd);
    await mockDomain(env, ioas);
    const size = 8 * PAGE_SIZE;
    const mfd = p.memfdCreate("guest-ram", size);
    const view = p.mmap(size, { fd: mfd, shared: true });
    p.writeMemory(view + BigInt(2 * PAGE_SIZE), new Uint8Array([5, 6, 7]));
    const iova = await ioasMapFile(p, fd, { ioasId: ioas, memfd: mfd, start: PAGE_SIZE, length: 4 * PAGE_SIZE });
    expect(m.userSpace.pages.pinnedCount).toBe(4);
    const dev = m.device("mock-t0");
    expect([...dev.dmaRead(Number(iova) + PAGE_SIZE, 3)]).toEqual([5, 6, 7]);
    dev.dmaWrite(Number(iova), new Uint8Array([0xaa]));
    expect(p.readMemory(view + BigInt(PAGE_SIZE), 1)[0]).toBe(0xaa);
    await expect(ioasMapFile(p, fd, { ioasId: ioas, memfd: 99, start: 0, length: PAGE_SIZE })).rejects.toMatchObject({
      code: "EBADF",
    });
    await expect(ioasMapFile(p, fd, { ioasId: ioas, memfd: fd, start: 0, length: PAGE_SIZE })).rejects.toMatchObject({
      code: "EINVAL",
    });
    // Past the end of the file: the pin fails and nothing is left behind.
    await expect(
      ioasMapFile(p, fd, { ioasId: ioas, memfd: mfd, start: 6 * PAGE_SIZE, length: 4 * PAGE_SIZE }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    expect(m.userSpace.pages.pinnedCount).toBe(4);
    // The memfd fd and mapping go; the mapping in the IOAS keeps the file and its pins.
    p.munmap(view, size);
    await p.close(mfd);
    expect(m.userSpace.pages.pinnedCount).toBe(4);
    expect(await ioasUnmap(p, fd, ioas)).toBe(BigInt(4 * PAGE_SIZE));
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    await env.close();
    await done(m, p);
  });
});

for (const mode of [0, 1] as const) {
  describe(`change_process (RLIMIT_MODE ${mode === 0 ? "user" : "mm"})`, () => {
    it("basic: EINVAL with user-VA maps; works in the caller and after fork; pins move", async () => {
      const m = await bootMachine({ devices: 1 });
      // drop_cap_ipc_lock: charge the pins.
      const caps = CAPABILITIES.filter((c) => c !== "CAP_IPC_LOCK");
      const env = await openEnv(m, m.spawnProcess({ capabilities: caps }));
      const { p, fd } = env;
      if (mode === 1) await option(p, fd, IOMMU_OPTION_RLIMIT_MODE, 0, 1);
      const ioas = await ioasAlloc(p, fd);
      await mockDomain(env, ioas);
      const buf = p.mmap(PAGE_SIZE);
      const uiova = await ioasMap(p, fd, { ioasId: ioas, userVa: buf, length: PAGE_SIZE });
      await expect(ioasChangeProcess(p, fd)).rejects.toMatchObject({ code: "EINVAL" });
      await expect(p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, { size: 0, __reserved: 1 })).rejects.toMatchObject({
        code: "EOPNOTSUPP",
      });
      await ioasUnmap(p, fd, ioas, uiova, PAGE_SIZE);
      const mfd = p.memfdCreate("m", PAGE_SIZE);
      await ioasMapFile(p, fd, { ioasId: ioas, memfd: mfd, start: 0, length: PAGE_SIZE });
      await ioasChangeProcess(p, fd);
      expect(p.mm.pinnedVm).toBe(1);
      expect(p.mm.lockedVm).toBe(mode === 1 ? 1 : 0);
      expect(p.cred.user.lockedVm).toBe(mode === 0 ? 1 : 0);

      const child = p.fork();
      expect(child.mm.pinnedVm).toBe(0);
      // A child whose limit is too low cannot take the charge: ENOMEM, nothing moved.
      child.setrlimit("RLIMIT_MEMLOCK", 0);
      if (mode === 1) {
        await expect(ioasChangeProcess(child, fd)).rejects.toMatchObject({ code: "ENOMEM" });
        expect(p.mm.pinnedVm).toBe(1);
      }
      child.setrlimit("RLIMIT_MEMLOCK", 8 << 20);
      await ioasChangeProcess(child, fd);
      expect(p.mm.pinnedVm).toBe(0);
      expect(p.mm.lockedVm).toBe(0);
      expect(child.mm.pinnedVm).toBe(1);
      expect(child.mm.lockedVm).toBe(mode === 1 ? 1 : 0);
      await child.exit();
      await env.close();
      await done(m, p);
    });
  });
}

describe("change_process with several IOASes", () => {
  // iommufd_take_all_iova_rwsem: CHANGE_PROCESS takes every IOAS's iova_rwsem (nested under ioas_creation_lock) and
  // no ioas->mutex. IOAS_MAP records mutex -> iova_rwsem; taking the second IOAS's mutex under the first one's
  // iova_rwsem would close a cycle the lock-order recorder reports (and teardown fails on).
  it("moves the pins of file mappings in three IOASes, lockdep clean", async () => {
    const m = await bootMachine({ devices: 1 });
    const caps = CAPABILITIES.filter((c) => c !== "CAP_IPC_LOCK");
    const env = await openEnv(m, m.spawnProcess({ capabilities: caps }));
    const { p, fd } = env;
    const mfd = p.memfdCreate("m", 3 * PAGE_SIZE);
    const ioases: number[] = [];
    for (let i = 0; i < 3; i++) {
      const ioas = await ioasAlloc(p, fd);
      if (i === 0) await mockDomain(env, ioas);
      await ioasMapFile(p, fd, { ioasId: ioas, memfd: mfd, start: i * PAGE_SIZE, length: PAGE_SIZE });
      ioases.push(ioas);
    }
    // Only the IOAS with a domain pins its pages.
    expect(p.mm.pinnedVm).toBe(1);
    const child = p.fork();
    await ioasChangeProcess(child, fd);
    expect(p.mm.pinnedVm).toBe(0);
    expect(child.mm.pinnedVm).toBe(1);
    // Again, back to the parent: the same locks, in the same order.
    await ioasChangeProcess(p, fd);
    expect(child.mm.pinnedVm).toBe(0);
    expect(m.diag.ofKind("lock-inversion")).toEqual([]);
    expect(m.scheduler.lockdep.hasDependency("iommufd_ioas.mutex", "iopt.iova_rwsem")).toBe(true);
    expect(m.scheduler.lockdep.hasDependency("iopt.iova_rwsem", "iommufd_ioas.mutex")).toBe(false);
    await child.exit();
    await env.close();
    await done(m, p);
  });
});

describe("vfio_compat_mock_domain", () => {
  it("type1 MAP_DMA / UNMAP_DMA with user pointers: structs read from and written back to user memory", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const { p, fd } = env;
    const ioas = await ioasAlloc(p, fd);
    await mockDomain(env, ioas);
    await vfioIoas(p, fd, IOMMU_VFIO_IOAS_SET, ioas);
    // SET_IOMMU takes a plain integer: a number is that integer here, not a pointer.
    await p.ioctl(fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
    const buf = p.mmap(4 * PAGE_SIZE);
    p.writeMemory(buf, new Uint8Array([0x33]));
    const args = p.mmap(PAGE_SIZE);
    const map = { argsz: 32, flags: 3, vaddr: buf, iova: BigInt(MOCK_APERTURE_START), size: BigInt(4 * PAGE_SIZE) };
    p.writeMemory(args, vfio_iommu_type1_dma_map.encode(map));
    await p.ioctl(fd, VFIO_IOMMU_MAP_DMA, args);
    expect([...m.device("mock-t0").dmaRead(MOCK_APERTURE_START, 1)]).toEqual([0x33]);
    const unmap = { argsz: 24, flags: 0, iova: BigInt(MOCK_APERTURE_START), size: BigInt(8 * PAGE_SIZE) };
    p.writeMemory(args + 64n, vfio_iommu_type1_dma_unmap.encode(unmap));
    await p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, args + 64n);
    // The unmapped size came back through user memory.
    expect(vfio_iommu_type1_dma_unmap.decode(p.readMemory(args + 64n, 24)).size).toBe(BigInt(4 * PAGE_SIZE));
    await expect(p.ioctl(fd, VFIO_IOMMU_MAP_DMA, 8n)).rejects.toMatchObject({ code: "EFAULT" });
    await env.close();
    await done(m, p);
  });

  it("type1 MAP_DMA / UNMAP_DMA through /dev/iommu reach the mock domain", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const { p, fd } = env;
    const ioas = await ioasAlloc(p, fd);
    await mockDomain(env, ioas);
    await vfioIoas(p, fd, IOMMU_VFIO_IOAS_SET, ioas);
    expect(await p.ioctl(fd, VFIO_GET_API_VERSION, {})).toBe(0);
    expect(await p.ioctl(fd, VFIO_CHECK_EXTENSION, { arg: VFIO_TYPE1v2_IOMMU })).toBe(1);
    expect(await p.ioctl(fd, VFIO_CHECK_EXTENSION, { arg: 42 })).toBe(0);
    await p.ioctl(fd, VFIO_SET_IOMMU, { arg: VFIO_TYPE1v2_IOMMU });
    await expect(p.ioctl(fd, VFIO_SET_IOMMU, { arg: 42 })).rejects.toMatchObject({ code: "EINVAL" });
    const buf = p.mmap(4 * PAGE_SIZE);
    p.writeMemory(buf, new Uint8Array([0x11, 0x22]));
    const map = { argsz: 32, flags: 3, vaddr: buf, iova: BigInt(MOCK_APERTURE_START), size: BigInt(4 * PAGE_SIZE) };
    await p.ioctl(fd, VFIO_IOMMU_MAP_DMA, map);
    expect([...m.device("mock-t0").dmaRead(MOCK_APERTURE_START, 2)]).toEqual([0x11, 0x22]);
    await expect(p.ioctl(fd, VFIO_IOMMU_MAP_DMA, map)).rejects.toMatchObject({ code: "EEXIST" });
    await expect(p.ioctl(fd, VFIO_IOMMU_MAP_DMA, { ...map, flags: 8 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(p.ioctl(fd, VFIO_IOMMU_MAP_DMA, null)).rejects.toMatchObject({ code: "EFAULT" });
    const unmap = { argsz: 24, flags: 0, iova: BigInt(MOCK_APERTURE_START), size: BigInt(4 * PAGE_SIZE) };
    await expect(p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, { ...unmap, flags: 8 })).rejects.toMatchObject({ code: "EINVAL" });
    await p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, unmap);
    expect(unmap.size).toBe(BigInt(4 * PAGE_SIZE));
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    expect(() => m.device("mock-t0").dmaRead(MOCK_APERTURE_START, 2)).toThrow();
    // Unmap-all.
    await p.ioctl(fd, VFIO_IOMMU_MAP_DMA, map);
    const all = { argsz: 24, flags: 2, iova: 0n, size: 0n };
    await p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, all);
    expect(all.size).toBe(BigInt(4 * PAGE_SIZE));
    await env.close();
    await done(m, p);
  });

  // get_compat_ioas: every type1 call that needs the compat IOAS answers ENODEV without one; SET_IOMMU too
  // (iommufd_vfio_set_iommu: VFIO fails set_iommu when there is no group) instead of creating one.
  it("SET_IOMMU, GET_INFO, DMA_CC_IOMMU and UNMAP_DMA without a compat IOAS are ENODEV", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const { p, fd } = env;
    await expect(p.ioctl(fd, VFIO_SET_IOMMU, { arg: VFIO_TYPE1v2_IOMMU })).rejects.toMatchObject({ code: "ENODEV" });
    await expect(p.ioctl(fd, VFIO_SET_IOMMU, { arg: VFIO_TYPE1_IOMMU })).rejects.toMatchObject({ code: "ENODEV" });
    // The type is checked first.
    await expect(p.ioctl(fd, VFIO_SET_IOMMU, { arg: 42 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(p.ioctl(fd, VFIO_IOMMU_GET_INFO, { argsz: 24 })).rejects.toMatchObject({ code: "ENODEV" });
    // argsz below offsetofend(iova_pgsizes) is EINVAL before the IOAS is looked up.
    await expect(p.ioctl(fd, VFIO_IOMMU_GET_INFO, { argsz: 15 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(p.ioctl(fd, VFIO_CHECK_EXTENSION, { arg: VFIO_DMA_CC_IOMMU })).rejects.toMatchObject({
      code: "ENODEV",
    });
    const unmap = { argsz: 24, flags: 0, iova: BigInt(MOCK_APERTURE_START), size: BigInt(PAGE_SIZE) };
    await expect(p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, unmap)).rejects.toMatchObject({ code: "ENODEV" });
    // Nothing was created behind the caller's back.
    await expect(vfioIoas(p, fd, IOMMU_VFIO_IOAS_GET, 0)).rejects.toMatchObject({ code: "ENODEV" });
    await env.close();
    await done(m, p);
  });

  // iommufd_vfio_check_extension / iommufd_vfio_map_dma / iommufd_vfio_unmap_dma / iommufd_vfio_ioctl: what iommufd
  // does not serve of type1 (VADDR updates, nesting, dirty bitmaps) is refused the way Linux refuses it.
  it("type1 surface: extensions, VADDR and dirty-bitmap refusals, empty unmap, GET_INFO", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const { p, fd } = env;
    const ioas = await ioasAlloc(p, fd);
    await mockDomain(env, ioas);
    await vfioIoas(p, fd, IOMMU_VFIO_IOAS_SET, ioas);
    await p.ioctl(fd, VFIO_SET_IOMMU, { arg: VFIO_TYPE1v2_IOMMU });
    const ext = (arg: number) => p.ioctl(fd, VFIO_CHECK_EXTENSION, { arg });
    expect(await ext(VFIO_TYPE1_IOMMU)).toBe(1);
    expect(await ext(VFIO_TYPE1v2_IOMMU)).toBe(1);
    expect(await ext(VFIO_UNMAP_ALL)).toBe(1);
    expect(await ext(VFIO_UPDATE_VADDR)).toBe(0);
    expect(await ext(VFIO_TYPE1_NESTING_IOMMU)).toBe(0);
    // The mock device does not enforce cache coherency, so neither does its HWPT.
    expect(await ext(VFIO_DMA_CC_IOMMU)).toBe(0);

    const buf = p.mmap(4 * PAGE_SIZE);
    const map = { argsz: 32, flags: 3, vaddr: buf, iova: BigInt(MOCK_APERTURE_START), size: BigInt(4 * PAGE_SIZE) };
    await expect(
      p.ioctl(fd, VFIO_IOMMU_MAP_DMA, { ...map, flags: map.flags | VFIO_DMA_MAP_FLAG_VADDR }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    await expect(p.ioctl(fd, VFIO_IOMMU_MAP_DMA, { ...map, argsz: 31 })).rejects.toMatchObject({ code: "EINVAL" });
    await p.ioctl(fd, VFIO_IOMMU_MAP_DMA, map);
    const unmap = { argsz: 24, flags: 0, iova: BigInt(MOCK_APERTURE_START), size: BigInt(4 * PAGE_SIZE) };
    for (const flags of [VFIO_DMA_UNMAP_FLAG_VADDR, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP]) {
      await expect(p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, { ...unmap, flags })).rejects.toMatchObject({ code: "EINVAL" });
    }
    await expect(p.ioctl(fd, VFIO_IOMMU_DIRTY_PAGES, { argsz: 16 })).rejects.toMatchObject({ code: "ENOTTY" });

    // iopt_unmap_iova_range: a range with nothing mapped succeeds with size 0 (only IOMMU_IOAS_UNMAP says ENOENT).
    const empty = { argsz: 24, flags: 0, iova: BigInt(MOCK_APERTURE_START + 64 * PAGE_SIZE), size: BigInt(PAGE_SIZE) };
    await p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, empty);
    expect(empty.size).toBe(0n);
    await expect(ioasUnmap(p, fd, ioas, MOCK_APERTURE_START + 64 * PAGE_SIZE, PAGE_SIZE)).rejects.toMatchObject({
      code: "ENOENT",
    });
    await expect(p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, { ...empty, size: 0n })).rejects.toMatchObject({ code: "EINVAL" });

    // iommufd_vfio_iommu_get_info in object form: the header fields, and the chain in `caps`.
    const small = { argsz: 24, flags: 0, iova_pgsizes: 0n, cap_offset: 0, pad: 0 };
    await p.ioctl(fd, VFIO_IOMMU_GET_INFO, small);
    expect(small.flags).toBe(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
    // iommufd_get_pagesizes: the mock's 2 KiB | 1 MiB folded into PAGE_SIZE | 1 MiB.
    expect(small.iova_pgsizes).toBe(BigInt(PAGE_SIZE + 0x100000));
    expect(small.cap_offset).toBe(0);
    // DMA_AVAIL (12 bytes) then IOVA_RANGE with one range (16 + 16).
    expect(small.argsz).toBe(24 + 12 + 32);
    const full: Record<string, unknown> = { argsz: small.argsz, flags: 0, iova_pgsizes: 0n, cap_offset: 0, pad: 0 };
    await p.ioctl(fd, VFIO_IOMMU_GET_INFO, full);
    expect(full.cap_offset).toBe(24);
    const caps = full.caps as Uint8Array;
    const v = new DataView(caps.buffer, caps.byteOffset, caps.byteLength);
    expect([v.getUint16(0, true), v.getUint16(2, true), v.getUint32(4, true), v.getUint32(8, true)]).toEqual([
      VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
      1,
      36,
      0xffffffff,
    ]);
    expect([v.getUint16(12, true), v.getUint32(16, true), v.getUint32(20, true)]).toEqual([
      VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
      0,
      1,
    ]);
    expect([v.getBigUint64(28, true), v.getBigUint64(36, true)]).toEqual([
      BigInt(MOCK_APERTURE_START),
      BigInt(MOCK_APERTURE_LAST),
    ]);
    await env.close();
    await done(m, p);
  });

  // iommufd_vfio_set_iommu(VFIO_TYPE1_IOMMU) -> iopt_disable_large_pages; iommufd_vfio_unmap_dma -> iopt_cut_iova:
  // type1 v1 unmaps the middle of a mapping; the rest still translates and only the middle pages are unpinned.
  it("type1 (v1): HUGE_PAGES reads 0 and UNMAP_DMA cuts a mapping in the middle", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const { p, fd } = env;
    const ioas = await ioasAlloc(p, fd);
    await mockDomain(env, ioas);
    await vfioIoas(p, fd, IOMMU_VFIO_IOAS_SET, ioas);
    await p.ioctl(fd, VFIO_SET_IOMMU, { arg: VFIO_TYPE1_IOMMU });
    expect(await option(p, fd, IOMMU_OPTION_HUGE_PAGES, ioas)).toBe(0n);
    const buf = p.mmap(4 * PAGE_SIZE);
    for (let i = 0; i < 4; i++) p.writeMemory(buf + BigInt(i * PAGE_SIZE), new Uint8Array([0x10 + i]));
    const iova = MOCK_APERTURE_START;
    await p.ioctl(fd, VFIO_IOMMU_MAP_DMA, { argsz: 32, flags: 3, vaddr: buf, iova: BigInt(iova), size: 16384n });
    expect(m.userSpace.pages.pinnedCount).toBe(4);
    const unmap = { argsz: 24, flags: 0, iova: BigInt(iova + PAGE_SIZE), size: BigInt(2 * PAGE_SIZE) };
    await p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, unmap);
    expect(unmap.size).toBe(BigInt(2 * PAGE_SIZE));
    expect(m.userSpace.pages.pinnedCount).toBe(2);
    const dev = m.device("mock-t0");
    expect([...dev.dmaRead(iova, 1), ...dev.dmaRead(iova + 3 * PAGE_SIZE, 1)]).toEqual([0x10, 0x13]);
    expect(() => dev.dmaRead(iova + PAGE_SIZE, 1)).toThrow();
    expect(() => dev.dmaRead(iova + 2 * PAGE_SIZE, 1)).toThrow();
    // The two halves are mappings of their own now.
    const all = { argsz: 24, flags: 2, iova: 0n, size: 0n };
    await p.ioctl(fd, VFIO_IOMMU_UNMAP_DMA, all);
    expect(all.size).toBe(BigInt(2 * PAGE_SIZE));
    await env.close();
    await done(m, p);
  });

  it("MAP_DMA without a compat IOAS is ENODEV", async () => {
    const m = await bootMachine({ devices: 1 });
    const env = await openEnv(m, m.spawnProcess());
    const buf = env.p.mmap(PAGE_SIZE);
    await expect(
      env.p.ioctl(env.fd, VFIO_IOMMU_MAP_DMA, { argsz: 32, flags: 3, vaddr: buf, iova: 0n, size: BigInt(PAGE_SIZE) }),
    ).rejects.toMatchObject({ code: "ENODEV" });
    await env.close();
    await done(m, env.p);
  });
});
