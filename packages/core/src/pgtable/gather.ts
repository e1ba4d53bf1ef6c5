/**
 * The IOTLB gather: the IOVA range an unmap touched and the table pages it unlinked, kept until the caller has
 * invalidated the IOTLB (and any walk cache) and only then freed.
 * @linux struct iommu_iotlb_gather (include/linux/iommu.h), iommu_pages_list (drivers/iommu/iommu-pages.h)
 */

/** What a gather needs to give table pages back. */
export interface GatherPageFreer {
  freePages(pa: number, order: number): void;
}

/** The largest unsigned long IOVA the kernel's empty gather starts from. */
const EMPTY_START = Number.MAX_SAFE_INTEGER;

/**
 * Range and freed-page list of one unmap (or several aggregated unmaps).
 * @linux struct iommu_iotlb_gather
 */
export class IotlbGather {
  /** First IOVA to invalidate (inclusive); `Number.MAX_SAFE_INTEGER` while empty. */
  start = EMPTY_START;
  /** Last IOVA to invalidate (inclusive). */
  end = 0;
  /** Granule of the invalidation, 0 when mixed or unset. @linux iommu_iotlb_gather.pgsize */
  pgsize = 0;
  /** Set by flush-queue users; unmaps then skip adding ranges. @linux iommu_iotlb_gather.queued */
  queued = false;
  /** Table pages unlinked from the tree, as (pa, order) pairs, waiting for the invalidation to finish. */
  readonly freelist: number[] = [];

  /** @linux iommu_iotlb_gather_init */
  reset(): void {
    this.start = EMPTY_START;
    this.end = 0;
    this.pgsize = 0;
    this.queued = false;
    // Setting an array's length is a runtime call even when it changes nothing: skip it on the common empty list.
    if (this.freelist.length !== 0) this.freelist.length = 0;
  }

  /** True when nothing has been gathered. */
  get empty(): boolean {
    return this.end === 0 && this.start === EMPTY_START && this.freelist.length === 0;
  }

  /** Number of table allocations on the free list. */
  get freedTables(): number {
    return this.freelist.length >>> 1;
  }

  /**
   * Whether [iova, iova + size) is neither inside nor adjacent to the gathered range.
   * @linux iommu_iotlb_gather_is_disjoint
   */
  isDisjoint(iova: number, size: number): boolean {
    const last = iova + size - 1;
    return this.end !== 0 && (last + 1 < this.start || iova > this.end + 1);
  }

  /**
   * Widen the range to include [iova, iova + size).
   * @linux iommu_iotlb_gather_add_range
   */
  addRange(iova: number, size: number): void {
    if (size <= 0) return;
    const last = iova + size - 1;
    if (this.start > iova) this.start = iova;
    if (this.end < last) this.end = last;
  }

  /**
   * Record a page-sized invalidation; a different granule makes the gather mixed (pgsize 0 means "set it").
   * @linux iommu_iotlb_gather_add_page (without the disjoint sync, which needs the domain)
   */
  addPage(iova: number, size: number): void {
    if (this.pgsize === 0) this.pgsize = size;
    this.addRange(iova, size);
  }

  /** Queue a table allocation for freeing after the invalidation. @linux iommu_pages_list_add */
  addFreedTable(pa: number, order: number): void {
    this.freelist.push(pa, order);
  }

  /**
   * Give every queued table page back to the allocator; call after the IOTLB sync.
   * @linux iommu_put_pages_list
   */
  freePages(allocator: GatherPageFreer): void {
    const l = this.freelist;
    if (l.length === 0) return;
    for (let i = 0; i < l.length; i += 2) allocator.freePages(l[i]!, l[i + 1]!);
    l.length = 0;
  }
}

/** The kernel's name for the gather, as the iommu core's types import it. @linux struct iommu_iotlb_gather */
export { IotlbGather as IommuIotlbGather };
