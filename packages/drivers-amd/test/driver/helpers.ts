/**
 * Test helpers: boot the default platform with the AMD driver and hardware model, with per-test hardware options
 * (amd0's platform description) and driver options, and a paging domain attached to a device for a test. The
 * generic parts (boot with options, teardown of every machine, a domain for a test) are the testkit's.
 */
import type { Device, Machine } from "@iommu-sim/core";
import { MachineTracker, withPagingDomain } from "@iommu-sim/testkit/driver-tests";
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

const machines = new MachineTracker();

/** Boot with `hw` merged into amd0's options and `driver` as driver options. */
export async function boot(hw: Record<string, unknown> = {}, driver: AmdIommuModuleOptions = {}): Promise<Booted> {
  const mod = createAmdIommuDriver({ hardware: [amdHardwareKind], ...driver });
  const m = await machines.boot({ iommu: "amd0", modules: [mod], hw });
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
export function teardownAll(): Promise<void> {
  return machines.teardownAll();
}

/** Claim `name` for DMA ownership, attach a fresh paging domain, run `fn`, undo it all. */
export function withDomain(
  b: Booted,
  name: string,
  fn: (d: ProtectionDomain, dev: Device) => Promise<void>,
): Promise<void> {
  return withPagingDomain(b.m, name, 0, fn);
}

export const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
