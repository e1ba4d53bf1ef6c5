/**
 * The two VT-d page-table walks as pure functions over physical memory, returning a fault reason code (0 = a
 * leaf was found) and filling a reusable {@link VtdWalkResult}:
 *
 * - second stage (VT-d format): 3-5 levels, no present bit (R or W set means present), PS leaves at levels 2-3;
 * - first stage (x86-64 format): 4 or 5 levels, P/RW/US/XD accumulated across levels, PS leaves at levels 2-3,
 *   accessed bits set on every entry used and the dirty bit on the leaf of a write; and nested, where every
 *   first-stage table address (and the final output) is a guest-physical address translated by the second stage.
 *
 * Levels are numbered as the specification does: 1 is the last-level table (4 KiB pages). No allocation, no bigint:
 * entries are read as two 32-bit halves.
 * @linux the hardware walk the tables of generic_pt/fmt/vtdss.h and fmt/x86_64.h describe (QEMU vtd_iova_to_slpte /
 * vtd_iova_to_flpte)
 */
import { alignDownLg2, type PhysicalMemory } from "@iommu-sim/core";
import { FR, FS_PTE, SS_PTE } from "./structures.js";

const TWO_32 = 4294967296;
/** 2^i for i < 64, so walks use a load instead of Math.pow. @linux none: a table of powers of two for the walks */
export const POW2 = new Float64Array(64).map((_, i) => 2 ** i);

/** Permission bits of a walk result. @linux none: the access rights a walk accumulates (R, W, X, U/S) */
export const VTD_PERM = { R: 1, W: 2, X: 4, U: 8 } as const;

/** What a walk found. One object is reused per caller. @linux none: the result of the hardware walk (QEMU VTDIOTLBEntry-like) */
export class VtdWalkResult {
  /** Output address of the input address. */
  pa = 0;
  /** log2 of the leaf's size. */
  leafLg2 = 12;
  /** Level of the leaf (1-3). */
  level = 1;
  /** Address and halves of the leaf entry. */
  ptePa = 0;
  leafLo = 0;
  leafHi = 0;
  /** {@link VTD_PERM} bits the walk grants. */
  perm = 0;
  /** The last-level (level 1) table the walk read, or -1. */
  tablePa = -1;
  /** Nested: whether the fault came from the second stage, and the guest-physical address it faulted on. */
  s2 = false;
  gpa = 0;
}

/** Bytes of physical memory, for range checks. */
function inMem(mem: PhysicalMemory, pa: number): boolean {
  return pa >= 0 && pa + 8 <= mem.size;
}

/**
 * Walk second-stage tables rooted at `root` (`levels` levels) for `addr`. `sm` picks the scalable-mode fault
 * codes. `sllps`: CAP.SLLPS (bit 0 = 2 MiB leaves, bit 1 = 1 GiB). `start`/`startLevel`: resume from a cached
 * table (paging-structure cache) instead of the root.
 * @linux the second-stage walk (QEMU vtd_iova_to_slpte)
 */
export function ssWalk(
  mem: PhysicalMemory,
  root: number,
  levels: number,
  addr: number,
  sllps: number,
  sm: boolean,
  r: VtdWalkResult,
  start = -1,
  startLevel = 0,
): number {
  if (addr >= POW2[12 + 9 * levels]!) return sm ? FR.SM_SS_BEYOND : FR.ADDR_BEYOND_MGAW;
  let table = start >= 0 ? start : root;
  let level = start >= 0 ? startLevel : levels;
  let perm = VTD_PERM.R | VTD_PERM.W;
  r.tablePa = -1;
  for (;;) {
    const shift = 12 + 9 * (level - 1);
    const idx = addr < TWO_32 && shift < 32 ? (addr >>> shift) & 511 : Math.floor(addr / POW2[shift]!) % 512;
    const pte = table + idx * 8;
    if (!inMem(mem, pte)) return sm ? FR.SM_SS_READ : FR.PAGING_ENTRY_ERR;
    if (level === 1) r.tablePa = table;
    // Entries are 8-byte aligned: both halves sit in one frame, found once in the memory's word array.
    const ix = mem.wordIndexR(pte);
    const words = mem.words32;
    const lo = ix >= 0 ? words[ix]! : mem.read32(pte);
    const hi = ix >= 0 ? words[ix + 1]! : mem.read32(pte + 4);
    if ((lo & (SS_PTE.R | SS_PTE.W)) === 0) {
      r.ptePa = pte;
      r.level = level;
      return sm ? FR.SM_SS_NOT_PRESENT : -1;
    }
    perm &= lo & (SS_PTE.R | SS_PTE.W);
    const oa = ((lo & 0xfffff000) >>> 0) + (hi & 0xfffff) * TWO_32;
    const ps = (lo & SS_PTE.PS) !== 0;
    if (level === 1 || ps) {
      if (ps && (level > 3 || (sllps & (1 << (level - 2))) === 0)) return sm ? FR.SM_SS_RSVD : FR.PAGING_RSVD;
      const lg2 = shift;
      const size = POW2[lg2]!;
      if (level > 1 && alignDownLg2(oa, lg2) !== oa) return sm ? FR.SM_SS_RSVD : FR.PAGING_RSVD;
      r.pa = oa + (addr < TWO_32 && lg2 < 31 ? (addr & (size - 1)) >>> 0 : addr - alignDownLg2(addr, lg2));
      r.leafLg2 = lg2;
      r.level = level;
      r.ptePa = pte;
      r.leafLo = lo;
      r.leafHi = hi;
      r.perm = perm | VTD_PERM.X | VTD_PERM.U;
      return 0;
    }
    table = oa;
    level--;
  }
}

/**
 * Second-stage parameters of a nested walk (where first-stage table addresses are guest-physical).
 * @linux the second-stage half of a PGTT=nested PASID entry
 */
export interface NestedS2 {
  root: number;
  levels: number;
  sllps: number;
}

/**
 * Walk first-stage (x86-64) tables rooted at `root` (`levels` = 4 or 5) for `addr`. With `s2`, the root, every
 * table pointer and the leaf's output are guest-physical and go through the second stage (`r2` is its scratch
 * result; a second-stage fault sets `r.s2` and `r.gpa`). `update`: set accessed bits on the entries used (off for
 * strict-mode re-walks). `fl1gp`: 1 GiB leaves allowed. Permission checks are the caller's (on `r.perm`).
 * @linux the first-stage walk (QEMU vtd_iova_to_flpte)
 */
export function fsWalk(
  mem: PhysicalMemory,
  root: number,
  levels: number,
  addr: number,
  fl1gp: boolean,
  update: boolean,
  r: VtdWalkResult,
  s2: NestedS2 | null,
  r2: VtdWalkResult,
  start = -1,
  startLevel = 0,
): number {
  r.s2 = false;
  // Only the lower canonical half is representable here (addresses are below 2^53).
  if (addr >= POW2[11 + 9 * levels]!) return FR.SM_NON_CANONICAL;
  let table = start >= 0 ? start : root;
  let level = start >= 0 ? startLevel : levels;
  let perm = VTD_PERM.R | VTD_PERM.W | VTD_PERM.U | VTD_PERM.X;
  r.tablePa = -1;
  if (s2 !== null && start < 0) {
    const f = ssWalk(mem, s2.root, s2.levels, table, s2.sllps, true, r2);
    if (f !== 0) return s2Fault(r, table, f);
    table = r2.pa;
  }
  for (;;) {
    const shift = 12 + 9 * (level - 1);
    const idx = addr < TWO_32 && shift < 32 ? (addr >>> shift) & 511 : Math.floor(addr / POW2[shift]!) % 512;
    const pte = table + idx * 8;
    if (!inMem(mem, pte)) return FR.SM_FS_READ;
    if (level === 1) r.tablePa = table;
    const ix = mem.wordIndexR(pte);
    const words = mem.words32;
    let lo = ix >= 0 ? words[ix]! : mem.read32(pte);
    const hi = ix >= 0 ? words[ix + 1]! : mem.read32(pte + 4);
    if ((lo & FS_PTE.P) === 0) {
      r.ptePa = pte;
      r.level = level;
      return FR.SM_FS_NOT_PRESENT;
    }
    if ((lo & FS_PTE.RW) === 0) perm &= ~VTD_PERM.W;
    if ((lo & FS_PTE.US) === 0) perm &= ~VTD_PERM.U;
    if ((hi & FS_PTE.XD_HI) !== 0) perm &= ~VTD_PERM.X;
    if (update && (lo & FS_PTE.A) === 0) {
      lo = (lo | FS_PTE.A) >>> 0;
      mem.write32(pte, lo);
    }
    const oa = ((lo & 0xfffff000) >>> 0) + (hi & 0xfffff) * TWO_32;
    const ps = (lo & FS_PTE.PS) !== 0;
    if (level === 1 || ps) {
      if (ps && (level > 3 || (level === 3 && !fl1gp))) return FR.SM_FS_RSVD;
      const lg2 = shift;
      // A large leaf's address bits below its size hold PAT (bit 12) and must otherwise be 0.
      const size = POW2[lg2]!;
      const low = level === 1 ? 0 : oa - alignDownLg2(oa, lg2);
      if (low !== 0 && low !== 4096) return FR.SM_FS_RSVD;
      const base = oa - low;
      let out = base + (addr < TWO_32 && lg2 < 31 ? (addr & (size - 1)) >>> 0 : addr - alignDownLg2(addr, lg2));
      let leafLg2 = lg2;
      r.level = level;
      r.ptePa = pte;
      r.leafLo = lo;
      r.leafHi = hi;
      r.perm = perm;
      if (s2 !== null) {
        const f = ssWalk(mem, s2.root, s2.levels, out, s2.sllps, true, r2);
        if (f !== 0) return s2Fault(r, out, f);
        perm &= r2.perm;
        r.perm = perm;
        out = r2.pa;
        if (r2.leafLg2 < leafLg2) leafLg2 = r2.leafLg2;
      }
      r.pa = out;
      r.leafLg2 = leafLg2;
      return 0;
    }
    table = oa;
    level--;
    if (s2 !== null) {
      const f = ssWalk(mem, s2.root, s2.levels, table, s2.sllps, true, r2);
      if (f !== 0) return s2Fault(r, table, f);
      table = r2.pa;
    }
  }
}

function s2Fault(r: VtdWalkResult, gpa: number, f: number): number {
  r.s2 = true;
  r.gpa = gpa;
  return f;
}
