/**
 * An independent decoder of an AMD-Vi translation path, for tools (`iommu-sim inspect`): it reads the registers
 * (Control, Device Table Base, EFR) and memory only, changes nothing (no cache, no event, no A/D update), and
 * reports the device table entry with its decoded fields, then with GV the GCR3 table levels and each x86-64 (v2)
 * level, and each v1 host level (level skipping by the next-level field, next level 7 with the page size in the
 * address bits), then the output address or the fault with the event the unit would log. It walks with its own loops
 * over the field tables of structures.ts, so it is a second reading of the tables the model (walk.ts) walks.
 * @linux what a debugger session over amd_iommu's device table and page tables shows (dump_dte_entry,
 * fetch_pte read by hand)
 */
import {
  descriptorWords,
  type Field,
  fieldGet,
  getAddr,
  getField,
  type PhysicalMemory,
  rawQwords,
  type TranslationDecoder,
  type TranslationLevel,
  type TranslationResult,
} from "@iommu-sim/core";
import { AMD_REG, CONTROL, DEV_TAB_BASE, EFR } from "./registers.js";
import { DTE, DTE_MODE_RESERVED, DTE_SIZE, GCR3_ENTRY, NL_SIZE, V1_PTE, X86_PTE } from "./structures.js";

const hex = (n: number) => `0x${n.toString(16)}`;

/** The descriptor's words, or undefined when any of them lies outside memory (the decoder reports the fetch). */
function words(mem: PhysicalMemory, pa: number, n: number): number[] | undefined {
  return pa < 0 || pa + 4 * n > mem.size ? undefined : descriptorWords(mem, pa, n);
}

const f = (w: number[], fl: Field) => getField(w, fl);
const bit = (w: number[], fl: Field) => getField(w, fl) === 1;
const perm = (p: number) => `${p & 1 ? "r" : "-"}${p & 2 ? "w" : "-"}`;
/** Bits [lo, lo + n) of `a` (below 2^53). */
const bitsOf = (a: number, lo: number, n: number) => Math.floor(a / 2 ** lo) % 2 ** n;

/** The page size a next-level-7 entry encodes: the first 0 address bit at or above 12 is bit n-1 of 2^n. */
function sizedLg2(w: number[]): number {
  for (let b = 12; b < 52; b++) {
    const set = b < 32 ? (w[0]! >>> b) & 1 : (w[1]! >>> (b - 32)) & 1;
    if (!set) return b + 1;
  }
  return -1;
}

/** The v1 host walk of `input` from `root` in a `mode`-level table; levels pushed with `prefix`. */
function v1(
  mem: PhysicalMemory,
  root: number,
  mode: number,
  input: number,
  start: number,
  prefix: string,
  levels: TranslationLevel[],
): TranslationResult {
  if (mode < 6 && input >= 2 ** (12 + 9 * mode))
    return { fault: `IO_PAGE_FAULT: ${prefix}address ${hex(input)} beyond a ${mode}-level table` };
  let table = root;
  let level = mode;
  let p = start;
  for (;;) {
    const shift = 12 + 9 * (level - 1);
    const index = bitsOf(input, shift, level === 6 ? 7 : 9);
    const at = table + 8 * index;
    const w = words(mem, at, 2);
    if (!w) return { fault: `PAGE_TAB_HARDWARE_ERROR: ${prefix}L${level} entry at ${hex(at)} outside memory` };
    const present = bit(w, V1_PTE.PR);
    const nl = f(w, V1_PTE.NL);
    const addr = getAddr(w, V1_PTE.ADDR_LO, V1_PTE.ADDR_HI);
    const leaf = nl === 0 || nl === NL_SIZE || level === 1;
    const kind = !present ? "not present" : leaf ? (nl === NL_SIZE ? "large page" : "page") : "PDE";
    const fields: TranslationLevel["fields"] = { index, PR: present };
    if (present) {
      fields.NextLevel = nl;
      fields.Addr = hex(addr);
      fields.IR = bit(w, V1_PTE.IR);
      fields.IW = bit(w, V1_PTE.IW);
      if (leaf) {
        fields.FC = bit(w, V1_PTE.FC);
        fields.U = bit(w, V1_PTE.U);
        fields.A = bit(w, V1_PTE.A);
        fields.D = bit(w, V1_PTE.D);
      }
      if (!leaf && nl < level - 1) fields.skips = level - 1 - nl;
    }
    levels.push({ name: `${prefix}L${level} ${kind}`, address: at, raw: rawQwords(w), fields });
    if (!present) return { fault: `IO_PAGE_FAULT: ${prefix}L${level} entry not present` };
    p &= (bit(w, V1_PTE.IR) ? 1 : 0) | (bit(w, V1_PTE.IW) ? 2 : 0);
    if (leaf) {
      let lg2 = shift;
      if (nl === NL_SIZE) {
        lg2 = sizedLg2(w);
        if (lg2 <= shift || lg2 > shift + 9)
          return { fault: `IO_PAGE_FAULT: ${prefix}L${level} bad page-size encoding` };
        fields.PageSize = hex(2 ** lg2);
      } else if (nl !== 0) {
        return { fault: `IO_PAGE_FAULT: ${prefix}L1 entry with next level ${nl}` };
      }
      const size = 2 ** lg2;
      return { pa: addr - (addr % size) + (input % size), size, perm: perm(p) };
    }
    if (nl >= level) return { fault: `IO_PAGE_FAULT: ${prefix}L${level} next level ${nl} not below the entry's level` };
    const skipLo = 12 + 9 * nl;
    if (bitsOf(input, skipLo, shift - skipLo) !== 0)
      return { fault: `IO_PAGE_FAULT: ${prefix}address bits ${shift - 1}:${skipLo} of skipped levels not zero` };
    table = addr;
    level = nl;
  }
}

/** The x86-64 (v2) walk of `iova` from `cr3`. */
function v2(
  mem: PhysicalMemory,
  cr3: number,
  levels: number,
  iova: number,
  out: TranslationLevel[],
): TranslationResult {
  if (iova >= 2 ** (12 + 9 * levels - 1))
    return { fault: `IO_PAGE_FAULT (GN): ${hex(iova)} beyond a ${levels}-level guest table` };
  let table = cr3;
  let rw = true;
  for (let level = levels; level >= 1; level--) {
    const shift = 12 + 9 * (level - 1);
    const index = bitsOf(iova, shift, 9);
    const at = table + 8 * index;
    const w = words(mem, at, 2);
    if (!w) return { fault: `PAGE_TAB_HARDWARE_ERROR: guest L${level} entry at ${hex(at)} outside memory` };
    const present = bit(w, X86_PTE.P);
    const ps = bit(w, X86_PTE.PS);
    const leaf = level === 1 || (ps && level <= 3);
    const addr = getAddr(w, X86_PTE.ADDR_LO, X86_PTE.ADDR_HI);
    const fields: TranslationLevel["fields"] = { index, P: present };
    if (present) {
      fields.RW = bit(w, X86_PTE.RW);
      fields.US = bit(w, X86_PTE.US);
      fields.A = bit(w, X86_PTE.A);
      if (leaf) fields.D = bit(w, X86_PTE.D);
      fields.PS = ps;
      fields.XD = bit(w, X86_PTE.XD);
      fields.Addr = hex(addr);
    }
    const kind = !present ? "not present" : leaf ? "page" : "table";
    out.push({ name: `guest L${level} ${kind}`, address: at, raw: rawQwords(w), fields });
    if (!present) return { fault: `IO_PAGE_FAULT (GN): guest L${level} entry not present` };
    rw &&= bit(w, X86_PTE.RW);
    if (leaf) {
      const size = 2 ** shift;
      return { pa: addr - (addr % size) + (iova % size), size, perm: rw ? "rw" : "r-" };
    }
    if (ps) return { fault: `IO_PAGE_FAULT (GN): PS set at guest L${level}` };
    table = addr;
  }
  return { fault: "IO_PAGE_FAULT (GN)" };
}

/**
 * Decode an AMD-Vi unit's translation of (`requesterId` = DeviceID, `pasid`, `iova`).
 * @linux the device table entry amd_iommu's set_dte_entry writes and the tables it points to, read as the IOMMU
 * reads them
 */
export const decodeAmdTranslation: TranslationDecoder = ({ memory, readReg, requesterId, pasid, iova }) => {
  const levels: TranslationLevel[] = [];
  if (fieldGet(readReg(AMD_REG.CONTROL), CONTROL.IOMMU_EN) === 0) return { levels, result: { pa: iova, perm: "rw" } }; // IommuEn clear: DMA is not translated
  const devid = requesterId & 0xffff;
  const base = [readReg(AMD_REG.DEV_TAB_BASE), readReg(AMD_REG.DEV_TAB_BASE + 4)];
  const tableAt = getAddr(base, DEV_TAB_BASE.BASE_LO, DEV_TAB_BASE.BASE_HI);
  const entries = ((f(base, DEV_TAB_BASE.SIZE) + 1) * 4096) / DTE_SIZE;
  const at = tableAt + DTE_SIZE * devid;
  const d = devid < entries ? words(memory, at, 8) : undefined;
  if (!d)
    return { levels, result: { fault: `DEV_TAB_HARDWARE_ERROR: DeviceID ${hex(devid)} beyond the device table` } };
  const gcr3 = f(d, DTE.GCR3_51_31) * 2 ** 31 + f(d, DTE.GCR3_30_15) * 2 ** 15 + f(d, DTE.GCR3_14_12) * 4096;
  const mode = f(d, DTE.MODE);
  const root = getAddr(d, DTE.ROOT_LO, DTE.ROOT_HI);
  const gv = bit(d, DTE.GV) && fieldGet(readReg(AMD_REG.EFR), EFR.GT_SUP) === 1;
  const fields: TranslationLevel["fields"] = { V: bit(d, DTE.V), TV: bit(d, DTE.TV) };
  if (bit(d, DTE.V) && bit(d, DTE.TV)) {
    Object.assign(fields, {
      Mode: mode,
      HostPtRoot: hex(root),
      IR: bit(d, DTE.IR),
      IW: bit(d, DTE.IW),
      DomainID: f(d, DTE.DOMAIN_ID),
      PPR: bit(d, DTE.PPR),
      HAD: f(d, DTE.HAD),
      SA: bit(d, DTE.NO_PAGE_FAULT),
      I: bit(d, DTE.I),
      GV: bit(d, DTE.GV),
    });
    if (gv) {
      Object.assign(fields, {
        GIOV: bit(d, DTE.GIOV),
        GLX: f(d, DTE.GLX),
        GCR3TRP: hex(gcr3),
        GuestPagingMode: f(d, DTE.GPT_LEVEL),
      });
    }
  }
  levels.push({ name: "DTE", address: at, raw: rawQwords(d), fields });
  if (!bit(d, DTE.V)) return { levels, result: { pa: iova, perm: "rw" } };
  if (!bit(d, DTE.TV)) return { levels, result: { fault: "IO_PAGE_FAULT: DTE.TV=0 (no translation information)" } };
  if (mode === DTE_MODE_RESERVED) return { levels, result: { fault: "ILLEGAL_DEV_TABLE_ENTRY: Mode 7" } };
  const dtePerm = (bit(d, DTE.IR) ? 1 : 0) | (bit(d, DTE.IW) ? 2 : 0);
  let gPasid = -1;
  if (pasid >= 0) {
    if (!gv) return { levels, result: { fault: "INVALID_DEVICE_REQUEST: PASID without DTE.GV" } };
    const efr = [readReg(AMD_REG.EFR), readReg(AMD_REG.EFR + 4)];
    if (pasid >= 2 ** (f(efr, EFR.PASMAX) + 1))
      return { levels, result: { fault: `INVALID_DEVICE_REQUEST: PASID ${hex(pasid)} beyond EFR.PASmax` } };
    gPasid = pasid;
  } else if (gv && bit(d, DTE.GIOV)) {
    gPasid = 0;
  }
  if (gPasid < 0) {
    if (mode === 0) return { levels, result: { pa: iova, perm: perm(dtePerm) } };
    return { levels, result: v1(memory, root, mode, iova, dtePerm, "", levels) };
  }
  // GV: the GCR3 table by PASID, then the guest's x86-64 table, then (Mode != 0) the host table on the result.
  let table = gcr3;
  const glx = f(d, DTE.GLX);
  for (let l = glx; l >= 0; l--) {
    const index = bitsOf(gPasid, 9 * l, 9);
    const e = table + 8 * index;
    const w = words(memory, e, 2);
    if (!w) return { levels, result: { fault: `PAGE_TAB_HARDWARE_ERROR: GCR3 entry at ${hex(e)} outside memory` } };
    const addr = getAddr(w, GCR3_ENTRY.ADDR_LO, GCR3_ENTRY.ADDR_HI);
    const name = l === 0 ? `GCR3 entry (PASID ${gPasid})` : `GCR3 L${l} table`;
    levels.push({ name, address: e, raw: rawQwords(w), fields: { index, V: bit(w, GCR3_ENTRY.V), Addr: hex(addr) } });
    if (!bit(w, GCR3_ENTRY.V)) return { levels, result: { fault: `IO_PAGE_FAULT (GN): GCR3 entry not valid` } };
    table = addr;
  }
  const g = v2(memory, table, f(d, DTE.GPT_LEVEL) === 1 ? 5 : 4, iova, levels);
  if (g.fault !== undefined || mode === 0) {
    if (g.perm !== undefined)
      g.perm = perm(dtePerm & ((g.perm.includes("r") ? 1 : 0) | (g.perm.includes("w") ? 2 : 0)));
    return { levels, result: g };
  }
  const gp = (g.perm!.includes("w") ? 3 : 1) & dtePerm;
  const h = v1(memory, root, mode, g.pa!, gp, "host ", levels);
  if (h.fault !== undefined) return { levels, result: h };
  return { levels, result: { pa: h.pa!, size: Math.min(g.size!, h.size!), perm: h.perm! } };
};
