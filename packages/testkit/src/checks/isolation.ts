/**
 * Isolation, what an IOMMU is for: random device DMAs interleaved with random map, unmap, attach, replace,
 * blocking and detach never reach memory outside what the device's current domain maps, never reach a page after
 * its unmap returned (the invalidation completed), and never get through a blocked configuration.
 * @linux the DMA-API/iommu contract: iommu_unmap returns only after the IOTLB is invalidated (strict mode)
 */
import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  mulberry32,
} from "@iommu-sim/core";
import { check, hex } from "../errors.js";
import { withRig } from "../rig.js";
import type { ConformanceCheck } from "./types.js";

const SLOTS = 6;
const POOL = 6;

export const isolationCheck: ConformanceCheck = {
  id: "isolation/random",
  title: "random DMA interleaved with map/unmap/replace/block/detach only ever reaches the current domain's pages",
  applies: (t) => (t.caps.pageSizes[0]! > 4096 ? "granule above 4 KiB" : undefined),
  async run(ctx) {
    const { target } = ctx;
    const size = target.caps.pageSizes[0]!;
    for (let r = 0; r < ctx.runs(6, 100); r++) {
      const seed = ctx.seed + r;
      await withRig(target, { seed }, async (rig) => {
        const rnd = mulberry32(seed);
        const pick = (n: number) => Math.floor(rnd() * n);
        const name = target.devices.primary;
        const dev = rig.dev(name);
        const g = rig.group(dev);
        const base = Math.ceil(target.caps.iova.base / Math.max(size, 4096)) * Math.max(size, 4096);
        const mem = rig.m.memory;
        // The pool: every page the test could map; shadow holds what each must contain.
        const pool = Array.from({ length: POOL }, (_, i) => rig.page(0x80 + i));
        const shadow = pool.map((pa) => mem.readBytes(pa, 4096));
        const domains: IommuDomain[] = [];
        const models: Map<number, number>[] = [];
        for (let i = 0; i < 2; i++) {
          domains.push(await iommuPagingDomainAllocFlags(dev, 0));
          models.push(new Map());
        }
        const blocked = target.driver.driverFor(rig.m)!.ops.blockedDomain;
        let owned = false;
        let cur: number | "blocked" | "default" = "default";
        const log: string[] = [];
        const fail = (msg: string) =>
          `${msg}; after: ${log.slice(-(Number(process.env.IOMMU_SIM_LOG) || 6)).join(", ")}`;
        for (let step = 0; step < 80; step++) {
          const k = rnd();
          const d = pick(2);
          const slot = pick(SLOTS);
          const iova = base + slot * size;
          if (k < 0.25) {
            if (models[d]!.has(slot)) continue;
            const pg = pick(POOL);
            iommuMap(domains[d]!, iova, pool[pg]!, size, IOMMU_READ | IOMMU_WRITE);
            models[d]!.set(slot, pg);
            log.push(`map D${d} ${hex(iova)}→pool${pg}`);
          } else if (k < 0.4) {
            if (!models[d]!.has(slot)) continue;
            iommuUnmap(domains[d]!, iova, size);
            models[d]!.delete(slot);
            log.push(`unmap D${d} ${hex(iova)}`);
          } else if (k < 0.55) {
            if (!owned) await iommuDeviceClaimDmaOwner(dev, "testkit");
            owned = true;
            const useBlocked = blocked !== undefined && rnd() < 0.25;
            await iommuGroupReplaceDomain(g, useBlocked ? blocked : domains[d]!);
            cur = useBlocked ? "blocked" : d;
            log.push(`attach ${useBlocked ? "blocked" : `D${d}`}`);
          } else if (k < 0.6) {
            if (owned) await iommuDeviceReleaseDmaOwner(dev);
            owned = false;
            cur = "default";
            log.push("detach");
          } else {
            const off = pick(size / 16) * 16;
            const at = iova + off;
            const bytes = new Uint8Array(8).fill((step * 7 + 1) & 0xff);
            const ok = rig.write(name, at, bytes);
            const pg = typeof cur === "number" ? models[cur]!.get(slot) : undefined;
            log.push(`DMA write ${hex(at)}`);
            if (pg === undefined) {
              check(!ok, fail(`DMA write at ${hex(at)} completed in config ${cur} where nothing maps it`), seed);
            } else {
              check(ok, fail(`DMA write at mapped ${hex(at)} faulted`), seed);
              shadow[pg]!.set(bytes, off);
            }
            // Every pool page must hold exactly what the model allows.
            for (let i = 0; i < POOL; i++) {
              const now = mem.readBytes(pool[i]!, 4096);
              const diff = now.findIndex((b, j) => b !== shadow[i]![j]);
              check(diff < 0, fail(`pool page ${i} (${hex(pool[i]!)}) changed at +${hex(diff)} by a stray DMA`), seed);
            }
          }
        }
        if (owned) await iommuDeviceReleaseDmaOwner(dev);
        domains.forEach((dom, i) => {
          for (const s of models[i]!.keys()) iommuUnmap(dom, base + s * size, size);
          iommuDomainFree(dom);
        });
      });
    }
  },
};
