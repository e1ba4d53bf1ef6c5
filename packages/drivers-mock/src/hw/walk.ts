/**
 * The mock IOMMU's page walk: pure functions from raw memory to a translation or a fault code, decoding entries
 * with the field definitions of `fields.ts` only. Synchronous and allocation-free: results go into a caller-owned
 * {@link WalkResult}; every per-format constant below is computed once, when this module loads.
 */
import type { PhysicalMemory } from "@iommu-sim/core";
import {
  FAULT_CODE,
  maskOf,
  PT_BITS_PER_LEVEL,
  PT_GRANULE_LG2,
  PT_MAX_LEAF_LEVEL,
  PT_MAX_LEVELS,
  PTE,
} from "../spec/fields.js";

const TWO_32 = 4294967296;
const V = maskOf(PTE.V);
const T = maskOf(PTE.T);
const R = maskOf(PTE.R);
const RES0_LO = maskOf(PTE.RES0);
const RES1_HI = maskOf(PTE.RES1);
const OA_LO = maskOf(PTE.OA_LO);
const OA_HI = maskOf(PTE.OA_HI);
/** Bit 11 of a table pointer: tables are 4 KiB aligned. */
const TABLE_ALIGN_LO = (1 << 12) - (1 << PT_GRANULE_LG2);
const IDX_MASK = (1 << PT_BITS_PER_LEVEL) - 1;
// Private copies of imported constants used in the walk loops: V8 folds a module's own consts into the code, while
// an imported binding or an object property is a load (and a hole check) at every use.
const GRANULE_LG2 = PT_GRANULE_LG2;
const BITS_PER_LEVEL = PT_BITS_PER_LEVEL;
const F_TRANSLATION = FAULT_CODE.TRANSLATION;
const F_BAD_ENTRY = FAULT_CODE.BAD_ENTRY;
const F_ADDR_SIZE = FAULT_CODE.ADDR_SIZE;
const GRANULE = 1 << PT_GRANULE_LG2;
const GRANULE_MASK = GRANULE - 1;
const MAX_LEAF_LEVEL = PT_MAX_LEAF_LEVEL;

/** Bytes of input a table tree of `levels` levels translates, by levels (index 0 unused). */
const LEVEL_SPAN = new Float64Array(PT_MAX_LEVELS + 1);
for (let l = 1; l <= PT_MAX_LEVELS; l++) LEVEL_SPAN[l] = 2 ** (PT_GRANULE_LG2 + PT_BITS_PER_LEVEL * l);

/**
 * Where a walk puts its result (one per walker, reused).
 * @linux the walk result of a hardware page-table walker (QEMU SMMUTLBEntry / IOMMUTLBEntry)
 */
export class WalkResult {
  /** PA of the input address. */
  pa = 0;
  /** Bytes from the start of the input address's 2 KiB page that stay contiguous (to the end of the leaf). */
  span = 0;
  /** Low word of the leaf entry (its permission bits). */
  leafLo = 0;
  /** High word of the leaf entry. */
  leafHi = 0;
  /** PA of the last entry read (the leaf, or the entry that faulted). */
  ptePa = 0;
  /** Level of that entry. */
  level = 0;
}

/**
 * Whether `levels` is a level count the walker accepts.
 * @linux the mock format's level range (1..5)
 */
export function validLevels(levels: number): boolean {
  return levels >= 1 && levels <= PT_MAX_LEVELS;
}

/** Index of `addr` (split as lo/hi words) in a table of `level`. */
function indexAt(lo: number, hi: number, level: number): number {
  const s = GRANULE_LG2 + BITS_PER_LEVEL * level;
  return s < 32 ? ((lo >>> s) | (hi << (32 - s))) & IDX_MASK : (hi >>> (s - 32)) & IDX_MASK;
}

/** Size mask of a level-1 leaf (1 MiB). */
const L1_SIZE_MASK = (1 << (GRANULE_LG2 + BITS_PER_LEVEL)) - 1;

/**
 * Walk one stage: translate `addr` through the table tree at `root` (`levels` levels). Returns 0 and fills `r`,
 * or a FAULT_CODE (with `r.ptePa`/`r.level` naming the entry that faulted). Permissions are not checked here.
 * Tables are 4 KiB aligned, so each level finds its table once in the memory's word array
 * ({@link PhysicalMemory.wordIndexR}; {@link PhysicalMemory.frame32R} for the pooled tier) and indexes it; no frame is
 * created by a walk. The model's miss path has its own loop for the common case (MockIommuHw's walkFill) and comes
 * here for everything else.
 * @linux the mock format's walk (what drivers/iommu/generic_pt's iova_to_phys computes, done by hardware)
 */
export function walkStage(mem: PhysicalMemory, root: number, levels: number, addr: number, r: WalkResult): number {
  if (!(addr < LEVEL_SPAN[levels]!)) return F_ADDR_SIZE;
  const lo = addr >>> 0;
  const hi = addr < TWO_32 ? 0 : (addr - lo) / TWO_32;
  let table = root;
  for (let level = levels - 1; ; level--) {
    const w = indexAt(lo, hi, level) << 1;
    let elo: number;
    let ehi: number;
    const ix = mem.wordIndexR(table);
    if (ix >= 0) {
      const words = mem.words32;
      elo = words[ix + w]!;
      ehi = words[ix + w + 1]!;
    } else {
      const frame = mem.frame32R(table);
      elo = frame[w]!;
      ehi = frame[w + 1]!;
    }
    if ((elo & V) === 0) return walkFault(r, table, w, level, F_TRANSLATION);
    if ((elo & RES0_LO) !== 0 || (ehi & RES1_HI) !== 0) return walkFault(r, table, w, level, F_BAD_ENTRY);
    const ohi = ehi & OA_HI;
    const oa = ohi === 0 ? (elo & OA_LO) >>> 0 : ((elo & OA_LO) >>> 0) + ohi * TWO_32;
    if ((elo & T) !== 0) {
      if (level === 0 || (elo & TABLE_ALIGN_LO) !== 0) return walkFault(r, table, w, level, F_BAD_ENTRY);
      table = oa;
      continue;
    }
    const sizeMask = level === 0 ? GRANULE_MASK : L1_SIZE_MASK;
    if (level > MAX_LEAF_LEVEL || (elo & OA_LO & sizeMask) !== 0) return walkFault(r, table, w, level, F_BAD_ENTRY);
    return walkLeaf(r, table, w, level, elo, ehi, oa, lo & sizeMask, sizeMask);
  }
}

/** Fill `r` with the leaf at word `w` of `table` (`off`: the input's offset in the leaf) and return 0. */
function walkLeaf(
  r: WalkResult,
  table: number,
  w: number,
  level: number,
  elo: number,
  ehi: number,
  oa: number,
  off: number,
  sizeMask: number,
): number {
  r.pa = oa + off;
  r.span = sizeMask + 1 - (off & ~GRANULE_MASK);
  r.leafLo = elo;
  r.leafHi = ehi;
  r.ptePa = table + w * 4;
  r.level = level;
  return 0;
}

/** Name the entry at word `w` of `table` a walk faulted at in `r`, and return `code`. */
function walkFault(r: WalkResult, table: number, w: number, level: number, code: number): number {
  r.ptePa = table + w * 4;
  r.level = level;
  return code;
}

/**
 * Walk a nested translation: the stage-1 tree at IPA `s1Root` (`s1Levels` levels) translates `addr` to an IPA; every
 * stage-1 entry is read at the PA the stage-2 tree (`s2Root`, `s2Levels`) gives for its IPA, and the output IPA is
 * translated by stage 2 too. On success `r1` holds the stage-1 leaf (its `pa` is the IPA), `r2` the stage-2 leaf
 * of the output (its `pa` is the final PA) and `r2.span` the combined contiguous span. A stage-2 fault returns
 * S2_TRANSLATION (or the stage-2 BAD_ENTRY/ADDR_SIZE code) with `r2` naming the entry.
 * @linux drivers/iommu/iommufd/selftest.c mock_domain_nested (the nested translation a real IOMMU performs)
 */
export function walkNested(
  mem: PhysicalMemory,
  s1Root: number,
  s1Levels: number,
  s2Root: number,
  s2Levels: number,
  addr: number,
  r1: WalkResult,
  r2: WalkResult,
): number {
  if (!(addr < LEVEL_SPAN[s1Levels]!)) return FAULT_CODE.ADDR_SIZE;
  const lo = addr >>> 0;
  const hi = (addr - lo) / TWO_32;
  let table = s1Root;
  for (let level = s1Levels - 1; level >= 0; level--) {
    const pteIpa = table + indexAt(lo, hi, level) * 8;
    const f2 = walkStage(mem, s2Root, s2Levels, pteIpa, r2);
    if (f2 !== 0) return f2 === FAULT_CODE.TRANSLATION ? FAULT_CODE.S2_TRANSLATION : f2;
    if ((r2.leafLo & R) === 0) return FAULT_CODE.S2_TRANSLATION;
    const pte = r2.pa;
    const elo = mem.read32(pte);
    const ehi = mem.read32(pte + 4);
    r1.ptePa = pteIpa;
    r1.level = level;
    if ((elo & V) === 0) return FAULT_CODE.TRANSLATION;
    if ((elo & RES0_LO) !== 0 || (ehi & RES1_HI) !== 0) return FAULT_CODE.BAD_ENTRY;
    const oa = ((elo & OA_LO) >>> 0) + (ehi & OA_HI) * TWO_32;
    if ((elo & T) !== 0) {
      if (level === 0 || (elo & TABLE_ALIGN_LO) !== 0) return FAULT_CODE.BAD_ENTRY;
      table = oa;
      continue;
    }
    if (level > MAX_LEAF_LEVEL) return FAULT_CODE.BAD_ENTRY;
    const sizeMask = level === 0 ? GRANULE_MASK : (1 << (PT_GRANULE_LG2 + PT_BITS_PER_LEVEL)) - 1;
    if ((elo & OA_LO & sizeMask) !== 0) return FAULT_CODE.BAD_ENTRY;
    const off = lo & sizeMask;
    r1.pa = oa + off;
    r1.span = sizeMask + 1 - (off & ~GRANULE_MASK);
    r1.leafLo = elo;
    r1.leafHi = ehi;
    const fo = walkStage(mem, s2Root, s2Levels, r1.pa, r2);
    if (fo !== 0) return fo === FAULT_CODE.TRANSLATION ? FAULT_CODE.S2_TRANSLATION : fo;
    if (r1.span < r2.span) r2.span = r1.span;
    return 0;
  }
  return FAULT_CODE.BAD_ENTRY;
}
