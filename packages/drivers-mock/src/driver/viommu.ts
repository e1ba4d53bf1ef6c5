/**
 * The mock driver's vIOMMU: IOMMU_VIOMMU_TYPE_SELFTEST with a loopback of driver data, nested domains allocated on
 * the vIOMMU (attaching one needs the device's vDEVICE there), cache invalidation by virtual device ID updating a
 * per-device fake cache, a virtual-ID limit for vDEVICEs, and HW queues with the index/dependency rules.
 * @linux drivers/iommu/iommufd/selftest.c (mock_viommu_*, mock_hw_queue_*, struct mock_viommu), iommufd_test.h
 */
import {
  type Device,
  IOMMU_HWPT_ALLOC,
  type IommuDomain,
  type IommuHwQueue,
  type IommuUserData,
  type IommuUserDataArray,
  type IommuVdevice,
  type IommuViommu,
  type IommuViommuOps,
  kerr,
  PAGE_SIZE,
} from "@iommu-sim/core";
import { MockPagingDomain } from "./domains.js";
import type { MockIommu } from "./mock-iommu.js";

/** vIOMMU type of the mock. @linux IOMMU_VIOMMU_TYPE_SELFTEST (iommufd_test.h) */
export const IOMMU_VIOMMU_TYPE_SELFTEST = 0xdeadbeef;
/** Invalidation entry type of `struct iommu_viommu_invalidate_selftest`. @linux IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
/** An invalidation type no driver has. @linux IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
/** An invalidation type no driver has. @linux IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
/** HW queue type of the mock. @linux IOMMU_HW_QUEUE_TYPE_SELFTEST */
export const IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdeadbeef;
/** HW queues per mock vIOMMU. @linux IOMMU_TEST_HW_QUEUE_MAX */
export const IOMMU_TEST_HW_QUEUE_MAX = 2;
/** Cache entries of a mock device. @linux MOCK_DEV_CACHE_NUM */
export const MOCK_DEV_CACHE_NUM = 4;
/** @linux MOCK_DEV_CACHE_ID_MAX */
export const MOCK_DEV_CACHE_ID_MAX = 3;
/** Initial value of a mock device's cache entries. @linux IOMMU_TEST_DEV_CACHE_DEFAULT */
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;
/**
 * Largest virtual ID the mock takes (a 32-bit vSID-like ID). Linux's mock has no limit of its own; this gives the
 * driver-range EINVAL of IOMMU_VDEVICE_ALLOC a driver to come from.
 */
export const MOCK_VDEV_VIRT_ID_MAX = 0xffff_ffff;
/** sizeof(struct iommu_viommu_selftest). @linux struct iommu_viommu_selftest { in_data; out_data; out_mmap_offset; out_mmap_length } */
export const IOMMU_VIOMMU_SELFTEST_SIZE = 24;
/** offsetofend(struct iommu_viommu_selftest, out_data): what the mock reads (copy_struct_from_user's minimum). */
const VIOMMU_SELFTEST_MIN = 8;
/** The mock vIOMMU's mmap window: two pages (order 1), the first starting with in_data. */
const MOCK_VIOMMU_PAGE_ORDER = 1;
/** Site of the window's allocation in leak reports. */
export const MOCK_VIOMMU_PAGE_SITE = "mock_viommu_page";
/** sizeof(struct iommu_viommu_invalidate_selftest { flags; vdev_id; cache_id; }). */
const VIOMMU_INV_SIZE = 12;
/** Invalidate every cache entry. @linux IOMMU_TEST_INVALIDATE_FLAG_ALL */
const INVALIDATE_FLAG_ALL = 1 << 0;

const devCaches = new WeakMap<Device, Uint32Array>();

/**
 * The fake per-device cache the vIOMMU invalidation clears (IOMMU_TEST_OP_DEV_CHECK_CACHE reads it).
 * @linux mock_dev.cache
 */
export function mockDevCache(dev: Device): Uint32Array {
  let c = devCaches.get(dev);
  if (!c) {
    c = new Uint32Array(MOCK_DEV_CACHE_NUM).fill(IOMMU_TEST_DEV_CACHE_DEFAULT);
    devCaches.set(dev, c);
  }
  return c;
}

/**
 * The driver half of a mock vIOMMU (`viommu.priv`).
 * @linux struct mock_viommu
 */
export class MockViommu {
  /** @linux mock_viommu.hw_queue */
  readonly hwQueues: (IommuHwQueue | undefined)[] = new Array(IOMMU_TEST_HW_QUEUE_MAX).fill(undefined);
  /** The two pages user space may mmap (allocated when IOMMU_VIOMMU_ALLOC passed data), or -1. @linux mock_viommu.page */
  page = -1;
  /** Their mmap offset in the iommufd file. @linux mock_viommu.mmap_offset */
  mmapOffset = 0;

  constructor(
    readonly iommu: MockIommu | undefined,
    /** @linux mock_viommu.s2_parent */
    readonly parent: MockPagingDomain,
  ) {}
}

function u32(data: Uint8Array, off: number): number {
  return new DataView(data.buffer, data.byteOffset + off, 4).getUint32(0, true);
}

/** What the vIOMMU ops need of the driver. */
export interface MockViommuDeps {
  /** A nested domain on `parent` from `struct iommu_hwpt_selftest` data, tied to `viommu`. */
  allocNested(parent: MockPagingDomain, data: IommuUserData, viommu: IommuViommu): Promise<IommuDomain>;
}

/** The mock vIOMMU's driver half. */
function mockOf(viommu: IommuViommu): MockViommu {
  return viommu.priv as MockViommu;
}

/**
 * The vIOMMU ops of the mock.
 * @linux mock_viommu_ops
 */
export function createMockViommuOps(deps: MockViommuDeps): IommuViommuOps {
  return {
    /** @linux mock_viommu_destroy */
    destroy: (viommu) => {
      const mv = mockOf(viommu);
      if (mv.page >= 0) {
        viommu.destroyMmap(mv.mmapOffset);
        mv.iommu!.machine.pages.freePages(mv.page, MOCK_VIOMMU_PAGE_ORDER);
      }
      viommu.priv = undefined;
    },
    /** @linux mock_viommu_alloc_domain_nested */
    allocDomainNested: async (viommu, flags, userData) => {
      // iommufd strips FAULT_ID_VALID in Linux; accepting it here is the same.
      if (flags & ~(IOMMU_HWPT_ALLOC.FAULT_ID_VALID | IOMMU_HWPT_ALLOC.PASID)) {
        throw kerr("EOPNOTSUPP", "mock: unsupported nested flags");
      }
      return deps.allocNested(mockOf(viommu).parent, userData, viommu);
    },
    /** @linux mock_viommu_cache_invalidate */
    cacheInvalidate: async (viommu, array) => mockViommuCacheInvalidate(viommu, array),
    /** The mock's virtual-ID range (see {@link MOCK_VDEV_VIRT_ID_MAX}). */
    vdeviceInit: async (vdev: IommuVdevice) => {
      if (vdev.virtId > MOCK_VDEV_VIRT_ID_MAX) throw kerr("EINVAL", `mock: virt_id ${vdev.virtId} out of range`);
    },
    /** @linux mock_viommu_get_hw_queue_size */
    getHwQueueSize: (_viommu, type) => (type === IOMMU_HW_QUEUE_TYPE_SELFTEST ? 1 : 0),
    /** @linux mock_hw_queue_init_phys */
    hwQueueInitPhys: async (q, index, basePa) => {
      const mv = mockOf(q.viommu);
      if (index >= IOMMU_TEST_HW_QUEUE_MAX) throw kerr("EINVAL", `mock: no HW queue ${index}`);
      if (mv.hwQueues[index]) throw kerr("EEXIST", `mock: HW queue ${index} exists`);
      const prev = index ? mv.hwQueues[index - 1] : undefined;
      if (index && !prev) throw kerr("EIO", `mock: HW queue ${index - 1} is missing`);
      // Catch a core that converted the address wrongly.
      if (basePa !== mv.parent.pt.iovaToPhys(q.baseAddr)) throw kerr("EFAULT", "mock: wrong queue address");
      if (prev) q.depend(prev);
      mv.hwQueues[index] = q;
      q.destroy = () => {
        if (mv.hwQueues[index] === q) mv.hwQueues[index] = undefined;
        if (prev) q.undepend(prev);
      };
    },
  };
}

/**
 * Clear device caches by virtual device ID from `struct iommu_viommu_invalidate_selftest` entries; a zero-length
 * array of the right type only validates the type. `entryNum` becomes the number handled.
 * @linux mock_viommu_cache_invalidate
 */
export async function mockViommuCacheInvalidate(viommu: IommuViommu, array: IommuUserDataArray): Promise<void> {
  if (array.entryNum === 0 && array.type === IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST) return;
  let done = 0;
  try {
    if (array.type !== IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST || !array.entryNum) {
      throw kerr("EINVAL", "mock: bad invalidation type");
    }
    // iommu_copy_struct_from_full_user_array: every entry is fetched before any is handled.
    const entries: Uint8Array[] = [];
    for (let i = 0; i < array.entryNum; i++) entries.push(array.entry(i, VIOMMU_INV_SIZE));
    for (const e of entries) {
      const flags = u32(e, 0);
      const vdevId = u32(e, 4);
      const cacheId = u32(e, 8);
      if (flags & ~INVALIDATE_FLAG_ALL) throw kerr("EOPNOTSUPP", "mock: bad invalidation flags");
      if (cacheId > MOCK_DEV_CACHE_ID_MAX) throw kerr("EINVAL", `mock: bad cache_id ${cacheId}`);
      const dev = viommu.findDev(vdevId);
      if (!dev) throw kerr("EINVAL", `mock: no vDEVICE ${vdevId}`);
      const cache = mockDevCache(dev);
      if (flags & INVALIDATE_FLAG_ALL) cache.fill(0);
      else cache[cacheId] = 0;
      done++;
    }
  } finally {
    array.entryNum = done;
  }
}

/**
 * Build a mock vIOMMU on `parent` (a mock nest parent). With driver data: loop it back (`out_data = in_data`) and
 * give user space a two-page window to mmap whose first word is `in_data` (`out_mmap_offset`, `out_mmap_length`);
 * the output needs the whole struct (EINVAL otherwise, with everything undone).
 * @linux mock_get_viommu_size + mock_viommu_init
 */
export async function mockViommuInit(
  viommu: IommuViommu,
  parent: IommuDomain,
  userData: IommuUserData | undefined,
  ops: IommuViommuOps,
): Promise<void> {
  if (!(parent instanceof MockPagingDomain)) throw kerr("EINVAL", "mock: parent is not a mock domain");
  const iommu = viommu.iommuDev as MockIommu | undefined;
  const mv = new MockViommu(iommu, parent);
  if (userData) {
    // iommu_copy_struct_from_user(&data, user_data, IOMMU_VIOMMU_TYPE_SELFTEST, out_data)
    if (userData.type !== IOMMU_VIOMMU_TYPE_SELFTEST) throw kerr("EINVAL", "mock: bad data type");
    const d = userData.data;
    if (d.length < VIOMMU_SELFTEST_MIN || d.length > IOMMU_VIOMMU_SELFTEST_SIZE) {
      throw kerr("EINVAL", "mock: bad data length");
    }
    if (!iommu) throw kerr("ENODEV", "mock: vIOMMU without a mock IOMMU");
    const inData = u32(d, 0);
    const pages = iommu.machine.pages;
    const memory = iommu.machine.memory;
    const length = PAGE_SIZE << MOCK_VIOMMU_PAGE_ORDER;
    const page = pages.allocPages(MOCK_VIOMMU_PAGE_ORDER, MOCK_VIOMMU_PAGE_SITE);
    let offset: number;
    try {
      memory.fill(page, length, 0); // __GFP_ZERO
      offset = viommu.allocMmap(page, length);
    } catch (e) {
      pages.freePages(page, MOCK_VIOMMU_PAGE_ORDER);
      throw e;
    }
    try {
      // For loopback tests on both the page and out_data.
      memory.write32(page, inData);
      // iommu_copy_struct_to_user(user_data, &data, IOMMU_VIOMMU_TYPE_SELFTEST, out_mmap_length)
      if (d.length < IOMMU_VIOMMU_SELFTEST_SIZE) throw kerr("EINVAL", "mock: data too short for the mmap window");
      const out = new Uint8Array(IOMMU_VIOMMU_SELFTEST_SIZE);
      const w = new DataView(out.buffer);
      w.setUint32(0, inData, true);
      w.setUint32(4, inData, true);
      w.setBigUint64(8, BigInt(offset), true);
      w.setBigUint64(16, BigInt(length), true);
      userData.copyToUser?.(out);
    } catch (e) {
      viommu.destroyMmap(offset);
      pages.freePages(page, MOCK_VIOMMU_PAGE_ORDER);
      throw e;
    }
    mv.page = page;
    mv.mmapOffset = offset;
  }
  viommu.priv = mv;
  viommu.ops = ops;
}
