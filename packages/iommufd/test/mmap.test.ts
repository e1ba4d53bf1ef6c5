/**
 * mmap of a vIOMMU's region through the iommufd fd (the mock vIOMMU's two-page window): exact offset and length
 * only, MAP_SHARED and never executable, and the lifetime rule VMMs trip over — every mapping and every copy of it
 * keeps the vIOMMU busy (IOMMU_DESTROY answers EBUSY) until it is unmapped, the process exits, or its fork child
 * lets go too.
 */
import { IOMMU_VIOMMU_TYPE_SELFTEST, MOCK_VIOMMU_PAGE_SITE } from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import { IOMMU_IOAS_MAP, IOMMUFD_MMAP_ALLOC_SITE, type IommufdViommu } from "../src/index.js";
import { finish, openEnv, PAGE_SIZE } from "./helpers.js";
import { destroy, u32s, viommuAlloc, viommuFixture } from "./viommu-env.js";

const PROT_RW = 1 | 2;
const PROT_EXEC = 4;

/** A vIOMMU with driver data: its id and the window's offset and length as IOMMU_VIOMMU_ALLOC reported them. */
async function windowed(f: Awaited<ReturnType<typeof viommuFixture>>, inData = 0xbeef) {
  const data = new Uint8Array(24);
  data.set(u32s(inData, 0));
  const { id, va } = await viommuAlloc(f.env, f.deviceId, f.hwptId, IOMMU_VIOMMU_TYPE_SELFTEST, data);
  const out = new DataView(f.env.p.readMemory(va, 24).buffer);
  return { id, offset: Number(out.getBigUint64(8, true)), length: Number(out.getBigUint64(16, true)) };
}

describe("iommufd mmap of a vIOMMU region", () => {
  it("maps exactly the reported window, shared and not executable; the driver's page shows in_data", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const w = await windowed(f, 0x1234_5678);
    expect(w.offset).toBeGreaterThanOrEqual(PAGE_SIZE); // offset 0 is never handed out
    expect(w.length).toBe(2 * PAGE_SIZE);
    const mappings = env.p.mm.mappings.length;
    const map = (length: number, offset: number, opts: { shared?: boolean; prot?: number } = {}) =>
      env.p.mmap(length, { fd: env.fd, shared: opts.shared ?? true, offset, prot: opts.prot ?? PROT_RW });
    expect(() => map(w.length, w.offset, { shared: false })).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => map(w.length, w.offset, { prot: PROT_RW | PROT_EXEC })).toThrow(
      expect.objectContaining({ code: "EPERM" }),
    );
    expect(() => map(w.length, 0)).toThrow(expect.objectContaining({ code: "ENXIO" }));
    expect(() => map(PAGE_SIZE, w.offset + PAGE_SIZE)).toThrow(expect.objectContaining({ code: "ENXIO" }));
    expect(env.p.mm.mappings).toHaveLength(mappings); // the refusals left nothing behind
    const va = map(w.length, w.offset);
    expect(new DataView(env.p.readMemory(va, 4).buffer).getUint32(0, true)).toBe(0x1234_5678);
    // User writes reach the driver's page.
    env.p.writeMemory(va + BigInt(PAGE_SIZE), u32s(0xcafe));
    expect(env.p.mm.lookupPhys(va + BigInt(PAGE_SIZE))).toBe(env.p.mm.lookupPhys(va)! + PAGE_SIZE);
    env.p.munmap(va, w.length);
    await destroy(env, w.id);
    await finish(env);
  });

  it("keeps the vIOMMU busy while any copy is mapped: a fork child, trimmed parts; exit releases", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const w = await windowed(f);
    const va = env.p.mmap(w.length, { fd: env.fd, shared: true, offset: w.offset });
    await expect(destroy(env, w.id)).rejects.toMatchObject({ code: "EBUSY" });
    const child = env.p.fork();
    // Unmapping one page splits nothing here (it trims); the child still maps all of it.
    env.p.munmap(va + BigInt(PAGE_SIZE), PAGE_SIZE);
    await expect(destroy(env, w.id)).rejects.toMatchObject({ code: "EBUSY" });
    env.p.munmap(va, PAGE_SIZE);
    await expect(destroy(env, w.id)).rejects.toMatchObject({ code: "EBUSY" }); // the child's copy
    expect(new DataView(child.readMemory(va, 4).buffer).getUint32(0, true)).toBe(0xbeef);
    await child.exit();
    await destroy(env, w.id);
    await finish(env);
  });

  it("a mapping outlives the fd: the context stays until the last mapping goes, then everything is freed", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const w = await windowed(f);
    const va = env.p.mmap(w.length, { fd: env.fd, shared: true, offset: w.offset });
    await env.close();
    // The file is held by the mapping: the context is not released, the vIOMMU still answers through the window.
    expect(env.ictx.released).toBe(false);
    expect(new DataView(env.p.readMemory(va, 4).buffer).getUint32(0, true)).toBe(0xbeef);
    // munmap drops the last file reference: release sweeps the objects, the driver frees its window.
    env.p.munmap(va, w.length);
    await env.p.exit();
    expect(env.ictx.released).toBe(true);
    expect(env.m.pages.siteCount(MOCK_VIOMMU_PAGE_SITE)).toBe(0);
    await env.m.teardown();
  });

  it("refuses to pin the window for DMA (IOAS_MAP of the mapping is EFAULT)", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const w = await windowed(f);
    const va = env.p.mmap(w.length, { fd: env.fd, shared: true, offset: w.offset });
    // IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE, the IOVA chosen by the kernel.
    const cmd = { size: 0, flags: 2 | 4, ioas_id: f.ioasId, __reserved: 0, user_va: va, length: w.length, iova: 0n };
    await expect(env.ioctl(IOMMU_IOAS_MAP, cmd)).rejects.toMatchObject({ code: "EFAULT" });
    env.p.munmap(va, w.length);
    await destroy(env, w.id);
    await finish(env);
  });

  it("unwinds a failed registration and a short output struct without leaking the driver's pages", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const before = env.m.pages.siteCount(MOCK_VIOMMU_PAGE_SITE);
    env.m.faults.failNth(1, [IOMMUFD_MMAP_ALLOC_SITE]);
    const data = new Uint8Array(24);
    await expect(viommuAlloc(env, f.deviceId, f.hwptId, IOMMU_VIOMMU_TYPE_SELFTEST, data)).rejects.toMatchObject({
      code: "ENOMEM",
    });
    // 8 bytes are enough to read in_data but not to report the window: EINVAL, the region and pages undone.
    await expect(
      viommuAlloc(env, f.deviceId, f.hwptId, IOMMU_VIOMMU_TYPE_SELFTEST, new Uint8Array(8)),
    ).rejects.toMatchObject({ code: "EINVAL" });
    expect(env.m.pages.siteCount(MOCK_VIOMMU_PAGE_SITE)).toBe(before);
    expect(env.ictx.mmaps).toHaveLength(0);
    await finish(env);
  });

  it("warns at release when a driver left a region registered (a later mmap of it would reach freed memory)", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const viommu = env.ictx.objects.load(f.viommuId) as IommufdViommu;
    viommu.allocMmap(0x4000_0000, PAGE_SIZE); // a buggy driver: never destroyed
    await env.m.diag.expectWarning({ kind: "warning", message: /mmap region of .* left at release/ }, async () => {
      await env.close();
      await env.p.exit();
    });
    await env.m.teardown();
  });

  it("a second process's fd cannot map another context's region", async () => {
    const f = await viommuFixture();
    const { env } = f;
    const w = await windowed(f);
    const other = await openEnv(env.m, env.m.spawnProcess());
    expect(() => other.p.mmap(w.length, { fd: other.fd, shared: true, offset: w.offset })).toThrow(
      expect.objectContaining({ code: "ENXIO" }),
    );
    await other.close();
    await other.p.exit();
    await destroy(env, w.id);
    await finish(env);
  });
});
