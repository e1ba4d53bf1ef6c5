/**
 * Probing devices into the iommu core and releasing them: the per-device setup (`dev_iommu`, fwspec lookup,
 * module reference, the driver's probe, the sysfs link, the group), its exact unwinding, the bus walk run when an
 * IOMMU registers, and the bus notifier for devices added later.
 */
import { hasErrno, KernelError, kerr } from "../kernel/errno.js";
import { modulePut, tryModuleGet } from "../kernel/module.js";
import type { Bus } from "../platform/driver-core/bus.js";
import { BusNotify } from "../platform/driver-core/bus.js";
import type { Device } from "../platform/driver-core/device.js";
import { NOTIFY_DONE, NOTIFY_OK } from "../platform/driver-core/notifier.js";
import { acpiIommuConfigureId, acpiIommuCovers } from "./acpi-iommu.js";
import { devHasIommu, devIommu, devIommuFree, devIommuGet, devIommuOps } from "./dev-iommu.js";
import { iommuFwspecOps } from "./fwspec.js";
import type { GroupDeviceHooks } from "./group.js";
import type { IommuCore, IommuGroupList } from "./iommu-core.js";
import { type IommuDevice, iommuDeviceLink, iommuDeviceUnlink, iommuFromFwnode } from "./iommu-device.js";
import { ofIommuConfigure, ofIommuUsesDt } from "./of-iommu.js";

/** Holder tag of the module reference a probed device holds on its driver. */
export function probeHolder(dev: Device): string {
  return `iommu_probe_device(${dev.name})`;
}

/**
 * Probe `dev` into the iommu core: take the probe-device lock, set the device up (see
 * {@link iommuProbeDeviceLocked}), drop the lock, then call the driver's `probeFinalize`. Throws ENODEV when no
 * registered IOMMU translates the device, EPROBE_DEFER when firmware names an IOMMU whose driver has not registered
 * yet (it is probed when it does), or the error of the step that failed, with everything undone.
 * @linux iommu_probe_device
 */
export async function iommuProbeDevice(core: IommuCore, dev: Device): Promise<void> {
  await core.probeLock.lock();
  try {
    await iommuProbeDeviceLocked(core, dev, undefined);
  } finally {
    core.probeLock.unlock();
  }
  devIommuOps(dev).probeFinalize?.(dev);
}

/**
 * With the probe-device lock held: nothing if `dev` is in a group already; otherwise {@link iommuInitDevice}, then
 * the group step (`core.groupHooks.addDevice`: device group, group membership, default domain — deferred to
 * `groupList` by a bus walk). A failing group step unwinds the init.
 * @linux __iommu_probe_device
 */
export async function iommuProbeDeviceLocked(
  core: IommuCore,
  dev: Device,
  groupList: IommuGroupList | undefined,
): Promise<void> {
  core.probeLock.assertHeld();
  if (dev.iommuGroup !== undefined) return;
  await iommuInitDevice(core, dev);
  core.diag.warnOn(dev.driver !== undefined, `${dev.name}: late IOMMU probe at driver bind, something fishy here!`);
  try {
    await core.groupHooks.addDevice(core, dev, groupList);
  } catch (e) {
    core.diag.warnOn(dev.iommuGroup !== undefined, `${dev.name}: group step failed but left dev->iommu_group set`);
    // Linux unwinds here with iommu_deinit_device under the group mutex; a hook may have done that already.
    if (devHasIommu(dev)) iommuInitDeviceUnwind(core, dev);
    else if (devIommu(dev)) devIommuFree(core, dev);
    throw e;
  }
  const trace = core.diag.trace;
  if (trace.enabled) {
    trace.emit("iommu:probe_device", { device: dev.name, group: (dev.iommuGroup as { id?: number } | undefined)?.id });
  }
}

/**
 * Set up `dev`'s per-device state and let its driver probe it, with the probe-device lock held:
 * 1. allocate `dev_iommu` (fault site `dev_iommu_get`);
 * 2. without a fwspec and a bound driver, run the firmware configuration (DT `iommus`/`iommu-map` with `ofXlate`,
 *    or ACPI) with the lock dropped, as the bus `dma_configure` path does; if another task probed the device
 *    meanwhile, ENODEV;
 * 3. find the driver: the one owning the fwspec's IOMMU node, or, without a fwspec, for a device an ACPI DMAR/IVRS
 *    table covers, the first instance registered without a firmware node; ENODEV (EPROBE_DEFER when firmware
 *    named an IOMMU not registered yet) otherwise;
 * 4. pin the driver's module (`tryModuleGet`, EINVAL when it is going away) before calling any of its ops;
 * 5. `probeDeviceFwspec(dev, instance)` when the device has a fwspec and the driver implements it, else
 *    `probeDevice(dev)`, which returns the instance;
 * 6. link the instance to the device (fault site `iommu_device_link`);
 * 7. record max PASIDs and whether attach is deferred.
 * Every failure undoes exactly what was done: release_device, module put, `dev_iommu` (and fwspec) freed.
 * @linux iommu_init_device
 */
export async function iommuInitDevice(core: IommuCore, dev: Device): Promise<void> {
  let param = devIommuGet(core, dev);
  let configError: KernelError | undefined;
  if (!param.fwspec && !dev.driver) {
    core.probeLock.unlock();
    try {
      await iommuFirmwareConfigure(core, dev);
    } catch (e) {
      if (!(e instanceof KernelError)) {
        await core.probeLock.lock();
        throw e;
      }
      configError = e;
    }
    await core.probeLock.lock();
    const now = devIommu(dev);
    if (!now || dev.iommuGroup !== undefined) throw kerr("ENODEV", `${dev.name} was probed meanwhile`);
    param = now;
  }

  const fwspec = param.fwspec;
  let ops = iommuFwspecOps(core, fwspec);
  if (!fwspec && ops && !acpiIommuCovers(core, dev)) ops = undefined;
  if (!ops) {
    devIommuFree(core, dev);
    if (configError && configError.code === "EPROBE_DEFER") throw configError;
    throw kerr("ENODEV", `no IOMMU driver for ${dev.name}`);
  }

  const holder = probeHolder(dev);
  if (!tryModuleGet(ops.owner, holder)) {
    devIommuFree(core, dev);
    throw kerr("EINVAL", `module ${ops.owner?.name} of the IOMMU driver of ${dev.name} is going away`);
  }

  let iommu: IommuDevice;
  try {
    const inst = fwspec ? iommuFromFwnode(core, fwspec.iommuFwnode) : undefined;
    if (inst && ops.probeDeviceFwspec) {
      await ops.probeDeviceFwspec(dev, inst);
      iommu = inst;
    } else if (ops.probeDevice) {
      iommu = await ops.probeDevice(dev);
    } else {
      throw kerr("ENODEV", `the IOMMU driver of ${dev.name} has no probe_device`);
    }
  } catch (e) {
    modulePut(ops.owner, holder, core.diag);
    devIommuFree(core, dev);
    throw e;
  }
  core.diag.warnOn(iommu.ops !== ops, `${dev.name}: probe_device returned ${iommu.name}, an instance of other ops`);
  param.iommuDev = iommu;

  try {
    iommuDeviceLink(core, iommu, dev);
  } catch (e) {
    ops.releaseDevice?.(dev);
    modulePut(ops.owner, holder, core.diag);
    param.iommuDev = undefined;
    devIommuFree(core, dev);
    throw e;
  }

  param.maxPasids = devIommuGetMaxPasids(dev, iommu);
  if (ops.isAttachDeferred) param.attachDeferred = ops.isAttachDeferred(dev);
}

/** Undo a successful {@link iommuInitDevice} whose group step failed: unlink, release_device, module put, free. */
function iommuInitDeviceUnwind(core: IommuCore, dev: Device): void {
  const hooks = iommuDeinitHooks(core);
  hooks.releaseDevice(dev);
  hooks.afterRelease(dev);
}

/** PASIDs `dev` may use on `iommu`. @linux dev_iommu_get_max_pasids */
function devIommuGetMaxPasids(dev: Device, iommu: IommuDevice): number {
  let max = 0;
  if (dev.pci) {
    if (dev.pci.pasidBits > 0) max = 2 ** dev.pci.pasidBits;
  } else {
    const bits = dev.platformData["pasid-num-bits"];
    if (typeof bits === "number") max = 2 ** bits;
  }
  return Math.min(max, iommu.maxPasids);
}

/**
 * This part's side of iommu_deinit_device, for the group code to run under the group mutex around its own steps:
 * `releaseDevice` (unlink, the driver's `releaseDevice`) before the group's domains may be freed, `afterRelease`
 * (module reference dropped, `dev_iommu` freed) after.
 * @linux iommu_deinit_device (the iommu_device_unlink / release_device / module_put / dev_iommu_free steps)
 */
export function iommuDeinitHooks(core: IommuCore): Required<GroupDeviceHooks> {
  return {
    releaseDevice(dev) {
      const iommu = devIommu(dev)?.iommuDev;
      if (!iommu) return;
      iommuDeviceUnlink(iommu, dev);
      iommu.ops.releaseDevice?.(dev);
    },
    afterRelease(dev) {
      const param = devIommu(dev);
      const ops = param?.iommuDev?.ops;
      if (!param || !ops) return;
      modulePut(ops.owner, probeHolder(dev), core.diag);
      param.iommuDev = undefined;
      devIommuFree(core, dev);
    },
  };
}

/**
 * Tear down a probed device outside any group (the group code runs {@link iommuDeinitHooks} itself): unlink,
 * `releaseDevice`, `dev.iommuGroup` cleared, module reference dropped, `dev_iommu` freed.
 * @linux iommu_deinit_device
 */
export async function iommuDeinitDevice(core: IommuCore, dev: Device): Promise<void> {
  if (!devHasIommu(dev)) {
    core.diag.warnOn(true, `iommu_deinit_device: ${dev.name} is not probed`);
    return;
  }
  const hooks = iommuDeinitHooks(core);
  hooks.releaseDevice(dev);
  dev.iommuGroup = undefined;
  hooks.afterRelease(dev);
}

/**
 * Release `dev` from the iommu core: remove it from its group (which deinits it), then free any `dev_iommu` left
 * (a fwspec of a device no driver probed).
 * @linux iommu_release_device
 */
export async function iommuReleaseDevice(core: IommuCore, dev: Device): Promise<void> {
  if (dev.iommuGroup !== undefined) await core.groupHooks.removeDevice(core, dev);
  if (devHasIommu(dev)) await iommuDeinitDevice(core, dev);
  if (dev.iommu !== undefined) devIommuFree(core, dev);
}

/**
 * Probe every registered device of `bus` (each under the probe-device lock), skipping ENODEV and EPROBE_DEFER;
 * then let the group code set up the default domains it deferred, and call `probeFinalize` on the newly probed
 * devices. Any other error stops the walk and is thrown.
 * @linux bus_iommu_probe (with probe_iommu_group)
 */
export async function busIommuProbe(core: IommuCore, bus: Bus): Promise<void> {
  const groupList: IommuGroupList = [];
  const probed: Device[] = [];
  for (const dev of [...bus.devices]) {
    if (!dev.registered) continue;
    const already = dev.iommuGroup !== undefined;
    await core.probeLock.lock();
    try {
      await iommuProbeDeviceLocked(core, dev, groupList);
      if (!already) probed.push(dev);
    } catch (e) {
      if (!hasErrno(e, "ENODEV") && !hasErrno(e, "EPROBE_DEFER")) throw e;
    } finally {
      core.probeLock.unlock();
    }
  }
  if (groupList.length > 0 && core.groupHooks.setupGroupList) await core.groupHooks.setupGroupList(core, groupList);
  for (const dev of probed) if (devHasIommu(dev)) devIommuOps(dev).probeFinalize?.(dev);
}

/**
 * The IOMMU step of a device's firmware configuration: the DT path for platform devices and PCI devices behind a
 * host bridge with an `iommu-map`, the ACPI path otherwise.
 * @linux the of_iommu_configure / acpi_iommu_configure_id call in of_dma_configure_id / acpi_dma_configure_id
 */
export async function iommuFirmwareConfigure(core: IommuCore, dev: Device): Promise<void> {
  if (ofIommuUsesDt(dev)) await ofIommuConfigure(core, dev);
  else await acpiIommuConfigureId(core, dev);
}

/**
 * The bus `dma_configure` hook the core installs: run before a driver binds to a device; only EPROBE_DEFER fails
 * the bind (the driver core defers it), other IOMMU errors leave the device untranslated.
 * @linux platform_dma_configure / pci_dma_configure (their IOMMU part)
 */
export async function iommuDmaConfigure(core: IommuCore, dev: Device): Promise<void> {
  try {
    await iommuFirmwareConfigure(core, dev);
  } catch (e) {
    if (!(e instanceof KernelError) || e.code === "EPROBE_DEFER") throw e;
  }
}

/**
 * The core's bus notifier: probe a device when it is added, release it when it is removed. Probe errors are not
 * the bus's concern (NOTIFY_DONE).
 * @linux iommu_bus_notifier
 */
export async function iommuBusNotifier(core: IommuCore, action: number, dev: Device): Promise<number> {
  if (action === BusNotify.ADD_DEVICE) {
    try {
      await iommuProbeDevice(core, dev);
    } catch (e) {
      if (e instanceof KernelError) return NOTIFY_DONE;
      throw e;
    }
    return NOTIFY_OK;
  }
  if (action === BusNotify.REMOVED_DEVICE) {
    await iommuReleaseDevice(core, dev);
    return NOTIFY_OK;
  }
  return NOTIFY_DONE;
}
