/**
 * Test helpers: boot the default platform with the SMMUv3 driver and hardware model, with per-test hardware
 * options (platform description) and driver options; and read the command queue back from memory.
 */
import { createMachine, defaultPlatformInput, getIommuCore, type Machine, parsePlatform } from "@iommu-sim/core";
import {
  type ArmSmmuDevice,
  type ArmSmmuDriver,
  type ArmSmmuV3ModuleOptions,
  createArmSmmuV3Driver,
  smmuv3HardwareKind,
} from "../../src/index.js";

export interface Booted {
  m: Machine;
  smmu: ArmSmmuDevice;
  drv: ArmSmmuDriver;
}

const live: Machine[] = [];

/**
 * Boot with `hw` merged into smmu0's platform options and `driver` as driver options; `edit` may change the rest of
 * the platform description first.
 */
export async function boot(
  hw: Record<string, unknown> = {},
  driver: ArmSmmuV3ModuleOptions = {},
  edit?: (input: ReturnType<typeof defaultPlatformInput>) => void,
): Promise<Booted> {
  const input = defaultPlatformInput();
  edit?.(input);
  const smmu0 = input.iommus!.find((i) => i.name === "smmu0")!;
  smmu0.options = { ...(smmu0.options ?? {}), ...hw };
  const mod = createArmSmmuV3Driver({ hardware: [smmuv3HardwareKind], ...driver });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod], seed: 1 });
  live.push(m);
  await m.boot();
  const smmu = mod.instanceFor(m, "smmu0") as ArmSmmuDevice;
  const d = mod.driverFor(m) as unknown as { state: ArmSmmuDriver };
  void getIommuCore(m);
  return { m, smmu, drv: d.state };
}

/** Tear down every machine booted by this file's tests. */
export async function teardownAll(): Promise<void> {
  for (const m of live.splice(0)) await m.teardown();
}

/** A decoded command read back from the queue memory. */
export interface SeenCmd {
  op: number;
  w: [number, number, number, number];
}

/** Commands written to the command queue between two driver PROD values (read from memory). */
export function cmdsBetween(smmu: ArmSmmuDevice, from: number, to: number): SeenCmd[] {
  const q = smmu.cmdq.q;
  const out: SeenCmd[] = [];
  for (let p = from; p !== to; p = q.inc(p, 1)) {
    const pa = q.entPa(p);
    const w: [number, number, number, number] = [
      smmu.machine.memory.read32(pa),
      smmu.machine.memory.read32(pa + 4),
      smmu.machine.memory.read32(pa + 8),
      smmu.machine.memory.read32(pa + 12),
    ];
    out.push({ op: w[0] & 0xff, w });
  }
  return out;
}

/** Run `fn` and return the commands it issued. */
export async function captureCmds(smmu: ArmSmmuDevice, fn: () => unknown): Promise<SeenCmd[]> {
  const from = smmu.cmdq.q.prod;
  await fn();
  return cmdsBetween(smmu, from, smmu.cmdq.q.prod);
}
