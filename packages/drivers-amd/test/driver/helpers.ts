/**
 * Test helpers: boot the default platform with the AMD driver and hardware model, with per-test hardware options
 * (amd0's platform description) and driver options, and a paging domain attached to a device for a test.
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
  type AmdHw,
  type AmdIommu,
  type AmdIommuDriver,
  type AmdIommuModuleOptions,
  amdHardwareKind,
  amdIommuDriverState,
  createAmdIommuDriver,
  type ProtectionDomain,
} from "../../src/index.js";

export interface Booted {
  m: Machine;
  iommu: AmdIommu;
  drv: AmdIommuDriver;
  hw: AmdHw;
}

const live: Machine[] = [];

/** Boot with `hw` merged into amd0's options and `driver` as driver options. */
export async function boot(hw: Record<string, unknown> = {}, driver: AmdIommuModuleOptions = {}): Promise<Booted> {
  const input = defaultPlatformInput();
  const v = input.iommus!.find((i) => i.name === "amd0")!;
  v.options = { ...(v.options ?? {}), ...hw };
  const mod = createAmdIommuDriver({ hardware: [amdHardwareKind], ...driver });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod], seed: 1 });
  live.push(m);
  await m.boot();
  const drv = amdIommuDriverState(mod, m)!;
  return { m, iommu: drv.units.get("amd0")!, drv, hw: m.dma.modelFor("amd0") as AmdHw };
}

/**
 * Run one property-test case and tear its machines down; when the case failed, its (now inconsistent) machines are
 * torn down quietly so the next case starts clean and the original failure is what is reported.
 */
export async function propertyCase(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    await teardownAll().catch(() => undefined);
    throw e;
  }
  await teardownAll();
}

/** Tear down every machine booted by this file's tests. */
export async function teardownAll(): Promise<void> {
  for (const m of live.splice(0)) await m.teardown();
}

/** Claim `name` for DMA ownership, attach a fresh paging domain, run `fn`, undo it all. */
export async function withDomain(
  b: Booted,
  name: string,
  fn: (d: ProtectionDomain, dev: Device) => Promise<void>,
): Promise<void> {
  const dev = b.m.driverCore.deviceFor(name)!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, 0)) as ProtectionDomain;
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
