/** Test scaffolding: a machine with the mock driver, iommufd and the selftest module, and a selftest fixture. */
import { createMachine, type Machine, type Process } from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import { iommufdModule } from "@iommu-sim/iommufd";
import { iommufdSelftestModule, SelftestFixture } from "../src/index.js";

export const PAGE_SIZE = 4096;
/** @linux BUFFER_SIZE (iommufd.c: PAGE_SIZE * 16) */
export const BUFFER_SIZE = PAGE_SIZE * 16;
/** The selftests' THP size (hpage_pmd_size). */
export const HUGEPAGE_SIZE = 2 * 1024 * 1024;
/** Bounded by default, full under IOMMU_SIM_SOAK=1. */
export const SOAK = process.env.IOMMU_SIM_SOAK === "1";

/** Everything a ported fixture holds. */
export interface Env {
  m: Machine;
  p: Process;
  self: SelftestFixture;
  /** @linux the global `buffer` of iommufd.c (MAP_SHARED anonymous, BUFFER_SIZE) */
  buffer: bigint;
}

/** Boot a machine with the three modules. */
export async function bootMachine(seed = 1): Promise<Machine> {
  const m = await createMachine({ modules: [mockIommuDriver, iommufdModule, iommufdSelftestModule], seed });
  await m.boot();
  return m;
}

/** FIXTURE_SETUP(iommufd): open /dev/iommu in a fresh process. */
export async function setup(seed = 1): Promise<Env> {
  const m = await bootMachine(seed);
  const p = m.spawnProcess();
  const fd = await p.open("/dev/iommu");
  const buffer = p.mmap(BUFFER_SIZE, { shared: true });
  return { m, p, self: new SelftestFixture(p, fd), buffer };
}

/** FIXTURE_TEARDOWN: teardown_iommufd (close, nothing left pinned), exit, machine teardown (no leak, no warning). */
export async function teardown(env: Env): Promise<void> {
  await env.self.teardownIommufd({ va: env.buffer, length: BUFFER_SIZE });
  await env.p.exit();
  await env.m.teardown();
}

/** Fill user memory with a pattern from a seeded generator. */
export function fillRandom(p: Process, va: bigint, length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  p.writeMemory(va, b);
  return b;
}
