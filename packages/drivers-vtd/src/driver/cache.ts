/**
 * Cache tags and the invalidations a domain change needs: page-selective IOTLB invalidation with an address mask
 * (falling back to domain-selective when the range is too large or PSI is missing, so a 1 GiB unmap costs a
 * constant number of descriptors), PASID-based IOTLB invalidation for first-stage domains, device-TLB
 * invalidation for ATS devices, batched per unit and submitted with one wait descriptor.
 * @linux drivers/iommu/intel/cache.c (cache_tag_assign/unassign, cache_tag_flush_range, cache_tag_flush_all,
 * calculate_psi_aligned_address, cache_tag_flush_iotlb, cache_tag_flush_devtlb_psi)
 */
import type { CacheTag, DeviceDomainInfo, DmarAnyDomain } from "./domain.js";
import { DmarDomain, usePiotlb } from "./domain.js";
import type { IntelIommu } from "./iommu.js";
import type { QiBatch } from "./qi-batch.js";
import {
  QI_GRAN,
  qiDescDevIotlb,
  qiDescDevIotlbPasid,
  qiDescDevIotlbPasidAll,
  qiDescIotlb,
  qiDescPiotlb,
  qiDescPiotlbAll,
} from "./regs.js";

/** Address bits of a PFN, the mask meaning "everything". @linux MAX_AGAW_PFN_WIDTH */
export const MAX_AGAW_PFN_WIDTH = 64 - 12;

/** Tag a domain for a device (and PASID) on a unit. @linux cache_tag_assign_domain */
export function cacheTagAssign(
  d: DmarAnyDomain,
  iommu: IntelIommu,
  did: number,
  info: DeviceDomainInfo,
  pasid: number,
): void {
  d.cacheTags.push({ iommu, did, pasid, info, nesting: false });
  if (!(d instanceof DmarDomain)) {
    // A nested domain's translations depend on its parent: the parent's changes flush the nested DID too.
    d.parent.cacheTags.push({ iommu, did, pasid, info, nesting: true });
  }
}

/** Remove the tags of (device, PASID). @linux cache_tag_unassign_domain */
export function cacheTagUnassign(d: DmarAnyDomain, info: DeviceDomainInfo, pasid: number): void {
  const drop = (tags: CacheTag[], nesting: boolean) => {
    const i = tags.findIndex((t) => t.info === info && t.pasid === pasid && t.nesting === nesting);
    if (i >= 0) tags.splice(i, 1);
  };
  drop(d.cacheTags, false);
  if (!(d instanceof DmarDomain)) drop(d.parent.cacheTags, true);
}

/**
 * The PSI base address, page count and mask covering [start, end]: the mask grows until one aligned block holds
 * the whole range.
 * @linux calculate_psi_aligned_address
 */
export function psiAligned(start: number, end: number): { addr: number; pages: number; mask: number } {
  const first = Math.floor(start / 4096);
  const last = Math.floor(end / 4096);
  const pages = last - first + 1;
  const aligned = 2 ** Math.ceil(Math.log2(pages));
  let mask = Math.log2(aligned);
  if (first % aligned !== 0) {
    // Find the lowest bit above the mask where first and last agree from there up.
    mask = MAX_AGAW_PFN_WIDTH;
    for (let b = Math.log2(aligned); b < MAX_AGAW_PFN_WIDTH; b++) {
      if (Math.floor(first / 2 ** b) === Math.floor(last / 2 ** b)) {
        mask = b;
        break;
      }
    }
  }
  const block = 2 ** (12 + Math.min(mask, MAX_AGAW_PFN_WIDTH));
  return { addr: mask >= MAX_AGAW_PFN_WIDTH ? 0 : start - (start % block), pages: aligned, mask };
}

function iotlbDesc(
  iommu: IntelIommu,
  d: DmarAnyDomain,
  tag: CacheTag,
  addr: number,
  pages: number,
  mask: number,
  ih: boolean,
  b: QiBatch,
): void {
  if (iommu.options.skipIotlbFlush) return;
  if (usePiotlb(d) && !tag.nesting) {
    if (pages === -1 || mask >= MAX_AGAW_PFN_WIDTH) b.add(iommu, qiDescPiotlbAll(tag.did, tag.pasid));
    else b.add(iommu, qiDescPiotlb(tag.did, tag.pasid, addr, mask, ih));
    return;
  }
  // Fall back to domain-selective when PSI is missing or the range is too large.
  if (!iommu.psi || mask > iommu.mamv || pages === -1) {
    if (iommu.queued) b.add(iommu, qiDescIotlb(tag.did, 0, false, 0, QI_GRAN.IOTLB_DSI));
    else iommu.flushIotlb(tag.did, 0, 0, false, QI_GRAN.IOTLB_DSI);
    return;
  }
  if (iommu.queued) b.add(iommu, qiDescIotlb(tag.did, addr, ih, mask, QI_GRAN.IOTLB_PSI));
  else iommu.flushIotlb(tag.did, addr, mask, ih, QI_GRAN.IOTLB_PSI);
}

function devtlbDesc(iommu: IntelIommu, tag: CacheTag, addr: number, mask: number, b: QiBatch): void {
  const info = tag.info;
  if (!info.atsEnabled || !iommu.queued || iommu.options.skipIotlbFlush) return;
  const sid = info.rid;
  if (tag.pasid === 0) b.add(iommu, qiDescDevIotlb(sid, sid, info.atsQdep, addr, mask));
  else if (mask >= MAX_AGAW_PFN_WIDTH) b.add(iommu, qiDescDevIotlbPasidAll(sid, sid, info.atsQdep, tag.pasid));
  else b.add(iommu, qiDescDevIotlbPasid(sid, sid, tag.pasid, info.atsQdep, addr, mask));
}

/** Whether an earlier tag names the same IOTLB scope (unit, DID, PASID, nesting): one IOTLB flush per scope. */
function seenBefore(tags: readonly CacheTag[], t: number): boolean {
  const x = tags[t]!;
  for (let i = 0; i < t; i++) {
    const y = tags[i]!;
    if (y.iommu === x.iommu && y.did === x.did && y.pasid === x.pasid && y.nesting === x.nesting) return true;
  }
  return false;
}

/**
 * Invalidate [start, end] of domain `d` everywhere it is attached. `ih`: leaf-only (no table was freed).
 * @linux cache_tag_flush_range
 */
export function cacheTagFlushRange(d: DmarAnyDomain, start: number, end: number, ih: boolean): void {
  const { addr, pages, mask } = psiAligned(start, end);
  const tags = d.cacheTags;
  for (let t = 0; t < tags.length; t++) {
    const tag = tags[t]!;
    if (!seenBefore(tags, t)) iotlbDesc(tag.iommu, d, tag, addr, pages, mask, ih, d.qiBatch);
    // A device TLB caches nested translations whole: a change in the parent flushes all of it (CACHE_TAG_NESTING_DEVTLB).
    if (tag.nesting) devtlbDesc(tag.iommu, tag, 0, MAX_AGAW_PFN_WIDTH, d.qiBatch);
    else devtlbDesc(tag.iommu, tag, addr, mask, d.qiBatch);
  }
  d.qiBatch.flush();
}

/** Invalidate every translation of `d`. @linux cache_tag_flush_all */
export function cacheTagFlushAll(d: DmarAnyDomain): void {
  const tags = d.cacheTags;
  for (let t = 0; t < tags.length; t++) {
    const tag = tags[t]!;
    if (!seenBefore(tags, t)) iotlbDesc(tag.iommu, d, tag, 0, -1, 0, false, d.qiBatch);
    devtlbDesc(tag.iommu, tag, 0, MAX_AGAW_PFN_WIDTH, d.qiBatch);
  }
  d.qiBatch.flush();
}

/**
 * After a map, flush what a caching-mode unit may have cached as not present, or flush the write buffer.
 * @linux cache_tag_flush_range_np
 */
export function cacheTagFlushRangeNp(d: DmarAnyDomain, start: number, end: number): void {
  const { addr, pages, mask } = psiAligned(start, end);
  for (const tag of d.cacheTags) {
    if (tag.iommu.cachingMode) iotlbDesc(tag.iommu, d, tag, addr, pages, mask, false, d.qiBatch);
    else tag.iommu.flushWriteBuffer();
  }
  d.qiBatch.flush();
}
