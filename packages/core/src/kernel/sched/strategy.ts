import type { Task } from "./task.js";

/**
 * A scheduling strategy: at each decision point, which of the runnable tasks continues. One file per strategy,
 * as in shuttle: `fifo.ts` (default), `random.ts`, `pct.ts`, `replay.ts`.
 * @linux struct sched_class (pick_next_task)
 */
export interface ScheduleStrategy {
  /** Short name, for reports. */
  readonly name: string;
  /**
   * Whether lock acquisitions are preemption points where the strategy may switch tasks. A non-preemptive
   * strategy switches only when the running task sleeps, yields or exits.
   */
  readonly preemptive: boolean;
  /**
   * Index into `runnable` (never empty; at a preemption point the running task comes first) of the task to run.
   */
  pick(runnable: readonly Task[]): number;
  /** How to reproduce this strategy, e.g. `random(seed=7)`. */
  describe(): string;
}
