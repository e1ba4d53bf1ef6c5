/**
 * Scalable-mode structures of a device: its PASID directory and tables, its scalable-mode context entry, and the
 * PASID entries of each translation type, written in the order that keeps every DMA on either the old or the new
 * entry: a present entry is first torn down (present bit cleared, then the PASID cache, IOTLB and device TLB
 * flushed), the new entry's other words are written, and the word holding the present bit is written last.
 * @linux drivers/iommu/intel/pasid.c (intel_pasid_alloc_table, intel_pasid_tear_down_entry,
 * intel_pasid_setup_first_level / _second_level / _pass_through / _nested, intel_pasid_setup_sm_context,
 * intel_pasid_setup_dirty_tracking, pasid_flush_caches)
 */
import { kerr } from "@iommu-sim/core";
import type { DeviceDomainInfo, PasidTable, VtdS1Cfg } from "./domain.js";
import type { IntelIommu } from "./iommu.js";
import {
  FLPT_DEFAULT_DID,
  PASID_PDE_SHIFT,
  PASID_PTE,
  PGTT,
  QI_GRAN,
  type QiDesc,
  qiDescDevIotlb,
  qiDescDevIotlbPasidAll,
  qiDescIotlb,
  qiDescPasidCache,
  qiDescPiotlbAll,
  SM_CONTEXT,
} from "./regs.js";

/** Flags of the nested stage-1 configuration. @linux IOMMU_VTD_S1_SRE / _EAFE / _WPE */
export const IOMMU_VTD_S1 = { SRE: 1 << 0, EAFE: 1 << 1, WPE: 1 << 2 } as const;

const TWO_32 = 4294967296;

/** Allocate the PASID directory of a device. @linux intel_pasid_alloc_table */
export function pasidAllocTable(iommu: IntelIommu, info: DeviceDomainInfo): void {
  const maxPasid = info.pasidBits > 0 ? 2 ** info.pasidBits : 0;
  // One 8-byte directory entry per 64 PASIDs.
  const size = maxPasid / 2 ** (PASID_PDE_SHIFT - 3);
  let order = 0;
  while (4096 * 2 ** order < size) order++;
  const dirPa = iommu.allocPages(order, "intel_pasid_dir");
  info.pasidTable = { dirPa, order, maxPasid: 2 ** (order + 12 + 3), leaves: new Map() };
}

/** Free the directory and every leaf table. @linux intel_pasid_free_table */
export function pasidFreeTable(iommu: IntelIommu, info: DeviceDomainInfo): void {
  const t = info.pasidTable;
  if (!t) return;
  for (const pa of t.leaves.values()) iommu.freePages(pa, 0);
  iommu.freePages(t.dirPa, t.order);
  info.pasidTable = undefined;
}

/** PDTS of a table: log2(directory entries) − 7, at least 0. @linux context_get_sm_pds */
function pdts(t: PasidTable): number {
  const pds = Math.log2(t.maxPasid / 2 ** PASID_PDE_SHIFT);
  return pds < 7 ? 0 : pds - 7;
}

/** Address of the PASID entry of `pasid`, allocating its leaf table when `alloc`. @linux intel_pasid_get_entry */
export function pasidEntryAddr(iommu: IntelIommu, info: DeviceDomainInfo, pasid: number, alloc: boolean): number {
  const t = info.pasidTable!;
  if (pasid >= t.maxPasid) throw kerr("EINVAL", `${info.dev.name}: PASID ${pasid} beyond the table`);
  const dirIdx = Math.floor(pasid / 2 ** PASID_PDE_SHIFT);
  let leaf = t.leaves.get(dirIdx);
  if (leaf === undefined) {
    if (!alloc) return -1;
    leaf = iommu.allocPages(0, "intel_pasid_table");
    t.leaves.set(dirIdx, leaf);
    const mem = iommu.machine.memory;
    const de = t.dirPa + dirIdx * 8;
    mem.write32(de + 4, Math.floor(leaf / TWO_32));
    mem.write32(de, ((leaf % TWO_32) | 1) >>> 0);
  }
  return leaf + (pasid % 2 ** PASID_PDE_SHIFT) * 64;
}

/** Write `words` at `pa`: every word but the first, then the first (which holds the present bit). @linux pasid_set_present / context_set_present after the other fields (with the wmb Linux relies on) */
export function writeEntryPresentLast(iommu: IntelIommu, pa: number, words: ArrayLike<number>): void {
  const mem = iommu.machine.memory;
  // Test-only mutant "vtd:half-written-entry": only the present word is stored.
  for (let i = 1; i < words.length && !iommu.machine.mutant("vtd:half-written-entry"); i++)
    mem.write32(pa + 4 * i, words[i]! >>> 0);
  mem.write32(pa, words[0]! >>> 0);
}

/** Clear an entry: the word with the present bit first, then the rest. @linux pasid_clear_entry / context_clear_entry */
export function clearEntryPresentFirst(iommu: IntelIommu, pa: number, nWords: number): void {
  const mem = iommu.machine.memory;
  mem.write32(pa, 0);
  for (let i = 1; i < nWords; i++) mem.write32(pa + 4 * i, 0);
}

/** Device-TLB invalidation of one PASID (or the RID). @linux devtlb_invalidation_with_pasid */
function devtlbDescs(info: DeviceDomainInfo, pasid: number): QiDesc[] {
  if (!info.atsEnabled) return [];
  const sid = info.rid;
  return pasid === 0
    ? [qiDescDevIotlb(sid, sid, info.atsQdep, 0, 64 - 12)]
    : [qiDescDevIotlbPasidAll(sid, sid, info.atsQdep, pasid)];
}

/**
 * Tear down the PASID entry of `pasid` if present: clear it, then flush the PASID cache, the IOTLB (PASID-based for
 * first-stage and pass-through entries, domain-selective for second-stage ones) and the device TLB.
 * @linux intel_pasid_tear_down_entry
 */
export function pasidTearDownEntry(iommu: IntelIommu, info: DeviceDomainInfo, pasid: number): void {
  const pa = pasidEntryAddr(iommu, info, pasid, false);
  if (pa < 0) return;
  const mem = iommu.machine.memory;
  const w0 = mem.read32(pa);
  if ((w0 & PASID_PTE.PRESENT) === 0) return;
  const did = mem.read32(pa + 8) & 0xffff;
  const pgtt = (w0 >>> PASID_PTE.PGTT_SHIFT) & 7;
  clearEntryPresentFirst(iommu, pa, 16);
  const descs: QiDesc[] = [qiDescPasidCache(did, pasid, QI_GRAN.PC_PASID_SEL)];
  if (pgtt === PGTT.PT || pgtt === PGTT.FL_ONLY) descs.push(qiDescPiotlbAll(did, pasid));
  else descs.push(qiDescIotlb(did, 0, false, 0, QI_GRAN.IOTLB_DSI));
  descs.push(...devtlbDescs(info, pasid));
  iommu.submitSync(descs);
}

/**
 * After making an entry present: a caching-mode unit may have cached it as not present (flush), others need at
 * most a write-buffer flush.
 * @linux pasid_flush_caches
 */
function pasidFlushCaches(iommu: IntelIommu, did: number, pasid: number, pgtt: number): void {
  if (!iommu.cachingMode) {
    iommu.flushWriteBuffer();
    return;
  }
  const descs: QiDesc[] = [qiDescPasidCache(did, pasid, QI_GRAN.PC_PASID_SEL)];
  if (pgtt === PGTT.SL_ONLY || pgtt === PGTT.NESTED) descs.push(qiDescIotlb(did, 0, false, 0, QI_GRAN.IOTLB_DSI));
  else descs.push(qiDescPiotlbAll(did, pasid));
  iommu.submitSync(descs);
}

/** The words of a PASID entry. */
interface PasidSpec {
  pgtt: number;
  did: number;
  aw: number;
  ssptptr?: number;
  ssade?: boolean;
  fsptptr?: number;
  fspm?: number;
  sre?: boolean;
  wpe?: boolean;
  eafe?: boolean;
}

function pasidWords(iommu: IntelIommu, s: PasidSpec): Uint32Array {
  const w = new Uint32Array(16);
  const ss = s.ssptptr ?? 0;
  const fs = s.fsptptr ?? 0;
  w[0] =
    (PASID_PTE.PRESENT |
      ((s.aw & 7) << PASID_PTE.AW_SHIFT) |
      (s.pgtt << PASID_PTE.PGTT_SHIFT) |
      (s.ssade ? PASID_PTE.SSADE : 0) |
      ((ss % TWO_32) & 0xfffff000)) >>>
    0;
  w[1] = Math.floor(ss / TWO_32);
  w[2] = ((s.did & 0xffff) | (iommu.smpwc ? PASID_PTE.PWSNP_W2 : 0)) >>> 0;
  w[4] =
    ((s.sre ? PASID_PTE.SRE : 0) |
      ((s.fspm ?? 0) << PASID_PTE.FSPM_SHIFT) |
      (s.wpe ? PASID_PTE.WPE : 0) |
      (s.eafe ? PASID_PTE.EAFE : 0) |
      ((fs % TWO_32) & 0xfffff000)) >>>
    0;
  w[5] = Math.floor(fs / TWO_32);
  return w;
}

/** Install a PASID entry in the safe order (tear down the old one first). */
function pasidInstall(iommu: IntelIommu, info: DeviceDomainInfo, pasid: number, s: PasidSpec): void {
  pasidTearDownEntry(iommu, info, pasid);
  const pa = pasidEntryAddr(iommu, info, pasid, true);
  writeEntryPresentLast(iommu, pa, pasidWords(iommu, s));
  pasidFlushCaches(iommu, s.did, pasid, s.pgtt);
}

/** A first-stage PASID entry. @linux intel_pasid_setup_first_level (pasid_pte_config_first_level) */
export function pasidSetupFirstLevel(
  iommu: IntelIommu,
  info: DeviceDomainInfo,
  pasid: number,
  fsptptr: number,
  levels: number,
  did: number,
): void {
  if (!iommu.flts) throw kerr("EINVAL", `${iommu.name}: no first-stage translation`);
  if (levels === 5 && !iommu.fl5lp) throw kerr("EINVAL", `${iommu.name}: no 5-level first stage`);
  pasidInstall(iommu, info, pasid, {
    pgtt: PGTT.FL_ONLY,
    did,
    aw: iommu.ssLevels - 2,
    fsptptr,
    fspm: levels === 5 ? 1 : 0,
  });
}

/** A second-stage PASID entry. @linux intel_pasid_setup_second_level (pasid_pte_config_second_level) */
export function pasidSetupSecondLevel(
  iommu: IntelIommu,
  info: DeviceDomainInfo,
  pasid: number,
  ssptptr: number,
  levels: number,
  did: number,
  dirty: boolean,
): void {
  pasidInstall(iommu, info, pasid, { pgtt: PGTT.SL_ONLY, did, aw: levels - 2, ssptptr, ssade: dirty });
}

/** A pass-through PASID entry. @linux intel_pasid_setup_pass_through */
export function pasidSetupPassThrough(iommu: IntelIommu, info: DeviceDomainInfo, pasid: number): void {
  pasidInstall(iommu, info, pasid, { pgtt: PGTT.PT, did: FLPT_DEFAULT_DID, aw: iommu.ssLevels - 2 });
}

/** A nested PASID entry: the guest's first stage over the parent's second stage. @linux intel_pasid_setup_nested */
export function pasidSetupNested(
  iommu: IntelIommu,
  info: DeviceDomainInfo,
  pasid: number,
  s1: VtdS1Cfg,
  ssptptr: number,
  ssLevels: number,
  did: number,
  dirty: boolean,
): void {
  if (s1.addrWidth !== 48 && s1.addrWidth !== 57) throw kerr("EINVAL", `invalid stage-1 address width ${s1.addrWidth}`);
  if (s1.flags & IOMMU_VTD_S1.SRE && !iommu.srs) throw kerr("EINVAL", `${iommu.name}: no supervisor requests`);
  if (s1.flags & IOMMU_VTD_S1.EAFE) throw kerr("EINVAL", `${iommu.name}: no extended access flag`);
  if (s1.addrWidth === 57 && !iommu.fl5lp) throw kerr("EINVAL", `${iommu.name}: no 5-level first stage`);
  pasidInstall(iommu, info, pasid, {
    pgtt: PGTT.NESTED,
    did,
    aw: ssLevels - 2,
    ssptptr,
    ssade: dirty,
    fsptptr: s1.pgtblAddr,
    fspm: s1.addrWidth === 57 ? 1 : 0,
    sre: (s1.flags & IOMMU_VTD_S1.SRE) !== 0,
    wpe: (s1.flags & IOMMU_VTD_S1.WPE) !== 0,
  });
}

/**
 * Turn SSADE on or off in a present second-stage or nested entry (one store to the word holding it), then flush.
 * @linux intel_pasid_setup_dirty_tracking
 */
export function pasidSetupDirtyTracking(
  iommu: IntelIommu,
  info: DeviceDomainInfo,
  pasid: number,
  enabled: boolean,
): void {
  const pa = pasidEntryAddr(iommu, info, pasid, false);
  if (pa < 0) return;
  const mem = iommu.machine.memory;
  const w0 = mem.read32(pa);
  if ((w0 & PASID_PTE.PRESENT) === 0) return;
  const pgtt = (w0 >>> PASID_PTE.PGTT_SHIFT) & 7;
  if (pgtt !== PGTT.SL_ONLY && pgtt !== PGTT.NESTED) throw kerr("EINVAL", "dirty tracking needs a second stage");
  const did = mem.read32(pa + 8) & 0xffff;
  mem.write32(pa, (enabled ? w0 | PASID_PTE.SSADE : w0 & ~PASID_PTE.SSADE) >>> 0);
  iommu.submitSync([
    qiDescPasidCache(did, pasid, QI_GRAN.PC_PASID_SEL),
    qiDescIotlb(did, 0, false, 0, QI_GRAN.IOTLB_DSI),
    ...devtlbDescs(info, pasid),
  ]);
}

/**
 * The scalable-mode context entries of a device (its RID and DMA aliases): the PASID directory, PDTS, RID_PASID 0,
 * and DTE/PASIDE/PRE from the device's capabilities.
 * @linux intel_pasid_setup_sm_context / context_entry_set_pasid_table
 */
export function setupSmContext(iommu: IntelIommu, info: DeviceDomainInfo): void {
  const t = info.pasidTable!;
  const w = new Uint32Array(8);
  w[0] =
    (SM_CONTEXT.PRESENT |
      (info.atsSupported ? SM_CONTEXT.DTE : 0) |
      (info.pasidBits > 0 ? SM_CONTEXT.PASIDE : 0) |
      (info.priSupported ? SM_CONTEXT.PRE : 0) |
      (pdts(t) << SM_CONTEXT.PDTS_SHIFT) |
      ((t.dirPa % TWO_32) & 0xfffff000)) >>>
    0;
  w[1] = Math.floor(t.dirPa / TWO_32);
  for (const rid of info.rids) {
    const pa = iommu.contextAddr(rid >>> 8, rid & 0xff, true);
    if ((iommu.machine.memory.read32(pa) & 1) !== 0) teardownSmContextOne(iommu, info, rid);
    writeEntryPresentLast(iommu, pa, w);
    if (iommu.cachingMode) iommu.flushContext(0, rid, 0, QI_GRAN.CC_DEVICE);
    else iommu.flushWriteBuffer();
  }
}

function teardownSmContextOne(iommu: IntelIommu, info: DeviceDomainInfo, rid: number): void {
  const pa = iommu.contextAddr(rid >>> 8, rid & 0xff, false);
  if (pa < 0 || (iommu.machine.memory.read32(pa) & 1) === 0) return;
  clearEntryPresentFirst(iommu, pa, 8);
  iommu.flushContext(0, rid, 0, QI_GRAN.CC_DEVICE);
  iommu.submitSync([qiDescPasidCache(0, 0, QI_GRAN.PC_GLOBAL), ...devtlbDescs(info, 0)]);
}

/** Clear the device's scalable-mode context entries and flush. @linux intel_pasid_teardown_sm_context */
export function teardownSmContext(iommu: IntelIommu, info: DeviceDomainInfo): void {
  for (const rid of info.rids) teardownSmContextOne(iommu, info, rid);
}
