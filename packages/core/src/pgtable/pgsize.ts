/**
 * Choosing the page size for the next chunk of a map/unmap, exactly as the iommu core does.
 * @linux iommu_pgsize (drivers/iommu/iommu.c)
 */
import { KernelError } from "../kernel/errno.js";

/** Result of {@link pgsizeFor}. */
export interface PgsizeChoice {
  pgsize: number;
  count: number;
}

/** Whether bit `i` (0..52) is set in a bitmap held as a sum of powers of two. */
function bitSet(bitmap: number, i: number): boolean {
  return Math.floor(bitmap / 2 ** i) % 2 === 1;
}

/** Index of the lowest set bit of a positive integer below 2^53 (__ffs). */
function ffs(x: number): number {
  let i = 0;
  while (x % 2 === 0) {
    x /= 2;
    i++;
  }
  return i;
}

/** Index of the highest set bit of a positive integer below 2^53 (__fls). */
function fls(x: number): number {
  return Math.floor(Math.log2(x));
}

/**
 * The largest supported page size usable at `iova`/`paddr` for `size` bytes, and how many of them to map before a
 * larger size could take over. Throws (the kernel BUG()s) when no size fits; callers check alignment first.
 * @linux iommu_pgsize
 */
export function pgsizeFor(bitmap: number, iova: number, paddr: number, size: number): PgsizeChoice {
  let maxIdx = fls(size);
  if (iova !== 0 || paddr !== 0) {
    const align = Math.min(iova === 0 ? 64 : ffs(iova), paddr === 0 ? 64 : ffs(paddr));
    if (align < maxIdx) maxIdx = align;
  }
  let idx = -1;
  for (let i = Math.min(maxIdx, 52); i >= 0; i--) {
    if (bitSet(bitmap, i)) {
      idx = i;
      break;
    }
  }
  if (idx < 0) throw new KernelError("EINVAL", "iommu_pgsize: no page size fits (BUG)");
  const pgsize = 2 ** idx;
  let next = -1;
  for (let i = idx + 1; i <= 52; i++) {
    if (bitSet(bitmap, i)) {
      next = i;
      break;
    }
  }
  if (next >= 0) {
    const nextSize = 2 ** next;
    // Only worth it when iova and paddr sit at the same offset inside the larger page.
    if (iova % nextSize === paddr % nextSize) {
      const merged = Math.max(iova % nextSize, paddr % nextSize);
      const offset = nextSize - merged;
      if (offset + nextSize <= size) size = offset;
    }
  }
  return { pgsize, count: Math.floor(size / pgsize) };
}
