/**
 * The stale-cache check: rewrite a leaf descriptor in memory behind the hardware's back; a model that really
 * caches keeps translating to the old page until the driver invalidates, and the driver's flush makes the new
 * entry visible. Proves both that the model caches and that the driver's flush_iotlb_all reaches it.
 * @linux iommu_flush_iotlb_all; the TLB maintenance rules of each architecture
 */
import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  IoPageTable,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuFlushIotlbAll,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  PT_ENTRY_OA,
} from "@iommu-sim/core";
import { ConformanceError, check, hex } from "../errors.js";
import { withRig } from "../rig.js";
import type { ConformanceCheck } from "./types.js";

/**
 * The page table behind a paging domain built on core's engine (any own property holding an `IoPageTable`).
 * @linux to_xxx_domain(domain)->pgtbl / ->iopt
 */
export function pageTableOf(domain: IommuDomain): IoPageTable | undefined {
  for (const v of Object.values(domain)) if (v instanceof IoPageTable) return v;
  return undefined;
}

/** Physical address of the leaf entry translating `iova`, from a walk of `pt`. */
function leafEntryPa(pt: IoPageTable, iova: number): number {
  let at = -1;
  const kind = pt.walk(iova, (_l, tablePa, index, _lo, _hi, type) => {
    if (type === PT_ENTRY_OA) at = tablePa + index * 8;
  });
  if (kind !== PT_ENTRY_OA || at < 0) throw new ConformanceError(`no leaf entry for ${hex(iova)}`);
  return at;
}

export const staleCacheCheck: ConformanceCheck = {
  id: "invalidation/stale-cache",
  title: "a descriptor rewritten behind the hardware's back is not seen until the driver invalidates",
  applies: (t) => (t.caps.cachesTranslations ? undefined : "the model claims no translation cache"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const name = target.devices.primary;
      const dev = rig.dev(name);
      const g = Math.max(target.caps.pageSizes[0]!, 4096);
      const iova = Math.ceil(target.caps.iova.base / g) * g;
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const d = await iommuPagingDomainAllocFlags(dev, 0);
      await iommuGroupReplaceDomain(rig.group(dev), d);
      const pt = pageTableOf(d);
      check(pt !== undefined, "the domain has no core IoPageTable; the stale-cache check needs one");
      const [pa1, pa2] = [rig.page(0x11), rig.page(0x22)];
      iommuMap(d, iova, pa1, 4096, IOMMU_READ | IOMMU_WRITE);
      iommuMap(d, iova + g, pa2, 4096, IOMMU_READ | IOMMU_WRITE);
      let o = rig.read(name, iova, 1);
      check(o !== "fault" && o[0] === 0x11, "the first DMA did not reach the mapped page");
      // Copy the second entry over the first, as a buggy driver would without invalidating.
      const mem = rig.m.memory;
      const [e1, e2] = [leafEntryPa(pt, iova), leafEntryPa(pt, iova + g)];
      const saved = [mem.read32(e1), mem.read32(e1 + 4)] as const;
      mem.write32(e1, mem.read32(e2));
      mem.write32(e1 + 4, mem.read32(e2 + 4));
      o = rig.read(name, iova, 1);
      check(
        o !== "fault" && o[0] === 0x11,
        `after rewriting the descriptor in memory the DMA gave ${o === "fault" ? "a fault" : hex(o[0]!)}, not the ` +
          "cached old page: the model does not cache (or re-walks on every access)",
      );
      iommuFlushIotlbAll(d);
      o = rig.read(name, iova, 1);
      check(
        o !== "fault" && o[0] === 0x22,
        "after flush_iotlb_all the DMA still used the old translation: the driver's flush does not reach the TLB",
      );
      mem.write32(e1, saved[0]);
      mem.write32(e1 + 4, saved[1]);
      iommuFlushIotlbAll(d);
      iommuUnmap(d, iova, 4096);
      iommuUnmap(d, iova + g, 4096);
      await iommuDeviceReleaseDmaOwner(dev);
      iommuDomainFree(d);
    }),
};
