/**
 * Hostile input (issue #11): what a syzkaller-style program reaches in a few calls. Each case answers as Linux does,
 * with nothing leaked and no WARN (the machine teardown fails on either).
 */

import { KernelError, type Process } from "@iommu-sim/core";
import {
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  iommu_ioas_alloc,
  iommu_ioas_map,
} from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import {
  IOMMU_TEST_OP,
  MOCK_APERTURE_START,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_PASID,
} from "../src/index.js";
import { BUFFER_SIZE, bootMachine, PAGE_SIZE, setup, teardown } from "./helpers.js";

const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** `length` bytes of anonymous memory with a hole right after them. */
function unmappedAfter(p: Process, length: number): bigint {
  const va = p.mmap(length + PAGE_SIZE);
  p.munmap(va + BigInt(length), PAGE_SIZE);
  return va;
}

describe("hostile input (issue #11)", () => {
  describe("IOAS_MAP / IOAS_MAP_FILE with a huge length: pins stay sparse, EFAULT at the first unmapped page", () => {
    const HUGE = 0xffffffffff000n;

    it("no domain: the map succeeds without pinning (iopt_fill_domains_pages has nothing to fill)", async () => {
      const env = await setup();
      const { self, p } = env;
      self.ioasId = await self.testIoctlIoasAlloc();
      const small = unmappedAfter(p, 2 * PAGE_SIZE);
      await self.testIoctlIoasMapRaw(
        self.ioasId,
        small,
        HUGE,
        BigInt(MOCK_APERTURE_START),
        RW | IOMMU_IOAS_MAP_FIXED_IOVA,
      );
      // An access reaching past the 8 KiB the process mapped: EFAULT, nothing left pinned (iopt_pages_fill_xarray).
      const access = await self.testCmdCreateAccess(self.ioasId, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
      const pages = (length: number) =>
        self.cmd(IOMMU_TEST_OP.ACCESS_PAGES, {
          id: access,
          iova: BigInt(MOCK_APERTURE_START),
          length: BigInt(length),
          uptr: small,
        });
      await expect(pages(3 * PAGE_SIZE)).rejects.toMatchObject({ code: "EFAULT" });
      await expect(pages(16 * PAGE_SIZE)).rejects.toMatchObject({ code: "EFAULT" });
      await self.checkRefs(small, 2 * PAGE_SIZE, 0);
      const r = await pages(2 * PAGE_SIZE);
      await self.checkRefs(small, 2 * PAGE_SIZE, 1);
      await self.testCmdDestroyAccessPages(access, r.out_access_pages_id);
      await self.testCmdDestroyAccess(access);
      expect(await self.testIoctlIoasUnmap(0n, 0xffff_ffff_ffff_ffffn)).toBe(HUGE);
      await teardown(env);
    });

    it("a mock domain: the fill pins in runs and stops with EFAULT; no pin, no mapping is left", async () => {
      const env = await setup();
      const { self, p } = env;
      self.ioasId = await self.testIoctlIoasAlloc();
      const { hwptId } = await self.testCmdMockDomain(self.ioasId);
      const small = unmappedAfter(p, 2 * PAGE_SIZE);
      // 1 GiB fits the mock aperture; the process mapped 8 KiB of it.
      await expect(
        self.testIoctlIoasMapRaw(
          self.ioasId,
          small,
          1n << 30n,
          BigInt(MOCK_APERTURE_START),
          RW | IOMMU_IOAS_MAP_FIXED_IOVA,
        ),
      ).rejects.toMatchObject({ code: "EFAULT" });
      // Past the aperture: refused before any pin (the domain reserves the rest of the IOVA space).
      await expect(
        self.testIoctlIoasMapRaw(self.ioasId, small, HUGE, BigInt(MOCK_APERTURE_START), RW | IOMMU_IOAS_MAP_FIXED_IOVA),
      ).rejects.toMatchObject({ code: "EADDRINUSE" });
      await self.checkRefs(small, 2 * PAGE_SIZE, 0);
      // The IOVA is free again and the 8 KiB map normally.
      await self.testIoctlIoasMapFixed(small, 2 * PAGE_SIZE, MOCK_APERTURE_START);
      await self.testCmdMdCheckMap(hwptId, small, MOCK_APERTURE_START, 2 * PAGE_SIZE);
      await teardown(env);
    });

    it("IOAS_MAP_FILE of a huge length from an 8 KiB memfd answers an errno, never an exception", async () => {
      const env = await setup();
      const { self, p } = env;
      self.ioasId = await self.testIoctlIoasAlloc();
      const memfd = p.memfdCreate("small", 2 * PAGE_SIZE);
      const cmd = (length: bigint) => ({
        size: 0,
        flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA,
        ioas_id: self.ioasId,
        fd: memfd,
        start: 0n,
        length,
        iova: BigInt(MOCK_APERTURE_START),
      });
      // Without a domain nothing is pinned at map time: either an errno or a mapping, never an exception.
      const err = await self.ioctl(IOMMU_IOAS_MAP_FILE, cmd(HUGE)).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (err !== undefined) expect(err).toBeInstanceOf(KernelError);
      await self.testIoctlIoasUnmap(0n, 0xffff_ffff_ffff_ffffn).catch(() => 0n);
      await self.testCmdMockDomain(self.ioasId);
      // With a domain the pin reaches past the file and fails; the first pages stay unpinned.
      await expect(self.ioctl(IOMMU_IOAS_MAP_FILE, cmd(1n << 30n))).rejects.toBeInstanceOf(KernelError);
      await self.ioctl(IOMMU_IOAS_MAP_FILE, cmd(2n * BigInt(PAGE_SIZE)));
      await p.close(memfd);
      await teardown(env);
    });
  });

  it("IOAS_COPY without READABLE or WRITEABLE is EINVAL at the ioctl (iommufd_ioas_copy)", async () => {
    const env = await setup();
    const { self } = env;
    self.ioasId = await self.testIoctlIoasAlloc();
    await self.testCmdMockDomain(self.ioasId);
    await self.testIoctlIoasMapFixed(env.buffer, PAGE_SIZE, MOCK_APERTURE_START);
    const dst = await self.testIoctlIoasAlloc();
    await self.testCmdMockDomain(dst);
    const copy = (flags: number) =>
      self.ioctl(IOMMU_IOAS_COPY, {
        size: 0,
        flags,
        dst_ioas_id: dst,
        src_ioas_id: self.ioasId,
        length: BigInt(PAGE_SIZE),
        dst_iova: BigInt(MOCK_APERTURE_START),
        src_iova: BigInt(MOCK_APERTURE_START),
      });
    await expect(copy(IOMMU_IOAS_MAP_FIXED_IOVA)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(copy(0)).rejects.toMatchObject({ code: "EINVAL" });
    // Unknown flags come first (EOPNOTSUPP), as in Linux.
    await expect(copy(1 << 10)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await copy(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE);
    await teardown(env);
  });

  it("object form with a huge size: unsent bytes read as zero, no scan by size (copy_struct_from_user)", async () => {
    const env = await setup();
    const { self } = env;
    const cmd = { size: 0xffff_ffff, flags: 0, out_ioas_id: 0 };
    await self.ioctl(IOMMU_IOAS_ALLOC, cmd);
    expect(cmd.out_ioas_id).toBeGreaterThan(0);
    await expect(self.ioctl(IOMMU_DESTROY, { size: 0xffff_ffff, id: 9999 })).rejects.toMatchObject({
      code: "ENOENT",
    });
    await self.ioctl(IOMMU_DESTROY, { size: 0xffff_ffff, id: cmd.out_ioas_id });
    await teardown(env);
  });

  it("ACCESS_REPLACE_IOAS A -> B -> A leaves no stale entry (iommufd_access_change_ioas saves the old ID)", async () => {
    const env = await setup();
    const { self } = env;
    const a = await self.testIoctlIoasAlloc();
    const b = await self.testIoctlIoasAlloc();
    const accessFd = await self.testCmdCreateAccess(a, 0);
    await self.testCmdAccessReplaceIoas(accessFd, b);
    await self.testCmdAccessReplaceIoas(accessFd, a);
    await self.testCmdAccessReplaceIoas(accessFd, b);
    await self.testCmdDestroyAccess(accessFd);
    // Both IOASes are free of accesses again: destroying them succeeds.
    await self.testIoctlDestroy(a);
    await self.testIoctlDestroy(b);
    await teardown(env);
  });

  it("process exit with a PASID still attached: no WARN, nothing leaked (iommufd_device_unbind)", async () => {
    const m = await bootMachine();
    const p = m.spawnProcess();
    const fd = await p.open("/dev/iommu");
    const { SelftestFixture } = await import("../src/index.js");
    const self = new SelftestFixture(p, fd);
    const ioas = await self.testIoctlIoasAlloc();
    const first = await self.testCmdMockDomainFlags(ioas, MOCK_FLAGS_DEVICE_PASID);
    const hwpt = await self.testCmdHwptAlloc(first.idevId, ioas, IOMMU_HWPT_ALLOC_PASID);
    const second = await self.testCmdMockDomainFlags(hwpt, MOCK_FLAGS_DEVICE_PASID);
    await self.testCmdPasidAttach(second.stdevId, 2, hwpt);
    await p.close(fd);
    await p.exit();
    await m.teardown();
  });

  describe("an integer where the struct pointer goes: the struct is read from user memory", () => {
    it("IOAS_ALLOC, IOAS_MAP and IOVA_RANGES through a user pointer; out fields land in user memory", async () => {
      const env = await setup();
      const { self, p } = env;
      const page = p.mmap(PAGE_SIZE);
      p.writeMemory(page, iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size, flags: 0, out_ioas_id: 0 }));
      // A number and a bigint are both addresses.
      await self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, Number(page));
      const ioasId = iommu_ioas_alloc.decode(p.readMemory(page, iommu_ioas_alloc.size)).out_ioas_id;
      expect(ioasId).toBeGreaterThan(0);
      self.ioasId = ioasId;
      const { hwptId } = await self.testCmdMockDomain(ioasId);
      const map = {
        size: iommu_ioas_map.size,
        flags: RW,
        ioas_id: ioasId,
        __reserved: 0,
        user_va: env.buffer,
        length: BigInt(BUFFER_SIZE),
        iova: 0n,
      };
      p.writeMemory(page + 64n, iommu_ioas_map.encode(map));
      await self.p.ioctl(self.fd, IOMMU_IOAS_MAP, page + 64n);
      const iova = iommu_ioas_map.decode(p.readMemory(page + 64n, iommu_ioas_map.size)).iova;
      expect(iova).not.toBe(0n);
      await self.testCmdMdCheckMap(hwptId, env.buffer, iova, BUFFER_SIZE);
      await self.testIoctlIoasUnmap(iova, BUFFER_SIZE);
      p.munmap(page, PAGE_SIZE);
      await teardown(env);
    });

    it("EFAULT for an unmapped or null address; E2BIG for non-zero bytes past the struct; EFAULT past the mapping", async () => {
      const env = await setup();
      const { self, p } = env;
      await expect(self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, 5)).rejects.toMatchObject({ code: "EFAULT" });
      await expect(self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, 0n)).rejects.toMatchObject({ code: "EFAULT" });
      const page = p.mmap(PAGE_SIZE);
      // A size reaching past the end of the mapping: the zero check runs into unmapped memory.
      p.writeMemory(page, iommu_ioas_alloc.encode({ size: 0xffff_ffff, flags: 0, out_ioas_id: 0 }));
      await expect(self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, page)).rejects.toMatchObject({ code: "EFAULT" });
      // A non-zero byte past the kernel's struct, inside the mapping.
      p.writeMemory(page, iommu_ioas_alloc.encode({ size: 64, flags: 0, out_ioas_id: 0 }));
      p.writeMemory(page + 40n, new Uint8Array([1]));
      await expect(self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, page)).rejects.toMatchObject({ code: "E2BIG" });
      // The same with zeroes: accepted, out field written within the caller's size.
      p.writeMemory(page + 40n, new Uint8Array([0]));
      await self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, page);
      // Bytes past the last page of the struct: a struct ending exactly at the mapping's end works.
      const end = page + BigInt(PAGE_SIZE - iommu_ioas_alloc.size);
      p.writeMemory(end, iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size, flags: 0, out_ioas_id: 0 }));
      await self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, end);
      expect(iommu_ioas_alloc.decode(p.readMemory(end, iommu_ioas_alloc.size)).out_ioas_id).toBeGreaterThan(0);
      // EMSGSIZE copies num_iovas back before failing, to the user's memory too.
      const ranges = p.mmap(PAGE_SIZE);
      const ioas = await self.testIoctlIoasAlloc();
      const r = new Uint8Array(32);
      const v = new DataView(r.buffer);
      v.setUint32(0, 32, true);
      v.setUint32(4, ioas, true);
      p.writeMemory(ranges, r);
      await expect(self.p.ioctl(self.fd, IOMMU_IOAS_IOVA_RANGES, ranges)).rejects.toMatchObject({ code: "EMSGSIZE" });
      const back = p.readMemory(ranges, 32);
      expect(new DataView(back.buffer).getUint32(8, true)).toBeGreaterThan(0);
      await self.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioas, iova: 0n, length: 0xffff_ffff_ffff_ffffn });
      await teardown(env);
    });

    it("a read-only struct: the command runs, and the copy back is EFAULT (copy_to_user)", async () => {
      const env = await setup();
      const { self, p } = env;
      // A memfd page written through a writable mapping and passed through a read-only one.
      const mfd = p.memfdCreate("ro-struct", PAGE_SIZE);
      const rw = p.mmap(PAGE_SIZE, { fd: mfd, shared: true });
      const page = p.mmap(PAGE_SIZE, { fd: mfd, shared: true, prot: 1 /* PROT_READ */ });
      p.writeMemory(rw, iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size, flags: 0, out_ioas_id: 0 }));
      await expect(self.p.ioctl(self.fd, IOMMU_IOAS_ALLOC, page)).rejects.toMatchObject({ code: "EFAULT" });
      expect(iommu_ioas_alloc.decode(p.readMemory(page, iommu_ioas_alloc.size)).out_ioas_id).toBe(0);
      p.munmap(page, PAGE_SIZE);
      p.munmap(rw, PAGE_SIZE);
      await p.close(mfd);
      await teardown(env);
    });
  });
});

describe("fidelity (issue #10)", () => {
  it("a read-only IOAS_MAP of a private file mapping pins the process's copy: its later writes reach the domain (gup_must_unshare)", async () => {
    const env = await setup();
    const { self, p } = env;
    self.ioasId = await self.testIoctlIoasAlloc();
    const { hwptId } = await self.testCmdMockDomain(self.ioasId);
    const memfd = p.memfdCreate("private", PAGE_SIZE);
    const va = p.mmap(PAGE_SIZE, { fd: memfd });
    p.readMemory(va, 1);
    await self.testIoctlIoasMapRaw(
      self.ioasId,
      va,
      PAGE_SIZE,
      BigInt(MOCK_APERTURE_START),
      IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_FIXED_IOVA,
    );
    p.writeMemory(va, new Uint8Array([0x5a]));
    // The domain maps the page now under the VA (MD_CHECK_MAP compares the physical pages).
    await self.testCmdMdCheckMap(hwptId, va, MOCK_APERTURE_START, PAGE_SIZE);
    await self.testIoctlIoasUnmap(0n, 0xffff_ffff_ffff_ffffn);
    p.munmap(va, PAGE_SIZE);
    await p.close(memfd);
    await teardown(env);
  });
});
