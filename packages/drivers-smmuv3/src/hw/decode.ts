/**
 * An independent decoder of an SMMUv3 translation path, for tools (`iommu-sim inspect`): it reads the registers
 * (CR0ACK, STRTAB_BASE/_CFG, IDR5) and memory only, and reports the stream table entry, the context descriptor (its
 * address translated through stage 2 for nested STEs) and each LPAE level with raw value and decoded fields, then
 * the output address or the fault. It computes geometry with the spec's rules (setupStage) but walks with its own
 * loop, so it is a second reading of the tables the model walks.
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
import { StageParams, setupStage } from "./lpae-walk.js";
import { CR0, IDR5, PA_SIZE_BITS, REG, STRTAB_BASE, STRTAB_BASE_CFG, STRTAB_FMT } from "./registers.js";
import {
  CD,
  CD_SIZE,
  L1_CD,
  L1_STD,
  PTE,
  S1DSS,
  S1FMT,
  STE,
  STE_CFG,
  STE_SIZE,
  TG0_GRANULE_LG2,
} from "./structures.js";

const CFG_NAME: Record<number, string> = { 0: "abort", 4: "bypass", 5: "S1", 6: "S2", 7: "nested" };

const hex = (n: number) => `0x${n.toString(16)}`;
const f = (w: number[], fl: Field) => getField(w, fl);

/** Walk one LPAE stage for `input`, pushing each level (prefix `stage`); `xlate` maps table addresses (nested S1). */
function walk(
  mem: PhysicalMemory,
  p: StageParams,
  input: number,
  stage: string,
  levels: TranslationLevel[] | undefined,
  xlate: (ipa: number) => number | undefined = (x) => x,
): TranslationResult {
  if (!(input < p.inLimit)) return { fault: `${stage}translation fault (input beyond ${p.ias} bits)` };
  let table = p.ttb;
  for (let level = p.startLevel; level <= 3; level++) {
    const shift = p.granLg2 + p.bpl * (3 - level);
    const n = level === p.startLevel ? p.rootBits : p.bpl;
    const index = Math.floor(input / 2 ** shift) % 2 ** n;
    const tpa = xlate(table);
    if (tpa === undefined) return { fault: `stage-2 fault fetching the ${stage}L${level} table at IPA ${hex(table)}` };
    const at = tpa + index * 8;
    const w = descriptorWords(mem, at, 2);
    const valid = f(w, PTE.VALID) === 1;
    const isTable = valid && f(w, PTE.TYPE) === 1 && level < 3;
    const oaRaw = (w[0]! & ~(2 ** p.granLg2 - 1)) >>> 0;
    const oa = oaRaw + f(w, PTE.OA_HI) * TWO_32;
    const kind = !valid ? "invalid" : isTable ? "table" : level === 3 ? "page" : "block";
    const fields: TranslationLevel["fields"] = { index, valid };
    if (valid) {
      fields.OA = hex(oa);
      if (!isTable) {
        fields.AF = f(w, PTE.AF) === 1;
        if (p.stage2) {
          fields.S2AP = (f(w, PTE.AP2) << 1) | f(w, PTE.AP1);
        } else {
          fields.AP = (f(w, PTE.AP2) << 1) | f(w, PTE.AP1);
          fields.AttrIndx = f(w, PTE.ATTRINDX);
          fields.nG = f(w, PTE.NG) === 1;
        }
        fields.XN = f(w, PTE.XN) === 1;
        fields.DBM = f(w, PTE.DBM) === 1;
      }
    }
    levels?.push({ name: `${stage}L${level} ${kind}`, address: at, raw: rawQwords(w), fields });
    if (!valid) return { fault: `${stage}translation fault at level ${level}` };
    if (isTable) {
      table = oa;
      continue;
    }
    if (level < 3 && (p.blockLevels & (1 << level)) === 0)
      return { fault: `${stage}translation fault: block at level ${level}` };
    if (f(w, PTE.AF) === 0 && !p.affd && !p.ha) return { fault: `${stage}access flag fault at level ${level}` };
    const size = 2 ** shift;
    const ap2 = f(w, PTE.AP2);
    const ap1 = f(w, PTE.AP1);
    const perm = p.stage2
      ? `${ap1 ? "r" : "-"}${ap2 ? "w" : "-"}${f(w, PTE.XN) ? "-" : "x"}`
      : `r${ap2 ? "-" : "w"}${f(w, PTE.XN) ? "-" : "x"}`;
    return { pa: oa - (oa % size) + (input % size), size, perm };
  }
  return { fault: `${stage}translation fault` };
}

/**
 * Decode an SMMUv3's translation of (`requesterId` = StreamID, `pasid` = SubstreamID, `iova`).
 * @linux what arm_smmu_get_step_for_sid / arm_smmu_get_cd_ptr locate, read as the SMMU reads them
 */
export const decodeSmmuv3Translation: TranslationDecoder = ({ memory, readReg, requesterId: sid, pasid, iova }) => {
  const levels: TranslationLevel[] = [];
  if (fieldGet(readReg(REG.CR0ACK.offset), CR0.SMMUEN) === 0)
    return { levels, result: { fault: "SMMU disabled (GBPA decides)" } };
  const oas = PA_SIZE_BITS[fieldGet(readReg(REG.IDR5.offset), IDR5.OAS)] ?? 48;
  const cfgReg = readReg(REG.STRTAB_BASE_CFG.offset);
  const baseW = [readReg(REG.STRTAB_BASE.offset), readReg(REG.STRTAB_BASE.offset + 4)];
  const base = getAddr(baseW, STRTAB_BASE.ADDR_LO, STRTAB_BASE.ADDR_HI);
  if (sid >= 2 ** fieldGet(cfgReg, STRTAB_BASE_CFG.LOG2SIZE)) return { levels, result: { fault: "C_BAD_STREAMID" } };
  let steAt = base + sid * STE_SIZE;
  if (fieldGet(cfgReg, STRTAB_BASE_CFG.FMT) === STRTAB_FMT.TWO_LEVEL) {
    const split = fieldGet(cfgReg, STRTAB_BASE_CFG.SPLIT);
    const l1At = base + Math.floor(sid / 2 ** split) * 8;
    const l1 = descriptorWords(memory, l1At, 2);
    const l2 = getAddr(l1, L1_STD.L2PTR_LO, L1_STD.L2PTR_HI);
    levels.push({
      name: "L1 STD",
      address: l1At,
      raw: rawQwords(l1),
      fields: { SPAN: f(l1, L1_STD.SPAN), L2Ptr: hex(l2) },
    });
    if (f(l1, L1_STD.SPAN) === 0) return { levels, result: { fault: "C_BAD_STREAMID (L1 descriptor not valid)" } };
    steAt = l2 + (sid % 2 ** split) * STE_SIZE;
  }
  const ste = descriptorWords(memory, steAt, 16);
  const cfg = f(ste, STE.CONFIG);
  const s1ctx = getAddr(ste, STE.S1CTXPTR_LO, STE.S1CTXPTR_HI);
  const s2ttb = getAddr(ste, STE.S2TTB_LO, STE.S2TTB_HI);
  levels.push({
    name: "STE",
    address: steAt,
    raw: rawQwords(ste.slice(0, 8)),
    fields: {
      V: f(ste, STE.V) === 1,
      Config: CFG_NAME[cfg] ?? `reserved ${cfg}`,
      ...(cfg & 1
        ? { S1Fmt: f(ste, STE.S1FMT), S1ContextPtr: hex(s1ctx), S1CDMax: f(ste, STE.S1CDMAX), S1DSS: f(ste, STE.S1DSS) }
        : {}),
      ...(cfg & 2 && cfg !== STE_CFG.BYPASS
        ? {
            S2VMID: f(ste, STE.S2VMID),
            S2T0SZ: f(ste, STE.S2T0SZ),
            S2SL0: f(ste, STE.S2SL0),
            S2TG: f(ste, STE.S2TG),
            S2TTB: hex(s2ttb),
          }
        : {}),
      EATS: f(ste, STE.EATS),
    },
  });
  if (f(ste, STE.V) === 0) return { levels, result: { fault: "C_BAD_STE (not valid)" } };
  if (cfg === STE_CFG.ABORT) return { levels, result: { fault: "abort (STE.Config = abort)" } };
  if (cfg === STE_CFG.BYPASS) return { levels, result: { pa: iova, perm: "rwx" } };
  let s2: StageParams | undefined;
  if (cfg & 2) {
    s2 = new StageParams();
    const g = TG0_GRANULE_LG2[f(ste, STE.S2TG)] ?? -1;
    const sl0 = f(ste, STE.S2SL0);
    const start = g === 12 ? 2 - sl0 : 3 - sl0;
    const ps = Math.min(PA_SIZE_BITS[f(ste, STE.S2PS)] ?? 48, oas);
    if (!setupStage(s2, s2ttb, g, f(ste, STE.S2T0SZ), start, ps, true))
      return { levels, result: { fault: "C_BAD_STE (stage-2 geometry)" } };
    s2.affd = f(ste, STE.S2AFFD) === 1;
    s2.stage2 = true;
  }
  const s2x = (ipa: number): number | undefined => {
    if (!s2 || cfg !== STE_CFG.NESTED) return ipa;
    const r = walk(memory, s2, ipa, "S2 ", undefined);
    return r.fault === undefined ? r.pa : undefined;
  };
  if (!(cfg & 1)) return { levels, result: walk(memory, s2!, iova, "S2 ", levels) };
  // Stage 1: the CD.
  let cdIdx = 0;
  if (pasid >= 0) {
    if (f(ste, STE.S1CDMAX) === 0 || pasid >= 2 ** f(ste, STE.S1CDMAX))
      return { levels, result: { fault: "C_BAD_SUBSTREAMID" } };
    cdIdx = pasid;
  } else if (f(ste, STE.S1DSS) === S1DSS.TERMINATE && f(ste, STE.S1CDMAX) !== 0) {
    return { levels, result: { fault: "no SubstreamID: S1DSS terminates" } };
  } else if (f(ste, STE.S1DSS) === S1DSS.BYPASS && f(ste, STE.S1CDMAX) !== 0) {
    return { levels, result: s2 ? walk(memory, s2, iova, "S2 ", levels) : { pa: iova, perm: "rwx" } };
  }
  let cdIpa = s1ctx + cdIdx * CD_SIZE;
  if (f(ste, STE.S1FMT) !== S1FMT.LINEAR) {
    const leafBits = f(ste, STE.S1FMT) === S1FMT.L2_4K ? 6 : 10;
    const l1Ipa = s1ctx + Math.floor(cdIdx / 2 ** leafBits) * 8;
    const l1At = s2x(l1Ipa);
    if (l1At === undefined)
      return { levels, result: { fault: `stage-2 fault fetching the L1 CD at IPA ${hex(l1Ipa)}` } };
    const l1 = descriptorWords(memory, l1At, 2);
    const l2 = getAddr(l1, L1_CD.L2PTR_LO, L1_CD.L2PTR_HI);
    levels.push({
      name: "L1 CD",
      address: l1At,
      raw: rawQwords(l1),
      fields: { V: f(l1, L1_CD.V) === 1, L2Ptr: hex(l2) },
    });
    if (f(l1, L1_CD.V) === 0) return { levels, result: { fault: "C_BAD_SUBSTREAMID (L1 CD not valid)" } };
    cdIpa = l2 + (cdIdx % 2 ** leafBits) * CD_SIZE;
  }
  const cdAt = s2x(cdIpa);
  if (cdAt === undefined) return { levels, result: { fault: `stage-2 fault fetching the CD at IPA ${hex(cdIpa)}` } };
  const cd = descriptorWords(memory, cdAt, 16);
  const ttb0 = getAddr(cd, CD.TTB0_LO, CD.TTB0_HI);
  levels.push({
    name: cfg === STE_CFG.NESTED ? `CD (IPA ${hex(cdIpa)})` : "CD",
    address: cdAt,
    raw: rawQwords(cd.slice(0, 8)),
    fields: {
      V: f(cd, CD.V) === 1,
      ASID: f(cd, CD.ASID),
      T0SZ: f(cd, CD.T0SZ),
      TG0: f(cd, CD.TG0),
      IPS: f(cd, CD.IPS),
      EPD0: f(cd, CD.EPD0) === 1,
      AA64: f(cd, CD.AA64) === 1,
      TTB0: hex(ttb0),
    },
  });
  if (f(cd, CD.V) === 0) return { levels, result: { fault: "C_BAD_CD (not valid)" } };
  if (f(cd, CD.EPD0) === 1) return { levels, result: { fault: "translation fault (EPD0: TTB0 walks disabled)" } };
  const s1 = new StageParams();
  const g1 = TG0_GRANULE_LG2[f(cd, CD.TG0)] ?? -1;
  const ips = Math.min(PA_SIZE_BITS[f(cd, CD.IPS)] ?? 48, oas);
  if (!setupStage(s1, ttb0, g1, f(cd, CD.T0SZ), -1, ips, false))
    return { levels, result: { fault: "C_BAD_CD (geometry)" } };
  s1.affd = f(cd, CD.AFFD) === 1;
  const r1 = walk(memory, s1, iova, cfg === STE_CFG.NESTED ? "S1 " : "", levels, s2x);
  if (r1.fault !== undefined || cfg !== STE_CFG.NESTED || !s2) return { levels, result: r1 };
  const r2 = walk(memory, s2, r1.pa!, "S2 ", levels);
  return { levels, result: r2.fault !== undefined ? r2 : { ...r2, perm: r1.perm ?? "" } };
};
