/**
 * The AMD-Vi page walks as pure functions over physical memory: the v1 host table (modes 1–6, the next-level field
 * with level skipping, next-level 7 with the page size encoded in the address bits, IR/IW ANDed over every level)
 * and, with GV, the GCR3 table lookup by PASID and the v2 (x86-64, 4- or 5-level) guest table. Each returns 0 or a
 * fault (an event code with its flags) and fills a reused result object; nothing is allocated.
 * Spec: AMD IOMMU Specification §2.2.3 (host I/O page tables), §2.2.6 (GCR3), §2.2.7 (guest page tables).
 * @linux the hardware walk that generic_pt/fmt/amdv1.h and fmt/x86_64.h describe; QEMU amdvi_page_walk
 */
import type { PhysicalMemory } from "@iommu-sim/core";
import { fieldGet, getAddr, maskOf, TWO_32 } from "@iommu-sim/core";
import { EVT_CODE, EVT_FLAG, GCR3_ENTRY, NL_SIZE, V1_PTE, X86_PTE } from "./structures.js";

/** Access permission bits of a walk result. @linux IOMMU_PROT_IR / IOMMU_PROT_IW */
export const AMD_PERM = { R: 1, W: 2 } as const;

/**
 * What a walk found: the page's base and size, the permissions, and on a fault its event code and flags.
 * @linux the translation (or event) a hardware walk produces
 */
export class AmdWalkResult {
  /** Physical base of the page. */
  pa = 0;
  /** log2 of the page size. */
  sizeLg2 = 12;
  /** AMD_PERM bits granted. */
  perm = 0;
  /** Event code on a fault (0 = none). */
  code = 0;
  /** Event flags (EVT_FLAG). */
  flags = 0;
  /** Address for the event (the IOVA, or the table address of a hardware error). */
  addr = 0;
  /**
   * The table the leaf was read from and its level, and the permissions the directory entries above it granted
   * (AMD_PERM bits, the walk's starting permissions ANDed with each PDE's): what a page-directory cache keeps.
   */
  table = 0;
  level = 0;
  tablePerm = 0;
  /** Physical address and low word of the v1 leaf entry (for the host dirty update), or -1. */
  ptePa = -1;
  leafLo = 0;
}

const NL_MASK = maskOf(V1_PTE.NL);
const NL_SHIFT = V1_PTE.NL.bit;
const PR = maskOf(V1_PTE.PR);
const IR_HI = maskOf(V1_PTE.IR);
const IW_HI = maskOf(V1_PTE.IW);
const w2 = new Uint32Array(2);
/** 2^i for i < 64, so the hot paths never call Math.pow. */
export const POW2 = Float64Array.from({ length: 64 }, (_, i) => 2 ** i);

/** Bits [lo, lo + n) of `iova` (iova < 2^53), as an integer. */
function ivaBits(iova: number, lo: number, n: number): number {
  return Math.floor(iova / POW2[lo]!) % POW2[n]!;
}

/** Address bits 51:12 of the entry in `w2`. */
function entryAddr(): number {
  return (w2[1]! & 0xfffff) * TWO_32 + ((w2[0]! & 0xfffff000) >>> 0);
}

function pageTableError(out: AmdWalkResult, pa: number): number {
  out.code = EVT_CODE.PAGE_TAB_HARDWARE_ERROR;
  out.addr = pa;
  return out.code;
}

function pageFault(out: AmdWalkResult, flags: number): number {
  out.code = EVT_CODE.IO_PAGE_FAULT;
  out.flags |= flags;
  return out.code;
}

/**
 * Walk a v1 host table of `mode` levels (1–6) from `root` for `iova`, starting from the DTE's IR/IW (`perm`).
 * Returns 0 or the event code (IO_PAGE_FAULT: not present, reserved next level, skipped bits not zero, address
 * beyond the mode; PAGE_TAB_HARDWARE_ERROR: a table outside memory). Permission checks are the caller's.
 * @linux the host walk of amdv1.h (amdv1pt_load_entry_raw, amdv1pt_entry_num_contig_lg2); QEMU amdvi_page_walk
 */
export function v1Walk(
  mem: PhysicalMemory,
  root: number,
  mode: number,
  iova: number,
  perm: number,
  out: AmdWalkResult,
): number {
  if (mode < 6 && iova >= POW2[12 + 9 * mode]!) {
    out.code = 0;
    out.flags = 0;
    out.addr = iova;
    out.perm = perm;
    return pageFault(out, 0);
  }
  return v1WalkFrom(mem, root, mode, iova, perm, out);
}

/**
 * The v1 walk from a table at `level` (the root, or a table a page-directory cache remembered for `iova`'s region),
 * with the permissions the entries above it granted. `out.table`/`level`/`tablePerm` name the table the leaf was
 * read from.
 * @linux the host walk of amdv1.h, resumed below cached directory entries
 */
export function v1WalkFrom(
  mem: PhysicalMemory,
  table: number,
  level: number,
  iova: number,
  perm: number,
  out: AmdWalkResult,
): number {
  out.code = 0;
  out.flags = 0;
  out.addr = iova;
  // Below 4 GiB the index arithmetic is 32-bit shifts; above, floating-point division (exact below 2^53).
  const small = iova === iova >>> 0;
  const words = mem.words32;
  let tPerm = perm;
  out.ptePa = -1;
  for (;;) {
    const shift = 12 + 9 * (level - 1);
    const idx = small ? (shift < 32 ? (iova >>> shift) & 0x1ff : 0) : ivaBits(iova, shift, level === 6 ? 7 : 9);
    const pa = table + 8 * idx;
    // The table's words straight from memory's word array when it has them (one load per half), else read64Parts.
    const wi = mem.wordIndexR(pa);
    let lo: number;
    let hi: number;
    if (wi >= 0) {
      lo = words[wi]!;
      hi = words[wi + 1]!;
    } else {
      if (pa + 8 > mem.size) return pageTableError(out, pa);
      mem.read64Parts(pa, w2);
      lo = w2[0]!;
      hi = w2[1]!;
    }
    if ((lo & PR) === 0) {
      out.perm = tPerm;
      return pageFault(out, 0);
    }
    const ePerm = tPerm & ((hi & IR_HI ? AMD_PERM.R : 0) | (hi & IW_HI ? AMD_PERM.W : 0));
    const nl = (lo & NL_MASK) >>> NL_SHIFT;
    if (nl === 0 || nl === NL_SIZE || level === 1) {
      out.table = table;
      out.level = level;
      out.tablePerm = tPerm;
      out.perm = ePerm;
      out.ptePa = pa;
      out.leafLo = lo;
      if (nl === NL_SIZE) return sizedLeaf(lo, hi, level, out);
      if (nl !== 0) return pageFault(out, EVT_FLAG.RZ);
      const addr = (hi & 0xfffff) * TWO_32 + ((lo & 0xfffff000) >>> 0);
      out.sizeLg2 = shift;
      out.pa = shift === 12 ? addr : addr - (addr % POW2[shift]!);
      return 0;
    }
    if (nl >= level) {
      out.perm = ePerm;
      return pageFault(out, EVT_FLAG.RZ);
    }
    // Level skipping: the IOVA bits of the skipped levels must be zero.
    if (nl !== level - 1) {
      const skipLo = 12 + 9 * nl;
      if (ivaBits(iova, skipLo, shift - skipLo) !== 0) {
        out.perm = ePerm;
        return pageFault(out, 0);
      }
    }
    table = (hi & 0xfffff) * TWO_32 + ((lo & 0xfffff000) >>> 0);
    level = nl;
    tPerm = ePerm;
  }
}

/** A leaf with next level 7: the first 0 address bit at or above 12 is bit n-1 of a 2^n-byte page. */
function sizedLeaf(lo: number, hi: number, level: number, out: AmdWalkResult): number {
  let n = -1;
  for (let b = 12; b < 52; b++) {
    const set = b < 32 ? (lo >>> b) & 1 : (hi >>> (b - 32)) & 1;
    if (!set) {
      n = b + 1;
      break;
    }
  }
  // The encoded size must be above the entry's natural size and fit the level above.
  const natural = 12 + 9 * (level - 1);
  if (n < 0 || n <= natural || n > natural + 9) return pageFault(out, EVT_FLAG.RZ);
  const addr = (hi & 0xfffff) * TWO_32 + ((lo & 0xfffff000) >>> 0);
  out.sizeLg2 = n;
  out.pa = addr - (addr % 2 ** n);
  return 0;
}

/**
 * The guest CR3 (v2 root) of `pasid` in a GCR3 table of `glx + 1` levels at `gcr3`, or -1 with `out` holding the
 * fault (IO_PAGE_FAULT with GN for an invalid entry; PAGE_TAB_HARDWARE_ERROR for a table outside memory).
 * @linux the lookup __get_gcr3_pte builds (iommu.c), as the hardware reads it
 */
export function gcr3Lookup(mem: PhysicalMemory, gcr3: number, glx: number, pasid: number, out: AmdWalkResult): number {
  let table = gcr3;
  for (let l = glx; l >= 0; l--) {
    const idx = Math.floor(pasid / 2 ** (9 * l)) & 0x1ff;
    const pa = table + 8 * idx;
    if (pa + 8 > mem.size) {
      pageTableError(out, pa);
      return -1;
    }
    mem.read64Parts(pa, w2);
    if (fieldGet(w2[0]!, GCR3_ENTRY.V) === 0) {
      pageFault(out, EVT_FLAG.GN);
      return -1;
    }
    table = getAddr(w2, GCR3_ENTRY.ADDR_LO, GCR3_ENTRY.ADDR_HI);
  }
  return table;
}

const P = maskOf(X86_PTE.P);
const RW = maskOf(X86_PTE.RW);
const PS = maskOf(X86_PTE.PS);

/**
 * Walk an x86-64 table of `levels` (4 or 5) from `cr3` for `iova`. Leaves at levels 2 and 3 by PS (2 MiB, 1 GiB).
 * Non-canonical or out-of-range addresses and non-present entries fault with GN.
 * @linux generic_pt/fmt/x86_64.h, as the hardware reads it (AMD IOMMU Specification §2.2.7)
 */
export function v2Walk(mem: PhysicalMemory, cr3: number, levels: number, iova: number, out: AmdWalkResult): number {
  if (iova >= 2 ** (12 + 9 * levels - 1)) {
    out.code = 0;
    out.flags = EVT_FLAG.GN;
    out.addr = iova;
    out.perm = AMD_PERM.R | AMD_PERM.W;
    return pageFault(out, 0);
  }
  return v2WalkFrom(mem, cr3, levels, iova, AMD_PERM.R | AMD_PERM.W, out);
}

/**
 * The x86-64 walk from a table at `level` (the guest CR3, or a table a page-directory cache remembered), with the
 * permissions the entries above it granted.
 * @linux generic_pt/fmt/x86_64.h, resumed below cached directory entries
 */
export function v2WalkFrom(
  mem: PhysicalMemory,
  table: number,
  level: number,
  iova: number,
  perm: number,
  out: AmdWalkResult,
): number {
  out.code = 0;
  out.flags = EVT_FLAG.GN;
  out.addr = iova;
  out.perm = perm;
  for (; level >= 1; level--) {
    const shift = 12 + 9 * (level - 1);
    const pa = table + 8 * ivaBits(iova, shift, 9);
    if (pa + 8 > mem.size) return pageTableError(out, pa);
    mem.read64Parts(pa, w2);
    const lo = w2[0]!;
    if ((lo & P) === 0) return pageFault(out, 0);
    out.table = table;
    out.level = level;
    out.tablePerm = out.perm;
    if ((lo & RW) === 0) out.perm &= ~AMD_PERM.W;
    const addr = entryAddr();
    if (level === 1 || ((lo & PS) !== 0 && level <= 3)) {
      out.sizeLg2 = shift;
      out.pa = addr - (addr % 2 ** shift);
      return 0;
    }
    if ((lo & PS) !== 0) return pageFault(out, EVT_FLAG.RZ);
    table = addr;
  }
  return pageFault(out, 0);
}
