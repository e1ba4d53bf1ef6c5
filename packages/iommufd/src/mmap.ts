/**
 * mmap of driver regions through the iommufd file: a driver registers a physical range (a vIOMMU's register page,
 * a HW queue's doorbell) under an object it owns and reports the returned offset and length to user space, which
 * maps exactly that range with mmap(MAP_SHARED) on the iommufd fd. Every mapping, and every copy of it (fork, a
 * split), holds a users reference on the owner, so IOMMU_DESTROY of the owner answers EBUSY until user space has
 * unmapped it.
 * @linux drivers/iommu/iommufd/main.c (iommufd_fops_mmap, iommufd_vma_ops), drivers/iommu/iommufd/driver.c
 * (_iommufd_alloc_mmap, _iommufd_destroy_mmap), struct iommufd_mmap
 */
import { kerr, PAGE_SIZE, PROT_EXEC, type Vma, type VmOperations } from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import type { IommufdObject } from "./object.js";

/** Fault-injection site of a region's allocation. @linux the kzalloc of struct iommufd_mmap */
export const IOMMUFD_MMAP_ALLOC_SITE = "iommufd_mmap_alloc";

/**
 * One registered region: the range [offset, offset + length) of the iommufd file's mmap offsets.
 * @linux struct iommufd_mmap (an entry of iommufd_ctx.mt_mmap)
 */
export interface IommufdMmap {
  /** The object the region belongs to; mappings hold users references on it. @linux iommufd_mmap.owner */
  readonly owner: IommufdObject;
  /** The file offset the region starts at, in pages (what mmap's offset must be). @linux iommufd_mmap.vm_pgoff */
  readonly vmPgoff: number;
  /** The physical address mapped. @linux iommufd_mmap.mmio_addr */
  readonly mmioAddr: number;
  /** @linux iommufd_mmap.length */
  readonly length: number;
}

/** The region holding file offset `offset`, or undefined. @linux mtree_load(&ictx->mt_mmap, offset) */
function loadMmap(ictx: IommufdCtx, offset: number): IommufdMmap | undefined {
  for (const m of ictx.mmaps) {
    const start = m.vmPgoff * PAGE_SIZE;
    if (offset >= start && offset < start + m.length) return m;
  }
  return undefined;
}

/**
 * Register the physical range [mmioAddr, mmioAddr + length) of `owner` for mmap and return the file offset user
 * space passes to mmap (the lowest free range at or above one page: offset 0 is never handed out). EINVAL for an
 * unaligned address or an empty or unaligned length; ENOMEM under fault injection.
 * @linux _iommufd_alloc_mmap (mtree_alloc_range from PAGE_SIZE)
 */
export function iommufdAllocMmap(ictx: IommufdCtx, owner: IommufdObject, mmioAddr: number, length: number): number {
  if (!Number.isSafeInteger(mmioAddr) || mmioAddr < 0 || mmioAddr % PAGE_SIZE !== 0) {
    throw kerr("EINVAL", `mmap region at unaligned address 0x${mmioAddr.toString(16)}`);
  }
  if (!Number.isSafeInteger(length) || length <= 0 || length % PAGE_SIZE !== 0) {
    throw kerr("EINVAL", `mmap region of bad length ${length}`);
  }
  ictx.faults.check(IOMMUFD_MMAP_ALLOC_SITE);
  // First fit above the first page, in offset order.
  let start = PAGE_SIZE;
  let at = 0;
  for (; at < ictx.mmaps.length; at++) {
    const m = ictx.mmaps[at]!;
    const mStart = m.vmPgoff * PAGE_SIZE;
    if (start + length <= mStart) break;
    start = Math.max(start, mStart + m.length);
  }
  ictx.mmaps.splice(at, 0, { owner, vmPgoff: start / PAGE_SIZE, mmioAddr, length });
  return start;
}

/**
 * Unregister the region at `offset` (mappings that exist keep mapping it; new ones get ENXIO). WARN when no region
 * starts there or it belongs to another object.
 * @linux _iommufd_destroy_mmap
 */
export function iommufdDestroyMmap(ictx: IommufdCtx, owner: IommufdObject, offset: number): void {
  const i = ictx.mmaps.findIndex((m) => m.vmPgoff * PAGE_SIZE === offset);
  const m = i >= 0 ? ictx.mmaps[i] : undefined;
  if (ictx.diag.warnOn(m === undefined || m.owner !== owner, `destroy of mmap region 0x${offset.toString(16)}`)) {
    return;
  }
  ictx.mmaps.splice(i, 1);
}

/**
 * Mapping copies and removals move the owner's users count.
 * @linux iommufd_vma_ops (iommufd_fops_vma_open / iommufd_fops_vma_close)
 */
const iommufdVmaOps: VmOperations = {
  open: (vma) => (vma.privateData as IommufdMmap).owner.users.inc(),
  close: (vma) => (vma.privateData as IommufdMmap).owner.users.dec(),
};

/**
 * mmap of the iommufd file: only MAP_SHARED, never executable, and only a whole registered region at its own
 * offset. The mapping takes a users reference on the region's owner. EINVAL for a private mapping, EPERM for
 * PROT_EXEC, ENXIO for an offset or length that is not exactly a live region's.
 * @linux iommufd_fops_mmap
 */
export function iommufdFopsMmap(ictx: IommufdCtx, vma: Vma): void {
  const length = vma.end - vma.start;
  if (!vma.shared) throw kerr("EINVAL", "iommufd mmap must be MAP_SHARED");
  if (vma.prot & PROT_EXEC) throw kerr("EPERM", "iommufd mmap cannot be executable");
  // The region lookup and the owner's reference happen under mtree_lock, against a racing destroy.
  const immap = loadMmap(ictx, vma.pgoff * PAGE_SIZE);
  if (immap === undefined || !immap.owner.users.incNotZero()) {
    throw kerr("ENXIO", `no mmap region at offset 0x${(vma.pgoff * PAGE_SIZE).toString(16)}`);
  }
  // A lookup finds the region for any offset inside it: only the exact region may be mapped.
  if (vma.pgoff !== immap.vmPgoff || length !== immap.length) {
    immap.owner.users.dec();
    throw kerr("ENXIO", "iommufd mmap must cover exactly one region");
  }
  vma.pgoff = 0;
  vma.privateData = immap;
  vma.vmOps = iommufdVmaOps;
  vma.remapPfnRange(immap.mmioAddr);
}
