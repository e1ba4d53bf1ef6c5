/**
 * The driver's domains: paging domains (stage 1 tagged by an ASID, or stage 2 tagged by a VMID) on an ARM LPAE
 * table in core's engine, and nested domains (a guest's vSTE over a stage-2 nesting parent).
 * @linux arm-smmu-v3.h: struct arm_smmu_domain, struct arm_smmu_nested_domain; arm-smmu-v3.c:
 * arm_smmu_domain_finalise
 */
import {
  IOMMU_DOMAIN,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IoPageTable,
  ptDomainInit,
} from "@iommu-sim/core";
import { type ArmLpaeS1Cfg, type ArmLpaeS2Cfg, armLpaeS1Cfg, armLpaeS2Cfg } from "./io-pgtable-arm.js";
import type { ArmSmmuMasterDomain } from "./master.js";
import type { ArmSmmuDevice } from "./smmu.js";
import type { ArmVsmmu } from "./viommu.js";

/** Translation stage of a paging domain. @linux enum arm_smmu_domain_stage */
export const ARM_SMMU_DOMAIN = { S1: 0, S2: 1 } as const;

/**
 * A paging domain.
 * @linux struct arm_smmu_domain
 */
export class ArmSmmuDomain extends IommuDomain {
  /** (master, SSID) pairs attached, directly or through nested children. @linux arm_smmu_domain.devices */
  readonly devices = new Set<ArmSmmuMasterDomain>();
  /** Attached masters with ATS on. @linux arm_smmu_domain.nr_ats_masters */
  nrAtsMasters = 0;
  /** Stage-1 TCR/TTBR/MAIR or stage-2 VTCR/VTTBR, computed once. */
  readonly s1cfg: ArmLpaeS1Cfg | undefined;
  readonly s2cfg: ArmLpaeS2Cfg | undefined;

  constructor(
    ops: IommuDomainOps,
    readonly smmu: ArmSmmuDevice,
    /** @linux arm_smmu_domain.stage */
    readonly stage: number,
    readonly pt: IoPageTable,
    /** ASID (stage 1) or VMID (stage 2). @linux arm_smmu_domain.cd.asid / s2_cfg.vmid */
    readonly tag: number,
    /** @linux arm_smmu_domain.nest_parent */
    readonly nestParent: boolean,
    /** Hardware dirty tracking (HA/HD in the CD, DBM in the PTEs). @linux IO_PGTABLE_QUIRK_ARM_HD */
    readonly hd: boolean,
    dirtyOps: IommuDirtyOps | undefined,
  ) {
    super({
      ops,
      type: IOMMU_DOMAIN.UNMANAGED,
      ...ptDomainInit(pt),
      ...(dirtyOps ? { dirtyOps } : {}),
      diag: smmu.core.diag,
      name: `arm_smmu_${stage === ARM_SMMU_DOMAIN.S1 ? `s1#asid${tag}` : `s2#vmid${tag}`}`,
    });
    const coherent = smmu.feat.coherency;
    this.s1cfg = stage === ARM_SMMU_DOMAIN.S1 ? armLpaeS1Cfg(pt, coherent) : undefined;
    this.s2cfg = stage === ARM_SMMU_DOMAIN.S2 ? armLpaeS2Cfg(pt, coherent) : undefined;
  }

  /** @linux arm_smmu_domain.cd.asid */
  get asid(): number {
    return this.stage === ARM_SMMU_DOMAIN.S1 ? this.tag : 0;
  }

  /** @linux arm_smmu_domain.s2_cfg.vmid */
  get vmid(): number {
    return this.stage === ARM_SMMU_DOMAIN.S2 ? this.tag : 0;
  }
}

/**
 * A nested domain: the guest-owned stage-1 part of an STE (validated vSTE qwords 0–1) over a stage-2 parent.
 * @linux struct arm_smmu_nested_domain
 */
export class ArmSmmuNestedDomain extends IommuDomain {
  constructor(
    ops: IommuDomainOps,
    readonly parent: ArmSmmuDomain,
    /** The validated vSTE (EATS cleared). @linux arm_smmu_nested_domain.ste */
    readonly ste: readonly [bigint, bigint],
    /** The guest asked for ATS (EATS=TRANS with a stage-1 vSTE). @linux arm_smmu_nested_domain.enable_ats */
    readonly enableAts: boolean,
    /**
     * The vIOMMU it was allocated on; undefined for one allocated straight on a parent (kernel-API tests only).
     * @linux arm_smmu_nested_domain.vsmmu
     */
    readonly vsmmu: ArmVsmmu | undefined = undefined,
  ) {
    super({ ops, type: IOMMU_DOMAIN.NESTED, diag: parent.smmu.core.diag, name: `arm_smmu_nested(${parent.name})` });
  }
}

/** The paging domain whose TLB entries a device attached to `d` uses. */
export function pagingOf(d: IommuDomain | undefined): ArmSmmuDomain | undefined {
  if (d instanceof ArmSmmuDomain) return d;
  if (d instanceof ArmSmmuNestedDomain) return d.parent;
  return undefined;
}
