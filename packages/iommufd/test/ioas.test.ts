/** Port of the `iommufd_ioas` and `iommufd_mock_domain` fixtures (with mock domains via the kernel API). */
import { iommuIovaToPhys } from "@iommu-sim/core";
import { MOCK_APERTURE_LAST, MOCK_APERTURE_START, MOCK_PAGE_SIZE } from "@iommu-sim/drivers-mock";
import { describe, expect, it, vi } from "vitest";
import {
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMUFD_ACCESS_RW_WRITE,
  type IommufdAccess,
  iommu_iova_range,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessDestroy,
  iommufdAccessPinPages,
  iommufdAccessRw,
  iommufdAccessUnpinPages,
  iommufdDeviceAttach,
  iommufdDeviceReplace,
  U64_MAX,
} from "../src/index.js";
import {
  finish,
  ioasAlloc,
  ioasMap,
  ioasMapFixed,
  mockDomain,
  PAGE_SIZE,
  pinsOf,
  setup,
  totalPins,
  vaPhys,
} from "./helpers.js";

const BUFFER_SIZE = 16 * PAGE_SIZE;

async function ioasEnv(domains = 0) {
  const env = await setup();
  const ioasId = await ioasAlloc(env);
  const doms = [];
  for (let i = 0; i < domains; i++) doms.push(await mockDomain(env, ioasId));
  const buffer = env.p.mmap(BUFFER_SIZE * 4);
  return { env, ioasId, doms, buffer };
}

function mapCmd(ioasId: number, va: bigint, length: number, iova = 0, fixed = true) {
  return {
    size: 0,
    flags: (fixed ? IOMMU_IOAS_MAP_FIXED_IOVA : 0) | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: ioasId,
    __reserved: 0,
    user_va: va,
    length: BigInt(length),
    iova: BigInt(iova),
  };
}

for (const ndom of [0, 1, 2]) {
  describe(`iommufd_ioas (${ndom} mock domains)`, () => {
    it("ioas_auto_destroy / ioas_destroy: EBUSY while a domain uses the IOAS", async () => {
      const { env, ioasId } = await ioasEnv(ndom);
      if (ndom) {
        await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: ioasId })).rejects.toMatchObject({ code: "EBUSY" });
      } else {
        await env.ioctl(IOMMU_DESTROY, { size: 0, id: ioasId });
      }
      await finish(env);
    });

    it("area: fixed maps, EEXIST overlap, ENOENT split unmap, unmap in pieces", async () => {
      const { env, ioasId, buffer, doms } = await ioasEnv(ndom);
      const base = MOCK_APERTURE_START;
      for (let i = 0; i < 16; i++) await ioasMapFixed(env, ioasId, buffer, PAGE_SIZE, base + i * PAGE_SIZE);
      await expect(ioasMapFixed(env, ioasId, buffer, PAGE_SIZE, base)).rejects.toMatchObject({ code: "EEXIST" });
      // Unmap of a range splitting nothing but covering no area start is ENOENT.
      await expect(
        env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioasId, iova: BigInt(base + 1024), length: BigInt(PAGE_SIZE) }),
      ).rejects.toMatchObject({ code: "ENOENT" });
      const un = { size: 0, ioas_id: ioasId, iova: BigInt(base), length: BigInt(2 * PAGE_SIZE) };
      await env.ioctl(IOMMU_IOAS_UNMAP, un);
      expect(un.length).toBe(BigInt(2 * PAGE_SIZE));
      for (const d of doms) expect(iommuIovaToPhys(d.idev.igroup.group.domain!, base)).toBe(0);
      if (doms[0]) {
        const pa = iommuIovaToPhys(doms[0].idev.igroup.group.domain!, base + 2 * PAGE_SIZE);
        expect(pa).toBe(vaPhys(env, buffer));
      }
      const all = { size: 0, ioas_id: ioasId, iova: 0n, length: U64_MAX };
      await env.ioctl(IOMMU_IOAS_UNMAP, all);
      expect(all.length).toBe(BigInt(14 * PAGE_SIZE));
      // Unmap-all of an empty IOAS succeeds with 0.
      all.length = U64_MAX;
      await env.ioctl(IOMMU_IOAS_UNMAP, all);
      expect(all.length).toBe(0n);
      expect(totalPins(env)).toBe(0);
      await finish(env);
    });

    it("area split: ENOENT when the unmap cuts an area", async () => {
      const { env, ioasId, buffer } = await ioasEnv(ndom);
      await ioasMapFixed(env, ioasId, buffer, 4 * PAGE_SIZE, MOCK_APERTURE_START);
      await expect(
        env.ioctl(IOMMU_IOAS_UNMAP, {
          size: 0,
          ioas_id: ioasId,
          iova: BigInt(MOCK_APERTURE_START),
          length: BigInt(PAGE_SIZE),
        }),
      ).rejects.toMatchObject({ code: "ENOENT" });
      await finish(env);
    });

    it("map errors: EOPNOTSUPP flags/reserved, EINVAL no access / zero length, EOVERFLOW", async () => {
      const { env, ioasId, buffer } = await ioasEnv(ndom);
      const c = mapCmd(ioasId, buffer, PAGE_SIZE, MOCK_APERTURE_START);
      await expect(env.ioctl(IOMMU_IOAS_MAP, { ...c, flags: 1 << 5 })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
      await expect(env.ioctl(IOMMU_IOAS_MAP, { ...c, __reserved: 1 })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
      await expect(env.ioctl(IOMMU_IOAS_MAP, { ...c, flags: IOMMU_IOAS_MAP_FIXED_IOVA })).rejects.toMatchObject({
        code: "EINVAL",
      });
      await expect(env.ioctl(IOMMU_IOAS_MAP, { ...c, length: 0n })).rejects.toMatchObject({ code: "EINVAL" });
      await expect(env.ioctl(IOMMU_IOAS_MAP, { ...c, iova: U64_MAX })).rejects.toMatchObject({ code: "EOVERFLOW" });
      await expect(env.ioctl(IOMMU_IOAS_MAP, { ...c, ioas_id: 99 })).rejects.toMatchObject({ code: "ENOENT" });
      await finish(env);
    });

    it("area_auto_iova: allocated IOVAs are aligned, page-offset kept, non-overlapping", async () => {
      const { env, ioasId, buffer } = await ioasEnv(ndom);
      const iovas: number[] = [];
      for (let i = 0; i < 8; i++) {
        const len = PAGE_SIZE * (i + 1);
        const iova = await ioasMap(env, ioasId, buffer, len);
        expect(iova % Math.min(2 ** Math.ceil(Math.log2(len)), 2 ** 28)).toBe(0);
        iovas.push(iova);
      }
      if (ndom) for (const i of iovas) expect(i).toBeGreaterThanOrEqual(MOCK_APERTURE_START);
      const sorted = [...iovas].sort((a, b) => a - b);
      for (let i = 1; i < sorted.length; i++) expect(sorted[i]).not.toBe(sorted[i - 1]);
      await finish(env);
    });

    it("iova_ranges: EMSGSIZE with the count written back; aperture with domains", async () => {
      const { env, ioasId } = await ioasEnv(ndom);
      const ranges = env.p.mmap(PAGE_SIZE);
      const cmd = {
        size: 0,
        ioas_id: ioasId,
        num_iovas: 0,
        __reserved: 0,
        allowed_iovas: ranges,
        out_iova_alignment: 0n,
      };
      if (ndom === 0) {
        await expect(env.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd)).rejects.toMatchObject({ code: "EMSGSIZE" });
        expect(cmd.num_iovas).toBe(1);
        await env.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
        const r = iommu_iova_range.decode(env.p.readMemory(ranges, 16));
        expect(r).toEqual({ start: 0n, last: U64_MAX });
        expect(cmd.out_iova_alignment).toBe(1n);
      } else {
        cmd.num_iovas = 4;
        await env.ioctl(IOMMU_IOAS_IOVA_RANGES, cmd);
        expect(cmd.num_iovas).toBe(1);
        const r = iommu_iova_range.decode(env.p.readMemory(ranges, 16));
        expect(r).toEqual({ start: BigInt(MOCK_APERTURE_START), last: BigInt(MOCK_APERTURE_LAST) });
        expect(cmd.out_iova_alignment).toBe(BigInt(MOCK_PAGE_SIZE));
      }
      await finish(env);
    });

    it("allow_iovas: restricts allocation; EINVAL for bad ranges; ENOSPC when full", async () => {
      const { env, ioasId, buffer } = await ioasEnv(ndom);
      const arr = env.p.mmap(PAGE_SIZE);
      const lo = MOCK_APERTURE_START + 16 * PAGE_SIZE;
      env.p.writeMemory(arr, iommu_iova_range.encode({ start: BigInt(lo), last: BigInt(lo + 4 * PAGE_SIZE - 1) }));
      await env.ioctl(IOMMU_IOAS_ALLOW_IOVAS, {
        size: 0,
        ioas_id: ioasId,
        num_iovas: 1,
        __reserved: 0,
        allowed_iovas: arr,
      });
      const iova = await ioasMap(env, ioasId, buffer, 2 * PAGE_SIZE);
      expect(iova).toBeGreaterThanOrEqual(lo);
      expect(iova + 2 * PAGE_SIZE - 1).toBeLessThanOrEqual(lo + 4 * PAGE_SIZE - 1);
      await expect(ioasMap(env, ioasId, buffer, 4 * PAGE_SIZE)).rejects.toMatchObject({ code: "ENOSPC" });
      env.p.writeMemory(arr, iommu_iova_range.encode({ start: 5n, last: 5n }));
      await expect(
        env.ioctl(IOMMU_IOAS_ALLOW_IOVAS, {
          size: 0,
          ioas_id: ioasId,
          num_iovas: 1,
          __reserved: 0,
          allowed_iovas: arr,
        }),
      ).rejects.toMatchObject({ code: "EINVAL" });
      if (ndom) {
        // An allowed range over the reserved (outside-aperture) space is EADDRINUSE.
        env.p.writeMemory(arr, iommu_iova_range.encode({ start: 0n, last: BigInt(PAGE_SIZE * 4) }));
        await expect(
          env.ioctl(IOMMU_IOAS_ALLOW_IOVAS, {
            size: 0,
            ioas_id: ioasId,
            num_iovas: 1,
            __reserved: 0,
            allowed_iovas: arr,
          }),
        ).rejects.toMatchObject({ code: "EADDRINUSE" });
        await expect(ioasMapFixed(env, ioasId, buffer, PAGE_SIZE, 0)).rejects.toMatchObject({ code: "EADDRINUSE" });
      }
      await finish(env);
    });

    it("copy_area / copy_sweep: copy shares pins; ENOENT for a hole", async () => {
      const { env, ioasId, buffer, doms } = await ioasEnv(ndom);
      const dst = await ioasAlloc(env);
      await ioasMapFixed(env, ioasId, buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const c = {
        size: 0,
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
        dst_ioas_id: dst,
        src_ioas_id: ioasId,
        length: BigInt(PAGE_SIZE * 4),
        dst_iova: BigInt(MOCK_APERTURE_START),
        src_iova: BigInt(MOCK_APERTURE_START + PAGE_SIZE),
      };
      await env.ioctl(IOMMU_IOAS_COPY, c);
      await expect(
        env.ioctl(IOMMU_IOAS_COPY, { ...c, src_iova: BigInt(MOCK_APERTURE_START + BUFFER_SIZE) }),
      ).rejects.toMatchObject({
        code: "ENOENT",
      });
      await expect(env.ioctl(IOMMU_IOAS_COPY, c)).rejects.toMatchObject({ code: "EEXIST" });
      // Attach a domain to the destination: same physical pages, pinned once.
      const d2 = await mockDomain(env, dst);
      const pa = iommuIovaToPhys(d2.idev.igroup.group.domain!, MOCK_APERTURE_START);
      expect(pa).toBe(vaPhys(env, Number(buffer) + PAGE_SIZE));
      if (doms.length) expect(pinsOf(env, pa)).toBe(1);
      await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioasId, iova: 0n, length: U64_MAX });
      expect(iommuIovaToPhys(d2.idev.igroup.group.domain!, MOCK_APERTURE_START)).toBe(pa);
      await finish(env);
    });

    it("huge page option: GET/SET; EINVAL while domains hold mappings", async () => {
      const { env, ioasId, buffer } = await ioasEnv(ndom);
      const cmd = {
        size: 0,
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_GET,
        __reserved: 0,
        object_id: ioasId,
        val64: 3n,
      };
      await env.ioctl(IOMMU_OPTION, cmd);
      expect(cmd.val64).toBe(1n);
      await ioasMapFixed(env, ioasId, buffer, PAGE_SIZE, MOCK_APERTURE_START);
      Object.assign(cmd, { op: IOMMU_OPTION_OP_SET, val64: 0n });
      if (ndom) await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EINVAL" });
      else await env.ioctl(IOMMU_OPTION, cmd);
      Object.assign(cmd, { op: IOMMU_OPTION_OP_SET, val64: 2n });
      await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EINVAL" });
      await expect(env.ioctl(IOMMU_OPTION, { ...cmd, object_id: 99, val64: 1n })).rejects.toMatchObject({
        code: "ENOENT",
      });
      await finish(env);
    });

    it("access_pin / access_rw / unmap notification", async () => {
      const { env, ioasId, buffer } = await ioasEnv(ndom);
      await ioasMapFixed(env, ioasId, buffer, BUFFER_SIZE, MOCK_APERTURE_START);
      const pinned: { iova: number; len: number }[] = [];
      let acc: IommufdAccess;
      const { access } = iommufdAccessCreate(
        env.ictx,
        {
          needsPinPages: true,
          unmap: async (_d, iova, length) => {
            for (const p of [...pinned]) {
              if (p.iova + p.len - 1 < iova || p.iova > iova + length - 1) continue;
              await iommufdAccessUnpinPages(acc, p.iova, p.len);
              pinned.splice(pinned.indexOf(p), 1);
            }
          },
        },
        undefined,
      );
      acc = access;
      await iommufdAccessAttach(access, ioasId);
      const pas = await iommufdAccessPinPages(access, MOCK_APERTURE_START, 2 * PAGE_SIZE, IOMMUFD_ACCESS_RW_WRITE);
      pinned.push({ iova: MOCK_APERTURE_START, len: 2 * PAGE_SIZE });
      expect(pas[0]).toBe(vaPhys(env, buffer));
      await expect(
        iommufdAccessPinPages(access, MOCK_APERTURE_START + BUFFER_SIZE, PAGE_SIZE, 0),
      ).rejects.toMatchObject({
        code: "ENOENT",
      });
      await expect(iommufdAccessPinPages(access, MOCK_APERTURE_START, 0, 0)).rejects.toMatchObject({ code: "EINVAL" });
      const data = new Uint8Array([1, 2, 3, 4, 5]);
      await iommufdAccessRw(access, MOCK_APERTURE_START + PAGE_SIZE - 2, data, IOMMUFD_ACCESS_RW_WRITE);
      expect([...env.p.readMemory(buffer + BigInt(PAGE_SIZE - 2), 5)]).toEqual([1, 2, 3, 4, 5]);
      const back = new Uint8Array(5);
      await iommufdAccessRw(access, MOCK_APERTURE_START + 5 * PAGE_SIZE, back, 0);
      // Unmapping forces the access to unpin.
      await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioasId, iova: 0n, length: U64_MAX });
      expect(pinned.length).toBe(0);
      expect(totalPins(env)).toBe(0);
      await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: access.id })).rejects.toMatchObject({ code: "EBUSY" });
      await iommufdAccessDestroy(access);
      await finish(env);
    });
  });
}

describe("iommufd_mock_domain", () => {
  it("basic: map fills every domain; unmap clears it; destroy of attached hwpt is EBUSY", async () => {
    const { env, ioasId, buffer, doms } = await ioasEnv(2);
    const iova = await ioasMap(env, ioasId, buffer, BUFFER_SIZE);
    for (const d of doms) {
      for (let i = 0; i < 16; i++) {
        expect(iommuIovaToPhys(d.idev.igroup.group.domain!, iova + i * PAGE_SIZE)).toBe(
          vaPhys(env, Number(buffer) + i * PAGE_SIZE),
        );
      }
    }
    // Pinned once however many domains.
    expect(totalPins(env)).toBe(16);
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: doms[0]!.hwptId })).rejects.toMatchObject({ code: "EBUSY" });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: doms[0]!.idevId })).rejects.toMatchObject({ code: "EBUSY" });
    // Both devices share the compatible auto domain; it goes with its last device.
    expect(doms[1]!.hwptId).toBe(doms[0]!.hwptId);
    await env.ioctl(IOMMU_DESTROY, { size: 0, id: doms[0]!.stdevId });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: doms[0]!.hwptId })).rejects.toMatchObject({ code: "EBUSY" });
    expect(totalPins(env)).toBe(16);
    await env.ioctl(IOMMU_DESTROY, { size: 0, id: doms[1]!.stdevId });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: doms[0]!.hwptId })).rejects.toMatchObject({ code: "ENOENT" });
    expect(totalPins(env)).toBe(0);
    await finish(env);
  });

  it("all_aligns / unaligned length with a mock domain is EINVAL", async () => {
    const { env, ioasId, buffer } = await ioasEnv(1);
    await expect(ioasMapFixed(env, ioasId, buffer, MOCK_PAGE_SIZE + 1, MOCK_APERTURE_START)).rejects.toMatchObject({
      code: "EINVAL",
    });
    await expect(ioasMapFixed(env, ioasId, buffer, MOCK_PAGE_SIZE, MOCK_APERTURE_START + 512)).rejects.toMatchObject({
      code: "EINVAL",
    });
    // Half-page mappings at half-page IOVAs work.
    await ioasMapFixed(env, ioasId, buffer + 2048n, MOCK_PAGE_SIZE, MOCK_APERTURE_START + MOCK_PAGE_SIZE);
    await finish(env);
  });

  it("attach to an IOAS whose areas lie outside the aperture is EADDRINUSE", async () => {
    const env = await setup();
    const ioasId = await ioasAlloc(env);
    const buffer = env.p.mmap(PAGE_SIZE);
    await ioasMapFixed(env, ioasId, buffer, PAGE_SIZE, PAGE_SIZE);
    await expect(mockDomain(env, ioasId)).rejects.toMatchObject({ code: "EADDRINUSE" });
    await finish(env);
  });

  it("replace: move a device between an auto domain and an explicit HWPT; EINVAL for wrong type", async () => {
    const { env, ioasId, buffer, doms } = await ioasEnv(1);
    await ioasMap(env, ioasId, buffer, BUFFER_SIZE);
    const d = doms[0]!;
    const h = {
      size: 0,
      flags: 0,
      dev_id: d.idevId,
      pt_id: ioasId,
      out_hwpt_id: 0,
      __reserved: 0,
      data_type: 0,
      data_len: 0,
      data_uptr: 0n,
      fault_id: 0,
      __reserved2: 0,
    };
    await env.ioctl(IOMMU_HWPT_ALLOC, h);
    const pt = { id: h.out_hwpt_id };
    await iommufdDeviceReplace(d.idev, 0, pt);
    // The auto domain went away with its last device.
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: d.hwptId })).rejects.toMatchObject({ code: "ENOENT" });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: h.out_hwpt_id })).rejects.toMatchObject({ code: "EBUSY" });
    await expect(iommufdDeviceReplace(d.idev, 0, { id: d.idevId })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(iommufdDeviceReplace(d.idev, 0, { id: 999 })).rejects.toMatchObject({ code: "ENOENT" });
    // Replace to the IOAS makes a new auto domain.
    const back = { id: ioasId };
    await iommufdDeviceReplace(d.idev, 0, back);
    await env.ioctl(IOMMU_DESTROY, { size: 0, id: h.out_hwpt_id });
    await expect(iommufdDeviceAttach(d.idev, 0, { id: ioasId })).rejects.toMatchObject({ code: "EBUSY" });
    await finish(env);
  });

  it("hwpt_alloc: EINVAL for a device pt_id, EOPNOTSUPP for unknown flags, ENOENT for a bad dev", async () => {
    const { env, ioasId, doms } = await ioasEnv(1);
    const d = doms[0]!;
    const h = {
      size: 0,
      flags: 0,
      dev_id: d.idevId,
      pt_id: ioasId,
      out_hwpt_id: 0,
      __reserved: 0,
      data_type: 0,
      data_len: 0,
      data_uptr: 0n,
      fault_id: 0,
      __reserved2: 0,
    };
    await expect(env.ioctl(IOMMU_HWPT_ALLOC, { ...h, pt_id: d.idevId })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(env.ioctl(IOMMU_HWPT_ALLOC, { ...h, pt_id: 999 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(env.ioctl(IOMMU_HWPT_ALLOC, { ...h, flags: 1 << 12 })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(env.ioctl(IOMMU_HWPT_ALLOC, { ...h, dev_id: ioasId })).rejects.toMatchObject({ code: "ENOENT" });
    await expect(env.ioctl(IOMMU_HWPT_ALLOC, { ...h, data_len: 4 })).rejects.toMatchObject({ code: "EINVAL" });
    await env.ioctl(IOMMU_HWPT_ALLOC, { ...h, flags: 1 });
    await finish(env);
  });
});

describe("driver calls per mapping (iopt_pages pfn_batch / iopt_area_unfill_domain)", () => {
  it("maps each physically contiguous run with one iommuMap, unmaps an area with one unmap and one sync", async () => {
    const { env, ioasId, doms } = await ioasEnv(1);
    const domain = doms[0]!.idev.igroup.group.domain!;
    const NPAGES = 256;
    const buf = env.p.mmap(NPAGES * PAGE_SIZE);
    for (let i = 0; i < NPAGES; i++) env.p.writeMemory(buf + BigInt(i * PAGE_SIZE), new Uint8Array([i]));
    let runs = 1;
    for (let i = 1; i < NPAGES; i++) {
      const pa = vaPhys(env, Number(buf) + i * PAGE_SIZE);
      if (pa !== vaPhys(env, Number(buf) + (i - 1) * PAGE_SIZE) + PAGE_SIZE) runs++;
    }
    const map = vi.spyOn(domain.ops, "mapPages");
    const unmap = vi.spyOn(domain.ops, "unmapPages");
    const sync = vi.spyOn(domain.ops, "iotlbSync");
    try {
      await env.ioctl(IOMMU_IOAS_MAP, mapCmd(ioasId, buf, NPAGES * PAGE_SIZE, MOCK_APERTURE_START));
      // One iommuMap per run; the core splits a run by page size (4 KiB head, 2 MiB body, 4 KiB tail at most).
      expect(map.mock.calls.length).toBeLessThanOrEqual(3 * runs);
      expect(map.mock.calls.length).toBeLessThan(NPAGES / 4);
      for (let i = 0; i < NPAGES; i += 17) {
        const iova = MOCK_APERTURE_START + i * PAGE_SIZE;
        expect(iommuIovaToPhys(domain, iova)).toBe(vaPhys(env, Number(buf) + i * PAGE_SIZE));
      }
      await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioasId, iova: 0n, length: U64_MAX });
      expect(sync.mock.calls.length).toBe(1);
      expect(unmap.mock.calls.length).toBeLessThanOrEqual(3 * runs);
    } finally {
      map.mockRestore();
      unmap.mockRestore();
      sync.mockRestore();
    }
    expect(totalPins(env)).toBe(0);
    await finish(env);
  });
});
