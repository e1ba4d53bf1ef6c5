/**
 * Test helpers: boot the default platform with the VT-d driver and hardware model, with per-test hardware options
 * (vtd0's platform description) and driver options, and a paging domain attached to a device for a test. The
 * generic parts (boot with options, teardown of every machine, a domain for a test) are the testkit's.
 */
import type { Device, Machine } from "@iommu-sim/core";
import { MachineTracker, type PlatformDescription, withPagingDomain } from "@iommu-sim/testkit/driver-tests";
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

const machines = new MachineTracker();

/** Boot with `hw` merged into vtd0's options and `driver` as driver options; `edit` may change the platform. */
export async function boot(
  hw: Record<string, unknown> = {},
  driver: IntelIommuModuleOptions = {},
  edit?: (input: PlatformDescription) => void,
): Promise<Booted> {
  const mod = createIntelIommuDriver({ hardware: [vtdHardwareKind], ...driver });
  const m = await machines.boot({ iommu: "vtd0", modules: [mod], hw, ...(edit ? { edit } : {}) });
  const drv = intelIommuDriverState(mod, m)!;
  return { m, iommu: drv.units.get("vtd0")!, drv, hw: m.dma.modelFor("vtd0") as VtdHw };
}

/** Tear down every machine booted by this file's tests. */
export function teardownAll(): Promise<void> {
  return machines.teardownAll();
}

/** Claim `name` for DMA ownership, attach a fresh paging domain with `flags`, run `fn`, undo it all. */
export function withDomain(
  b: Booted,
  name: string,
  flags: number,
  fn: (d: DmarDomain, dev: Device) => Promise<void>,
): Promise<void> {
  return withPagingDomain(b.m, name, flags, fn);
}

export const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
