/**
 * Reserved IOVA regions: what a device's IOMMU driver says must not be used (or must be identity mapped) in its
 * domains, merged per group, and the 1:1 mappings the core installs for IOMMU_RESV_DIRECT regions.
 * @linux iommu_get_resv_regions, iommu_get_group_resv_regions, iommu_insert_resv_region,
 * iommu_alloc_resv_region, iommu_create_device_direct_mappings (drivers/iommu/iommu.c)
 */
import { KernelError } from "../kernel/errno.js";
import type { FaultInjector } from "../kernel/fault-inject.js";
import { IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_WRITE } from "../pgtable/prot.js";
import type { Device } from "../platform/driver-core/device.js";
import { devHasIommu, devIommu, devIommuOps } from "./dev-iommu.js";
import { type IommuDomain, iommuIsDmaDomain } from "./domain.js";
import type { IommuGroup } from "./group.js";
import { iommuFlushIotlbAll, iommuIovaToPhys, iommuMap } from "./map.js";
import { IOMMU_RESV, type IommuResvRegion } from "./types.js";

/** Where ARM drivers place the software MSI doorbell window. @linux MSI_IOVA_BASE (arm-smmu-v3.h) */
export const MSI_IOVA_BASE = 0x8000000;
/** @linux MSI_IOVA_LENGTH */
export const MSI_IOVA_LENGTH = 0x100000;
/** The x86 interrupt address range, reserved as IOMMU_RESV_MSI by VT-d and AMD-Vi. @linux IOAPIC_RANGE_START */
export const X86_MSI_RANGE_START = 0xfee00000;
/** @linux IOAPIC_RANGE_END */
export const X86_MSI_RANGE_END = 0xfeefffff;

/** Names of the region types, as sysfs prints them. @linux iommu_group_resv_type_string */
export const IOMMU_RESV_TYPE_STRING: Readonly<Record<number, string>> = {
  [IOMMU_RESV.DIRECT]: "direct",
  [IOMMU_RESV.DIRECT_RELAXABLE]: "direct-relaxable",
  [IOMMU_RESV.RESERVED]: "reserved",
  [IOMMU_RESV.MSI]: "msi",
  [IOMMU_RESV.SW_MSI]: "msi",
};

/**
 * A new region; ENOMEM when `faults` fails the allocation.
 * @linux iommu_alloc_resv_region
 */
export function iommuAllocResvRegion(
  start: number,
  length: number,
  prot: number,
  type: number,
  faults?: FaultInjector,
): IommuResvRegion {
  faults?.check("iommu_alloc_resv_region");
  return { start, length, prot, type };
}

/**
 * The software MSI window regions ARM drivers report.
 * @linux the IOMMU_RESV_SW_MSI region of arm_smmu_get_resv_regions
 */
export function iommuSwMsiRegion(faults?: FaultInjector): IommuResvRegion {
  return iommuAllocResvRegion(
    MSI_IOVA_BASE,
    MSI_IOVA_LENGTH,
    IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO,
    IOMMU_RESV.SW_MSI,
    faults,
  );
}

/**
 * The device's reserved regions, from its driver (a fresh list the caller owns).
 * @linux iommu_get_resv_regions
 */
export function iommuGetResvRegions(dev: Device): IommuResvRegion[] {
  const ops = devIommuOps(dev);
  return ops.getResvRegions ? ops.getResvRegions(dev) : [];
}

/**
 * Release a list from {@link iommuGetResvRegions} (nothing to free in a garbage-collected heap).
 * @linux iommu_put_resv_regions
 */
export function iommuPutResvRegions(_dev: Device, list: IommuResvRegion[]): void {
  list.length = 0;
}

/**
 * Insert a copy of `nr` into `regions`, kept sorted by start (then type), merging overlapping or adjacent
 * regions of the same type.
 * @linux iommu_insert_resv_region
 */
export function iommuInsertResvRegion(nr: IommuResvRegion, regions: IommuResvRegion[], faults?: FaultInjector): void {
  const copy = iommuAllocResvRegion(nr.start, nr.length, nr.prot, nr.type, faults);
  let at = regions.findIndex((it) => copy.start < it.start || (copy.start === it.start && copy.type <= it.type));
  if (at < 0) at = regions.length;
  regions.splice(at, 0, copy);
  const stack: IommuResvRegion[] = [];
  for (const it of regions) {
    if (it.type !== nr.type) {
      stack.push(it);
      continue;
    }
    let top: IommuResvRegion | undefined;
    for (let k = stack.length - 1; k >= 0; k--) {
      if (stack[k]!.type === it.type) {
        top = stack[k];
        break;
      }
    }
    if (!top) {
      stack.push(it);
      continue;
    }
    const topEnd = top.start + top.length - 1;
    const itEnd = it.start + it.length - 1;
    if (it.start > topEnd + 1) stack.push(it);
    else top.length = Math.max(topEnd, itEnd) - top.start + 1;
  }
  regions.splice(0, regions.length, ...stack);
}

/**
 * The reserved regions of every device in the group, merged, under the group mutex. Stops at a device without an
 * IOMMU (a group made for VFIO only).
 * @linux iommu_get_group_resv_regions
 */
export async function iommuGetGroupResvRegions(group: IommuGroup): Promise<IommuResvRegion[]> {
  const head: IommuResvRegion[] = [];
  await group.mutex.withLock(() => {
    for (const gdev of group.devices) {
      if (!devHasIommu(gdev.dev)) break;
      const list = iommuGetResvRegions(gdev.dev);
      for (const r of list) iommuInsertResvRegion(r, head, group.registry.faults);
      iommuPutResvRegions(gdev.dev, list);
    }
  });
  return head;
}

/**
 * The group's `reserved_regions` sysfs text: `0x<start> 0x<end> <type>` per line.
 * @linux iommu_group_show_resv_regions
 */
export async function iommuGroupShowResvRegions(group: IommuGroup): Promise<string> {
  const hex = (n: number) => `0x${n.toString(16).padStart(16, "0")}`;
  const regions = await iommuGetGroupResvRegions(group);
  return regions
    .map((r) => `${hex(r.start)} ${hex(r.start + r.length - 1)} ${IOMMU_RESV_TYPE_STRING[r.type] ?? "?"}\n`)
    .join("");
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/**
 * Install identity mappings for the device's DIRECT and DIRECT_RELAXABLE regions in a DMA domain, coalescing
 * unmapped runs of the smallest page size and skipping pages already mapped (other devices of the group may
 * share them); marks the device as requiring direct mappings when it has a DIRECT region. Flushes the IOTLB
 * when it mapped anything. Throws the map error.
 * @linux iommu_create_device_direct_mappings
 */
export async function iommuCreateDeviceDirectMappings(domain: IommuDomain, dev: Device): Promise<void> {
  const bitmap = domain.pgsizeBitmap;
  let pgSize = 0;
  if (bitmap) {
    pgSize = 1;
    while ((bitmap / pgSize) % 2 !== 1) pgSize *= 2;
  }
  const isDma = iommuIsDmaDomain(domain);
  if (isDma && !pgSize) {
    domain.diag?.warnOnOnce(true, "DMA domain without page sizes");
    throw new KernelError("EINVAL", "DMA domain without page sizes");
  }
  const mappings = iommuGetResvRegions(dev);
  try {
    for (const entry of mappings) {
      if (entry.type === IOMMU_RESV.DIRECT) {
        const p = devIommu(dev);
        if (p) p.requireDirect = true;
      }
      if ((entry.type !== IOMMU_RESV.DIRECT && entry.type !== IOMMU_RESV.DIRECT_RELAXABLE) || !isDma) continue;
      const start = alignUp(entry.start, pgSize);
      const end = alignUp(entry.start + entry.length, pgSize);
      let mapSize = 0;
      for (let addr = start; addr <= end; addr += pgSize) {
        if (addr !== end && !iommuIovaToPhys(domain, addr)) {
          mapSize += pgSize;
          continue;
        }
        if (mapSize) {
          iommuMap(domain, addr - mapSize, addr - mapSize, mapSize, entry.prot);
          mapSize = 0;
        }
      }
    }
    if (mappings.length > 0 && isDma) iommuFlushIotlbAll(domain);
  } finally {
    iommuPutResvRegions(dev, mappings);
  }
}
