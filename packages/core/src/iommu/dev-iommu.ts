/**
 * Per-device IOMMU state, hung on `Device.iommu` while the core probes or has probed the device.
 */
import { kerr } from "../kernel/errno.js";
import { RcuPointer } from "../kernel/rcu.js";
import { Mutex } from "../kernel/sched/mutex.js";
import { kfree } from "../kernel/slab.js";
import type { Device } from "../platform/driver-core/device.js";
import type { IommuFwspec } from "./fwspec.js";
import type { IommuCore } from "./iommu-core.js";
import type { IommuDevice } from "./iommu-device.js";
import type { IommuFaultParam } from "./iopf-types.js";
import type { IommuOps } from "./types.js";

/** Allocation site of {@link devIommuGet}, for the fault injector. */
export const DEV_IOMMU_SITE = "dev_iommu_get";

/**
 * What the iommu core keeps per device.
 * @linux struct dev_iommu
 */
export class DevIommu {
  /** Serialises the fault-parameter setup of this device (IOPF). @linux dev_iommu.lock */
  readonly lock: Mutex;
  /**
   * The device's IOPF parameter, published under RCU and refcounted by part C.
   * @linux dev_iommu.fault_param (`struct iommu_fault_param __rcu *`)
   */
  readonly faultParam: RcuPointer<IommuFaultParam | undefined>;
  /** Firmware IDs of the device on its IOMMU, when firmware describes them (DT, IORT). @linux dev_iommu.fwspec */
  fwspec: IommuFwspec | undefined = undefined;
  /** The instance translating the device, once `probe_device` returned it. @linux dev_iommu.iommu_dev */
  iommuDev: IommuDevice | undefined = undefined;
  /** The driver's per-device data. @linux dev_iommu.priv */
  priv: unknown = undefined;
  /** PASIDs the device may use: min(its own PASID width, the IOMMU's). @linux dev_iommu.max_pasids */
  maxPasids = 0;
  /** Attaching the default domain waits for the first DMA mapping. @linux dev_iommu.attach_deferred */
  attachDeferred = false;
  /** @linux dev_iommu.pci_32bit_workaround */
  pci32bitWorkaround = false;
  /** Firmware requires 1:1 mappings (IOMMU_RESV_DIRECT) for this device. @linux dev_iommu.require_direct */
  requireDirect = false;
  /** @linux dev_iommu.shadow_on_flush */
  shadowOnFlush = false;

  /** @linux the kzalloc + mutex_init of dev_iommu_get */
  constructor(core: IommuCore, dev: Device) {
    this.lock = new Mutex(core.scheduler, `dev_iommu(${dev.name}).lock`, { lockClass: "dev_iommu.lock" });
    this.faultParam = new RcuPointer<IommuFaultParam | undefined>(core.rcu, undefined, `fault param of ${dev.name}`);
  }
}

/**
 * `dev.iommu` as a {@link DevIommu}, or undefined.
 * @linux dev->iommu
 */
export function devIommu(dev: Device): DevIommu | undefined {
  const p = dev.iommu;
  return p instanceof DevIommu ? p : undefined;
}

/**
 * The device's `dev_iommu`, allocated on first use (fault site `dev_iommu_get`: ENOMEM). Needs the probe-device
 * lock.
 * @linux dev_iommu_get
 */
export function devIommuGet(core: IommuCore, dev: Device): DevIommu {
  core.probeLock.assertHeld();
  const cur = devIommu(dev);
  if (cur) return cur;
  core.faults.check(DEV_IOMMU_SITE);
  const param = new DevIommu(core, dev);
  dev.iommu = param;
  return param;
}

/**
 * Detach and free the device's `dev_iommu` and its fwspec.
 * @linux dev_iommu_free
 */
export function devIommuFree(core: IommuCore, dev: Device): void {
  const param = devIommu(dev);
  dev.iommu = undefined;
  if (!param) return;
  if (param.fwspec) {
    kfree(core.diag, param.fwspec, `iommu_fwspec of ${dev.name}`);
    param.fwspec = undefined;
  }
  kfree(core.diag, param, `dev_iommu of ${dev.name}`);
}

/**
 * Whether the device was probed by an IOMMU driver (has an instance, not only a fwspec).
 * @linux dev_has_iommu
 */
export function devHasIommu(dev: Device): boolean {
  return devIommu(dev)?.iommuDev !== undefined;
}

/**
 * The ops of the driver that probed `dev`; ENODEV when none did (where the kernel would dereference NULL, so callers
 * check {@link devHasIommu} first).
 * @linux dev_iommu_ops
 */
export function devIommuOps(dev: Device): IommuOps {
  const ops = devIommu(dev)?.iommuDev?.ops;
  if (!ops) throw kerr("ENODEV", `${dev.name} has no IOMMU driver`);
  return ops;
}

/**
 * The device's fwspec, if any.
 * @linux dev_iommu_fwspec_get
 */
export function devIommuFwspecGet(dev: Device): IommuFwspec | undefined {
  return devIommu(dev)?.fwspec;
}

/**
 * The driver's per-device data.
 * @linux dev_iommu_priv_get
 */
export function devIommuPrivGet<T = unknown>(dev: Device): T | undefined {
  return devIommu(dev)?.priv as T | undefined;
}

/**
 * Set the driver's per-device data; drivers do this in `probeDevice`, under the probe-device lock (asserted).
 * @linux dev_iommu_priv_set
 */
export function devIommuPrivSet(core: IommuCore, dev: Device, priv: unknown): void {
  core.probeLock.assertHeld();
  const param = devIommu(dev);
  if (!param) throw new TypeError(`dev_iommu_priv_set: ${dev.name} has no dev_iommu`);
  param.priv = priv;
}
