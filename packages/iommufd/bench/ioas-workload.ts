/**
 * The IOAS_MAP + IOAS_UNMAP workload of the iommufd benches (this package's mock row and drivers-smmuv3's row):
 * map a user buffer into an IOAS at a fixed IOVA and unmap everything, and its bare baseline, which maps exactly the
 * buffer's physically contiguous runs with `iommuMap` (as iommufd coalesces them) and unmaps the range with one
 * `iommuUnmap`.
 */
import { IOMMU_READ, IOMMU_WRITE, type IommuDomain, iommuMap, iommuUnmap, type Process } from "@iommu-sim/core";
import {
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
} from "../src/uapi.js";

const PAGE = 4096;

/** The two sides of the workload over `length` bytes of `buf` in process `p`'s IOAS `ioasId` (fd `fd`). */
export interface IoasWorkload {
  /** IOMMU_IOAS_MAP of the buffer at `iova`, then IOMMU_IOAS_UNMAP of the whole IOAS. */
  mapUnmapIommufd: () => Promise<void>;
  /** The baseline on `domain`: one `iommuMap` per physically contiguous run at the same IOVAs, one `iommuUnmap`. */
  mapUnmapBare: (domain: IommuDomain) => void;
  /** The buffer's physically contiguous runs: [first page, PA, pages]. */
  runs: [number, number, number][];
}

/**
 * Build the workload: the first IOAS_MAP faults the buffer in (so its frames are known), then the runs are read
 * from the process's page table.
 */
export async function ioasWorkload(
  p: Process,
  fd: number,
  ioasId: number,
  buf: bigint,
  length: number,
  iova: number,
): Promise<IoasWorkload> {
  const npages = length / PAGE;
  const mapUnmapIommufd = async () => {
    await p.ioctl(fd, IOMMU_IOAS_MAP, {
      size: 0,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      ioas_id: ioasId,
      __reserved: 0,
      user_va: buf,
      length: BigInt(length),
      iova: BigInt(iova),
    });
    await p.ioctl(fd, IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioasId, iova: 0n, length: 0xffff_ffff_ffff_ffffn });
  };
  await mapUnmapIommufd();
  const runs: [number, number, number][] = [];
  for (let i = 0; i < npages; ) {
    const pa = p.mm.lookupPhys(buf + BigInt(i * PAGE))!;
    let n = 1;
    while (i + n < npages && p.mm.lookupPhys(buf + BigInt((i + n) * PAGE)) === pa + n * PAGE) n++;
    runs.push([i, pa, n]);
    i += n;
  }
  const mapUnmapBare = (domain: IommuDomain) => {
    for (const [i, pa, n] of runs) iommuMap(domain, iova + i * PAGE, pa, n * PAGE, IOMMU_READ | IOMMU_WRITE);
    iommuUnmap(domain, iova, npages * PAGE);
  };
  return { mapUnmapIommufd, mapUnmapBare, runs };
}
