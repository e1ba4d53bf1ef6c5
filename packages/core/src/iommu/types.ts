/**
 * The driver-facing contracts of the iommu core: `IommuOps` (struct iommu_ops), `IommuDomainOps`
 * (struct iommu_domain_ops), domain types and flags. Values of constants are the kernel's.
 * Sleep = async, atomic = sync: ops the kernel may call in atomic context (map/unmap/iova_to_phys/iotlb) are sync.
 */
import type { Module } from "../kernel/module.js";
import type { IommuIotlbGather } from "../pgtable/gather.js";
import type { Device, OfPhandleArgs } from "../platform/driver-core/device.js";
// Parts B and C write these files; keep the imports type-only so the module graph has no cycle at run time.
import type { IommuDomain } from "./domain.js";
import type { IommuGroup } from "./group.js";
import type { IommuDevice } from "./iommu-device.js";
import type { IommuPageResponse, IopfFault } from "./iopf-types.js";

export type { OfPhandleArgs } from "../platform/driver-core/device.js";

/** Domain type bits. @linux __IOMMU_DOMAIN_PAGING and friends (include/linux/iommu.h) */
export const IOMMU_DOMAIN_BITS = {
  PAGING: 1 << 0,
  DMA_API: 1 << 1,
  PT: 1 << 2,
  DMA_FQ: 1 << 3,
  SVA: 1 << 4,
  PLATFORM: 1 << 5,
  NESTED: 1 << 6,
} as const;

/** Domain types. @linux IOMMU_DOMAIN_BLOCKED .. IOMMU_DOMAIN_NESTED */
export const IOMMU_DOMAIN = {
  BLOCKED: 0,
  IDENTITY: IOMMU_DOMAIN_BITS.PT,
  UNMANAGED: IOMMU_DOMAIN_BITS.PAGING,
  DMA: IOMMU_DOMAIN_BITS.PAGING | IOMMU_DOMAIN_BITS.DMA_API,
  DMA_FQ: IOMMU_DOMAIN_BITS.PAGING | IOMMU_DOMAIN_BITS.DMA_API | IOMMU_DOMAIN_BITS.DMA_FQ,
  SVA: IOMMU_DOMAIN_BITS.SVA,
  PLATFORM: IOMMU_DOMAIN_BITS.PLATFORM,
  NESTED: IOMMU_DOMAIN_BITS.NESTED,
} as const;

/** Flags of domain_alloc_paging_flags, the IOMMU_HWPT_ALLOC_* values. @linux enum iommufd_hwpt_alloc_flags */
export const IOMMU_HWPT_ALLOC = {
  NEST_PARENT: 1 << 0,
  DIRTY_TRACKING: 1 << 1,
  FAULT_ID_VALID: 1 << 2,
  PASID: 1 << 3,
} as const;

/** Capabilities asked through `capable`. @linux enum iommu_cap */
export const IOMMU_CAP = {
  CACHE_COHERENCY: 0,
  NOEXEC: 1,
  PRE_BOOT_PROTECTION: 2,
  ENFORCE_CACHE_COHERENCY: 3,
  DEFERRED_FLUSH: 4,
  DIRTY_TRACKING: 5,
} as const;

/** Reserved region types. @linux enum iommu_resv_type */
export const IOMMU_RESV = {
  DIRECT: 0,
  DIRECT_RELAXABLE: 1,
  RESERVED: 2,
  MSI: 3,
  SW_MSI: 4,
} as const;

/** A reserved IOVA region of a device. @linux struct iommu_resv_region */
export interface IommuResvRegion {
  start: number;
  length: number;
  prot: number;
  type: number;
}

/** Driver data passed in from user space (iommufd), already copied in. @linux struct iommu_user_data */
export interface IommuUserData {
  type: number;
  /** The bytes user space passed (copy_struct_from_user semantics are the driver's, via `copyStruct`). */
  data: Uint8Array;
  /**
   * Copy driver output back into the user buffer (at most `data.length` bytes; EFAULT when unwritable). Present
   * for in/out driver data (IOMMU_VIOMMU_ALLOC).
   * @linux iommu_copy_struct_to_user
   */
  copyToUser?(bytes: Uint8Array): void;
}

/** The aperture of a paging domain. @linux struct iommu_domain_geometry */
export interface IommuDomainGeometry {
  apertureStart: number;
  apertureEnd: number;
  forceAperture: boolean;
}

/**
 * Per-domain operations a driver provides.
 * @linux struct iommu_domain_ops
 */
export interface IommuDomainOps {
  /** @linux iommu_domain_ops.attach_dev */
  attachDev?(domain: IommuDomain, dev: Device, old: IommuDomain | undefined): Promise<void>;
  /** @linux iommu_domain_ops.set_dev_pasid */
  setDevPasid?(domain: IommuDomain, dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void>;
  /** Map `pgcount` pages of `pgsize`; returns bytes mapped (throws KernelError on failure). @linux map_pages */
  mapPages?(
    domain: IommuDomain,
    iova: number,
    paddr: number,
    pgsize: number,
    pgcount: number,
    prot: number,
    gather: IommuIotlbGather,
  ): number;
  /** Unmap; returns bytes unmapped. @linux unmap_pages */
  unmapPages?(domain: IommuDomain, iova: number, pgsize: number, pgcount: number, gather: IommuIotlbGather): number;
  /** @linux iova_to_phys */
  iovaToPhys?(domain: IommuDomain, iova: number): number;
  /** @linux flush_iotlb_all */
  flushIotlbAll?(domain: IommuDomain): void;
  /** @linux iotlb_sync_map */
  iotlbSyncMap?(domain: IommuDomain, iova: number, size: number): void;
  /** @linux iotlb_sync */
  iotlbSync?(domain: IommuDomain, gather: IommuIotlbGather): void;
  /** Invalidate caches from a user array of driver-typed entries; returns the count handled. @linux cache_invalidate_user */
  cacheInvalidateUser?(domain: IommuDomain, array: IommuUserDataArray): Promise<void>;
  /** @linux enforce_cache_coherency */
  enforceCacheCoherency?(domain: IommuDomain): boolean;
  /** @linux free */
  free?(domain: IommuDomain): void;
}

/**
 * Dirty tracking ops of a paging domain.
 * @linux struct iommu_dirty_ops
 */
export interface IommuDirtyOps {
  setDirtyTracking(domain: IommuDomain, enabled: boolean): Promise<void>;
  /** Report dirty IOVA ranges through `record`; clear unless flags has IOMMU_DIRTY_NO_CLEAR. */
  readAndClearDirty(
    domain: IommuDomain,
    iova: number,
    size: number,
    flags: number,
    record: (iova: number, length: number) => void,
  ): void;
}

/** An array of user entries (for cache invalidation), with the in/out `entry_num`. @linux struct iommu_user_data_array */
export interface IommuUserDataArray {
  type: number;
  entryLen: number;
  entryNum: number;
  /**
   * Read entry `i`, zero-extended/validated to `size` bytes like copy_struct_from_user. With `minLen` (the
   * `iommu_copy_struct_from_user_array` form) an `entryLen` below `minLen` or above `size` is EINVAL instead.
   */
  entry(i: number, size: number, minLen?: number): Uint8Array;
}

/**
 * A vIOMMU as its driver sees it (the iommufd object implements it).
 * @linux struct iommufd_viommu (the part drivers use)
 */
export interface IommuViommu {
  /** @linux iommufd_viommu.type (enum iommu_viommu_type) */
  readonly viommuType: number;
  /** The physical IOMMU instance behind it. @linux iommufd_viommu.iommu_dev */
  readonly iommuDev: IommuDevice | undefined;
  /** The nesting parent's domain. @linux iommufd_viommu.hwpt->common.domain */
  readonly parentDomain: IommuDomain;
  /** Set by the driver's `viommuInit`. @linux iommufd_viommu.ops */
  ops: IommuViommuOps | undefined;
  /** Driver state (what the driver's container struct holds in Linux). */
  priv: unknown;
  /** The physical device of the vDEVICE with this virtual ID. @linux iommufd_viommu_find_dev */
  findDev(virtId: number): Device | undefined;
  /** The virtual ID of `dev` in this vIOMMU; ENOENT without a vDEVICE. @linux iommufd_viommu_get_vdev_id */
  getVdevId(dev: Device): number;
  /**
   * Report a driver event of `type` (an `IOMMU_VEVENTQ_TYPE_*`) with its payload to the vIOMMU's vEVENTQ of that
   * type. Rejects with EOPNOTSUPP when there is no such queue, ENOMEM when the event was dropped (a lost-events
   * record is queued instead). Async because Linux takes the vEVENTQ list's rwsem, which may sleep.
   * @linux iommufd_viommu_report_event
   */
  reportEvent(type: number, data: Uint8Array): Promise<void>;
  /**
   * Let user space mmap the physical range [mmioAddr, mmioAddr + length) (page aligned) through the iommufd file,
   * and return the offset to report to it (with the length) in the driver's IOMMU_VIOMMU_ALLOC output. Each mapping
   * keeps the vIOMMU busy (IOMMU_DESTROY answers EBUSY) until unmapped. EINVAL for an unaligned range. The driver
   * undoes it with {@link destroyMmap} in its `destroy` (and on its own failure paths).
   * @linux iommufd_viommu_alloc_mmap
   */
  allocMmap(mmioAddr: number, length: number): number;
  /** Unregister the region at `offset`; mappings already made stay. @linux iommufd_viommu_destroy_mmap */
  destroyMmap(offset: number): void;
}

/**
 * A vDEVICE as its driver sees it.
 * @linux struct iommufd_vdevice (the part drivers use)
 */
export interface IommuVdevice {
  /** @linux iommufd_vdevice.virt_id */
  readonly virtId: number;
  /** The physical device. @linux iommufd_vdevice.idev->dev */
  readonly dev: Device;
  /** @linux iommufd_vdevice.viommu */
  readonly viommu: IommuViommu;
  /** Driver state. */
  priv: unknown;
  /** Driver teardown, set by `vdeviceInit`. @linux iommufd_vdevice.destroy */
  destroy: ((vdev: IommuVdevice) => void) | undefined;
}

/**
 * A hardware-accelerated queue as its driver sees it.
 * @linux struct iommufd_hw_queue (the part drivers use)
 */
export interface IommuHwQueue {
  /** @linux iommufd_hw_queue.viommu */
  readonly viommu: IommuViommu;
  /** @linux iommufd_hw_queue.type */
  readonly queueType: number;
  /** Guest (nesting-parent) IOVA of the queue. @linux iommufd_hw_queue.base_addr */
  readonly baseAddr: number;
  /** @linux iommufd_hw_queue.length */
  readonly length: number;
  /** Driver state. */
  priv: unknown;
  /** Driver teardown, set by `hwQueueInitPhys`. @linux iommufd_hw_queue.destroy */
  destroy: ((q: IommuHwQueue) => void) | undefined;
  /** Make this queue hold `other` (destroying `other` is EBUSY meanwhile). @linux iommufd_hw_queue_depend */
  depend(other: IommuHwQueue): void;
  /** Drop a dependency taken with `depend`. @linux iommufd_hw_queue_undepend */
  undepend(other: IommuHwQueue): void;
}

/**
 * What a driver implements for its vIOMMUs.
 * @linux struct iommufd_viommu_ops (include/linux/iommufd.h)
 */
export interface IommuViommuOps {
  /** Free driver state (the core frees the object). @linux iommufd_viommu_ops.destroy */
  destroy?(viommu: IommuViommu): void;
  /** A nested domain on the vIOMMU's parent, from driver data. @linux iommufd_viommu_ops.alloc_domain_nested */
  allocDomainNested?(viommu: IommuViommu, flags: number, userData: IommuUserData): Promise<IommuDomain>;
  /** Invalidate caches from a user array; `entryNum` becomes the count handled. @linux iommufd_viommu_ops.cache_invalidate */
  cacheInvalidate?(viommu: IommuViommu, array: IommuUserDataArray): Promise<void>;
  /** Initialise a vDEVICE (EINVAL for a virtual ID the driver cannot use). @linux iommufd_viommu_ops.vdevice_init */
  vdeviceInit?(vdev: IommuVdevice): Promise<void>;
  /** Non-zero when the driver has HW queues of `queueType`. @linux iommufd_viommu_ops.get_hw_queue_size */
  getHwQueueSize?(viommu: IommuViommu, queueType: number): number;
  /** Set up a HW queue whose guest memory starts at physical `basePa`. @linux iommufd_viommu_ops.hw_queue_init_phys */
  hwQueueInitPhys?(q: IommuHwQueue, index: number, basePa: number): Promise<void>;
}

/**
 * What a driver implements. Optional members are optional in Linux too.
 * @linux struct iommu_ops
 */
export interface IommuOps {
  /** Module that provides these ops; the core holds a reference while a device is probed. @linux iommu_ops.owner */
  owner?: Module;
  /** @linux capable */
  capable?(dev: Device, cap: number): boolean;
  /** Per-driver info for IOMMU_GET_HW_INFO. @linux hw_info */
  hwInfo?(dev: Device, type: number): { type: number; data: Uint8Array };
  /** @linux domain_alloc_paging */
  domainAllocPaging?(dev: Device): Promise<IommuDomain>;
  /** @linux domain_alloc_paging_flags */
  domainAllocPagingFlags?(dev: Device, flags: number, userData: IommuUserData | undefined): Promise<IommuDomain>;
  /** @linux domain_alloc_nested */
  domainAllocNested?(dev: Device, parent: IommuDomain, flags: number, userData: IommuUserData): Promise<IommuDomain>;
  /** Always-available identity domain. @linux identity_domain */
  identityDomain?: IommuDomain;
  /** Always-available blocking domain. @linux blocked_domain */
  blockedDomain?: IommuDomain;
  /** Domain to attach on release. @linux release_domain */
  releaseDomain?: IommuDomain;
  /** @linux def_domain_type */
  defDomainType?(dev: Device): number;
  /**
   * Probe a device: the driver finds its own instance (e.g. `busFindDeviceByNode` on the fwspec's IOMMU fwnode,
   * putting that reference, or the DRHD/IVHD covering it on ACPI) and returns it; throws ENODEV for a device it
   * does not translate. Called under the probe-device lock, with a module reference on `owner` held.
   * @linux probe_device
   */
  probeDevice?(dev: Device): Promise<IommuDevice>;
  /**
   * Probe a device whose instance the core already looked up from the fwspec (the driver style proposed in the
   * "iommu: fix device leaks" thread, where the core rather than each driver resolves the IOMMU fwnode, so no
   * driver can leak the reference). Preferred over `probeDevice` when the device has a fwspec. Called under the
   * probe-device lock, with a module reference on `owner` held.
   * @linux probe_device (with the iommu_device passed in, as proposed upstream)
   */
  probeDeviceFwspec?(dev: Device, iommu: IommuDevice): Promise<void>;
  /** Undo `probeDevice`: stop using any domain on the device and free per-device driver state. @linux release_device */
  releaseDevice?(dev: Device): void;
  /** @linux probe_finalize */
  probeFinalize?(dev: Device): void;
  /** @linux device_group */
  deviceGroup?(dev: Device): Promise<IommuGroup>;
  /** @linux get_resv_regions */
  getResvRegions?(dev: Device): IommuResvRegion[];
  /** Translate a DT specifier into fwspec IDs (iommuFwspecAddIds). Called under the probe-device lock. @linux of_xlate */
  ofXlate?(dev: Device, args: OfPhandleArgs): Promise<void>;
  /** @linux is_attach_deferred */
  isAttachDeferred?(dev: Device): boolean;
  /** Answer a page request. @linux page_response */
  pageResponse?(dev: Device, fault: IopfFault, msg: IommuPageResponse): void;
  /** Superseded by `getViommuSize` / `viommuInit`; kept for compatibility. */
  viommuAlloc?(...args: unknown[]): Promise<unknown>;
  /** Non-zero when the driver has vIOMMUs of `viommuType` for `dev`. @linux iommu_ops.get_viommu_size */
  getViommuSize?(dev: Device, viommuType: number): number;
  /**
   * Initialise a vIOMMU on a nesting parent: set `viommu.ops`; read (and write back) driver data.
   * @linux iommu_ops.viommu_init
   */
  viommuInit?(viommu: IommuViommu, parentDomain: IommuDomain, userData: IommuUserData | undefined): Promise<void>;
  /** Page sizes the driver's domains support by default. @linux pgsize_bitmap (now per domain) */
  pgsizeBitmap?: number;
  /** @linux default_domain_ops */
  defaultDomainOps?: IommuDomainOps;
  /** @linux user_pasid_table */
  userPasidTable?: boolean;
}
