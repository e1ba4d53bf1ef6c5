/**
 * IOMMU instances: what a driver registers for each IOMMU it drives, the registry the core looks instances up in
 * by firmware node, and the link between an instance and the devices it translates.
 */
import { kerr } from "../kernel/errno.js";
import type { Device } from "../platform/driver-core/device.js";
import type { FwNode } from "../platform/driver-core/fwnode.js";
import { devIommu } from "./dev-iommu.js";
import type { IommuGroup } from "./group.js";
import type { IommuCore } from "./iommu-core.js";
import { busIommuProbe, iommuReleaseDevice } from "./probe.js";
import type { IommuOps } from "./types.js";

/** Allocation site of {@link iommuDeviceLink} (the sysfs links). */
export const DEVICE_LINK_SITE = "iommu_device_link";

/** What a driver gives {@link IommuDevice}'s constructor. */
export interface IommuDeviceInit {
  /** The IOMMU's own platform device (whose probe registers this instance). @linux iommu_device.dev's parent */
  dev?: Device;
  /** Name in reports and sysfs; default the platform device's name. @linux iommu_device_sysfs_add's name */
  name?: string;
  /** PASIDs the hardware supports (0: no PASID support). @linux iommu_device.max_pasids */
  maxPasids?: number;
}

/**
 * One IOMMU instance as the core knows it. A driver embeds or builds one per hardware unit and registers it with
 * {@link iommuDeviceRegister}.
 * @linux struct iommu_device
 */
export class IommuDevice {
  /** The driver's ops, set by registration. @linux iommu_device.ops */
  ops!: IommuOps;
  /** The firmware node devices name this instance by; unset for drivers registered without one (x86). @linux iommu_device.fwnode */
  fwnode: FwNode | undefined = undefined;
  /** The IOMMU's platform device. @linux iommu_device.dev (here the hardware device itself) */
  readonly dev: Device | undefined;
  readonly name: string;
  /** @linux iommu_device.max_pasids */
  maxPasids: number;
  /** Set once registration has probed every bus. @linux iommu_device.ready */
  ready = false;
  /** Group shared by all devices of this instance, owned by the group code. @linux iommu_device.singleton_group */
  singletonGroup: IommuGroup | undefined = undefined;
  /** The devices this instance translates. @linux /sys/class/iommu/<name>/devices/ */
  readonly devices = new Set<Device>();

  constructor(init: IommuDeviceInit = {}) {
    this.dev = init.dev;
    this.name = init.name ?? init.dev?.name ?? "iommu";
    this.maxPasids = init.maxPasids ?? 0;
  }

  toString(): string {
    return this.name;
  }

  /** A short form for test-runner diffs and JSON (the object graph reaches the whole machine). */
  toJSON(): string {
    return `IommuDevice(${this.name})`;
  }

  /** A short form for `util.inspect` / console.log. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toJSON();
  }
}

/**
 * Register an IOMMU instance with its driver's ops: record `ops` and, with `hwdev`, the firmware node devices name
 * it by; add it to the registry; then probe every device of every bus (devices waiting on this IOMMU, including
 * those that got EPROBE_DEFER, are probed now). If probing a bus fails the instance is unregistered again (its
 * devices released) and the error is rethrown.
 * @linux iommu_device_register
 */
export async function iommuDeviceRegister(
  core: IommuCore,
  iommu: IommuDevice,
  ops: IommuOps,
  hwdev?: Device,
): Promise<void> {
  if (core.iommuDevices.includes(iommu)) {
    core.diag.warnOn(true, `iommu_device_register: ${iommu.name} is already registered`);
    throw kerr("EEXIST", `${iommu.name} is already registered`);
  }
  iommu.ops = ops;
  if (hwdev) iommu.fwnode = hwdev.fwnode;
  core.iommuDevices.push(iommu);
  try {
    for (const bus of core.attachBuses()) await busIommuProbe(core, bus);
  } catch (e) {
    await iommuDeviceUnregister(core, iommu);
    throw e;
  }
  iommu.ready = true;
}

/**
 * Unregister an IOMMU instance, under the probe-device lock: release every device it translates first
 * (release_device, group removal, module reference dropped), then remove it from the registry.
 * @linux iommu_device_unregister
 */
export async function iommuDeviceUnregister(core: IommuCore, iommu: IommuDevice): Promise<void> {
  // Under the probe-device lock, so a probe in flight either finishes first (and its device is released by the
  // walk) or runs after the instance left the list (and finds no IOMMU). Linux walks without it; see
  // docs/divergences.md.
  await core.probeLock.withLock(async () => {
    for (const bus of core.attachBuses()) {
      for (const dev of [...bus.devices]) {
        if (devIommu(dev)?.iommuDev === iommu) await iommuReleaseDevice(core, dev);
      }
    }
    const i = core.iommuDevices.indexOf(iommu);
    if (i >= 0) core.iommuDevices.splice(i, 1);
    iommu.ready = false;
  });
  core.groupHooks.unregisterIommu?.(core, iommu);
  core.diag.warnOn(
    iommu.devices.size > 0,
    `iommu_device_unregister: ${iommu.name} still linked to ${[...iommu.devices].join(", ")}`,
  );
}

/**
 * The registered instance whose firmware node is `fwnode` (`undefined` finds the first instance registered
 * without one).
 * @linux iommu_from_fwnode
 */
export function iommuFromFwnode(core: IommuCore, fwnode: FwNode | undefined): IommuDevice | undefined {
  return core.iommuDevices.find((i) => i.fwnode === fwnode);
}

/**
 * The ops of the instance registered for `fwnode`.
 * @linux iommu_ops_from_fwnode
 */
export function iommuOpsFromFwnode(core: IommuCore, fwnode: FwNode | undefined): IommuOps | undefined {
  return iommuFromFwnode(core, fwnode)?.ops;
}

/**
 * Link `dev` to the instance translating it (fault site `iommu_device_link`: ENOMEM).
 * @linux iommu_device_link
 */
export function iommuDeviceLink(core: IommuCore, iommu: IommuDevice, dev: Device): void {
  core.faults.check(DEVICE_LINK_SITE);
  iommu.devices.add(dev);
}

/**
 * Remove the link made by {@link iommuDeviceLink}.
 * @linux iommu_device_unlink
 */
export function iommuDeviceUnlink(iommu: IommuDevice, dev: Device): void {
  iommu.devices.delete(dev);
}
