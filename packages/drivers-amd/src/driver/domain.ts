/**
 * The driver's domains and per-device state: protection domains (a v1 or v2 page table on core's engine, a domain
 * ID shared by every IOMMU it is attached to, the devices and PASIDs using it, its dirty-tracking state and the
 * vIOMMUs built on it as a nest parent), nested domains (a guest DTE on a vIOMMU), and the device data a probed
 * device carries (its DeviceID, the alias whose DTE it shares, ATS/PRI/PASID, its GCR3 table and PASIDs).
 * @linux drivers/iommu/amd/amd_iommu_types.h struct protection_domain, struct iommu_dev_data, struct pdom_iommu_info,
 * struct pdom_dev_data, struct nested_domain, struct amd_iommu_viommu, struct guest_domain_mapping_info
 */
import {
  type Device,
  IOMMU_DOMAIN,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IommuViommu,
  type IoPageTable,
  ptDomainInit,
} from "@iommu-sim/core";
import type { Gcr3Table } from "./gcr3.js";
import type { AmdIommu } from "./iommu.js";

/** A protection domain's page-table mode. @linux enum protection_domain_mode (PD_MODE_V1, PD_MODE_V2) */
export const PD_MODE = { V1: 1, V2: 2 } as const;

/**
 * Per-device driver state.
 * @linux struct iommu_dev_data
 */
export class IommuDevData {
  /** The domain the device's DTE points at (RID). @linux iommu_dev_data.domain */
  domain: IommuDomain | undefined;
  /** ATS enabled (the DTE's I bit; device-TLB flushes follow every change). @linux iommu_dev_data.ats_enabled */
  atsEnabled = false;
  /** The GCR3 table, while a v2 domain is on the RID or a PASID is attached. @linux iommu_dev_data.gcr3_info */
  gcr3: Gcr3Table | undefined;
  /** Domains attached at PASIDs. @linux the pdom_dev_data entries naming this device */
  readonly pasidDomains = new Map<number, ProtectionDomain>();
  /** On its IOMMU's IOPF queue, so its DTE has PPR. @linux iommu_dev_data.ppr */
  ppr = false;

  constructor(
    readonly dev: Device,
    readonly iommu: AmdIommu,
    /** The function's own DeviceID. @linux iommu_dev_data.devid */
    readonly devid: number,
    /** The DeviceID its DMA carries (an IVRS alias), which gets a copy of the DTE. @linux the alias table entry */
    readonly alias: number,
    readonly atsSupported: boolean,
    /** PRI usable (device PRI + IOMMU PPR). @linux iommu_dev_data.pri_enabled */
    readonly pri: boolean,
    /** PASID bits usable. @linux iommu_dev_data.max_pasids (as bits) */
    readonly pasidBits: number,
  ) {}

  /** The DeviceIDs whose DTEs this device uses (its own and its alias). @linux clone_aliases */
  get devids(): number[] {
    return this.alias === this.devid ? [this.devid] : [this.devid, this.alias];
  }

  /**
   * PASIDs the device may use: the smaller of its PASID capability and the IOMMU's PASmax limit; 0 without PASID.
   * @linux iommu_dev_data.max_pasids (min(amd_iommu_max_pasid, pci_max_pasids))
   */
  get maxPasids(): number {
    return this.pasidBits ? Math.min(2 ** this.pasidBits, 2 ** this.iommu.pasidBits - 1) : 0;
  }
}

/** A (device, PASID) a protection domain is attached at. @linux struct pdom_dev_data */
export interface PdomDevData {
  readonly data: IommuDevData;
  readonly pasid: number;
}

/**
 * A paging domain: a v1 (host) or v2 (x86-64, GCR3) table and a domain ID.
 * @linux struct protection_domain (PD_MODE_V1 on iommupt amdv1, PD_MODE_V2 on iommupt x86_64)
 */
export class ProtectionDomain extends IommuDomain {
  /** Devices attached at their RID. @linux protection_domain.dev_list */
  readonly devices = new Set<IommuDevData>();
  /** (device, PASID) attachments. @linux protection_domain.dev_data_list */
  readonly pasidDevs = new Set<PdomDevData>();
  /** IOMMUs the domain is attached through, with device counts. @linux protection_domain.iommu_array */
  readonly iommus = new Map<AmdIommu, number>();
  /** vIOMMUs with this domain as their nest parent. @linux protection_domain.viommu_list */
  readonly viommus = new Set<AmdViommu>();
  /** Host access/dirty updates on (the DTE's HAD). @linux protection_domain.dirty_tracking */
  dirtyTracking = false;

  constructor(
    ops: IommuDomainOps,
    readonly pt: IoPageTable,
    /** @linux protection_domain.id */
    readonly id: number,
    /** @linux protection_domain.pd_mode */
    readonly pdMode: number,
    /** Allocated with IOMMU_HWPT_ALLOC_NEST_PARENT. */
    readonly nestParent: boolean,
    dirtyOps: IommuDirtyOps | undefined,
  ) {
    super({
      ops,
      type: IOMMU_DOMAIN.UNMANAGED,
      ...ptDomainInit(pt),
      ...(dirtyOps ? { dirtyOps } : {}),
      name: `amd_pdom(${id}${pdMode === PD_MODE.V2 ? ",v2" : ""}${nestParent ? ",parent" : ""})`,
    });
  }

  /** DTE host paging mode: the v1 table's levels; 0 (no host translation) for v2. @linux protection_domain.iop.mode */
  get mode(): number {
    return this.pdMode === PD_MODE.V1 ? this.pt.levels : 0;
  }
}

/**
 * The host domain ID a guest domain ID maps to in one vIOMMU, shared by its nested domains.
 * @linux struct guest_domain_mapping_info
 */
export interface GuestDomainMapping {
  hdomId: number;
  users: number;
}

/**
 * The driver's side of an AMD vIOMMU: its nest parent and the guest-to-host domain ID map.
 * @linux struct amd_iommu_viommu
 */
export class AmdViommu {
  /** @linux amd_iommu_viommu.gdomid_array */
  readonly gdomids = new Map<number, GuestDomainMapping>();

  constructor(
    readonly core: IommuViommu,
    /** @linux amd_iommu_viommu.parent */
    readonly parent: ProtectionDomain,
  ) {}
}

/**
 * A nested domain: the guest's DTE (its GCR3 table, guest paging mode, GIOV, PPR) over the vIOMMU's nest parent.
 * @linux struct nested_domain
 */
export class AmdNestedDomain extends IommuDomain {
  /** Devices attached. */
  readonly devices = new Set<IommuDevData>();

  constructor(
    ops: IommuDomainOps,
    readonly viommu: AmdViommu,
    /** The guest DTE as eight 32-bit words. @linux nested_domain.gdte */
    readonly gdte: readonly number[],
    /** @linux nested_domain.gdom_id */
    readonly gdomId: number,
    /** @linux nested_domain.gdom_info */
    readonly gdomInfo: GuestDomainMapping,
  ) {
    super({ ops, type: IOMMU_DOMAIN.NESTED, name: `amd_nested(gdom ${gdomId})` });
  }
}
