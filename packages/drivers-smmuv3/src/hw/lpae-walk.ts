/**
 * VMSAv8-64 (LPAE) translation-table walks as the SMMU performs them: pure functions from raw memory to a
 * translation or a fault code, decoding descriptors with the field definitions of structures.ts only. Synchronous
 * and allocation-free: results go into caller-owned {@link WalkResult}s; per-stage constants (granule, start level,
 * index widths, address limits) are computed once into a {@link StageParams} when a configuration is decoded.
 *
 * Fault codes are the SMMUv3 event IDs of the faults (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_WALK_EABT);
 * permission checks (F_PERMISSION) are the caller's, from the leaf's attributes ({@link s1Perm}, {@link s2Perm}).
 * @linux drivers/iommu/io-pgtable-arm.c (the format the hardware walks; __arm_lpae_iova_to_phys done by hardware)
 */
import type { PhysicalMemory } from "@iommu-sim/core";
import { alignDownLg2, maskOf } from "@iommu-sim/core";
import type { S2FetchCache } from "./caches.js";
import { EVT_ID, PTE } from "./structures.js";

// Private copies of constants used in the walk loops: V8 folds a module's own consts into the code, while an
// imported binding or an object property is a load (and a hole check) at every use.
const TWO_32 = 4294967296;
const F_TRANSLATION = EVT_ID.F_TRANSLATION;
const F_ADDR_SIZE = EVT_ID.F_ADDR_SIZE;
const F_ACCESS = EVT_ID.F_ACCESS;
const F_WALK_EABT = EVT_ID.F_WALK_EABT;
const F_PERMISSION = EVT_ID.F_PERMISSION;

const VALID = maskOf(PTE.VALID);
const TYPE = maskOf(PTE.TYPE);
const AF = maskOf(PTE.AF);
const AP1 = maskOf(PTE.AP1);
const AP2 = maskOf(PTE.AP2);
const OA_HI = maskOf(PTE.OA_HI);
const OA_52 = maskOf(PTE.OA_52);
const DBM_HI = maskOf(PTE.DBM);
const CONT_HI = maskOf(PTE.CONT);
const PXN_HI = maskOf(PTE.PXN);
const XN_HI = maskOf(PTE.XN);

/** Powers of two 0..63 (exact doubles). */
const POW2 = new Float64Array(64);
for (let i = 0; i < 64; i++) POW2[i] = 2 ** i;

/**
 * Permission bits of a translation (and of a request's needs): read/write/execute for privileged and unprivileged
 * accesses, and "writable after a hardware dirty-state update" for writable-clean leaves.
 * @linux the AP/S2AP/XN attributes io-pgtable-arm.c encodes (ARM_LPAE_PTE_AP_RDONLY, _AP_UNPRIV, _XN, S2AP)
 */
export const PERM = {
  PR: 1 << 0,
  PW: 1 << 1,
  PX: 1 << 2,
  UR: 1 << 3,
  UW: 1 << 4,
  UX: 1 << 5,
  /** Writes become allowed once hardware marks the leaf dirty (HD and DBM set, write permission clear). */
  DIRTYABLE: 1 << 6,
} as const;
const ALL_W = PERM.PW | PERM.UW;

/**
 * Per-stage walk constants, computed once from a CD (stage 1) or an STE (stage 2).
 * @linux struct arm_lpae_io_pgtable (pgd, bits_per_level, start_level) and the TCR/VTCR fields the SMMU reads
 */
export class StageParams {
  /** Root table address (TTB0 / S2TTB). */
  ttb = 0;
  /** log2 of the granule: 12, 14 or 16. */
  granLg2 = 12;
  /** Index bits per level: granLg2 - 3. */
  bpl = 9;
  /** Level of the root table (0..3). */
  startLevel = 0;
  /** Index bits of the root table (more than bpl for concatenated stage-2 tables). */
  rootBits = 9;
  /** Input address size in bits (64 - T0SZ). */
  ias = 48;
  /** Output address size in bits (IPS / S2PS, capped at IDR5.OAS). */
  oas = 48;
  /** 2^ias and 2^oas. */
  inLimit = 2 ** 48;
  outLimit = 2 ** 48;
  /** 64K granule with a 52-bit output: PA[51:48] lives in descriptor bits 15:12. */
  pa52 = false;
  /** Hardware access-flag / dirty-state update enabled (CD.HA/HD, STE.S2HA/S2HD, and supported). */
  ha = false;
  hd = false;
  /** Access-flag faults disabled (CD.AFFD / STE.S2AFFD). */
  affd = false;
  /** A stage-2 table (S2AP/XN permission encoding). */
  stage2 = false;
  /** Whether blocks are allowed at levels 0..2 (bit n = level n). */
  blockLevels = 0;
}

/**
 * Fill `p` for a walk. `startLevel` < 0 derives it from the input size (stage 1); stage 2 passes the level its
 * SL0 encodes. Returns false when the combination is not a legal configuration (the caller reports C_BAD_CD or
 * C_BAD_STE).
 * @linux arm_64_lpae_alloc_pgtable_s1 / _s2 (the geometry they program, checked the way the SMMU checks it)
 */
export function setupStage(
  p: StageParams,
  ttb: number,
  granLg2: number,
  tsz: number,
  startLevel: number,
  oas: number,
  stage2: boolean,
): boolean {
  if (granLg2 !== 12 && granLg2 !== 14 && granLg2 !== 16) return false;
  const bpl = granLg2 - 3;
  const ias = 64 - tsz;
  // Input sizes from 25 bits (T0SZ 39) up to 48 bits (52 with 64K: VAX/LVA not modelled).
  if (ias < 25 || ias > 48 + (granLg2 === 16 && oas === 52 ? 4 : 0)) return false;
  let start = startLevel;
  if (start < 0) start = 4 - Math.ceil((ias - granLg2) / bpl);
  if (start < 0 || start > 3) return false;
  const rootShift = granLg2 + bpl * (3 - start);
  const rootBits = ias - rootShift;
  // Stage 2 may concatenate up to 16 root tables (4 extra index bits); stage 1 never.
  if (rootBits < 1 || rootBits > bpl + (stage2 ? 4 : 0)) return false;
  if (granLg2 === 16 && start === 0) return false;
  // The root table is aligned to its size; address bits below that are RES0 and ignored.
  p.ttb = ttb - (ttb % POW2[Math.max(3, Math.min(rootBits + 3, 52))]!);
  p.granLg2 = granLg2;
  p.bpl = bpl;
  p.startLevel = start;
  p.rootBits = rootBits;
  p.ias = ias;
  p.oas = oas;
  p.inLimit = POW2[ias]!;
  p.outLimit = POW2[oas]!;
  p.pa52 = granLg2 === 16 && oas === 52;
  p.stage2 = stage2;
  // 4K: blocks at levels 1 and 2; 16K: level 2; 64K: level 2, and level 1 with a 52-bit output.
  p.blockLevels = granLg2 === 12 ? 0b110 : granLg2 === 14 ? 0b100 : p.pa52 ? 0b110 : 0b100;
  return true;
}

/**
 * Where a walk puts its result (one per walker, reused).
 * @linux the result of a hardware table walk (QEMU SMMUTLBEntry), plus the fault record's level/address
 */
export class WalkResult {
  /** Output address of the input address. */
  pa = 0;
  /** Low and high words of the leaf descriptor. */
  leafLo = 0;
  leafHi = 0;
  /** log2 of the leaf's size (page or block). */
  leafLg2 = 12;
  /** Address of the last descriptor read (the leaf, or the one that faulted). */
  ptePa = 0;
  /** Level of that descriptor. */
  level = 0;
  /** Address and level of the last table the walk descended into (for the walk cache); -1 when none. */
  tablePa = -1;
  tableLevel = -1;
  /** The leaf's AF is 0 and hardware update (HA) will set it. */
  needAf = false;
  // Nested walks: where a stage-2 fault of a stage-1 table fetch happened.
  /** The fault happened at stage 2. */
  s2 = false;
  /** EVT_CLASS of the access that faulted at stage 2. */
  cls = 0;
  /** The IPA stage 2 faulted on. */
  ipa = 0;
  /**
   * Nested walks: of the last stage-1 descriptor fetch that passed stage 2 (-1: none), the level and PA of the table
   * it read and log2 of the stage-2 leaf that translated that table's IPA.
   */
  fetchLevel = -1;
  fetchTable = 0;
  fetchS2Lg2 = 0;
}

/** `n` bits of the address (lo, hi words) starting at bit `s`. */
function bitsAt(lo: number, hi: number, s: number, n: number): number {
  const mask = n >= 31 ? 0x7fffffff : (1 << n) - 1;
  if (s >= 32) return (hi >>> (s - 32)) & mask;
  if (s + n > 32) return ((lo >>> s) | (hi << (32 - s))) & mask;
  return (lo >>> s) & mask;
}

/** Output address of a descriptor (table pointer or leaf), before alignment to the leaf size. */
function descOa(p: StageParams, lo: number, hi: number): number {
  const gmask = (1 << p.granLg2) - 1;
  let oa = (lo & ~gmask) >>> 0;
  const ohi = hi & OA_HI;
  if (ohi !== 0) oa += ohi * TWO_32;
  if (p.pa52) oa += ((lo & OA_52) >>> 12) * POW2[48]!;
  return oa;
}

/**
 * Walk one stage: translate `addr` through the tables of `p`, starting at the root, or at `table` (level `level`)
 * when the walk cache supplied it. Returns 0 and fills `r`, or a fault code (an EVT_ID) with `r.ptePa`/`r.level`
 * naming the descriptor. Reads memory only: a needed access-flag update is reported in `r.needAf`.
 * @linux what the SMMU's table walker does for __arm_lpae_iova_to_phys
 */
export function walkStage(
  mem: PhysicalMemory,
  p: StageParams,
  addr: number,
  r: WalkResult,
  table = -1,
  level = -1,
): number {
  r.needAf = false;
  r.s2 = p.stage2;
  r.tablePa = -1;
  r.tableLevel = -1;
  if (!(addr < p.inLimit) || addr < 0) {
    r.level = p.startLevel;
    r.ptePa = p.ttb;
    return F_TRANSLATION;
  }
  if (table < 0) {
    table = p.ttb;
    level = p.startLevel;
    if (!(table < p.outLimit)) {
      r.level = level;
      r.ptePa = table;
      return F_ADDR_SIZE;
    }
  }
  const lo = addr >>> 0;
  const hi = (addr - lo) / TWO_32;
  const g = p.granLg2;
  const bpl = p.bpl;
  const startLevel = p.startLevel;
  const outLimit = p.outLimit;
  const memSize = mem.size;
  for (;;) {
    const s = g + bpl * (3 - level);
    const n = level === startLevel ? p.rootBits : bpl;
    // Below 4 GiB (hi = 0, the common case) the index is a shift and a mask of the low word.
    const idx = hi === 0 ? (s < 32 ? (lo >>> s) & ((1 << n) - 1) : 0) : bitsAt(lo, hi, s, n);
    const pte = table + idx * 8;
    r.ptePa = pte;
    r.level = level;
    if (pte + 8 > memSize) return F_WALK_EABT;
    // Descriptors are 8-byte aligned: both words sit in one frame, found once in the memory's word array.
    const ix = mem.wordIndexR(pte);
    let elo: number;
    let ehi: number;
    if (ix >= 0) {
      const words = mem.words32;
      elo = words[ix]!;
      ehi = words[ix + 1]!;
    } else {
      elo = mem.read32(pte);
      ehi = mem.read32(pte + 4);
    }
    if ((elo & VALID) === 0) return F_TRANSLATION;
    let oa = descOa(p, elo, ehi);
    if ((elo & TYPE) !== 0 && level < 3) {
      if (!(oa < outLimit)) return F_ADDR_SIZE;
      table = oa;
      level++;
      r.tablePa = table;
      r.tableLevel = level;
      continue;
    }
    if (level === 3 ? (elo & TYPE) === 0 : (p.blockLevels & (1 << level)) === 0) return F_TRANSLATION;
    // Bits of a block's output address below the block size are RES0: ignored.
    if (s > g) oa = alignDownLg2(oa, s);
    if (!(oa < p.outLimit)) return F_ADDR_SIZE;
    if ((elo & AF) === 0) {
      if (p.ha) r.needAf = true;
      else if (!p.affd) return F_ACCESS;
    }
    r.pa = oa + (s < 31 ? (lo & ((1 << s) - 1)) >>> 0 : addr - alignDownLg2(addr, s));
    r.leafLo = elo;
    r.leafHi = ehi;
    r.leafLg2 = s;
    return 0;
  }
}

/**
 * Walk stage 1 of a nested configuration: every stage-1 table address (TTB0 and each table pointer) is an IPA,
 * translated by the stage-2 tables of `s2p` before the descriptor is read; stage 2 must grant read access. Returns
 * 0 with `r1.pa` the IPA of `addr`, or a fault code; on a stage-2 fault `r1.s2` is set with `r1.cls` = TT and
 * `r1.ipa` the IPA that faulted. `s2Update`: apply stage-2 access-flag updates (off for strict-mode re-walks).
 * With `fc`, stage-2 translations of table fetches come from (and go to) that cache under `vmid`; a hit is used
 * even when the tables now say otherwise (that is what the cache is), and in `fc.strict` mode such a stale hit is
 * left in `fc.staleEntry` for the caller to report. `table`/`level`: start at that stage-1 table (an IPA, from the
 * walk cache) instead of the root; `r1.tablePa`/`r1.tableLevel` name the last table descended into (an IPA).
 * `tablePhys` (with `table`): that table's PA when the walk cache holds it too (a combined stage-1/stage-2 entry,
 * from a stage-2 leaf of `tableS2Lg2`): its descriptor is fetched without the table-fetch cache. `r1.fetchLevel`,
 * `r1.fetchTable` and `r1.fetchS2Lg2` say where the last descriptor came from.
 * @linux the nested (stage 1 + stage 2) walk of an SMMU for an IOMMU_DOMAIN_NESTED attached to a nest parent
 */
export function walkNestedS1(
  mem: PhysicalMemory,
  s1p: StageParams,
  s2p: StageParams,
  addr: number,
  r1: WalkResult,
  r2: WalkResult,
  s2Update: boolean,
  fc: S2FetchCache | null = null,
  vmid = 0,
  table = -1,
  level = -1,
  tablePhys = -1,
  tableS2Lg2 = 0,
): number {
  r1.needAf = false;
  r1.s2 = false;
  r1.tablePa = -1;
  r1.tableLevel = -1;
  r1.fetchLevel = -1;
  if (!(addr < s1p.inLimit) || addr < 0) {
    r1.level = s1p.startLevel;
    return F_TRANSLATION;
  }
  if (table < 0) {
    table = s1p.ttb;
    level = s1p.startLevel;
    if (!(table < s1p.outLimit)) return F_ADDR_SIZE;
  }
  const lo = addr >>> 0;
  const hi = (addr - lo) / TWO_32;
  const g = s1p.granLg2;
  const bpl = s1p.bpl;
  const g2 = s2p.granLg2;
  for (;;) {
    const s = g + bpl * (3 - level);
    const n = level === s1p.startLevel ? s1p.rootBits : bpl;
    const pteIpa = table + (hi === 0 ? (s < 32 ? (lo >>> s) & ((1 << n) - 1) : 0) : bitsAt(lo, hi, s, n)) * 8;
    r1.level = level;
    r1.ptePa = pteIpa;
    let pte: number;
    let s2Lg2: number;
    if (tablePhys >= 0) {
      // The walk cache's combined entry gave the starting table's PA (its caller checks it in strict mode).
      pte = tablePhys + (pteIpa - table);
      s2Lg2 = tableS2Lg2;
      tablePhys = -1;
      if (pte + 8 > mem.size) {
        r1.s2 = true;
        r1.cls = 1;
        r1.ipa = pteIpa;
        return F_WALK_EABT;
      }
    } else {
      // The stage-2 translation of the fetch: from the cache when it holds the IPA's granule, else a stage-2 walk.
      const gpn = fc === null ? 0 : pteIpa < TWO_32 ? pteIpa >>> g2 : Math.floor(pteIpa / POW2[g2]!);
      const e = fc === null ? -1 : fc.lookup(vmid, gpn, g2);
      if (e >= 0) {
        pte = fc!.pa[e]! + (pteIpa - gpn * POW2[g2]!);
        s2Lg2 = fc!.leafLg2[e]!;
        if (fc!.strict && fc!.reported[e] === 0) checkFetch(mem, s2p, pteIpa, pte, fc!, e);
        if (pte + 8 > mem.size) {
          r1.s2 = true;
          r1.cls = 1;
          r1.ipa = pteIpa;
          return F_WALK_EABT;
        }
      } else {
        const f2 = s2Fetch(mem, s2p, pteIpa, r2, s2Update);
        if (f2 !== 0) {
          r1.s2 = true;
          r1.cls = 1; // EVT_CLASS.TT
          r1.ipa = pteIpa;
          return f2;
        }
        pte = r2.pa;
        s2Lg2 = r2.leafLg2;
        if (fc !== null) fc.insert(vmid, gpn, g2, r2.leafLg2, pte - (pteIpa - gpn * POW2[g2]!));
      }
    }
    r1.fetchLevel = level;
    r1.fetchTable = pte - (pteIpa - table);
    r1.fetchS2Lg2 = s2Lg2;
    const ix = mem.wordIndexR(pte);
    let elo: number;
    let ehi: number;
    if (ix >= 0) {
      const words = mem.words32;
      elo = words[ix]!;
      ehi = words[ix + 1]!;
    } else {
      elo = mem.read32(pte);
      ehi = mem.read32(pte + 4);
    }
    if ((elo & VALID) === 0) return F_TRANSLATION;
    let oa = descOa(s1p, elo, ehi);
    if ((elo & TYPE) !== 0 && level < 3) {
      if (!(oa < s1p.outLimit)) return F_ADDR_SIZE;
      table = oa;
      level++;
      r1.tablePa = table;
      r1.tableLevel = level;
      continue;
    }
    if (level === 3 ? (elo & TYPE) === 0 : (s1p.blockLevels & (1 << level)) === 0) return F_TRANSLATION;
    if (s > g) oa = alignDownLg2(oa, s);
    if (!(oa < s1p.outLimit)) return F_ADDR_SIZE;
    if ((elo & AF) === 0) {
      if (s1p.ha) r1.needAf = true;
      else if (!s1p.affd) return F_ACCESS;
    }
    r1.pa = oa + (s < 31 ? (lo & ((1 << s) - 1)) >>> 0 : addr - alignDownLg2(addr, s));
    r1.leafLo = elo;
    r1.leafHi = ehi;
    r1.leafLg2 = s;
    // The descriptor's PA, for hardware updates of the stage-1 leaf.
    r1.ptePa = pte;
    return 0;
  }
}

const fetchScratch = new WalkResult();

/** Strict: a cached stage-2 translation of a table fetch must still be what the stage-2 tables give. */
function checkFetch(mem: PhysicalMemory, s2p: StageParams, ipa: number, pa: number, fc: S2FetchCache, e: number): void {
  const f = s2Fetch(mem, s2p, ipa, fetchScratch, false);
  if (f === 0 && fetchScratch.pa === pa) return;
  fc.reported[e] = 1;
  fc.staleEntry = e;
  fc.staleIpa = ipa;
  fc.stalePa = pa;
  fc.staleNow = f === 0 ? fetchScratch.pa : -f;
}

/**
 * Translate a configuration or table fetch address (an IPA) through stage 2 and check stage-2 read permission.
 * Returns 0 with `r.pa` the PA, or a fault code. Applies a stage-2 access-flag update when `update`.
 * @linux the stage-2 translation of a CD / stage-1 table fetch (S2PTW)
 */
export function s2Fetch(mem: PhysicalMemory, s2p: StageParams, ipa: number, r: WalkResult, update: boolean): number {
  const f = walkStage(mem, s2p, ipa, r);
  if (f !== 0) return f;
  if ((r.leafLo & AP1) === 0) return F_PERMISSION; // S2AP[0]: read
  if (r.pa + 8 > mem.size) return F_WALK_EABT;
  if (r.needAf && update) {
    r.leafLo = (r.leafLo | AF) >>> 0;
    mem.write32(r.ptePa, r.leafLo);
  }
  return 0;
}

/**
 * The permissions a stage-1 leaf grants (AP[2:1], PXN, UXN; DBM with HD makes a read-only leaf DIRTYABLE).
 * @linux ARM_LPAE_PTE_AP_UNPRIV / _AP_RDONLY / _PXN / _UXN / _DBM as arm_lpae_prot_to_pte sets them
 */
export function s1Perm(lo: number, hi: number, hd: boolean): number {
  const unpriv = (lo & AP1) !== 0;
  const ro = (lo & AP2) !== 0;
  let p = PERM.PR;
  if (!ro) p |= PERM.PW;
  if (unpriv) {
    p |= PERM.UR;
    if (!ro) p |= PERM.UW;
  }
  if ((hi & PXN_HI) === 0) p |= PERM.PX;
  if ((hi & XN_HI) === 0) p |= PERM.UX;
  if (ro && hd && (hi & DBM_HI) !== 0) p |= PERM.DIRTYABLE;
  return p;
}

/**
 * The permissions a stage-2 leaf grants (S2AP read/write for every privilege, XN[1]; DBM with S2HD makes a
 * non-writable leaf DIRTYABLE).
 * @linux ARM_LPAE_PTE_HAP_READ / _HAP_WRITE / _XN as arm_lpae_prot_to_pte sets them for stage 2
 */
export function s2Perm(lo: number, hi: number, hd: boolean): number {
  let p = 0;
  if ((lo & AP1) !== 0) p |= PERM.PR | PERM.UR;
  if ((lo & AP2) !== 0) p |= ALL_W;
  else if (hd && (hi & DBM_HI) !== 0) p |= PERM.DIRTYABLE;
  if ((hi & XN_HI) === 0) p |= PERM.PX | PERM.UX;
  return p;
}

/**
 * The leaf descriptor's low word after a hardware dirty-state update: stage 1 clears AP[2], stage 2 sets S2AP[1].
 * @linux the HTTU dirty update io-pgtable-arm.c's read_and_clear_dirty undoes (ARM_LPAE_PTE_AP_RDONLY / DBM)
 */
export function markDirty(lo: number, stage2: boolean): number {
  return (stage2 ? lo | AP2 : lo & ~AP2) >>> 0;
}

/**
 * Entries in a contiguous set for a leaf of `leafLg2` with a granule of `granLg2` (4K: 16; 16K: 128 at level 3,
 * 32 at level 2; 64K: 32).
 * @linux ARM_LPAE_PTE_CONT (the contiguous-hint group sizes of VMSAv8-64)
 */
export function contiguousCount(granLg2: number, leafLg2: number): number {
  if (granLg2 === 12) return 16;
  if (granLg2 === 14) return leafLg2 === 14 ? 128 : 32;
  return 32;
}

/** Whether the leaf descriptor's contiguous hint is set. @linux ARM_LPAE_PTE_CONT */
export function isContiguous(hi: number): boolean {
  return (hi & CONT_HI) !== 0;
}

/** The access flag mask of a descriptor's low word. @linux ARM_LPAE_PTE_AF */
export const PTE_AF_MASK = AF;
