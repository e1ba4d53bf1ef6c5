/**
 * Mapping and unmapping IOVA ranges in a paging domain: the range is split into the largest page sizes its
 * alignment allows, each run handed to the driver's `mapPages`/`unmapPages`; unmaps gather their invalidations and
 * sync the IOTLB once. Synchronous, as the kernel may call these in atomic context (GFP_ATOMIC).
 * @linux iommu_map / iommu_map_nosync / __iommu_unmap / iommu_unmap / iommu_pgsize / iommu_iova_to_phys
 * (drivers/iommu/iommu.c), iommu_iotlb_sync / iommu_iotlb_gather_add_page (include/linux/iommu.h)
 */
import { KernelError } from "../kernel/errno.js";
import { assertLive } from "../kernel/slab.js";
import { traceHex } from "../kernel/trace.js";
import { IotlbGather } from "../pgtable/gather.js";
import { type PgsizeChoice, pgsizeFor, pgsizeInto, pgsizeTable } from "../pgtable/pgsize.js";
import { type IommuDomain, iommuDomainTypeStr } from "./domain.js";
import { IOMMU_DOMAIN, IOMMU_DOMAIN_BITS } from "./types.js";

export {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "../pgtable/prot.js";

/** The smallest page size of a bitmap (1 << __ffs), 0 for an empty bitmap. */
export function minPageSize(bitmap: number): number {
  return pgsizeTable(bitmap).min;
}

function isAddr(x: number): boolean {
  return Number.isSafeInteger(x) && x >= 0;
}

/**
 * The page size (and how many of them) to use next for `size` bytes at `iova`/`paddr`: the largest supported size
 * both addresses are aligned to, counted only up to where a larger size could take over.
 * @linux iommu_pgsize
 */
export function iommuPgsize(domain: IommuDomain, iova: number, paddr: number, size: number): PgsizeChoice {
  return pgsizeFor(domain.pgsizeBitmap, iova, paddr, size);
}

/**
 * Scratch answer of the map/unmap loops' page-size choice, read into locals straight after each call (before any
 * driver callback could re-enter), so the hot path allocates nothing per chunk.
 */
const choice: PgsizeChoice = { pgsize: 0, count: 0 };

/** Report (and refuse) use of a freed domain: the kernel would touch freed memory. */
function usedAfterFree(domain: IommuDomain): boolean {
  if (!domain.freed) return false;
  if (domain.diag) assertLive(domain.diag, domain, `iommu domain ${domain.name}`);
  return true;
}

/** Whether [iova, iova + size) lies inside a forced aperture (always true without one). */
function inAperture(domain: IommuDomain, iova: number, size: number): boolean {
  const g = domain.geometry;
  if (!g.forceAperture) return true;
  return iova >= g.apertureStart && iova + size - 1 <= g.apertureEnd;
}

/**
 * Map without the final `iotlbSyncMap`. Throws EINVAL for a non-paging domain, a range misaligned to the smallest
 * page size, or one whose end overflows the address space; ERANGE outside a forced aperture; ENODEV (with a
 * warning) for a domain without `mapPages` or page sizes; otherwise the driver's error, after unmapping whatever
 * was mapped before it.
 * @linux iommu_map_nosync (__iommu_map)
 */
export function iommuMapNosync(domain: IommuDomain, iova: number, paddr: number, size: number, prot: number): void {
  const ops = domain.ops;
  if (usedAfterFree(domain)) throw new KernelError("EINVAL", `map on freed ${domain}`);
  if (!(domain.type & IOMMU_DOMAIN_BITS.PAGING)) {
    throw new KernelError("EINVAL", `map on a ${iommuDomainTypeStr(domain.type)} domain`);
  }
  if (!ops.mapPages || domain.pgsizeBitmap === 0) {
    domain.diag?.warnOn(true, `${domain}: map without map_pages or page sizes`);
    throw new KernelError("ENODEV", `${domain} cannot map`);
  }
  const pgsizes = pgsizeTable(domain.pgsizeBitmap);
  if (!isAddr(iova) || !isAddr(paddr) || !isAddr(size)) {
    throw new KernelError("EINVAL", `map: bad range iova ${iova} pa ${paddr} size ${size}`);
  }
  if (!pgsizes.minAligned(iova) || !pgsizes.minAligned(paddr) || !pgsizes.minAligned(size)) {
    throw new KernelError(
      "EINVAL",
      `unaligned: iova 0x${iova.toString(16)} pa 0x${paddr.toString(16)} size 0x${size.toString(16)} ` +
        `min_pagesz 0x${pgsizes.min.toString(16)}`,
    );
  }
  if (size > 0 && (!isAddr(iova + size - 1) || !isAddr(paddr + size - 1))) {
    throw new KernelError("EINVAL", `map: iova 0x${iova.toString(16)} + size 0x${size.toString(16)} overflows`);
  }
  if (size > 0 && !inAperture(domain, iova, size)) {
    throw new KernelError("ERANGE", `map: iova 0x${iova.toString(16)} size 0x${size.toString(16)} outside aperture`);
  }

  const origIova = iova;
  const origSize = size;
  const gather = new IotlbGather();
  let error: unknown;
  while (size) {
    pgsizeInto(pgsizes, iova, paddr, size, choice);
    const pgsize = choice.pgsize;
    const count = choice.count;
    let mapped = 0;
    try {
      mapped = ops.mapPages(domain, iova, paddr, pgsize, count, prot, gather);
    } catch (e) {
      // Some pages may have been mapped before the failure; account for them so they are unmapped.
      mapped = (e as { mapped?: number }).mapped ?? 0;
      error = e;
    }
    size -= mapped;
    if (error !== undefined) break;
    if (mapped === 0) {
      error = new KernelError("EINVAL", `${domain}: map_pages mapped nothing`);
      break;
    }
    iova += mapped;
    paddr += mapped;
  }
  // Tables a map replaced by a large leaf are freed by the driver's iotlb_sync.
  if (!gather.empty) iommuIotlbSync(domain, gather);
  if (error !== undefined) {
    iommuUnmap(domain, origIova, origSize - size);
    throw error;
  }
  const trace = domain.diag?.trace;
  if (trace?.enabled) {
    trace.emit("iommu:map", {
      domain: String(domain),
      iova: traceHex(origIova),
      paddr: traceHex(paddr - origSize),
      size: origSize,
      prot,
    });
  }
}

/**
 * Let the driver make new mappings visible to the hardware.
 * @linux iommu_sync_map
 */
export function iommuSyncMap(domain: IommuDomain, iova: number, size: number): void {
  domain.ops.iotlbSyncMap?.(domain, iova, size);
}

/**
 * Map `size` bytes at `iova` to `paddr` with IOMMU_* `prot`. Throws like {@link iommuMapNosync}; when the final
 * `iotlbSyncMap` fails the whole range is unmapped again.
 * @linux iommu_map
 */
export function iommuMap(domain: IommuDomain, iova: number, paddr: number, size: number, prot: number): void {
  iommuMapNosync(domain, iova, paddr, size, prot);
  try {
    iommuSyncMap(domain, iova, size);
  } catch (e) {
    iommuUnmap(domain, iova, size);
    throw e;
  }
}

/**
 * Unmap into `gather` without syncing: returns the bytes unmapped, stopping at the first hole. Returns 0 for a
 * non-paging domain, a range misaligned to the smallest page size, an overflowing one, or one outside a forced
 * aperture (the kernel prints an error and returns 0 too).
 * @linux __iommu_unmap / iommu_unmap_fast
 */
export function iommuUnmapFast(domain: IommuDomain, iova: number, size: number, gather: IotlbGather): number {
  const ops = domain.ops;
  if (usedAfterFree(domain) || !(domain.type & IOMMU_DOMAIN_BITS.PAGING)) return 0;
  if (!ops.unmapPages || domain.pgsizeBitmap === 0) {
    domain.diag?.warnOn(true, `${domain}: unmap without unmap_pages or page sizes`);
    return 0;
  }
  const pgsizes = pgsizeTable(domain.pgsizeBitmap);
  if (!isAddr(iova) || !isAddr(size) || !pgsizes.minAligned(iova) || !pgsizes.minAligned(size)) return 0;
  if (size > 0 && (!isAddr(iova + size - 1) || !inAperture(domain, iova, size))) return 0;
  let unmapped = 0;
  while (unmapped < size) {
    pgsizeInto(pgsizes, iova, iova, size - unmapped, choice);
    const page = ops.unmapPages(domain, iova, choice.pgsize, choice.count, gather);
    if (!page) break;
    iova += page;
    unmapped += page;
  }
  const trace = domain.diag?.trace;
  if (trace?.enabled) {
    trace.emit("iommu:unmap", { domain: String(domain), iova: traceHex(iova - unmapped), size, unmapped });
  }
  return unmapped;
}

/**
 * Unmap `size` bytes at `iova`, invalidate the IOTLB once for everything unmapped, and return the bytes unmapped
 * (which may exceed `size` when a large page covered the range, or fall short at a hole).
 * @linux iommu_unmap
 */
export function iommuUnmap(domain: IommuDomain, iova: number, size: number): number {
  const gather = new IotlbGather();
  const ret = iommuUnmapFast(domain, iova, size, gather);
  iommuIotlbSync(domain, gather);
  return ret;
}

/**
 * Invalidate what `gather` collected and reset it.
 * @linux iommu_iotlb_sync
 */
export function iommuIotlbSync(domain: IommuDomain, gather: IotlbGather): void {
  domain.ops.iotlbSync?.(domain, gather);
  gather.reset();
}

/**
 * Invalidate the whole IOTLB of the domain.
 * @linux iommu_flush_iotlb_all
 */
export function iommuFlushIotlbAll(domain: IommuDomain): void {
  domain.ops.flushIotlbAll?.(domain);
}

/**
 * Add a page to a gather, first syncing what it holds when the page is not contiguous with it or has another
 * granule (drivers call this from `unmapPages`).
 * @linux iommu_iotlb_gather_add_page
 */
export function iommuIotlbGatherAddPage(domain: IommuDomain, gather: IotlbGather, iova: number, size: number): void {
  if ((gather.pgsize && gather.pgsize !== size) || gather.isDisjoint(iova, size)) iommuIotlbSync(domain, gather);
  gather.pgsize = size;
  gather.addRange(iova, size);
}

/**
 * The physical address `iova` translates to: itself in an identity domain, 0 in a blocking domain or when
 * unmapped.
 * @linux iommu_iova_to_phys
 */
export function iommuIovaToPhys(domain: IommuDomain, iova: number): number {
  if (domain.type === IOMMU_DOMAIN.IDENTITY) return iova;
  if (domain.type === IOMMU_DOMAIN.BLOCKED) return 0;
  if (usedAfterFree(domain)) return 0;
  const f = domain.ops.iovaToPhys;
  if (!f) {
    domain.diag?.warnOn(true, `${domain}: iova_to_phys without the op`);
    return 0;
  }
  return f(domain, iova);
}
