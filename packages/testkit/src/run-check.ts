/** Running one check for a target: the n/a decision, the seed, the scale. */
import { type ConformanceCheck, conformanceChecks } from "./checks/index.js";
import { hashSeed } from "./checks/types.js";
import type { ConformanceOptions, ConformanceTarget } from "./target.js";

/** The scale of random campaigns from the environment: "soak" under IOMMU_SIM_SOAK=1. */
export function envScale(): "ci" | "soak" {
  return process.env.IOMMU_SIM_SOAK === "1" ? "soak" : "ci";
}

/** The seed asked for: the option, else IOMMU_SIM_SEED, else none. */
export function askedSeed(opts: ConformanceOptions): number | undefined {
  return opts.seed ?? (Number(process.env.IOMMU_SIM_SEED) || undefined);
}

/** One entry of a planned suite: the check, and why it does not apply (undefined when it does). */
export interface PlannedCheck {
  check: ConformanceCheck;
  na: string | undefined;
  seed: number;
}

/**
 * The checks of a suite for `target`, filtered by `opts.only`, each with its n/a reason and seed.
 * @linux kunit_suite's case list with its skip reasons
 */
export function planConformance(target: ConformanceTarget, opts: ConformanceOptions = {}): PlannedCheck[] {
  // A seed asked for is every check's own seed, so the seed a failure prints replays it (with `only`); by default
  // each check gets its own seed derived from its id.
  const seed = askedSeed(opts);
  return conformanceChecks(target)
    .filter((c) => !opts.only || opts.only.some((p) => c.id.startsWith(p)))
    .map((check) => ({ check, na: check.applies(target), seed: seed ?? hashSeed(1, check.id) }));
}

/** Run one planned check. */
export function runPlanned(target: ConformanceTarget, p: PlannedCheck, opts: ConformanceOptions = {}): Promise<void> {
  const scale = opts.scale ?? envScale();
  return p.check.run({
    target,
    seed: p.seed,
    scale,
    runs: (ci, soak) => (scale === "soak" ? soak : ci),
  });
}
