/**
 * Attaching domains to groups and devices: the group-wide domain switch with its revert on failure, attach and
 * detach of a single-device group, replace, and the domain lookups drivers and the DMA layer use.
 * @linux __iommu_attach_device, __iommu_device_set_domain, __iommu_group_set_domain_internal,
 * iommu_attach_device / iommu_detach_device / iommu_attach_group / iommu_group_replace_domain (drivers/iommu/iommu.c)
 */
import { KernelError } from "../kernel/errno.js";
import type { Device } from "../platform/driver-core/device.js";
import { devHasIommu, devIommu, devIommuOps } from "./dev-iommu.js";
import { domainIommuOpsCompatible, type IommuDomain, iommuDomainTypeStr } from "./domain.js";
import type { IommuGroup } from "./group.js";
import { IOMMU_DOMAIN } from "./types.js";

/** The switch must not fail: keep going past failing devices and leave `group.domain` set. */
export const IOMMU_SET_DOMAIN_MUST_SUCCEED = 1 << 0;

function groupOf(dev: Device): IommuGroup | undefined {
  return dev.iommuGroup as IommuGroup | undefined;
}

/**
 * Call the domain's `attachDev` for one device (`old` is what the device is attached to now); clears the
 * device's deferred-attach flag on success. ENODEV when the domain cannot be attached.
 * @linux __iommu_attach_device
 */
export async function iommuAttachDeviceRaw(
  domain: IommuDomain,
  dev: Device,
  old: IommuDomain | undefined,
): Promise<void> {
  if (!domain.ops.attachDev) throw new KernelError("ENODEV", `${domain} has no attach_dev`);
  await domain.ops.attachDev(domain, dev, old);
  const p = devIommu(dev);
  if (p) p.attachDeferred = false;
  const trace = domain.diag?.trace;
  if (trace?.enabled) {
    trace.emit("iommu:attach_device_to_domain", {
      device: dev.name,
      domain: String(domain),
      type: iommuDomainTypeStr(domain.type),
    });
  }
}

/**
 * Attach one device of `group` to `newDomain`. Refuses (EINVAL) to block a device that needs direct mappings;
 * skips the default domain while the attach is deferred. With MUST_SUCCEED, a failing device is parked on the
 * group's blocking domain to avoid a use-after-free of the old domain.
 * @linux __iommu_device_set_domain
 */
export async function iommuDeviceSetDomain(
  group: IommuGroup,
  dev: Device,
  newDomain: IommuDomain,
  oldDomain: IommuDomain | undefined,
  flags: number,
): Promise<void> {
  const p = devIommu(dev);
  if (p?.requireDirect && (newDomain.type === IOMMU_DOMAIN.BLOCKED || newDomain === group.blockingDomain)) {
    throw new KernelError(
      "EINVAL",
      `${dev.name}: firmware requires a 1:1 mapping; refusing to attach it to a domain without it`,
    );
  }
  if (p?.attachDeferred) {
    if (newDomain === group.defaultDomain) return;
    p.attachDeferred = false;
  }
  try {
    await iommuAttachDeviceRaw(newDomain, dev, oldDomain);
  } catch (e) {
    if (flags & IOMMU_SET_DOMAIN_MUST_SUCCEED && group.blockingDomain && group.blockingDomain !== newDomain) {
      await iommuAttachDeviceRaw(group.blockingDomain, dev, oldDomain).catch(() => undefined);
    }
    throw e;
  }
}

/**
 * Switch every device of the group to `newDomain` (group mutex held). On failure the devices already switched go
 * back to the group's current domain and the error is thrown, so `group.domain` is unchanged. With MUST_SUCCEED
 * every device is tried, `group.domain` becomes `newDomain`, and the first error is thrown afterwards.
 * @linux __iommu_group_set_domain_internal
 */
export async function groupSetDomainInternal(group: IommuGroup, newDomain: IommuDomain, flags: number): Promise<void> {
  group.mutex.assertHeld();
  const diag = group.registry.diag;
  if (group.domain === newDomain) return;
  if (diag.warnOn(newDomain === undefined, "set_domain to no domain")) throw new KernelError("EINVAL");
  let result: unknown;
  const devices = group.devices;
  for (let i = 0; i < devices.length; i++) {
    try {
      await iommuDeviceSetDomain(group, devices[i]!.dev, newDomain, group.domain, flags);
    } catch (e) {
      result ??= e;
      if (flags & IOMMU_SET_DOMAIN_MUST_SUCCEED) continue;
      // Revert the devices switched so far (and the failing one) to the current domain.
      const cur = group.domain;
      for (let j = 0; j <= i && cur; j++) {
        try {
          await iommuDeviceSetDomain(group, devices[j]!.dev, cur, newDomain, IOMMU_SET_DOMAIN_MUST_SUCCEED);
        } catch {
          diag.warnOn(true, `${devices[j]!.dev.name}: re-attach to the previous domain failed`);
        }
      }
      throw e;
    }
  }
  group.domain = newDomain;
  if (result !== undefined) throw result;
}

/**
 * Switch the group to `newDomain`, reverting on failure.
 * @linux __iommu_group_set_domain
 */
export function groupSetDomain(group: IommuGroup, newDomain: IommuDomain): Promise<void> {
  return groupSetDomainInternal(group, newDomain, 0);
}

/**
 * Switch the group to a core-owned domain that must not fail; a failure is a warning.
 * @linux __iommu_group_set_domain_nofail
 */
export async function groupSetDomainNofail(group: IommuGroup, newDomain: IommuDomain | undefined): Promise<void> {
  try {
    await groupSetDomainInternal(group, newDomain as IommuDomain, IOMMU_SET_DOMAIN_MUST_SUCCEED);
  } catch (e) {
    group.registry.diag.warnOn(true, `${group}: switch to a core domain failed: ${(e as Error).message}`);
  }
}

/**
 * Put the group back on the kernel's domain: the blocking domain while user space owns its DMA, else the
 * default domain.
 * @linux __iommu_group_set_core_domain
 */
export function groupSetCoreDomain(group: IommuGroup): Promise<void> {
  return groupSetDomainNofail(group, group.owner !== undefined ? group.blockingDomain : group.defaultDomain);
}

/**
 * Attach `domain` to the group if it is on a core domain: EBUSY when another domain is attached, EINVAL when the
 * domain belongs to another driver.
 * @linux __iommu_attach_group
 */
export async function iommuAttachGroupLocked(domain: IommuDomain, group: IommuGroup): Promise<void> {
  if (group.domain && group.domain !== group.defaultDomain && group.domain !== group.blockingDomain) {
    throw new KernelError("EBUSY", `${group} is attached to another domain`);
  }
  const dev = group.devices[0]?.dev;
  if (!dev || !devHasIommu(dev) || !domainIommuOpsCompatible(devIommuOps(dev), domain)) {
    throw new KernelError("EINVAL", `${domain} does not belong to the IOMMU of ${group}`);
  }
  await groupSetDomain(group, domain);
}

/**
 * Attach a domain to the group of a single-device group's device. ENODEV without a group, EINVAL when the group
 * has several devices.
 * @linux iommu_attach_device
 */
export async function iommuAttachDevice(domain: IommuDomain, dev: Device): Promise<void> {
  const group = groupOf(dev);
  if (!group) throw new KernelError("ENODEV", `${dev.name} has no IOMMU group`);
  await group.mutex.withLock(async () => {
    if (group.devices.length !== 1) throw new KernelError("EINVAL", `${group} has ${group.devices.length} devices`);
    await iommuAttachGroupLocked(domain, group);
  });
}

/**
 * Detach the device's single-device group from `domain`, back to its core domain (warns when `domain` is not
 * attached or the group has several devices).
 * @linux iommu_detach_device
 */
export async function iommuDetachDevice(domain: IommuDomain, dev: Device): Promise<void> {
  const group = groupOf(dev);
  if (!group) return;
  await group.mutex.withLock(async () => {
    const diag = group.registry.diag;
    if (diag.warnOn(domain !== group.domain, `detach of ${domain}, which ${group} is not attached to`)) return;
    if (diag.warnOn(group.devices.length !== 1, `detach_device on ${group} with ${group.devices.length} devices`)) {
      return;
    }
    await groupSetCoreDomain(group);
  });
}

/**
 * Attach a domain to a whole group.
 * @linux iommu_attach_group
 */
export async function iommuAttachGroup(domain: IommuDomain, group: IommuGroup): Promise<void> {
  await group.mutex.withLock(() => iommuAttachGroupLocked(domain, group));
}

/**
 * Detach the group from whatever it is attached to, back to its core domain.
 * @linux iommu_detach_group
 */
export async function iommuDetachGroup(_domain: IommuDomain, group: IommuGroup): Promise<void> {
  await group.mutex.withLock(() => groupSetCoreDomain(group));
}

/**
 * Move the group to `newDomain` without passing through the blocking domain. On failure the group stays on its
 * current domain and the error is thrown. EINVAL without a domain.
 * @linux iommu_group_replace_domain
 */
export async function iommuGroupReplaceDomain(group: IommuGroup, newDomain: IommuDomain | undefined): Promise<void> {
  if (!newDomain) throw new KernelError("EINVAL", "replace with no domain");
  await group.mutex.withLock(() => groupSetDomain(group, newDomain));
}

/**
 * Perform a deferred attach of the default domain, on first DMA-API use.
 * @linux iommu_deferred_attach
 */
export async function iommuDeferredAttach(dev: Device, domain: IommuDomain): Promise<void> {
  const p = devIommu(dev);
  if (!p?.attachDeferred) return;
  const group = groupOf(dev)!;
  await group.mutex.withLock(() => iommuAttachDeviceRaw(domain, dev, undefined));
}

/**
 * The domain the device's group is attached to.
 * @linux iommu_get_domain_for_dev
 */
export function iommuGetDomainForDev(dev: Device): IommuDomain | undefined {
  return groupOf(dev)?.domain;
}

/**
 * The attached domain, for drivers inside an op called with the group mutex held (asserted).
 * @linux iommu_driver_get_domain_for_dev
 */
export function iommuDriverGetDomainForDev(dev: Device): IommuDomain | undefined {
  const group = groupOf(dev);
  if (!group) return undefined;
  group.mutex.assertHeld();
  return group.domain;
}

/**
 * The group's default domain (the DMA API's domain).
 * @linux iommu_get_dma_domain
 */
export function iommuGetDmaDomain(dev: Device): IommuDomain | undefined {
  return groupOf(dev)?.defaultDomain;
}
