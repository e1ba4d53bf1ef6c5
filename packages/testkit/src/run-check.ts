/** Running one check for a target: the n/a decision, the seed, the scale. */
import { type ConformanceCheck, conformanceChecks } from "./checks/index.js";
import { hashSeed } from "./checks/types.js";
import type { ConformanceOptions, ConformanceTarget } from "./target.js";

/** The scale of random campaigns from the environment: "soak" under IOMMU_SIM_SOAK=1. */
export function envScale(): "ci" | "soak" {
  return process.env.IOMMU_SIM_SOAK === "1" ? "soak" : "ci";
}

/** The base seed: the option, else IOMMU_SIM_SEED, else 1. */
export function baseSeed(opts: ConformanceOptions): number {
  return opts.seed ?? (Number(process.env.IOMMU_SIM_SEED) || 1);
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
  const seed = baseSeed(opts);
  return conformanceChecks(target)
    .filter((c) => !opts.only || opts.only.some((p) => c.id.startsWith(p)))
    .map((check) => ({ check, na: check.applies(target), seed: hashSeed(seed, check.id) }));
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
