/**
 * STE and CD images for each kind of attachment: abort, bypass, CD-table (stage 1), stage 2, nested; and the
 * stage-1 context descriptor of a paging domain. Pure functions of their inputs, like the kernel's make helpers
 * (which its KUnit test exercises the same way).
 * @linux arm-smmu-v3.c: arm_smmu_make_abort_ste, arm_smmu_make_bypass_ste, arm_smmu_make_cdtable_ste,
 * arm_smmu_make_s2_domain_ste, arm_smmu_make_s1_cd; arm-smmu-v3-iommufd.c: arm_smmu_make_nested_cd_table_ste,
 * arm_smmu_make_nested_domain_ste
 */
import { type EntryQwords, newEntry } from "./entry-writer.js";
import type { ArmLpaeS1Cfg, ArmLpaeS2Cfg } from "./io-pgtable-arm.js";
import { CD, prep64, STE, STE_NESTING_ALLOWED, STE_VAL } from "./regs.js";

/** SMMU features the make helpers look at. @linux arm_smmu_device.features (ARM_SMMU_FEAT_*) */
export interface SteFeatures {
  /** IDR1.ATTR_TYPES_OVR. @linux ARM_SMMU_FEAT_ATTR_TYPES_OVR */
  attrTypesOvr: boolean;
  /** Stalls supported. @linux ARM_SMMU_FEAT_STALLS */
  stalls: boolean;
  /** E2H stream world. @linux ARM_SMMU_FEAT_E2H */
  e2h: boolean;
}

/** A CD table as an STE points at it. @linux struct arm_smmu_ctx_desc_cfg */
export interface CdTableRef {
  /** Physical address of the table (linear) or of its L1 table. @linux cdtab_dma */
  pa: number;
  /** STRTAB_STE_0_S1FMT_*. */
  s1fmt: number;
  /** log2 of the number of CDs. */
  s1cdmax: number;
}

/** An STE that aborts every transaction. @linux arm_smmu_make_abort_ste */
export function makeAbortSte(target: EntryQwords = newEntry()): EntryQwords {
  target.fill(0n);
  target[0] = STE.V.mask | prep64(STE.CFG, STE_VAL.CFG_ABORT);
  return target;
}

/** An STE that lets transactions through untranslated. @linux arm_smmu_make_bypass_ste */
export function makeBypassSte(feat: SteFeatures, target: EntryQwords = newEntry()): EntryQwords {
  target.fill(0n);
  target[0] = STE.V.mask | prep64(STE.CFG, STE_VAL.CFG_BYPASS);
  if (feat.attrTypesOvr) target[1] = prep64(STE.SHCFG, STE_VAL.SHCFG_INCOMING);
  return target;
}

/** A stage-1 STE pointing at a CD table. @linux arm_smmu_make_cdtable_ste */
export function makeCdtableSte(
  feat: SteFeatures,
  cd: CdTableRef,
  opts: { atsEnabled: boolean; s1dss: number; stallEnabled: boolean },
  target: EntryQwords = newEntry(),
): EntryQwords {
  target.fill(0n);
  target[0] =
    STE.V.mask |
    prep64(STE.CFG, STE_VAL.CFG_S1_TRANS) |
    prep64(STE.S1FMT, cd.s1fmt) |
    (BigInt(cd.pa) & STE.S1CTXPTR_MASK) |
    prep64(STE.S1CDMAX, cd.s1cdmax);
  target[1] =
    prep64(STE.S1DSS, opts.s1dss) |
    prep64(STE.S1CIR, STE_VAL.S1C_CACHE_WBRA) |
    prep64(STE.S1COR, STE_VAL.S1C_CACHE_WBRA) |
    prep64(STE.S1CSH, 3) |
    (feat.stalls && !opts.stallEnabled ? STE.S1STALLD.mask : 0n) |
    prep64(STE.EATS, opts.atsEnabled ? STE_VAL.EATS_TRANS : STE_VAL.EATS_ABT);
  if (feat.attrTypesOvr && opts.s1dss === STE_VAL.S1DSS_BYPASS) {
    target[1] |= prep64(STE.SHCFG, STE_VAL.SHCFG_INCOMING);
  }
  if (feat.e2h) target[1] |= prep64(STE.STRW, STE_VAL.STRW_EL2);
  else {
    target[1] |= prep64(STE.STRW, STE_VAL.STRW_NSEL1);
    // VMID 0 is reserved for stage-2-bypass EL1 STEs.
    target[2] = prep64(STE.S2VMID, 0);
  }
  return target;
}

/** A stage-2 STE for a paging domain. @linux arm_smmu_make_s2_domain_ste */
export function makeS2DomainSte(
  feat: SteFeatures,
  s2: { vmid: number; cfg: ArmLpaeS2Cfg },
  atsEnabled: boolean,
  target: EntryQwords = newEntry(),
): EntryQwords {
  const v = s2.cfg.vtcr;
  target.fill(0n);
  target[0] = STE.V.mask | prep64(STE.CFG, STE_VAL.CFG_S2_TRANS);
  target[1] = prep64(STE.EATS, atsEnabled ? STE_VAL.EATS_TRANS : STE_VAL.EATS_ABT);
  if (feat.attrTypesOvr) target[1] |= prep64(STE.SHCFG, STE_VAL.SHCFG_INCOMING);
  target[2] =
    prep64(STE.S2VMID, s2.vmid) |
    prep64(STE.S2T0SZ, v.tsz) |
    prep64(STE.S2SL0, v.sl) |
    prep64(STE.S2IR0, v.irgn) |
    prep64(STE.S2OR0, v.orgn) |
    prep64(STE.S2SH0, v.sh) |
    prep64(STE.S2TG, v.tg) |
    prep64(STE.S2PS, v.ps) |
    STE.S2AA64.mask |
    STE.S2PTW.mask |
    STE.S2R.mask;
  target[3] = BigInt(s2.cfg.vttbr) & STE.S2TTB_MASK;
  return target;
}

/**
 * A nested STE: the guest's vSTE (stage-1 part: CD table pointer, format, CDMax, S1DSS...) over a stage-2 parent.
 * A vSTE that aborts gives an abort STE; one that bypasses gives the parent's stage-2 STE.
 * @linux arm_smmu_make_nested_domain_ste / arm_smmu_make_nested_cd_table_ste
 */
export function makeNestedDomainSte(
  feat: SteFeatures,
  vste: readonly [bigint, bigint],
  s2: { vmid: number; cfg: ArmLpaeS2Cfg },
  atsEnabled: boolean,
  target: EntryQwords = newEntry(),
): EntryQwords {
  const v0 = vste[0] & STE_NESTING_ALLOWED.Q0;
  const v1 = vste[1] & STE_NESTING_ALLOWED.Q1;
  if (!(v0 & STE.V.mask)) return makeAbortSte(target);
  const cfg = Number((v0 & STE.CFG.mask) >> 1n);
  if (cfg === STE_VAL.CFG_ABORT) return makeAbortSte(target);
  if (cfg === STE_VAL.CFG_BYPASS) return makeS2DomainSte(feat, s2, atsEnabled, target);
  makeS2DomainSte(feat, s2, atsEnabled, target);
  target[0] = STE.V.mask | prep64(STE.CFG, STE_VAL.CFG_NESTED) | (v0 & ~STE.CFG.mask & ~STE.V.mask);
  target[1]! |= v1 | STE.MEV.mask;
  return target;
}

/** A stage-1 CD for a paging domain. @linux arm_smmu_make_s1_cd */
export function makeS1Cd(
  s1: { asid: number; cfg: ArmLpaeS1Cfg; hd: boolean },
  stallEnabled: boolean,
  target: EntryQwords = newEntry(),
): EntryQwords {
  const t = s1.cfg.tcr;
  target.fill(0n);
  target[0] =
    prep64(CD.T0SZ, t.tsz) |
    prep64(CD.TG0, t.tg) |
    prep64(CD.IRGN0, t.irgn) |
    prep64(CD.ORGN0, t.orgn) |
    prep64(CD.SH0, t.sh) |
    CD.EPD1.mask |
    CD.V.mask |
    prep64(CD.IPS, t.ips) |
    CD.AA64.mask |
    (stallEnabled ? CD.S.mask : 0n) |
    CD.R.mask |
    CD.A.mask |
    CD.ASET.mask |
    prep64(CD.ASID, s1.asid);
  if (s1.hd) target[0] |= CD.HA.mask | CD.HD.mask;
  target[1] = BigInt(s1.cfg.ttbr) & CD.TTB0_MASK;
  target[3] = s1.cfg.mair;
  return target;
}
