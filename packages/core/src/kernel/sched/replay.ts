import { Diagnostics } from "../diagnostics.js";
import { Scheduler } from "./scheduler.js";
import type { ScheduleStrategy } from "./strategy.js";
import type { Task } from "./task.js";

/**
 * Thrown (and reported as a warning) when a replayed run stops following its schedule string.
 * @linux none: a test strategy error
 */
export class ReplayDivergenceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReplayDivergenceError";
  }
}

/**
 * Parse a schedule string (`Scheduler.schedule`): `p:` or `c:` (preemptive or not), then the ids of the tasks
 * chosen at each decision with more than one candidate, comma-separated.
 * @linux none
 */
export function parseSchedule(schedule: string): { preemptive: boolean; decisions: number[] } {
  const m = /^([pc]):([0-9,]*)$/.exec(schedule.trim());
  if (!m) throw new ReplayDivergenceError(`not a schedule string: ${JSON.stringify(schedule)}`);
  const body = m[2] ?? "";
  return { preemptive: m[1] === "p", decisions: body === "" ? [] : body.split(",").map(Number) };
}

/**
 * Replays a recorded schedule: at each decision picks the task the recorded run picked, so the interleaving is
 * reproduced exactly. Diverging (the recorded task is not runnable, or the schedule runs out) throws
 * {@link ReplayDivergenceError}, which the scheduler reports.
 * @linux none: a test strategy (shuttle's ReplayScheduler)
 */
export class ReplayStrategy implements ScheduleStrategy {
  readonly name = "replay";
  readonly preemptive: boolean;
  private readonly decisions: number[];
  private next = 0;

  constructor(readonly schedule: string) {
    const parsed = parseSchedule(schedule);
    this.preemptive = parsed.preemptive;
    this.decisions = parsed.decisions;
  }

  /** The recorded choice. */
  pick(runnable: readonly Task[]): number {
    const step = this.next++;
    const id = this.decisions[step];
    if (id === undefined) {
      throw new ReplayDivergenceError(`schedule exhausted at decision ${step} (${this.decisions.length} recorded)`);
    }
    const idx = runnable.findIndex((t) => t.id === id);
    if (idx < 0) {
      throw new ReplayDivergenceError(
        `decision ${step} chose task #${id}, but only ${runnable.map((t) => t.toString()).join(", ")} can run`,
      );
    }
    return idx;
  }

  /** Decisions not replayed yet. */
  get remaining(): number {
    return this.decisions.length - this.next;
  }

  /** `replay(<schedule>)`. */
  describe(): string {
    return `replay(${this.schedule})`;
  }
}

/**
 * A scheduler that reproduces the interleaving recorded in `schedule` (a `Scheduler.schedule` string).
 * @linux none: a test helper
 */
export function replayScheduler(schedule: string, diag: Diagnostics = new Diagnostics()): Scheduler {
  return new Scheduler(diag, { strategy: new ReplayStrategy(schedule) });
}
