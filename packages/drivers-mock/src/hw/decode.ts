/**
 * An independent decoder of the mock IOMMU's translation path, for tools (`iommu-sim inspect`): it reads the
 * registers and the in-memory structures (device-table entry, PASID directory and leaf, each page-table level) with
 * the spec's field tables only, and reports each one's raw value and decoded fields, then the output or the fault.
 * It shares no code with the model's walker, so it is a second reading of the same spec.
 */
import {
  type Field,
  fieldGet,
  hex64,
  type PhysicalMemory,
  type TranslationDecoder,
  type TranslationLevel,
  type TranslationResult,
} from "@iommu-sim/core";
import {
  BASE,
  CR,
  CTX,
  CTX_MODE,
  CTX_SIZE,
  FAULT_CODE,
  FAULT_REASON,
  PASID_DIRENT,
  PASID_LEAF_LG2,
  PT_BITS_PER_LEVEL,
  PT_GRANULE_LG2,
  PT_MAX_LEAF_LEVEL,
  PTE,
  REG,
} from "../spec/fields.js";

const TWO_32 = 2 ** 32;
const MODE_NAME = ["abort", "bypass", "translate", "nested"];

/** A field of a multi-word descriptor, read from its words. */
function get(words: number[], f: Field): number {
  return fieldGet(words[f.bit >>> 5]!, f);
}

/** A 4 KiB-aligned address split over a LO field (bits 31:12 in place) and a HI field (bits 51:32). */
function addr(words: number[], lo: Field, hi: Field): number {
  return get(words, lo) * 2 ** 12 + get(words, hi) * TWO_32;
}

function words(mem: PhysicalMemory, pa: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(mem.read32(pa + 4 * i) >>> 0);
  return out;
}

function raw(w: number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < w.length; i += 2) out.push(hex64(w[i]!, w[i + 1]!));
  return out;
}

function fault(code: number): TranslationResult {
  return { fault: FAULT_REASON[code] ?? `code ${code}` };
}

/** Walk one stage's tables from `root` (`levels` levels) for `input`, appending each level; resolves to the leaf. */
function walk(
  mem: PhysicalMemory,
  root: number,
  nLevels: number,
  input: number,
  stage: string,
  levels: TranslationLevel[],
  xlateTable: (ipa: number) => number | TranslationResult = (pa) => pa,
): TranslationResult {
  let table = root;
  for (let level = nLevels - 1; level >= 0; level--) {
    const tpa = xlateTable(table);
    if (typeof tpa !== "number") return tpa;
    const shift = PT_GRANULE_LG2 + PT_BITS_PER_LEVEL * level;
    const index = Math.floor(input / 2 ** shift) % 2 ** PT_BITS_PER_LEVEL;
    const at = tpa + index * 8;
    const w = words(mem, at, 2);
    const v = get(w, PTE.V) === 1;
    const t = get(w, PTE.T) === 1;
    const oa = get(w, PTE.OA_LO) * 2 ** 11 + get(w, PTE.OA_HI) * TWO_32;
    const isLeaf = v && !t;
    const name = `${stage}L${level} ${!v ? "invalid" : isLeaf ? "leaf" : "table"}`;
    const fields: TranslationLevel["fields"] = { index, V: v };
    if (v) {
      fields.T = t;
      fields.OA = `0x${oa.toString(16)}`;
      if (isLeaf) {
        fields.R = get(w, PTE.R) === 1;
        fields.W = get(w, PTE.W) === 1;
        fields.NX = get(w, PTE.NX) === 1;
        fields.D = get(w, PTE.D) === 1;
        fields.PRIV = get(w, PTE.PRIV) === 1;
      }
    }
    levels.push({ name, address: at, raw: raw(w), fields });
    if (!v) return fault(FAULT_CODE.TRANSLATION);
    if (get(w, PTE.RES0) !== 0 || get(w, PTE.RES1) !== 0) return fault(FAULT_CODE.BAD_ENTRY);
    if (t) {
      if (level === 0) return fault(FAULT_CODE.BAD_ENTRY);
      table = oa;
      continue;
    }
    if (level > PT_MAX_LEAF_LEVEL) return fault(FAULT_CODE.BAD_ENTRY);
    const size = 2 ** shift;
    const perm = `${get(w, PTE.R) ? "r" : "-"}${get(w, PTE.W) ? "w" : "-"}${get(w, PTE.NX) ? "-" : "x"}`;
    return { pa: oa + (input % size), size, perm };
  }
  return fault(FAULT_CODE.BAD_ENTRY);
}

/**
 * Decode the mock IOMMU's translation of (`requesterId`, `pasid`, `iova`) from registers and memory.
 * @linux none: the mock's spec read by a debugger (drivers/iommu/iommufd/selftest.c has no hardware)
 */
export const decodeMockTranslation: TranslationDecoder = ({ memory, readReg, requesterId, pasid, iova }) => {
  const levels: TranslationLevel[] = [];
  const cr = readReg(REG.CR.offset);
  if (fieldGet(cr, CR.EN) === 0) return { levels, result: { pa: iova, perm: "rwx" } };
  const dtLo = readReg(REG.DT_BASE_LO.offset);
  const dtBase =
    fieldGet(dtLo, BASE.ADDR_LO) * 2 ** 12 + fieldGet(readReg(REG.DT_BASE_HI.offset), BASE.ADDR_HI) * TWO_32;
  const dtEntries = 2 ** fieldGet(dtLo, BASE.LOG2SIZE);
  if (requesterId >= dtEntries) return { levels, result: fault(FAULT_CODE.BAD_DEVICE) };
  const ctxAt = dtBase + requesterId * CTX_SIZE;
  let ctx = words(memory, ctxAt, CTX_SIZE / 4);
  const ctxFields = (w: number[]): TranslationLevel["fields"] => ({
    V: get(w, CTX.V) === 1,
    MODE: MODE_NAME[get(w, CTX.MODE)]!,
    LEVELS: get(w, CTX.LEVELS),
    S1_LEVELS: get(w, CTX.S1_LEVELS),
    DID: get(w, CTX.DID),
    S1ID: get(w, CTX.S1ID),
    PRI: get(w, CTX.PRI) === 1,
    DIRTY: get(w, CTX.DIRTY) === 1,
    PASID_EN: get(w, CTX.PASID_EN) === 1,
    TTB: `0x${addr(w, CTX.TTB_LO, CTX.TTB_HI).toString(16)}`,
    S1TTB: `0x${addr(w, CTX.S1TTB_LO, CTX.S1TTB_HI).toString(16)}`,
  });
  levels.push({ name: "device entry", address: ctxAt, raw: raw(ctx), fields: ctxFields(ctx) });
  if (get(ctx, CTX.V) === 0) return { levels, result: fault(FAULT_CODE.BAD_DEVICE) };
  if (pasid >= 0) {
    if (get(ctx, CTX.PASID_EN) === 0 || pasid >= 2 ** get(ctx, CTX.PASID_BITS)) {
      return { levels, result: fault(FAULT_CODE.BAD_PASID) };
    }
    const dir = addr(ctx, CTX.PASID_DIR_LO, CTX.PASID_DIR_HI);
    const deAt = dir + (pasid >>> PASID_LEAF_LG2) * 8;
    const de = words(memory, deAt, 2);
    const leaf = get(de, PASID_DIRENT.ADDR_LO) * 2 ** 12 + get(de, PASID_DIRENT.ADDR_HI) * TWO_32;
    levels.push({
      name: "PASID dir",
      address: deAt,
      raw: raw(de),
      fields: { V: get(de, PASID_DIRENT.V) === 1, leaf: `0x${leaf.toString(16)}` },
    });
    if (get(de, PASID_DIRENT.V) === 0) return { levels, result: fault(FAULT_CODE.BAD_PASID) };
    const peAt = leaf + (pasid & ((1 << PASID_LEAF_LG2) - 1)) * CTX_SIZE;
    ctx = words(memory, peAt, CTX_SIZE / 4);
    levels.push({ name: "PASID entry", address: peAt, raw: raw(ctx), fields: ctxFields(ctx) });
    if (get(ctx, CTX.V) === 0) return { levels, result: fault(FAULT_CODE.BAD_PASID) };
  }
  const mode = get(ctx, CTX.MODE);
  if (mode === CTX_MODE.ABORT) return { levels, result: fault(FAULT_CODE.ABORT) };
  if (mode === CTX_MODE.BYPASS) return { levels, result: { pa: iova, perm: "rwx" } };
  const ttb = addr(ctx, CTX.TTB_LO, CTX.TTB_HI);
  const nLevels = get(ctx, CTX.LEVELS);
  if (mode === CTX_MODE.TRANSLATE) {
    const r = walk(memory, ttb, nLevels, iova, "", levels);
    return { levels, result: r };
  }
  // Nested: stage-1 tables live at IPAs, each read through stage 2; then the output IPA through stage 2.
  const s2 = (ipa: number): number | TranslationResult => {
    const r = walk(memory, ttb, nLevels, ipa, "S2 ", []);
    return "pa" in r && r.pa !== undefined && r.fault === undefined ? r.pa : fault(FAULT_CODE.S2_TRANSLATION);
  };
  const r1 = walk(memory, addr(ctx, CTX.S1TTB_LO, CTX.S1TTB_HI), get(ctx, CTX.S1_LEVELS), iova, "S1 ", levels, s2);
  if (r1.fault !== undefined || r1.pa === undefined) return { levels, result: r1 };
  const r2 = walk(memory, ttb, nLevels, r1.pa, "S2 ", levels);
  return { levels, result: r2.fault !== undefined ? fault(FAULT_CODE.S2_TRANSLATION) : { ...r2, perm: r1.perm ?? "" } };
};
