/**
 * The driver's domains and per-device state: protection domains (a v1 page table on core's engine, a domain ID
 * shared by every IOMMU it is attached to, and the devices using it) and the device data a probed device carries
 * (its DeviceID, the alias whose DTE it shares, ATS/PRI/PASID).
 * @linux drivers/iommu/amd/amd_iommu_types.h struct protection_domain, struct iommu_dev_data, struct pdom_iommu_info
 */
import {
  type Device,
  IOMMU_DOMAIN,
  IommuDomain,
  type IommuDomainOps,
  type IoPageTable,
  ptDomainInit,
} from "@iommu-sim/core";
import type { AmdIommu } from "./iommu.js";

/**
 * Per-device driver state.
 * @linux struct iommu_dev_data
 */
export class IommuDevData {
  /** The domain the device's DTE points at. @linux iommu_dev_data.domain */
  domain: IommuDomain | undefined;
  /** ATS enabled (the DTE's I bit; device-TLB flushes follow every change). @linux iommu_dev_data.ats_enabled */
  atsEnabled = false;

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
}

/**
 * A paging domain: a v1 table and a domain ID.
 * @linux struct protection_domain (PD_MODE_V1, iommupt amdv1)
 */
export class ProtectionDomain extends IommuDomain {
  /** Devices attached. @linux protection_domain.dev_list */
  readonly devices = new Set<IommuDevData>();
  /** IOMMUs the domain is attached through, with device counts. @linux protection_domain.iommu_array */
  readonly iommus = new Map<AmdIommu, number>();

  constructor(
    ops: IommuDomainOps,
    readonly pt: IoPageTable,
    /** @linux protection_domain.id */
    readonly id: number,
  ) {
    super({
      ops,
      type: IOMMU_DOMAIN.UNMANAGED,
      ...ptDomainInit(pt),
      name: `amd_pdom(${id})`,
    });
  }

  /** Host paging mode (levels). @linux protection_domain.iop.mode */
  get mode(): number {
    return this.pt.levels;
  }
}
