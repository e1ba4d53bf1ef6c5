import { Diagnostics } from "../diagnostics.js";
import { mulberry32 } from "../fault-inject.js";
import { Scheduler } from "./scheduler.js";
import type { ScheduleStrategy } from "./strategy.js";
import type { Task } from "./task.js";

/** Options of {@link PctStrategy}. @linux none: test strategy parameters */
export interface PctOptions {
  /** Bug depth d: the strategy places d - 1 priority change points. Default 3. */
  depth?: number;
  /** Expected number of decisions k; change points are drawn uniformly in [1, k]. Default 200. */
  steps?: number;
}

/**
 * Probabilistic Concurrency Testing (Burckhardt et al., ASPLOS 2010): each task gets a random priority when first
 * seen, the highest-priority runnable task always runs, and at d - 1 random decision points the task that would
 * run drops below every initial priority. Finds any bug of depth d with probability at least 1/(n k^(d-1)).
 * @linux none: a test strategy (shuttle's PctScheduler)
 */
export class PctStrategy implements ScheduleStrategy {
  readonly name = "pct";
  readonly preemptive = true;
  readonly depth: number;
  readonly steps: number;
  private readonly random: () => number;
  private readonly priority = new Map<number, number>();
  private readonly changePoints: number[];
  private step = 0;
  private changesDone = 0;

  constructor(
    /** Seed of the mulberry32 generator. */
    readonly seed: number,
    opts: PctOptions = {},
  ) {
    this.depth = Math.max(1, opts.depth ?? 3);
    this.steps = Math.max(1, opts.steps ?? 200);
    this.random = mulberry32(seed);
    const points: number[] = [];
    for (let i = 0; i < this.depth - 1; i++) points.push(1 + Math.floor(this.random() * this.steps));
    this.changePoints = points.sort((a, b) => a - b);
  }

  /** The highest-priority runnable task, after applying a change point that falls on this step. */
  pick(runnable: readonly Task[]): number {
    this.step++;
    let best = this.highest(runnable);
    while (this.changesDone < this.changePoints.length && this.changePoints[this.changesDone] === this.step) {
      // Change point: the task about to run drops below every initial priority (later points go lower still).
      this.changesDone++;
      this.priority.set(runnable[best]!.id, this.depth - this.changesDone);
      best = this.highest(runnable);
    }
    return best;
  }

  private highest(runnable: readonly Task[]): number {
    let best = 0;
    let bestPrio = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < runnable.length; i++) {
      const p = this.prio(runnable[i]!);
      if (p > bestPrio) {
        bestPrio = p;
        best = i;
      }
    }
    return best;
  }

  private prio(t: Task): number {
    let p = this.priority.get(t.id);
    if (p === undefined) {
      // Initial priorities lie in [d, d + 1): above every changed priority, distinct with overwhelming likelihood.
      p = this.depth + this.random();
      this.priority.set(t.id, p);
    }
    return p;
  }

  /** `pct(seed=N,depth=D,steps=K)`. */
  describe(): string {
    return `pct(seed=${this.seed},depth=${this.depth},steps=${this.steps})`;
  }
}

/**
 * A scheduler with the seeded {@link PctStrategy}.
 * @linux none: a test helper
 */
export function pctScheduler(seed: number, opts: PctOptions = {}, diag: Diagnostics = new Diagnostics()): Scheduler {
  return new Scheduler(diag, { strategy: new PctStrategy(seed, opts) });
}
