/**
 * Legacy-mode context entries: a device's context entry (and those of its DMA aliases) points at a second-stage
 * table with the domain's DID and AGAW, or is pass-through. An entry is replaced only after it was cleared and
 * the context cache, IOTLB and device TLB were flushed; the word holding the present bit is written last.
 * @linux drivers/iommu/intel/iommu.c: domain_context_mapping_one, context_setup_pass_through,
 * domain_context_clear_one, intel_context_flush_no_pasid
 */
import type { DeviceDomainInfo } from "./domain.js";
import type { IntelIommu } from "./iommu.js";
import { clearEntryPresentFirst, writeEntryPresentLast } from "./pasid.js";
import { CONTEXT, QI_GRAN, qiDescDevIotlb } from "./regs.js";

const TWO_32 = 4294967296;

/** Clear the context entry of one requester ID and flush what it may have left cached. @linux domain_context_clear_one */
export function contextClearOne(iommu: IntelIommu, info: DeviceDomainInfo, rid: number): void {
  const pa = iommu.contextAddr(rid >>> 8, rid & 0xff, false);
  if (pa < 0) return;
  const mem = iommu.machine.memory;
  if ((mem.read32(pa) & CONTEXT.PRESENT) === 0) return;
  const did = (mem.read32(pa + 8) >>> 8) & 0xffff;
  clearEntryPresentFirst(iommu, pa, 4);
  iommu.flushContext(did, rid, 0, QI_GRAN.CC_DEVICE);
  iommu.flushIotlb(did, 0, 0, false, QI_GRAN.IOTLB_DSI);
  if (info.atsEnabled && iommu.queued) iommu.submitSync([qiDescDevIotlb(rid, rid, info.atsQdep, 0, 64 - 12)]);
}

/** Clear every context entry of the device. @linux domain_context_clear */
export function contextClear(iommu: IntelIommu, info: DeviceDomainInfo): void {
  for (const rid of info.rids) contextClearOne(iommu, info, rid);
}

/**
 * Point the device's context entries at a second-stage table (`ptPa`, `levels`, `did`) or pass-through
 * (`ptPa` < 0), after clearing what was there.
 * @linux domain_context_mapping_one / context_setup_pass_through
 */
export function contextMap(iommu: IntelIommu, info: DeviceDomainInfo, ptPa: number, levels: number, did: number): void {
  const w = new Uint32Array(4);
  let tt: number = CONTEXT.TT_MULTI_LEVEL;
  if (ptPa < 0) tt = CONTEXT.TT_PASS_THROUGH;
  else if (info.atsSupported) tt = CONTEXT.TT_DEV_IOTLB;
  const pa0 = ptPa < 0 ? 0 : ptPa;
  w[0] = (CONTEXT.PRESENT | (tt << CONTEXT.TT_SHIFT) | ((pa0 % TWO_32) & 0xfffff000)) >>> 0;
  w[1] = Math.floor(pa0 / TWO_32);
  w[2] = (((ptPa < 0 ? iommu.ssLevels : levels) - 2) | ((did & 0xffff) << 8)) >>> 0;
  for (const rid of info.rids) {
    contextClearOne(iommu, info, rid);
    const pa = iommu.contextAddr(rid >>> 8, rid & 0xff, true);
    writeEntryPresentLast(iommu, pa, w);
    if (iommu.cachingMode) {
      iommu.flushContext(0, rid, 0, QI_GRAN.CC_DEVICE);
      iommu.flushIotlb(did, 0, 0, false, QI_GRAN.IOTLB_DSI);
    } else iommu.flushWriteBuffer();
  }
}
