import { Diagnostics } from "../diagnostics.js";
import { mulberry32 } from "../fault-inject.js";
import { Scheduler } from "./scheduler.js";
import type { ScheduleStrategy } from "./strategy.js";
import type { Task } from "./task.js";

/**
 * Seeded uniform random choice at every decision point, lock acquisitions included. The same seed gives the same
 * interleaving.
 * @linux none: a test strategy (shuttle's RandomScheduler)
 */
export class RandomStrategy implements ScheduleStrategy {
  readonly name = "random";
  readonly preemptive = true;
  private readonly random: () => number;

  constructor(
    /** Seed of the mulberry32 generator. */
    readonly seed: number,
  ) {
    this.random = mulberry32(seed);
  }

  /** A uniformly random runnable task. */
  pick(runnable: readonly Task[]): number {
    return Math.floor(this.random() * runnable.length);
  }

  /** `random(seed=N)`. */
  describe(): string {
    return `random(seed=${this.seed})`;
  }
}

/**
 * A scheduler with the seeded {@link RandomStrategy}.
 * @linux none: a test helper
 */
export function randomScheduler(seed: number, diag: Diagnostics = new Diagnostics()): Scheduler {
  return new Scheduler(diag, { strategy: new RandomStrategy(seed) });
}
