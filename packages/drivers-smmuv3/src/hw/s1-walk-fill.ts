/**
 * The stage-1 miss path's common case, kept short: a stage-1-only stream with a 4 KiB granule, an input address
 * below 4 GiB, a walk (from the walk cache's last-level table, or from TTB0) through valid table descriptors to a
 * 4 KiB page descriptor whose access flag is set and whose permissions grant the access. Then the walk cache and
 * the TLB are filled and the DMA answered, exactly as the full miss path (`Smmuv3Hw.walk` → `walkStage`) would.
 *
 * Everything else (a fault of any kind, a block, an access-flag or dirty-state update, an input address above 4 GiB
 * or outside the input range, a table above 4 GiB, an output address beyond the output size, memory outside the
 * fast tier) returns {@link S1_FILL_NONE} having changed nothing: no cache touched, no counter moved. The caller
 * then takes the full path, which decides and reports.
 * The property test in test/hw/s1-walk-fill.test.ts holds the two to the same outputs, faults, caches and counters.
 *
 * Never used in strict mode (the caller's per-stream fast path is off there, so every hit and walk is re-checked).
 * @linux the SMMU's table walk for a stage-1 (NS-EL1 or EL2) translation of a 4 KiB page (what
 * arm_lpae_iova_to_phys in io-pgtable-arm.c computes for a 4 KiB ARM_64_LPAE_S1 table), with the TLB and
 * walk-cache fills
 */
import type { DmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import type { SmmuTlb, WalkCache } from "./caches.js";
import { TLB_F64, TLB_I32 } from "./caches.js";
import { type StageParams, s1Perm } from "./lpae-walk.js";
import { PTE } from "./structures.js";

/** Not handled: take the full path. */
export const S1_FILL_NONE = 0;
/** Handled, starting from a walk-cache entry (a walk-cache hit). */
export const S1_FILL_WC_HIT = 1;
/** Handled, walking from TTB0 (the last-level table was added to the walk cache). */
export const S1_FILL_WALKED = 2;

// Private copies of the constants (V8 folds a module's own consts into the code).
const TWO_32 = 4294967296;
/** Descriptor low word: VALID and TYPE (a table at levels 0–2, a page at level 3). */
const TABLE_OR_PAGE = 3;
/** Descriptor low word: the access flag. */
const AF = 1 << 10;
/** Output address bits 31:12 of a 4 KiB-granule descriptor (low word) and 47:32 (high word). */
const OA_LO = 0xfffff000;
const OA_HI = 0xffff;
const PAGE_LG2 = 12;
const PAGE_MASK = 0xfff;
/** The 4 KiB granule's walk cache region: the 2 MiB one last-level table maps. */
const REGION_LG2 = 21;
const F_PA = TLB_F64.PA;
const F_SPAN = TLB_F64.SPAN;
const F_LEAF_BASE = TLB_F64.LEAF_BASE;
const I_PAGE_LG2 = TLB_I32.PAGE_LG2;
const I_PERM = TLB_I32.PERM;
const I_LEVEL = TLB_I32.LEVEL;
const I_LEAF_LG2 = TLB_I32.LEAF_LG2;
const I_SID = TLB_I32.SID;
const I_SSID = TLB_I32.SSID;
// Without HD, what a stage-1 leaf grants depends on AP[2:1] (low word bits 7:6) and PXN, XN (high word bits 21, 22)
// only: s1Perm of each of the 16 combinations, tabled once (a load instead of the call on every walk).
const AP_SHIFT = PTE.AP1.bit;
const XN_SHIFT = PTE.PXN.bit - 32;
const LEAF_PERM = new Int32Array(16);
for (let x = 0; x < 16; x++) LEAF_PERM[x] = s1Perm((x & 3) << AP_SHIFT, (x >> 2) << XN_SHIFT, false);

/**
 * Whether a stage-1 configuration can take {@link s1WalkFill}: a 4 KiB granule, a root above level 3 (so the walk
 * cache is used), no 52-bit output. Decided once per configuration (the caller records it beside the stream).
 * @linux none: a property of the model's short path
 */
export function s1FillEligible(p: StageParams): boolean {
  return p.granLg2 === PAGE_LG2 && !p.stage2 && !p.pa52 && p.startLevel < 3;
}

/**
 * Translate `iova` (below 4 GiB) for a stage-1 configuration `p` eligible per {@link s1FillEligible}, TLB key
 * (`kind`, `tag`, `vpn` = iova >> 12), needing the PERM bits `need`: on the common case fill the walk cache (when
 * walked from the root) and the TLB, write `out`, and return {@link S1_FILL_WC_HIT} or {@link S1_FILL_WALKED};
 * else return {@link S1_FILL_NONE} having changed nothing.
 * @linux the SMMU's stage-1 table walk of a 4 KiB page and its TLB fill
 */
export function s1WalkFill(
  mem: PhysicalMemory,
  p: StageParams,
  wc: WalkCache,
  tlb: SmmuTlb,
  kind: number,
  tag: number,
  iova: number,
  vpn: number,
  need: number,
  sid: number,
  ssid: number,
  out: DmaTranslation,
): number {
  if (!(iova >= 0 && iova < p.inLimit && iova < TWO_32)) return S1_FILL_NONE;
  const outLimit = p.outLimit;
  const words = mem.words32;
  const region = iova >>> REGION_LG2;
  const ws = wc.setOf(kind, tag, region);
  const w = wc.find(ws, kind, tag, region);
  // The walk: from the walk cache's last-level table, or from TTB0 down through table descriptors (tables below 4 GiB
  // only: an output size is at least 32 bits, no address-size check). One descriptor read site for every level.
  let t: number;
  let level: number;
  let shift: number;
  let mask: number;
  if (w >= 0) {
    if (wc.level[w] !== 3) return S1_FILL_NONE;
    t = wc.table[w]!;
    level = 3;
    shift = PAGE_LG2;
    mask = 511;
  } else {
    const ttb = p.ttb;
    if (!(ttb < TWO_32)) return S1_FILL_NONE;
    t = ttb >>> 0;
    level = p.startLevel;
    shift = PAGE_LG2 + 9 * (3 - level);
    mask = (1 << p.rootBits) - 1;
  }
  let ix: number;
  for (;;) {
    ix = mem.wordIndexR(t + (shift < 32 ? (iova >>> shift) & mask : 0) * 8);
    if (ix < 0) return S1_FILL_NONE;
    if (level === 3) break;
    const tlo = words[ix]!;
    if ((tlo & TABLE_OR_PAGE) !== TABLE_OR_PAGE || (words[ix + 1]! & OA_HI) !== 0) return S1_FILL_NONE;
    t = (tlo & OA_LO) >>> 0;
    level++;
    shift -= 9;
    mask = 511;
  }
  // The last-level table `t`; its descriptor: a page with its access flag set.
  const table = t;
  const lo = words[ix]!;
  if ((lo & (TABLE_OR_PAGE | AF)) !== (TABLE_OR_PAGE | AF)) return S1_FILL_NONE;
  const hi = words[ix + 1]!;
  const oa = ((lo & OA_LO) >>> 0) + (hi & OA_HI) * TWO_32;
  if (!(oa < outLimit)) return S1_FILL_NONE;
  // Without HD a leaf is never DIRTYABLE: these are the permissions the full path would cache.
  const perm = LEAF_PERM[((lo >>> AP_SHIFT) & 3) | (((hi >>> XN_SHIFT) & 3) << 2)]!;
  if ((perm & need) !== need) return S1_FILL_NONE;
  // The access is granted: from here on the caches change, as the full path changes them.
  if (w >= 0) wc.hit(w);
  else wc.insertAbsent(ws, kind, tag, region, REGION_LG2, table, 3);
  const e = tlb.fillLowVpn(kind, tag, vpn);
  const off = iova & PAGE_MASK;
  const fb = e << 2;
  const tf = tlb.f;
  tf[fb + F_PA] = oa;
  tf[fb + F_SPAN] = 4096;
  tf[fb + F_LEAF_BASE] = iova - off;
  const ib = e << 3;
  const ti = tlb.i;
  ti[ib + I_PAGE_LG2] = PAGE_LG2;
  ti[ib + I_PERM] = perm;
  ti[ib + I_LEVEL] = 3;
  ti[ib + I_LEAF_LG2] = PAGE_LG2;
  ti[ib + I_SID] = sid;
  ti[ib + I_SSID] = ssid;
  out.pa = oa + off;
  out.length = 4096 - off;
  return w >= 0 ? S1_FILL_WC_HIT : S1_FILL_WALKED;
}
