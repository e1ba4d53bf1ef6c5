/**
 * Firmware-described IOMMU linkage of a device: which IOMMU (by firmware node) and the IDs (stream IDs, requester
 * IDs) the device's DMA carries on it.
 */
import { kerr } from "../kernel/errno.js";
import { kfree } from "../kernel/slab.js";
import type { Device } from "../platform/driver-core/device.js";
import type { FwNode } from "../platform/driver-core/fwnode.js";
import { devIommu, devIommuGet } from "./dev-iommu.js";
import type { IommuCore } from "./iommu-core.js";
import { iommuOpsFromFwnode } from "./iommu-device.js";
import type { IommuOps } from "./types.js";

/** Allocation site of {@link iommuFwspecInit}. */
export const FWSPEC_INIT_SITE = "iommu_fwspec_init";
/** Allocation site of {@link iommuFwspecAddIds} (the krealloc beyond the first ID). */
export const FWSPEC_ADD_IDS_SITE = "iommu_fwspec_add_ids";

/** The root complex supports ATS for the device. @linux IOMMU_FWSPEC_PCI_RC_ATS */
export const IOMMU_FWSPEC_PCI_RC_ATS = 1 << 0;
/** The root complex can wait for stalled transactions. @linux IOMMU_FWSPEC_PCI_RC_CANWAIT */
export const IOMMU_FWSPEC_PCI_RC_CANWAIT = 1 << 1;

/**
 * A device's IOMMU as firmware describes it.
 * @linux struct iommu_fwspec
 */
export class IommuFwspec {
  /** IOMMU_FWSPEC_* flags. @linux iommu_fwspec.flags */
  flags = 0;
  /** The IDs, in the order `ofXlate` added them. @linux iommu_fwspec.ids */
  readonly ids: number[] = [];

  constructor(
    /** The IOMMU's firmware node. @linux iommu_fwspec.iommu_fwnode */
    readonly iommuFwnode: FwNode,
  ) {}

  /** @linux iommu_fwspec.num_ids */
  get numIds(): number {
    return this.ids.length;
  }
}

/**
 * The ops of the driver whose instance owns `fwspec`'s node; with no fwspec, those of the first instance
 * registered without a firmware node (the x86 drivers, which find their own instance per device).
 * @linux iommu_fwspec_ops
 */
export function iommuFwspecOps(core: IommuCore, fwspec: IommuFwspec | undefined): IommuOps | undefined {
  return iommuOpsFromFwnode(core, fwspec?.iommuFwnode);
}

/**
 * Give `dev` a fwspec on the IOMMU at `iommuFwnode`. EPROBE_DEFER while no instance is registered for that node;
 * success when the device already has a fwspec of the same driver, EINVAL when of another; ENOMEM from the fault
 * sites `dev_iommu_get` and `iommu_fwspec_init` (a `dev_iommu` allocated here stays; the caller frees it). Needs the
 * probe-device lock.
 * @linux iommu_fwspec_init
 */
export function iommuFwspecInit(core: IommuCore, dev: Device, iommuFwnode: FwNode): void {
  core.probeLock.assertHeld();
  const ops = iommuOpsFromFwnode(core, iommuFwnode);
  const cur = devIommu(dev)?.fwspec;
  if (!ops) throw kerr("EPROBE_DEFER", `no IOMMU registered for ${iommuFwnode.path} yet`);
  if (cur) {
    if (ops === iommuFwspecOps(core, cur)) return;
    throw kerr("EINVAL", `${dev.name} already has a fwspec on ${cur.iommuFwnode.path}, of another IOMMU driver`);
  }
  const param = devIommuGet(core, dev);
  core.faults.check(FWSPEC_INIT_SITE);
  param.fwspec = new IommuFwspec(iommuFwnode);
}

/**
 * Append IDs to the device's fwspec: EINVAL without one, ENOMEM from the fault site `iommu_fwspec_add_ids` when the
 * fwspec grows beyond one ID (Linux preallocates one). Needs the probe-device lock (drivers call it from `ofXlate`).
 * @linux iommu_fwspec_add_ids
 */
export function iommuFwspecAddIds(core: IommuCore, dev: Device, ids: readonly number[]): void {
  core.probeLock.assertHeld();
  const fwspec = devIommu(dev)?.fwspec;
  if (!fwspec) throw kerr("EINVAL", `${dev.name} has no fwspec`);
  if (fwspec.numIds + ids.length > 1) core.faults.check(FWSPEC_ADD_IDS_SITE);
  for (const id of ids) fwspec.ids.push(id >>> 0);
}

/**
 * Drop the device's fwspec (its `dev_iommu` stays).
 * @linux iommu_fwspec_free
 */
export function iommuFwspecFree(core: IommuCore, dev: Device): void {
  const param = devIommu(dev);
  if (!param?.fwspec) return;
  kfree(core.diag, param.fwspec, `iommu_fwspec of ${dev.name}`);
  param.fwspec = undefined;
}
