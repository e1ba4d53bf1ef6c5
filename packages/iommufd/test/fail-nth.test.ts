/**
 * iommufd_fail_nth style sweeps: fail the Nth allocation or object lookup in a path, for N = 1, 2, ... until a run
 * consumes no injected failure; every run must unwind with nothing leaked (objects, pins, pages) and no warning.
 */
import { MOCK_APERTURE_START } from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import {
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOPT_PAGES_PIN_SITE,
  ioasMapFile,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessDestroy,
  iommufdAccessPinPages,
  iommufdAccessRw,
  iommufdAccessUnpinPages,
  PAGES_TO_XARRAY_SITE,
  PFN_BATCH_ALLOC_SITE,
  PFN_READER_UPAGES_SITE,
  U64_MAX,
  UPDATE_PINNED_SITE,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "../src/index.js";
import { type Env, finish, ioasAlloc, ioasMap, ioasMapFixed, mockDomain, PAGE_SIZE, setup } from "./helpers.js";

const SOAK = process.env.IOMMU_SIM_SOAK === "1";
const MAX_N = SOAK ? 2000 : 150;

async function sweep(prepare: (env: Env) => Promise<unknown>, path: (env: Env, st: unknown) => Promise<void>) {
  let n = 1;
  for (; n <= MAX_N; n++) {
    const env = await setup({ devices: 3 });
    const st = await prepare(env);
    env.m.faults.reset();
    env.m.faults.failNth(n);
    try {
      await path(env, st);
    } catch (e) {
      expect((e as { code?: string }).code, String(e)).toMatch(/^E[A-Z0-9]+$/);
    }
    const consumed = env.m.faults.nthConsumed;
    env.m.faults.reset();
    await finish(env);
    if (!consumed) return n;
  }
  return n;
}

// Each sweep runs a path once per injection point (the pin and map paths have several): allow for a loaded machine.
describe("fail_nth", { timeout: 60_000 }, () => {
  it("basic map / copy / unmap with a mock domain", async () => {
    const runs = await sweep(
      async (env) => {
        const ioas = await ioasAlloc(env);
        return { ioas, buf: env.p.mmap(16 * PAGE_SIZE) };
      },
      async (env, st) => {
        const { ioas, buf } = st as { ioas: number; buf: bigint };
        await mockDomain(env, ioas);
        const iova = await ioasMap(env, ioas, buf, 8 * PAGE_SIZE);
        const dst = await ioasAlloc(env);
        await mockDomain(env, dst);
        await env.ioctl(IOMMU_IOAS_COPY, {
          size: 0,
          flags: IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE,
          dst_ioas_id: dst,
          src_ioas_id: ioas,
          length: BigInt(4 * PAGE_SIZE),
          dst_iova: 0n,
          src_iova: BigInt(iova),
        });
        await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioas, iova: 0n, length: U64_MAX });
      },
    );
    expect(runs).toBeGreaterThan(5);
  });

  it("attach to an IOAS with mappings (fill on attach), replace by attaching a second device", async () => {
    const runs = await sweep(
      async (env) => {
        const ioas = await ioasAlloc(env);
        const buf = env.p.mmap(16 * PAGE_SIZE);
        await ioasMapFixed(env, ioas, buf, 16 * PAGE_SIZE, MOCK_APERTURE_START);
        return { ioas };
      },
      async (env, st) => {
        const { ioas } = st as { ioas: number };
        await mockDomain(env, ioas);
        await mockDomain(env, ioas);
      },
    );
    expect(runs).toBeGreaterThan(3);
  });

  it("access create / attach / pin / rw / unmap notification", async () => {
    const runs = await sweep(
      async (env) => {
        const ioas = await ioasAlloc(env);
        const buf = env.p.mmap(16 * PAGE_SIZE);
        await ioasMapFixed(env, ioas, buf, 16 * PAGE_SIZE, MOCK_APERTURE_START, false);
        void IOMMU_IOAS_MAP_FIXED_IOVA;
        return { ioas };
      },
      async (env, st) => {
        const { ioas } = st as { ioas: number };
        const pinned: [number, number][] = [];
        const holder: { a?: ReturnType<typeof iommufdAccessCreate>["access"] } = {};
        const { access } = iommufdAccessCreate(
          env.ictx,
          {
            needsPinPages: true,
            unmap: async () => {
              for (const [i, l] of pinned.splice(0)) await iommufdAccessUnpinPages(holder.a!, i, l);
            },
          },
          undefined,
        );
        holder.a = access;
        try {
          await iommufdAccessAttach(access, ioas);
          await iommufdAccessPinPages(access, MOCK_APERTURE_START, 4 * PAGE_SIZE, 0);
          pinned.push([MOCK_APERTURE_START, 4 * PAGE_SIZE]);
          await iommufdAccessRw(access, MOCK_APERTURE_START + 100, new Uint8Array(64), 1);
          await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioas, iova: 0n, length: U64_MAX });
        } finally {
          for (const [i, l] of pinned.splice(0)) await iommufdAccessUnpinPages(access, i, l);
          await iommufdAccessDestroy(access);
        }
      },
    );
    expect(runs).toBeGreaterThan(2);
  });

  it("vfio cdev bind / attach / IOAS_MAP_FILE / unmap", async () => {
    const runs = await sweep(
      async (env) => {
        const ioas = await ioasAlloc(env);
        const devfd = await env.p.open(vfioDeviceOf(env.m, env.m.driverCore.deviceFor("mock-t0")!)!.path);
        const memfd = env.p.memfdCreate("ram", 8 * PAGE_SIZE);
        return { ioas, devfd, memfd };
      },
      async (env, st) => {
        const { ioas, devfd, memfd } = st as { ioas: number; devfd: number; memfd: number };
        try {
          await vfioDeviceBindIommufd(env.p, devfd, env.fd);
          await vfioDeviceAttachPt(env.p, devfd, ioas);
          await ioasMapFile(env.p, env.fd, { ioasId: ioas, memfd, start: 0, length: 8 * PAGE_SIZE });
          await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioas, iova: 0n, length: U64_MAX });
        } finally {
          await env.p.close(devfd);
        }
      },
    );
    expect(runs).toBeGreaterThan(3);
  });

  it("pin / map / access paths: every Linux injection point is reached and unwound (iopt_area_fill_domains, iopt_pages_fill_xarray)", async () => {
    const expected = new Map<string, string>([
      [PFN_BATCH_ALLOC_SITE, "ENOMEM"],
      [PFN_READER_UPAGES_SITE, "ENOMEM"],
      [IOPT_PAGES_PIN_SITE, "EFAULT"],
      [PAGES_TO_XARRAY_SITE, "EINVAL"],
      [UPDATE_PINNED_SITE, "ENOMEM"],
    ]);
    const sites = [...expected.keys()];
    const failed = new Set<string>();
    // Fail the nth of the pin-path sites only, so each run reaches one of them.
    async function run(path: (env: Env, ioas: number, buf: bigint) => Promise<void>, withDomain: boolean) {
      for (let n = 1; n <= MAX_N; n++) {
        const env = await setup({ devices: 3 });
        const ioas = await ioasAlloc(env);
        const buf = env.p.mmap(16 * PAGE_SIZE);
        if (withDomain) await mockDomain(env, ioas);
        env.m.faults.reset();
        env.m.faults.failNth(n, sites);
        let code: string | undefined;
        try {
          await path(env, ioas, buf);
        } catch (e) {
          code = (e as { code?: string }).code;
        }
        const site = env.m.faults.failedSites[0];
        const consumed = env.m.faults.nthConsumed;
        env.m.faults.reset();
        if (site) {
          failed.add(site);
          expect(code, site).toBe(expected.get(site));
        } else {
          expect(code).toBeUndefined();
        }
        // Nothing pinned survives the unwinding (finish checks pins, leaks and warnings).
        await finish(env);
        if (!consumed) return n;
      }
      return MAX_N;
    }
    // Domain path: fill at map time, then fill a second domain attached later.
    const domainRuns = await run(async (env, ioas, buf) => {
      await ioasMapFixed(env, ioas, buf, 8 * PAGE_SIZE, MOCK_APERTURE_START);
      await mockDomain(env, ioas);
      await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioas, iova: 0n, length: U64_MAX });
    }, true);
    // Access path: pages reached by an access alone are pinned into the xarray.
    const accessRuns = await run(async (env, ioas, buf) => {
      await ioasMapFixed(env, ioas, buf, 8 * PAGE_SIZE, MOCK_APERTURE_START);
      const { access } = iommufdAccessCreate(env.ictx, { needsPinPages: true, unmap: async () => {} }, undefined);
      try {
        await iommufdAccessAttach(access, ioas);
        await iommufdAccessPinPages(access, MOCK_APERTURE_START, 4 * PAGE_SIZE, 0);
        await iommufdAccessUnpinPages(access, MOCK_APERTURE_START, 4 * PAGE_SIZE);
      } finally {
        await iommufdAccessDestroy(access);
      }
    }, false);
    expect(domainRuns).toBeGreaterThan(4);
    expect(accessRuns).toBeGreaterThan(3);
    expect([...failed].sort()).toEqual([...sites].sort());
  });
});
