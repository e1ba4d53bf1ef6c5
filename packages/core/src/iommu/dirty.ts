/**
 * Dirty-tracking plumbing between a paging domain's `dirtyOps` and its user (iommufd): recording dirty ranges
 * into a bitmap while gathering the IOTLB invalidation that clearing the dirty bits requires.
 * @linux struct iommu_dirty_bitmap, iommu_dirty_bitmap_init / iommu_dirty_bitmap_record (include/linux/iommu.h),
 * iommu_read_and_clear_dirty (drivers/iommu/iommufd/io_pagetable.c)
 */
import { KernelError } from "../kernel/errno.js";
import { IotlbGather } from "../pgtable/gather.js";
import { IOMMU_DIRTY_NO_CLEAR } from "../pgtable/prot.js";
import type { IommuDomain } from "./domain.js";
import { iommuIotlbSync } from "./map.js";

export { IOMMU_DIRTY_NO_CLEAR } from "../pgtable/prot.js";

/** Where dirty ranges go (iommufd's iova_bitmap). @linux iova_bitmap_set */
export type DirtySink = (iova: number, length: number) => void;

/**
 * A dirty bitmap being filled: the sink that records ranges and the gather collecting what to invalidate.
 * @linux struct iommu_dirty_bitmap
 */
export class IommuDirtyBitmap {
  /** @linux iommu_dirty_bitmap_init */
  constructor(
    readonly bitmap: DirtySink | undefined,
    readonly gather: IotlbGather | undefined,
  ) {}

  /**
   * Record a dirty range: set it in the bitmap and add it to the invalidation.
   * @linux iommu_dirty_bitmap_record
   */
  record(iova: number, length: number): void {
    this.bitmap?.(iova, length);
    this.gather?.addRange(iova, length);
  }
}

/**
 * Turn the domain's dirty tracking on or off. EOPNOTSUPP when it has none.
 * @linux iommu_dirty_ops.set_dirty_tracking as iommufd_hwpt_set_dirty_tracking calls it
 */
export async function iommuSetDirtyTracking(domain: IommuDomain, enabled: boolean): Promise<void> {
  if (!domain.dirtyOps) throw new KernelError("EOPNOTSUPP", `${domain} cannot track dirty pages`);
  await domain.dirtyOps.setDirtyTracking(domain, enabled);
}

/**
 * Report the dirty ranges of [iova, iova + size) to `sink`, clearing them unless `flags` has
 * IOMMU_DIRTY_NO_CLEAR, and then invalidate the IOTLB for what was cleared. EOPNOTSUPP without dirty ops.
 * @linux iommu_read_and_clear_dirty (drivers/iommu/iommufd/io_pagetable.c)
 */
export function iommuReadAndClearDirty(
  domain: IommuDomain,
  iova: number,
  size: number,
  flags: number,
  sink: DirtySink,
): void {
  const ops = domain.dirtyOps;
  if (!ops) throw new KernelError("EOPNOTSUPP", `${domain} cannot track dirty pages`);
  const gather = new IotlbGather();
  const dirty = new IommuDirtyBitmap(sink, gather);
  ops.readAndClearDirty(domain, iova, size, flags, (i, l) => dirty.record(i, l));
  if (!(flags & IOMMU_DIRTY_NO_CLEAR)) iommuIotlbSync(domain, gather);
}
