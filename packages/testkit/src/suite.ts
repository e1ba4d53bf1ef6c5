/**
 * The vitest face of the testkit: `defineConformanceSuite(target)` registers one test per check; a check whose
 * capability the target does not claim is a skipped test whose name says why ("n/a: PASID not claimed").
 */
import { describe, it } from "vitest";
import { planConformance, runPlanned } from "./run-check.js";
import type { ConformanceOptions, ConformanceTarget } from "./target.js";

/** Per-test timeout (ms): generous, campaigns boot many machines on a shared 2-core box. */
const TIMEOUT = 120_000;

/**
 * Register the conformance suite for `target` in the current vitest file.
 * @linux kunit_test_suite() of a driver's conformance tests
 */
export function defineConformanceSuite(target: ConformanceTarget, opts: ConformanceOptions = {}): void {
  describe(`iommu conformance: ${target.name}`, () => {
    for (const p of planConformance(target, opts)) {
      const name = `${p.check.id}: ${p.check.title}`;
      if (p.na !== undefined) it.skip(`${p.check.id} — n/a: ${p.na}`, () => {});
      else it(name, () => runPlanned(target, p, opts), opts.scale === "soak" ? 0 : TIMEOUT);
    }
  });
}
