/** The shape of one conformance check, and what a check is given when it runs. */
import type { ConformanceTarget } from "../target.js";

/** What a running check gets. */
export interface CheckContext {
  readonly target: ConformanceTarget;
  /** The seed of this check's random choices (derived from the suite seed and the check id). */
  readonly seed: number;
  readonly scale: "ci" | "soak";
  /** `ci` iterations in npm test, `soak` under IOMMU_SIM_SOAK=1. */
  runs(ci: number, soak: number): number;
}

/**
 * One conformance check: a scenario with an actionable failure message.
 * @linux a kselftest / KUnit case of drivers/iommu
 */
export interface ConformanceCheck {
  /** Stable id, "area/name" (e.g. "mapping/three-way-4096"). */
  readonly id: string;
  /** One line saying what a passing driver does. */
  readonly title: string;
  /** Why it does not apply to `target` ("no PASID claimed"), or undefined when it does. */
  applies(target: ConformanceTarget): string | undefined;
  run(ctx: CheckContext): Promise<void>;
}

/** FNV-1a of a string, to derive per-check seeds that stay stable when checks are added. */
export function hashSeed(base: number, id: string): number {
  let h = 0x811c9dc5 ^ base;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % 0x7fffffff || 1;
}
