/**
 * Test helpers: boot the default platform with the VT-d driver and hardware model, with per-test hardware options
 * (vtd0's platform description) and driver options, and a paging domain attached to a device for a test.
 */
import {
  createMachine,
  type Device,
  defaultPlatformInput,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuPagingDomainAllocFlags,
  type Machine,
  parsePlatform,
} from "@iommu-sim/core";
import {
  createIntelIommuDriver,
  type DmarDomain,
  type IntelIommu,
  type IntelIommuDriver,
  type IntelIommuModuleOptions,
  intelIommuDriverState,
  type VtdHw,
  vtdHardwareKind,
} from "../../src/index.js";

export interface Booted {
  m: Machine;
  iommu: IntelIommu;
  drv: IntelIommuDriver;
  hw: VtdHw;
}

const live: Machine[] = [];

/** Boot with `hw` merged into vtd0's options and `driver` as driver options; `edit` may change the platform. */
export async function boot(
  hw: Record<string, unknown> = {},
  driver: IntelIommuModuleOptions = {},
  edit?: (input: ReturnType<typeof defaultPlatformInput>) => void,
): Promise<Booted> {
  const input = defaultPlatformInput();
  edit?.(input);
  const v = input.iommus!.find((i) => i.name === "vtd0")!;
  v.options = { ...(v.options ?? {}), ...hw };
  const mod = createIntelIommuDriver({ hardware: [vtdHardwareKind], ...driver });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod], seed: 1 });
  live.push(m);
  await m.boot();
  const drv = intelIommuDriverState(mod, m)!;
  return { m, iommu: drv.units.get("vtd0")!, drv, hw: m.dma.modelFor("vtd0") as VtdHw };
}

/** Tear down every machine booted by this file's tests. */
export async function teardownAll(): Promise<void> {
  for (const m of live.splice(0)) await m.teardown();
}

/** Claim `name` for DMA ownership, attach a fresh paging domain with `flags`, run `fn`, undo it all. */
export async function withDomain(
  b: Booted,
  name: string,
  flags: number,
  fn: (d: DmarDomain, dev: Device) => Promise<void>,
): Promise<void> {
  const dev = b.m.driverCore.deviceFor(name)!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, flags)) as DmarDomain;
  try {
    await iommuAttachDevice(d, dev);
    try {
      await fn(d, dev);
    } finally {
      await iommuDetachDevice(d, dev);
    }
  } finally {
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
  }
}

export const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
