/**
 * An independent decoder of a VT-d translation path, for tools (`iommu-sim inspect`): it reads the registers (GSTS,
 * RTADDR, CAP, ECAP) and memory only, and reports the root entry, the context entry (legacy or scalable), the PASID
 * directory and table entries, each first- and second-stage level with raw value and decoded fields, then the output
 * address or the fault with its architected reason. It is side-effect-free (no accessed/dirty bits set, no cache
 * touched, no register with a read side effect read) and walks with its own loop, so it is a second reading of the
 * tables the model (`walk.ts`) walks. Nested first-stage table addresses are guest-physical: each is translated
 * through the second stage before it is read.
 * @linux none: what a debugger reads of the tables drivers/iommu/intel programs (Intel VT-d specification ch. 3, 9)
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
  TWO_32,
} from "@iommu-sim/core";
import { CAP, ECAP, GCMD, RTADDR, TTM, VTD_REG } from "./registers.js";
import {
  CTX,
  CTX_RSVD,
  CTX_TT,
  FR,
  FR_NAME,
  FS_PTE,
  PASID_DIR,
  PASID_ENTRY,
  PASID_ENTRY_SIZE,
  PASID_PDE_SHIFT,
  PGTT,
  ROOT,
  SM_CTX,
  SM_CTX_RSVD,
  SM_ROOT,
  SS_PTE,
} from "./structures.js";

const TT_NAME: Record<number, string> = { 0: "multi-level", 1: "multi-level+dev-IOTLB", 2: "pass-through" };
const PGTT_NAME: Record<number, string> = { 1: "first-stage", 2: "second-stage", 3: "nested", 4: "pass-through" };

const hex = (n: number) => `0x${n.toString(16)}`;
const f = (w: number[], fl: Field) => getField(w, fl);

/** A fault result named as dmar.c names the reason, with its code. */
function fault(code: number, detail = ""): TranslationResult {
  return { fault: `${FR_NAME[code] ?? "fault"} (reason ${hex(code)})${detail ? `: ${detail}` : ""}` };
}

/** Address bits 51:12 of a paging entry's halves. */
function entryAddr(lo: number, hi: number): number {
  return ((lo & 0xfffff000) >>> 0) + (hi & 0xfffff) * TWO_32;
}

/** The index of `addr` at paging level `level` (1 = last level). */
function indexAt(addr: number, level: number): number {
  return Math.floor(addr / 2 ** (12 + 9 * (level - 1))) % 512;
}

interface Stage {
  root: number;
  levels: number;
  /** SS: CAP.SLLPS bits (bit 0 = 2 MiB, bit 1 = 1 GiB). FS: 2 MiB always, 1 GiB with FL1GP (bit 1). */
  largePages: number;
  sm: boolean;
}

/**
 * Walk the second stage for `input`, pushing each level (prefix `prefix`) when `levels` is given.
 * Returns the result with `perm` (r/w letters) or the fault.
 */
function ssDecode(
  mem: PhysicalMemory,
  s: Stage,
  input: number,
  prefix: string,
  levels: TranslationLevel[] | undefined,
): TranslationResult {
  if (input >= 2 ** (12 + 9 * s.levels))
    return fault(s.sm ? FR.SM_SS_BEYOND : FR.ADDR_BEYOND_MGAW, `input beyond ${12 + 9 * s.levels} bits`);
  let table = s.root;
  let r = true;
  let w = true;
  for (let level = s.levels; level >= 1; level--) {
    const index = indexAt(input, level);
    const at = table + index * 8;
    if (!(at >= 0 && at + 8 <= mem.size)) return fault(s.sm ? FR.SM_SS_READ : FR.PAGING_ENTRY_ERR);
    const e = descriptorWords(mem, at, 2);
    const lo = e[0]!;
    const hi = e[1]!;
    const present = (lo & (SS_PTE.R | SS_PTE.W)) !== 0;
    const ps = (lo & SS_PTE.PS) !== 0;
    const leaf = present && (level === 1 || ps);
    const size = 2 ** (12 + 9 * (level - 1));
    const kind = !present
      ? "not present"
      : !leaf
        ? "table"
        : level === 1
          ? "4K page"
          : `${size >= 2 ** 30 ? "1G" : "2M"} page`;
    const fields: TranslationLevel["fields"] = { index, R: (lo & SS_PTE.R) !== 0, W: (lo & SS_PTE.W) !== 0 };
    if (present) {
      fields.addr = hex(entryAddr(lo, hi));
      if (leaf) {
        fields.X = (lo & SS_PTE.X) !== 0;
        fields.A = (lo & SS_PTE.A) !== 0;
        fields.D = (lo & SS_PTE.D) !== 0;
        fields.SNP = (lo & SS_PTE.SNP) !== 0;
      }
      if (level > 1) fields.PS = ps;
    }
    levels?.push({ name: `${prefix}L${level} ${kind}`, address: at, raw: rawQwords(e), fields });
    // No present bit: R or W set means present (legacy mode reports the access's own reason).
    if (!present)
      return s.sm
        ? fault(FR.SM_SS_NOT_PRESENT, `level ${level}`)
        : { fault: `not present at level ${level}: a read faults with reason 0x6, a write with 0x5` };
    r &&= (lo & SS_PTE.R) !== 0;
    w &&= (lo & SS_PTE.W) !== 0;
    const addr = entryAddr(lo, hi);
    if (!leaf) {
      table = addr;
      continue;
    }
    if (ps && (level > 3 || (s.largePages & (1 << (level - 2))) === 0))
      return fault(s.sm ? FR.SM_SS_RSVD : FR.PAGING_RSVD, `large page at level ${level} not supported`);
    if (addr % size !== 0) return fault(s.sm ? FR.SM_SS_RSVD : FR.PAGING_RSVD, "large page address not aligned");
    return { pa: addr + (input % size), size, perm: `${r ? "r" : "-"}${w ? "w" : "-"}x` };
  }
  return fault(s.sm ? FR.SM_SS_NOT_PRESENT : FR.PAGING_ENTRY_ERR);
}

/**
 * Walk the first stage (x86-64, 4 or 5 levels) for `input`; with `s2`, table addresses and the output are
 * guest-physical and go through the second stage.
 */
function fsDecode(
  mem: PhysicalMemory,
  s: Stage,
  input: number,
  levels: TranslationLevel[],
  s2: Stage | undefined,
): TranslationResult {
  const prefix = s2 ? "FS " : "";
  if (input >= 2 ** (11 + 9 * s.levels))
    return fault(FR.SM_NON_CANONICAL, `input beyond the lower canonical half of ${12 + 9 * s.levels} bits`);
  const gpaToPa = (gpa: number, what: string): number | TranslationResult => {
    if (!s2) return gpa;
    const t = ssDecode(mem, s2, gpa, "", undefined);
    if (t.fault !== undefined)
      return { fault: `second-stage fault translating ${what} at GPA ${hex(gpa)}: ${t.fault}` };
    return t.pa!;
  };
  let table = s.root;
  let w = true;
  let u = true;
  let x = true;
  for (let level = s.levels; level >= 1; level--) {
    const tpa = gpaToPa(table, `the level-${level} table`);
    if (typeof tpa !== "number") return tpa;
    const index = indexAt(input, level);
    const at = tpa + index * 8;
    if (!(at >= 0 && at + 8 <= mem.size)) return fault(FR.SM_FS_READ);
    const e = descriptorWords(mem, at, 2);
    const lo = e[0]!;
    const hi = e[1]!;
    const present = (lo & FS_PTE.P) !== 0;
    const ps = (lo & FS_PTE.PS) !== 0;
    const leaf = present && (level === 1 || ps);
    const size = 2 ** (12 + 9 * (level - 1));
    const kind = !present
      ? "not present"
      : !leaf
        ? "table"
        : level === 1
          ? "4K page"
          : `${size >= 2 ** 30 ? "1G" : "2M"} page`;
    const fields: TranslationLevel["fields"] = { index, P: present };
    if (present) {
      fields.addr = hex(entryAddr(lo, hi));
      fields.RW = (lo & FS_PTE.RW) !== 0;
      fields.US = (lo & FS_PTE.US) !== 0;
      fields.A = (lo & FS_PTE.A) !== 0;
      if (leaf) fields.D = (lo & FS_PTE.D) !== 0;
      if (level > 1) fields.PS = ps;
      fields.XD = (hi & FS_PTE.XD_HI) !== 0;
    }
    const name = `${prefix}L${level} ${kind}`;
    levels.push({
      name: s2 ? `${name} (GPA ${hex(table + index * 8)})` : name,
      address: at,
      raw: rawQwords(e),
      fields,
    });
    if (!present) return fault(FR.SM_FS_NOT_PRESENT, `level ${level}`);
    w &&= (lo & FS_PTE.RW) !== 0;
    u &&= (lo & FS_PTE.US) !== 0;
    x &&= (hi & FS_PTE.XD_HI) === 0;
    if (!leaf) {
      table = entryAddr(lo, hi);
      continue;
    }
    if (ps && (level > 3 || (level === 3 && (s.largePages & 2) === 0)))
      return fault(FR.SM_FS_RSVD, `large page at level ${level} not supported`);
    // A large page's bit 12 is PAT; the other address bits below its size must be 0.
    const addr = entryAddr(lo, hi);
    const low = level === 1 ? 0 : addr % size;
    if (low !== 0 && low !== 4096) return fault(FR.SM_FS_RSVD, "large page address not aligned");
    const perm = `r${w ? "w" : "-"}${x ? "x" : "-"}${u ? "" : " (supervisor only)"}`;
    const out = addr - low + (input % size);
    if (!s2) return { pa: out, size, perm };
    levels.push({ name: `output GPA ${hex(out)}`, address: out, raw: [], fields: {} });
    const r2 = ssDecode(mem, s2, out, "SS ", levels);
    if (r2.fault !== undefined) return { fault: `second-stage fault on the output GPA ${hex(out)}: ${r2.fault}` };
    const s2w = r2.perm![1] === "w";
    return { pa: r2.pa!, size: Math.min(size, r2.size!), perm: `r${w && s2w ? "w" : "-"}${perm.slice(2)}` };
  }
  return fault(FR.SM_FS_NOT_PRESENT);
}

/**
 * Decode a VT-d unit's translation of (`requesterId` = source-id, `pasid`, `iova`).
 * @linux what the unit reads for a DMA request (root_entry → context_entry → pasid_dir_entry → pasid_entry → the
 * page tables); dmar.c's fault reason names
 */
export const decodeVtdTranslation: TranslationDecoder = ({ memory, readReg, requesterId: sid, pasid, iova }) => {
  const levels: TranslationLevel[] = [];
  const gsts = readReg(VTD_REG.GSTS);
  if (fieldGet(gsts, GCMD.TE) === 0)
    // Translation disabled (GSTS.TES clear): DMA reaches memory untranslated.
    return { levels, result: { pa: iova, perm: "rwx" } };
  const cap = [readReg(VTD_REG.CAP), readReg(VTD_REG.CAP + 4)];
  const ecap = [readReg(VTD_REG.ECAP), readReg(VTD_REG.ECAP + 4)];
  const rta = [readReg(VTD_REG.RTADDR), readReg(VTD_REG.RTADDR + 4)];
  const ttm = f(rta, RTADDR.TTM);
  const sm = ttm === TTM.SCALABLE;
  const rtBase = getAddr(rta, RTADDR.RTA_LO, RTADDR.RTA_HI);
  if (ttm === TTM.ABORT_DMA || (sm && f(ecap, ECAP.SMTS) === 0) || ttm === 2)
    return { levels, result: fault(sm ? FR.SM_ROOT_ADDR_INVALID : FR.ROOT_ADDR_INVALID, `RTADDR.TTM = ${ttm}`) };
  const sagaw = f(cap, CAP.SAGAW);
  const sllps = f(cap, CAP.SLLPS);
  const bus = (sid >>> 8) & 0xff;
  const devfn = sid & 0xff;
  const rootAt = rtBase + bus * 16;
  const root = descriptorWords(memory, rootAt, 4);

  if (!sm) {
    levels.push({
      name: "root entry",
      address: rootAt,
      raw: rawQwords(root),
      fields: { bus, P: f(root, ROOT.P) === 1, CTP: hex(getAddr(root, ROOT.CTP_LO, ROOT.CTP_HI)) },
    });
    if (f(root, ROOT.P) === 0) return { levels, result: fault(FR.ROOT_NOT_PRESENT) };
    if ((root[0]! & 0xffe) !== 0 || root[2] !== 0 || root[3] !== 0) return { levels, result: fault(FR.ROOT_RSVD) };
    const ctxAt = getAddr(root, ROOT.CTP_LO, ROOT.CTP_HI) + devfn * 16;
    const c = descriptorWords(memory, ctxAt, 4);
    const tt = f(c, CTX.TT);
    const ssLevels = f(c, CTX.AW) + 2;
    levels.push({
      name: "context entry",
      address: ctxAt,
      raw: rawQwords(c),
      fields: {
        devfn,
        P: f(c, CTX.P) === 1,
        FPD: f(c, CTX.FPD) === 1,
        TT: TT_NAME[tt] ?? `reserved ${tt}`,
        AW: `${f(c, CTX.AW)} (${ssLevels}-level, ${12 + 9 * ssLevels}-bit)`,
        DID: f(c, CTX.DID),
        SLPTPTR: hex(getAddr(c, CTX.SLPTPTR_LO, CTX.SLPTPTR_HI)),
      },
    });
    if (f(c, CTX.P) === 0) return { levels, result: fault(FR.CTX_NOT_PRESENT) };
    for (let i = 0; i < 4; i++) if ((c[i]! & CTX_RSVD[i]!) !== 0) return { levels, result: fault(FR.CTX_RSVD) };
    if (pasid >= 0) return { levels, result: fault(FR.SM_PASID_IN_LEGACY) };
    if (tt === CTX_TT.PASS_THROUGH && f(ecap, ECAP.PT) === 1) return { levels, result: { pa: iova, perm: "rwx" } };
    if (tt === 3 || tt === CTX_TT.PASS_THROUGH || (tt === CTX_TT.DEV_IOTLB && f(ecap, ECAP.DT) === 0))
      return { levels, result: fault(FR.CTX_INVALID, `TT = ${tt}`) };
    if ((sagaw & (1 << (ssLevels - 2))) === 0)
      return { levels, result: fault(FR.CTX_INVALID, `AW ${ssLevels - 2} not in CAP.SAGAW`) };
    const s: Stage = { root: getAddr(c, CTX.SLPTPTR_LO, CTX.SLPTPTR_HI), levels: ssLevels, largePages: sllps, sm };
    return { levels, result: ssDecode(memory, s, iova, "", levels) };
  }

  // Scalable mode: devfn 0-127 through the lower half of the root entry, 128-255 through the upper.
  const upper = devfn >= 128;
  const present = f(root, upper ? SM_ROOT.UP : SM_ROOT.LP) === 1;
  const ctp = upper ? getAddr(root, SM_ROOT.UCTP_LO, SM_ROOT.UCTP_HI) : getAddr(root, SM_ROOT.LCTP_LO, SM_ROOT.LCTP_HI);
  levels.push({
    name: "SM root entry",
    address: rootAt,
    raw: rawQwords(root),
    fields: {
      bus,
      LP: f(root, SM_ROOT.LP) === 1,
      LCTP: hex(getAddr(root, SM_ROOT.LCTP_LO, SM_ROOT.LCTP_HI)),
      UP: f(root, SM_ROOT.UP) === 1,
      UCTP: hex(getAddr(root, SM_ROOT.UCTP_LO, SM_ROOT.UCTP_HI)),
    },
  });
  if (!present) return { levels, result: fault(FR.SM_ROOT_NOT_PRESENT, upper ? "UP clear" : "LP clear") };
  if ((root[0]! & 0xffe) !== 0 || (root[2]! & 0xffe) !== 0) return { levels, result: fault(FR.SM_ROOT_RSVD) };
  const ctxAt = ctp + (devfn & 0x7f) * 32;
  const c = descriptorWords(memory, ctxAt, 8);
  const pdts = f(c, SM_CTX.PDTS);
  const dir = getAddr(c, SM_CTX.PASIDDIRPTR_LO, SM_CTX.PASIDDIRPTR_HI);
  levels.push({
    name: "SM context",
    address: ctxAt,
    raw: rawQwords(c.slice(0, 4)),
    fields: {
      devfn,
      P: f(c, SM_CTX.P) === 1,
      FPD: f(c, SM_CTX.FPD) === 1,
      DTE: f(c, SM_CTX.DTE) === 1,
      PASIDE: f(c, SM_CTX.PASIDE) === 1,
      PRE: f(c, SM_CTX.PRE) === 1,
      PDTS: `${pdts} (${2 ** (pdts + 7)} directory entries)`,
      PASIDDIRPTR: hex(dir),
      RID_PASID: f(c, SM_CTX.RID_PASID),
    },
  });
  if (f(c, SM_CTX.P) === 0) return { levels, result: fault(FR.SM_CTX_NOT_PRESENT) };
  for (let i = 0; i < 8; i++) if ((c[i]! & SM_CTX_RSVD[i]!) !== 0) return { levels, result: fault(FR.SM_CTX_RSVD) };
  if (f(c, SM_CTX.DTE) === 1 && f(ecap, ECAP.DT) === 0)
    return { levels, result: fault(FR.SM_CTX_INVALID, "DTE without ECAP.DT") };
  if (f(c, SM_CTX.PRE) === 1 && f(ecap, ECAP.PRS) === 0)
    return { levels, result: fault(FR.SM_CTX_INVALID, "PRE without ECAP.PRS") };
  if (pasid >= 0 && f(c, SM_CTX.PASIDE) === 0) return { levels, result: fault(FR.SM_PASIDE_CLEAR) };
  const ep = pasid >= 0 ? pasid : f(c, SM_CTX.RID_PASID);
  if (ep >= 2 ** (pdts + 7 + PASID_PDE_SHIFT)) return { levels, result: fault(FR.SM_PASID_TOO_LARGE, `PASID ${ep}`) };
  const dirAt = dir + Math.floor(ep / 2 ** PASID_PDE_SHIFT) * 8;
  const de = descriptorWords(memory, dirAt, 2);
  const ptp = getAddr(de, PASID_DIR.PTP_LO, PASID_DIR.PTP_HI);
  levels.push({
    name: "PASID dir",
    address: dirAt,
    raw: rawQwords(de),
    fields: {
      index: Math.floor(ep / 2 ** PASID_PDE_SHIFT),
      P: f(de, PASID_DIR.P) === 1,
      FPD: f(de, PASID_DIR.FPD) === 1,
      PTP: hex(ptp),
    },
  });
  if (f(de, PASID_DIR.P) === 0) return { levels, result: fault(FR.SM_PDIR_NOT_PRESENT) };
  if ((de[0]! & 0xffc) !== 0) return { levels, result: fault(FR.SM_PDIR_RSVD) };
  const peAt = ptp + (ep % 2 ** PASID_PDE_SHIFT) * PASID_ENTRY_SIZE;
  const pe = descriptorWords(memory, peAt, 16);
  const pgtt = f(pe, PASID_ENTRY.PGTT);
  const aw = f(pe, PASID_ENTRY.AW);
  const fspm = f(pe, PASID_ENTRY.FSPM);
  const ssRoot = getAddr(pe, PASID_ENTRY.SSPTPTR_LO, PASID_ENTRY.SSPTPTR_HI);
  const fsRoot = getAddr(pe, PASID_ENTRY.FSPTPTR_LO, PASID_ENTRY.FSPTPTR_HI);
  const usesSs = pgtt === PGTT.SS || pgtt === PGTT.NESTED;
  const usesFs = pgtt === PGTT.FS || pgtt === PGTT.NESTED;
  levels.push({
    name: "PASID entry",
    address: peAt,
    raw: rawQwords(pe.slice(0, 8)),
    fields: {
      PASID: pasid >= 0 ? ep : `${ep} (RID_PASID)`,
      P: f(pe, PASID_ENTRY.P) === 1,
      FPD: f(pe, PASID_ENTRY.FPD) === 1,
      PGTT: PGTT_NAME[pgtt] ?? `reserved ${pgtt}`,
      DID: f(pe, PASID_ENTRY.DID),
      ...(usesSs ? { AW: `${aw} (${aw + 2}-level)`, SSPTPTR: hex(ssRoot), SSADE: f(pe, PASID_ENTRY.SSADE) === 1 } : {}),
      ...(usesFs
        ? {
            FSPM: `${fspm} (${fspm === 1 ? 5 : 4}-level)`,
            FSPTPTR: hex(fsRoot),
            SRE: f(pe, PASID_ENTRY.SRE) === 1,
            WPE: f(pe, PASID_ENTRY.WPE) === 1,
            EAFE: f(pe, PASID_ENTRY.EAFE) === 1,
          }
        : {}),
    },
  });
  if (f(pe, PASID_ENTRY.P) === 0) return { levels, result: fault(FR.SM_PTE_NOT_PRESENT) };
  const supported =
    (pgtt === PGTT.FS && f(ecap, ECAP.FLTS) === 1) ||
    (pgtt === PGTT.SS && f(ecap, ECAP.SLTS) === 1) ||
    (pgtt === PGTT.NESTED && f(ecap, ECAP.NEST) === 1) ||
    (pgtt === PGTT.PT && f(ecap, ECAP.PT) === 1);
  if (!supported) return { levels, result: fault(FR.SM_PTE_INVALID, `PGTT ${pgtt} not supported`) };
  if (usesSs && (sagaw & (1 << aw)) === 0) return { levels, result: fault(FR.SM_PTE_INVALID, `AW ${aw} not in SAGAW`) };
  if (usesFs && (fspm > 1 || (fspm === 1 && f(cap, CAP.FL5LP) === 0)))
    return { levels, result: fault(FR.SM_PTE_INVALID, `FSPM ${fspm} not supported`) };
  if (f(pe, PASID_ENTRY.SSADE) === 1 && f(ecap, ECAP.SLADS) === 0)
    return { levels, result: fault(FR.SM_PTE_INVALID, "SSADE without ECAP.SLADS") };
  for (let i = 6; i < 16; i++) if (pe[i] !== 0) return { levels, result: fault(FR.SM_PTE_RSVD) };
  if (pgtt === PGTT.PT) return { levels, result: { pa: iova, perm: "rwx" } };
  const ss: Stage = { root: ssRoot, levels: aw + 2, largePages: sllps, sm: true };
  if (pgtt === PGTT.SS) return { levels, result: ssDecode(memory, ss, iova, "", levels) };
  // 2 MiB first-stage leaves always; 1 GiB ones with CAP.FL1GP.
  const fs: Stage = { root: fsRoot, levels: fspm === 1 ? 5 : 4, largePages: 1 | (f(cap, CAP.FL1GP) << 1), sm: true };
  return { levels, result: fsDecode(memory, fs, iova, levels, pgtt === PGTT.NESTED ? ss : undefined) };
};
