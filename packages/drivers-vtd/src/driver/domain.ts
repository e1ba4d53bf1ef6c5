/**
 * The driver's domains and per-device state: paging domains on core's engine (first stage in the x86-64 format,
 * second stage in the VT-d format), nested domains (a guest's first-stage table over a second-stage nesting
 * parent), the per-unit domain IDs a domain holds, the cache tags that say which (unit, DID, PASID, device)
 * invalidations a domain change needs, and the device info a probed device carries.
 * @linux drivers/iommu/intel/iommu.h: struct dmar_domain, struct iommu_domain_info, struct device_domain_info,
 * struct cache_tag (cache.c); nested.c
 */
import {
  type Device,
  IOMMU_DOMAIN,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IoPageTable,
  ptDomainInit,
} from "@iommu-sim/core";
import type { IntelIommu } from "./iommu.js";
import { QiBatch } from "./qi-batch.js";

/** What a stage-1 nested configuration carries. @linux struct iommu_hwpt_vtd_s1 */
export interface VtdS1Cfg {
  flags: number;
  pgtblAddr: number;
  addrWidth: number;
}

/**
 * One invalidation target of a domain: a unit, the DID the domain has there, the PASID and the device.
 * @linux struct cache_tag (CACHE_TAG_IOTLB / _DEVTLB / _NESTING_IOTLB / _NESTING_DEVTLB)
 */
export interface CacheTag {
  iommu: IntelIommu;
  did: number;
  pasid: number;
  info: DeviceDomainInfo;
  /** Tag of a nested child on its parent (flushed through the parent's second-stage invalidations). */
  nesting: boolean;
}

/**
 * A domain's use of one unit.
 * @linux struct iommu_domain_info
 */
export interface IommuDomainInfo {
  did: number;
  refcnt: number;
}

/** Common state of paging and nested domains. @linux the fields struct dmar_domain has for paging and nested domains alike */
export interface DmarDomainCommon {
  /** @linux dmar_domain.iommu_array */
  readonly iommuArray: Map<IntelIommu, IommuDomainInfo>;
  /** @linux dmar_domain.cache_tags */
  readonly cacheTags: CacheTag[];
  /** @linux dmar_domain.qi_batch */
  readonly qiBatch: QiBatch;
}

/**
 * A paging domain.
 * @linux struct dmar_domain (paging: fspt / sspt)
 */
export class DmarDomain extends IommuDomain implements DmarDomainCommon {
  readonly iommuArray = new Map<IntelIommu, IommuDomainInfo>();
  readonly cacheTags: CacheTag[] = [];
  readonly qiBatch = new QiBatch();
  /** Devices (and PASIDs) attached. @linux dmar_domain.devices / dev_pasids */
  readonly attached = new Set<{ info: DeviceDomainInfo; pasid: number }>();
  /** Nested domains on this parent. @linux dmar_domain.s1_domains */
  readonly nestedChildren = new Set<DmarNestedDomain>();
  /** Dirty tracking is on (SSADE in every PASID entry). @linux dmar_domain.dirty_tracking */
  dirtyTracking = false;

  constructor(
    ops: IommuDomainOps,
    readonly pt: IoPageTable,
    /** First-stage (x86-64) or second-stage (VT-d) table. @linux intel_domain_is_fs_paging */
    readonly firstStage: boolean,
    /** @linux dmar_domain.nested_parent */
    readonly nestParent: boolean,
    dirtyOps: IommuDirtyOps | undefined,
    readonly unitName: string,
  ) {
    super({
      ops,
      type: IOMMU_DOMAIN.UNMANAGED,
      ...ptDomainInit(pt),
      ...(dirtyOps ? { dirtyOps } : {}),
      name: `dmar_domain(${firstStage ? "fs" : "ss"}${nestParent ? ",parent" : ""})`,
    });
  }

  /** Levels of the table (the AGAW as levels). */
  get levels(): number {
    return this.pt.levels;
  }
}

/**
 * A nested domain: the guest's first-stage table (guest-physical) over a second-stage nesting parent.
 * @linux struct dmar_domain with s2_domain / s1_cfg (nested.c)
 */
export class DmarNestedDomain extends IommuDomain implements DmarDomainCommon {
  readonly iommuArray = new Map<IntelIommu, IommuDomainInfo>();
  readonly cacheTags: CacheTag[] = [];
  readonly qiBatch = new QiBatch();
  readonly attached = new Set<{ info: DeviceDomainInfo; pasid: number }>();

  constructor(
    ops: IommuDomainOps,
    readonly parent: DmarDomain,
    readonly s1: VtdS1Cfg,
  ) {
    super({ ops, type: IOMMU_DOMAIN.NESTED, name: `dmar_nested(${parent.name})` });
  }
}

/** Either kind of domain the driver tags caches for. @linux struct dmar_domain (paging or nested) */
export type DmarAnyDomain = DmarDomain | DmarNestedDomain;

/** Whether invalidations of `d` are PASID-based (first-stage translations). @linux intel_domain_use_piotlb */
export function usePiotlb(d: DmarAnyDomain): boolean {
  return d instanceof DmarNestedDomain || d.firstStage;
}

/** PASID table of a device in scalable mode. @linux struct pasid_table */
export interface PasidTable {
  /** Directory pages. */
  dirPa: number;
  order: number;
  /** @linux pasid_table.max_pasid */
  maxPasid: number;
  /** Leaf tables by directory index. */
  readonly leaves: Map<number, number>;
}

/**
 * Per-device state.
 * @linux struct device_domain_info
 */
export class DeviceDomainInfo {
  /** The domain attached at the RID (IOMMU_NO_PASID). */
  domain: IommuDomain | undefined = undefined;
  /** Domains attached at PASIDs. */
  readonly pasids = new Map<number, IommuDomain>();
  /** @linux device_domain_info.ats_enabled */
  atsEnabled = false;
  /** @linux device_domain_info.iopf_refcount */
  iopfRefcount = 0;
  pasidTable: PasidTable | undefined = undefined;

  constructor(
    readonly dev: Device,
    readonly iommu: IntelIommu,
    readonly segment: number,
    readonly bus: number,
    readonly devfn: number,
    /** Requester IDs whose context entries the device needs (its own first, then its DMA aliases). */
    readonly rids: readonly number[],
    /** @linux device_domain_info.ats_supported / pasid_supported / pri_supported */
    readonly atsSupported: boolean,
    readonly pasidBits: number,
    readonly priSupported: boolean,
  ) {}

  /** @linux PCI_DEVID(info->bus, info->devfn) */
  get rid(): number {
    return (this.bus << 8) | this.devfn;
  }

  /** ATS invalidation queue depth. @linux device_domain_info.ats_qdep */
  get atsQdep(): number {
    return 32;
  }
}
