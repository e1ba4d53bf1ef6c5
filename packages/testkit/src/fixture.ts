/**
 * A vitest fixture for tests that need a booted machine: `const it = machineTest({ modules: [...] })` gives every
 * test a fresh booted `machine` and tears it down after the test (which fails the test on leaks, unexpected
 * warnings or held locks), so no test file repeats the teardown in an `afterEach`.
 */
import { createMachine, type Machine, type MachineOptions } from "@iommu-sim/core";
import { test } from "vitest";

/** What the fixture gives each test. */
export interface MachineFixture {
  /** A booted machine, torn down after the test. */
  machine: Machine;
}

async function dispose(m: Machine): Promise<void> {
  const d = (m as unknown as Record<symbol, unknown>)[(Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol()];
  if (typeof d === "function") await (d as () => Promise<void>).call(m);
  else await m.teardown();
}

/**
 * A vitest `test` whose tests get a booted `machine` built from `opts` (a function is called per test, for fresh
 * per-test options), torn down after the test.
 * @linux a kunit_suite's init/exit pair around each case
 */
export function machineTest(opts: MachineOptions | (() => MachineOptions) = {}) {
  return test.extend<MachineFixture>({
    // biome-ignore lint/correctness/noEmptyPattern: vitest fixtures take their dependencies by destructuring
    machine: async ({}, use) => {
      const m = await createMachine(typeof opts === "function" ? opts() : opts);
      await m.boot();
      await use(m);
      await dispose(m);
    },
  });
}
