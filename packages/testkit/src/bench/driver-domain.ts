/**
 * The setup every vendor driver's map/unmap benchmark shares: the default platform booted with the driver, one
 * endpoint claimed for DMA ownership with a paging domain attached, and the shape of the "1 GiB in 4 KiB pages"
 * workload (sizes, IOVA and PA bases, permissions). The SMMUv3 and VT-d driver benchmarks were copies of this.
 */
import {
  createMachine,
  type Device,
  defaultPlatform,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IoPageTable,
  IotlbGather,
  iommuAttachDevice,
  iommuDeviceClaimDmaOwner,
  iommuPagingDomainAllocFlags,
  type KernelModule,
  type Machine,
} from "@iommu-sim/core";

const GiB = 2 ** 30;

/** The "map and unmap 1 GiB in 4 KiB pages" workload: IOVA from 4 GiB, PA from 1 GiB, read-write. */
export const GIB_MAP_WORKLOAD = {
  GiB,
  PAGE: 4096,
  PAGES: GiB / 4096,
  IOVA0: 4 * GiB,
  PA0: GiB,
  RW: IOMMU_READ | IOMMU_WRITE,
} as const;

/**
 * Boot the default platform with `driver`, claim `device` and attach a paging domain allocated with `flags`.
 * The machine is left running: a benchmark process exits after reporting.
 * @linux a DMA-API user's setup: iommu_device_claim_dma_owner, iommu_paging_domain_alloc_flags, iommu_attach_device
 */
export async function benchPagingDomain(
  driver: KernelModule,
  device: string,
  flags = 0,
): Promise<{ m: Machine; dev: Device; domain: IommuDomain }> {
  const m = await createMachine({ platform: defaultPlatform(), modules: [driver], seed: 1 });
  await m.boot();
  const dev = m.driverCore.deviceFor(device);
  if (!dev) throw new Error(`the default platform has no device ${device}`);
  await iommuDeviceClaimDmaOwner(dev, "bench");
  const domain = await iommuPagingDomainAllocFlags(dev, flags);
  await iommuAttachDevice(domain, dev);
  return { m, dev, domain };
}

/** One benchmark case, as core's bench harness takes it. */
export interface GibMapCase {
  name: string;
  ops: number;
  fn: () => unknown;
}

/**
 * The two in-run baselines of the GiB workload: core's engine alone on the driver's format ("engine": map every page,
 * then unmap each with its gather freed) and a raw radix table ("raw-radix": the floor any table code can reach).
 * @linux none: benchmark baselines
 */
export function gibMapBaselineCases(
  engine: IoPageTable,
  m: Machine,
  raw: { map(pn: number, pfn: number): unknown; unmap(pn: number): number },
): { engine: GibMapCase; rawRadix: GibMapCase } {
  const { PAGE, PAGES, IOVA0, PA0, RW } = GIB_MAP_WORKLOAD;
  const gather = new IotlbGather();
  return {
    engine: {
      name: "engine",
      ops: PAGES,
      fn: () => {
        for (let i = 0; i < PAGES; i++) engine.map(IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, 1, RW);
        let n = 0;
        for (let i = 0; i < PAGES; i++) {
          n += engine.unmap(IOVA0 + i * PAGE, PAGE, 1, gather);
          gather.freePages(m.pages);
          gather.reset();
        }
        return n;
      },
    },
    rawRadix: {
      name: "raw-radix",
      ops: PAGES,
      fn: () => {
        const pn0 = IOVA0 / PAGE;
        for (let i = 0; i < PAGES; i++) raw.map(pn0 + i, PA0 / PAGE + i);
        let n = 0;
        for (let i = 0; i < PAGES; i++) n += raw.unmap(pn0 + i);
        return n;
      },
    },
  };
}
