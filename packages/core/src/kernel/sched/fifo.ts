import type { ScheduleStrategy } from "./strategy.js";
import type { Task } from "./task.js";

/**
 * The default strategy: run queue order, no preemption. Deterministic, and code that never sleeps runs exactly
 * as plain async code.
 * @linux SCHED_FIFO (run to completion, first come first served)
 */
export class FifoStrategy implements ScheduleStrategy {
  readonly name = "fifo";
  readonly preemptive = false;

  /** Always the head of the run queue. */
  pick(_runnable: readonly Task[]): number {
    return 0;
  }

  /** `fifo`. */
  describe(): string {
    return "fifo";
  }
}
