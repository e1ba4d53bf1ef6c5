/**
 * PASID attachments and attach handles. The group's `pasidArray` records, per PASID, the domain attached (or the
 * attach handle of the caller that attached it, which io-pgfault uses to route page requests); IOMMU_NO_PASID (0)
 * holds the handle of a whole-group attach made through iommufd.
 * @linux iommu_attach_device_pasid, iommu_replace_device_pasid, iommu_detach_device_pasid,
 * iommu_attach_handle_get, iommu_attach_group_handle and friends (drivers/iommu/iommu.c)
 */
import { KernelError } from "../kernel/errno.js";
import type { Device } from "../platform/driver-core/device.js";
import { groupSetCoreDomain, groupSetDomain, iommuAttachGroupLocked } from "./attach.js";
import { devHasIommu, devIommu, devIommuOps } from "./dev-iommu.js";
import { domainIommuOpsCompatible, IommuDomain } from "./domain.js";
import type { IommuCoreLike, IommuGroup } from "./group.js";

/** The PASID of DMA without a PASID (the RID). @linux IOMMU_NO_PASID */
export const IOMMU_NO_PASID = 0;
/** The first PASID the global allocator hands out. @linux IOMMU_FIRST_GLOBAL_PASID */
export const IOMMU_FIRST_GLOBAL_PASID = 1;
/** No PASID. @linux IOMMU_PASID_INVALID ((ioasid_t)-1) */
export const IOMMU_PASID_INVALID = 0xffffffff;

/**
 * What a caller attaching through a handle records in the group's PASID array; iommufd embeds it in its own.
 * @linux struct iommu_attach_handle
 */
export interface IommuAttachHandle {
  /** Set by the core on attach. */
  domain: IommuDomain | undefined;
}

/** An entry of the PASID array: a bare domain, or a caller's handle (tagged pointers in the kernel). */
export type PasidArrayEntry = IommuDomain | IommuAttachHandle;

/**
 * The entry recorded for `domain`: the handle (pointing at the domain) when there is one, else the domain.
 * @linux iommu_make_pasid_array_entry
 */
export function iommuMakePasidArrayEntry(domain: IommuDomain, handle: IommuAttachHandle | undefined): PasidArrayEntry {
  if (handle) {
    handle.domain = domain;
    return handle;
  }
  return domain;
}

/**
 * The domain an entry stands for.
 * @linux pasid_array_entry_to_domain
 */
export function pasidArrayEntryToDomain(entry: PasidArrayEntry): IommuDomain {
  if (entry instanceof IommuDomain) return entry;
  return entry.domain!;
}

function groupOf(dev: Device): IommuGroup | undefined {
  return dev.iommuGroup as IommuGroup | undefined;
}

function hasPasid(dev: Device): boolean {
  return (devIommu(dev)?.maxPasids ?? 0) > 0;
}

/**
 * Detach `pasid` of `dev` from `domain` by attaching the driver's blocked domain to it (warns if that fails).
 * @linux iommu_remove_dev_pasid
 */
async function iommuRemoveDevPasid(dev: Device, pasid: number, domain: IommuDomain, group: IommuGroup): Promise<void> {
  const blocked = devIommuOps(dev).blockedDomain;
  try {
    await blocked!.ops.setDevPasid!(blocked!, dev, pasid, domain);
  } catch (e) {
    group.registry.diag.warnOn(true, `${dev.name}: blocking PASID ${pasid} failed: ${(e as Error).message}`);
  }
}

/**
 * Attach `pasid` of every PASID-capable device of the group to `domain`; on failure undo the devices done (back
 * to `old`, or blocked when there was none) and throw.
 * @linux __iommu_set_group_pasid
 */
async function setGroupPasid(
  domain: IommuDomain,
  group: IommuGroup,
  pasid: number,
  old: IommuDomain | undefined,
): Promise<void> {
  const devices = group.devices;
  for (let i = 0; i < devices.length; i++) {
    const dev = devices[i]!.dev;
    if (!hasPasid(dev)) continue;
    try {
      await domain.ops.setDevPasid!(domain, dev, pasid, old);
    } catch (e) {
      for (let j = 0; j < i; j++) {
        const d = devices[j]!.dev;
        if (!hasPasid(d)) continue;
        let restored = false;
        if (old) {
          try {
            await old.ops.setDevPasid!(old, d, pasid, domain);
            restored = true;
          } catch {
            group.registry.diag.warnOn(true, `${d.name}: re-attaching PASID ${pasid} to its old domain failed`);
          }
        }
        if (!restored) await iommuRemoveDevPasid(d, pasid, domain, group);
      }
      throw e;
    }
  }
}

async function removeGroupPasid(group: IommuGroup, pasid: number, domain: IommuDomain): Promise<void> {
  for (const gdev of group.devices) {
    if (hasPasid(gdev.dev)) await iommuRemoveDevPasid(gdev.dev, pasid, domain, group);
  }
}

/**
 * Attach `domain` to `pasid` of the device's group, recording `handle` (or the domain) in the PASID array once
 * every device accepted it. ENODEV without a group; EOPNOTSUPP when the domain cannot be attached to a PASID or the
 * driver has no blocked domain that can; EINVAL for a foreign domain, IOMMU_NO_PASID, or a PASID beyond a device's
 * `maxPasids`; EBUSY when the PASID is already attached.
 * @linux iommu_attach_device_pasid
 */
export async function iommuAttachDevicePasid(
  domain: IommuDomain,
  dev: Device,
  pasid: number,
  handle?: IommuAttachHandle,
): Promise<void> {
  const group = groupOf(dev);
  if (!group) throw new KernelError("ENODEV", `${dev.name} has no IOMMU group`);
  const ops = devIommuOps(dev);
  if (!domain.ops.setDevPasid || !ops.blockedDomain?.ops.setDevPasid) {
    throw new KernelError("EOPNOTSUPP", "PASID attach not supported");
  }
  if (!domainIommuOpsCompatible(ops, domain) || pasid === IOMMU_NO_PASID) {
    throw new KernelError("EINVAL", `cannot attach ${domain} to PASID ${pasid}`);
  }
  await group.mutex.withLock(async () => {
    for (const gdev of group.devices) {
      const max = devIommu(gdev.dev)?.maxPasids ?? 0;
      // Devices without PASID support cannot issue PASID-tagged DMA; they do not limit the group.
      if (max > 0 && pasid >= max) throw new KernelError("EINVAL", `PASID ${pasid} beyond ${gdev.dev.name}'s range`);
    }
    const entry = iommuMakePasidArrayEntry(domain, handle);
    group.pasidArray.insert(pasid, undefined);
    try {
      await setGroupPasid(domain, group, pasid, undefined);
    } catch (e) {
      group.pasidArray.release(pasid);
      throw e;
    }
    // Visible only once every device accepted it, so no page request is routed to a failed attach.
    group.pasidArray.store(pasid, entry);
  });
}

/**
 * Move `pasid` of the device's group from its current domain to `domain`, recording `handle`. On failure the
 * PASID stays attached to its old domain. EINVAL when nothing is attached to the PASID, for IOMMU_NO_PASID, a
 * foreign domain, a missing handle, or the handle already recorded there (with a warning); EOPNOTSUPP when the
 * domain cannot be attached to a PASID.
 * @linux iommu_replace_device_pasid
 */
export async function iommuReplaceDevicePasid(
  domain: IommuDomain,
  dev: Device,
  pasid: number,
  handle: IommuAttachHandle | undefined,
): Promise<void> {
  const group = groupOf(dev);
  if (!group) throw new KernelError("ENODEV", `${dev.name} has no IOMMU group`);
  if (!domain.ops.setDevPasid) throw new KernelError("EOPNOTSUPP", "PASID attach not supported");
  if (!domainIommuOpsCompatible(devIommuOps(dev), domain) || pasid === IOMMU_NO_PASID || !handle) {
    throw new KernelError("EINVAL", `cannot replace PASID ${pasid} with ${domain}`);
  }
  await group.mutex.withLock(async () => {
    const curr = group.pasidArray.load(pasid);
    if (!curr) throw new KernelError("EINVAL", `PASID ${pasid} is not attached`);
    if (curr === handle) {
      group.registry.diag.warnOn(true, "replace_device_pasid reusing the attached handle");
      throw new KernelError("EINVAL", "handle reused");
    }
    const currDomain = pasidArrayEntryToDomain(curr);
    if (currDomain !== domain) await setGroupPasid(domain, group, pasid, currDomain);
    group.pasidArray.store(pasid, iommuMakePasidArrayEntry(domain, handle));
  });
}

/**
 * Detach `pasid` of the device's group from `domain` (each PASID-capable device goes to the blocked domain).
 * @linux iommu_detach_device_pasid
 */
export async function iommuDetachDevicePasid(domain: IommuDomain, dev: Device, pasid: number): Promise<void> {
  const group = groupOf(dev)!;
  await group.mutex.withLock(async () => {
    await removeGroupPasid(group, pasid, domain);
    group.pasidArray.erase(pasid);
  });
}

/**
 * The attach handle recorded for `pasid` in the group: ENOENT when there is none (nothing attached, or attached
 * without a handle), EBUSY when `type` is non-zero and the handle's domain is of another type.
 * @linux iommu_attach_handle_get
 */
export function iommuAttachHandleGet(group: IommuGroup, pasid: number, type: number): IommuAttachHandle {
  const entry = group.pasidArray.load(pasid);
  if (!entry || entry instanceof IommuDomain) throw new KernelError("ENOENT", `no attach handle for PASID ${pasid}`);
  if (type && entry.domain?.type !== type) throw new KernelError("EBUSY", `PASID ${pasid} has another domain type`);
  return entry;
}

/**
 * The domain attached to `pasid` of the device, or undefined.
 * @linux iommu_get_domain_for_dev_pasid (pre-6.13; now through iommu_attach_handle_get)
 */
export function iommuGetDomainForDevPasid(dev: Device, pasid: number): IommuDomain | undefined {
  const entry = groupOf(dev)?.pasidArray.load(pasid);
  return entry ? pasidArrayEntryToDomain(entry) : undefined;
}

/**
 * Attach `domain` to the whole group and record `handle` at IOMMU_NO_PASID (iommufd's attach, so faults on the RID
 * find their handle). EINVAL without a handle; EBUSY when a handle is already recorded or another domain attached.
 * @linux iommu_attach_group_handle
 */
export async function iommuAttachGroupHandle(
  domain: IommuDomain,
  group: IommuGroup,
  handle: IommuAttachHandle | undefined,
): Promise<void> {
  if (!handle) throw new KernelError("EINVAL", "no handle");
  await group.mutex.withLock(async () => {
    const entry = iommuMakePasidArrayEntry(domain, handle);
    group.pasidArray.insert(IOMMU_NO_PASID, undefined);
    try {
      await iommuAttachGroupLocked(domain, group);
    } catch (e) {
      group.pasidArray.release(IOMMU_NO_PASID);
      throw e;
    }
    group.pasidArray.store(IOMMU_NO_PASID, entry);
  });
}

/**
 * Undo {@link iommuAttachGroupHandle}: back to the core domain, handle forgotten.
 * @linux iommu_detach_group_handle
 */
export async function iommuDetachGroupHandle(_domain: IommuDomain, group: IommuGroup): Promise<void> {
  await group.mutex.withLock(async () => {
    await groupSetCoreDomain(group);
    group.pasidArray.erase(IOMMU_NO_PASID);
  });
}

/**
 * Replace the group's domain and its IOMMU_NO_PASID handle; on failure both stay as they were.
 * @linux iommu_replace_group_handle
 */
export async function iommuReplaceGroupHandle(
  group: IommuGroup,
  newDomain: IommuDomain | undefined,
  handle: IommuAttachHandle | undefined,
): Promise<void> {
  if (!newDomain || !handle) throw new KernelError("EINVAL", "no domain or handle");
  await group.mutex.withLock(async () => {
    const entry = iommuMakePasidArrayEntry(newDomain, handle);
    group.pasidArray.reserve(IOMMU_NO_PASID);
    try {
      await groupSetDomain(group, newDomain);
    } catch (e) {
      group.pasidArray.release(IOMMU_NO_PASID);
      throw e;
    }
    group.pasidArray.store(IOMMU_NO_PASID, entry);
  });
}

/**
 * Allocate a PASID below the device's `maxPasids` from the machine-wide space, or IOMMU_PASID_INVALID.
 * @linux iommu_alloc_global_pasid
 */
export function iommuAllocGlobalPasid(dev: Device): number {
  const max = devHasIommu(dev) ? (devIommu(dev)?.maxPasids ?? 0) : 0;
  const group = groupOf(dev);
  if (!max || !group) return IOMMU_PASID_INVALID;
  try {
    return group.registry.globalPasidIda.alloc(undefined, { min: IOMMU_FIRST_GLOBAL_PASID, max: max - 1 });
  } catch {
    return IOMMU_PASID_INVALID;
  }
}

/**
 * Free a PASID from {@link iommuAllocGlobalPasid}.
 * @linux iommu_free_global_pasid
 */
export function iommuFreeGlobalPasid(core: IommuCoreLike, pasid: number): void {
  const groups = core.groups;
  if (groups.diag.warnOn(pasid === IOMMU_PASID_INVALID, "free of IOMMU_PASID_INVALID")) return;
  groups.globalPasidIda.erase(pasid);
}
