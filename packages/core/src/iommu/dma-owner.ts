/**
 * DMA ownership: a kernel driver using the DMA API (owner_cnt without owner) versus a user-space driver (VFIO,
 * iommufd) that claims the group, which puts it on the blocking domain until released.
 * @linux iommu_device_use_default_domain, iommu_group_claim_dma_owner, iommu_device_claim_dma_owner and their
 * release (drivers/iommu/iommu.c)
 */
import { KernelError } from "../kernel/errno.js";
import type { Device } from "../platform/driver-core/device.js";
import { groupSetDomain, groupSetDomainNofail } from "./attach.js";
import type { IommuGroup } from "./group.js";
import { iommuGroupDomainAlloc } from "./group.js";
import { IOMMU_DOMAIN } from "./types.js";

function groupOf(dev: Device): IommuGroup | undefined {
  return dev.iommuGroup as IommuGroup | undefined;
}

/**
 * A kernel driver is about to bind to `dev` and use the DMA API: count it, unless user space owns the group or
 * the group is not on its default domain (EBUSY).
 * @linux iommu_device_use_default_domain
 */
export async function iommuDeviceUseDefaultDomain(dev: Device): Promise<void> {
  const group = groupOf(dev);
  if (!group) return;
  await group.mutex.withLock(() => {
    if (group.ownerCnt) {
      if (group.domain !== group.defaultDomain || group.owner !== undefined || !group.pasidArray.empty) {
        throw new KernelError("EBUSY", `${group} is owned by user space`);
      }
    }
    group.ownerCnt++;
  });
}

/**
 * The kernel driver of `dev` unbound.
 * @linux iommu_device_unuse_default_domain
 */
export async function iommuDeviceUnuseDefaultDomain(dev: Device): Promise<void> {
  const group = groupOf(dev);
  if (!group) return;
  await group.mutex.withLock(() => {
    if (!group.registry.diag.warnOn(!group.ownerCnt || !group.pasidArray.empty, `unbalanced unuse of ${group}`)) {
      group.ownerCnt--;
    }
  });
}

/**
 * Give the group a blocking domain: the driver's, or an empty paging domain for drivers without one.
 * @linux __iommu_group_alloc_blocking_domain
 */
export async function iommuGroupAllocBlockingDomain(group: IommuGroup): Promise<void> {
  if (group.blockingDomain) return;
  try {
    group.blockingDomain = await iommuGroupDomainAlloc(group, IOMMU_DOMAIN.BLOCKED);
  } catch {
    group.blockingDomain = await iommuGroupDomainAlloc(group, IOMMU_DOMAIN.UNMANAGED);
  }
}

async function takeDmaOwnership(group: IommuGroup, owner: unknown): Promise<void> {
  if ((group.domain && group.domain !== group.defaultDomain) || !group.pasidArray.empty) {
    throw new KernelError("EBUSY", `${group} is attached to a non-default domain`);
  }
  await iommuGroupAllocBlockingDomain(group);
  await groupSetDomain(group, group.blockingDomain!);
  group.owner = owner;
  group.ownerCnt++;
}

/**
 * Claim the whole group for `owner` (VFIO's group path): EPERM while any driver uses it, EBUSY when it is not on
 * its default domain; on success the group is blocked.
 * @linux iommu_group_claim_dma_owner
 */
export async function iommuGroupClaimDmaOwner(group: IommuGroup, owner: unknown): Promise<void> {
  if (group.registry.diag.warnOn(owner == null, "claim_dma_owner without owner")) {
    throw new KernelError("EINVAL", "no owner");
  }
  await group.mutex.withLock(async () => {
    if (group.ownerCnt) throw new KernelError("EPERM", `${group} is in use`);
    await takeDmaOwnership(group, owner);
  });
}

/**
 * Claim DMA ownership of a device for `owner`: devices of one group may share the claim with the same owner
 * (counted); EPERM when a kernel driver or another owner holds the group, EBUSY when it is not on its default
 * domain, ENODEV without a group.
 * @linux iommu_device_claim_dma_owner
 */
export async function iommuDeviceClaimDmaOwner(dev: Device, owner: unknown): Promise<void> {
  const group = groupOf(dev);
  if (owner == null) {
    // The kernel WARNs before looking at the group.
    const diag = group?.registry.diag;
    diag?.warnOn(true, "claim_dma_owner without owner");
    throw new KernelError("EINVAL", "no owner");
  }
  if (!group) throw new KernelError("ENODEV", `${dev.name} has no IOMMU group`);
  await group.mutex.withLock(async () => {
    if (group.ownerCnt) {
      if (group.owner !== owner) throw new KernelError("EPERM", `${group} is owned by someone else`);
      group.ownerCnt++;
      return;
    }
    await takeDmaOwnership(group, owner);
  });
}

async function releaseDmaOwnership(group: IommuGroup): Promise<void> {
  const bad = !group.ownerCnt || group.owner === undefined || !group.pasidArray.empty;
  if (group.registry.diag.warnOn(bad, `release of DMA ownership of ${group}, which is not owned (or has PASIDs)`)) {
    return;
  }
  group.ownerCnt = 0;
  group.owner = undefined;
  await groupSetDomainNofail(group, group.defaultDomain);
}

/**
 * Release the ownership taken with {@link iommuGroupClaimDmaOwner}; the group returns to its default domain.
 * @linux iommu_group_release_dma_owner
 */
export async function iommuGroupReleaseDmaOwner(group: IommuGroup): Promise<void> {
  await group.mutex.withLock(() => releaseDmaOwnership(group));
}

/**
 * Release one device's claim; the last one returns the group to its default domain.
 * @linux iommu_device_release_dma_owner
 */
export async function iommuDeviceReleaseDmaOwner(dev: Device): Promise<void> {
  const group = groupOf(dev)!;
  await group.mutex.withLock(async () => {
    if (group.ownerCnt > 1) group.ownerCnt--;
    else await releaseDmaOwnership(group);
  });
}

/**
 * Whether anyone (kernel driver or user space) uses the group's DMA.
 * @linux iommu_group_dma_owner_claimed
 */
export async function iommuGroupDmaOwnerClaimed(group: IommuGroup): Promise<boolean> {
  return group.mutex.withLock(() => group.ownerCnt !== 0);
}
