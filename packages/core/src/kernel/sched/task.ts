import type { HeldLock } from "./lockdep.js";
import type { Scheduler } from "./scheduler.js";

/**
 * Where a task is in its life: waiting for the CPU, running, asleep, or exited.
 * @linux TASK_RUNNING / TASK_UNINTERRUPTIBLE / TASK_DEAD
 */
export type TaskState = "ready" | "running" | "blocked" | "done";

/**
 * Why a blocked task was woken: by another task, or because its timeout expired.
 * @linux schedule_timeout (its return value)
 */
export type WakeReason = "woken" | "timeout";

/**
 * Something a task can sleep on (a lock, a wait queue, a completion). It describes itself, with its owners, for
 * the deadlock report.
 * @linux none: what a deadlock report prints for a sleeper
 */
export interface WaitTarget {
  describeWait(): string;
}

/** How a task ended: with a value or with an error. @linux kthread_stop (its return value) */
export type TaskOutcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * One suspended continuation of a task: the promise it awaits, settled when the scheduler grants it the CPU.
 * @internal
 * @linux struct wait_queue_entry
 */
export interface Wait {
  readonly kind: "start" | "yield" | "block" | "join" | "idle";
  readonly reason: string;
  readonly on: WaitTarget | undefined;
  /** Virtual time (ns) at which a timeout wakes the task; `Infinity` for none. */
  deadline: number;
  /** Tie-break for equal deadlines: earlier waits time out first. */
  readonly seq: number;
  /** Where the task went to sleep (formatted lazily, for deadlock reports). */
  readonly site: Error | undefined;
  /** For a join: every task the joiner waits for (several when joins are combined with `Promise.all`). */
  readonly targets: Set<Task> | undefined;
  readonly promise: Promise<WakeReason>;
  resolve: (r: WakeReason) => void;
  reject: (e: unknown) => void;
  result: WakeReason;
  error: unknown;
  failed: boolean;
}

/**
 * A simulated kernel thread: an async function run by the machine's {@link Scheduler}, one task at a time.
 * @linux struct task_struct
 */
export class Task<T = unknown> {
  /** @internal */
  st: TaskState = "ready";
  /** @internal the suspended continuation while the task is ready or blocked */
  wait: Wait | null = null;
  /** @internal locks held, in acquisition order (maintained by the lock-order recorder) */
  readonly held: HeldLock[] = [];
  /** @internal tasks waiting in `join` for this one */
  joiners: Task[] = [];
  /** @internal */
  outcome: TaskOutcome<T> | undefined;
  /** Whether someone observed the result through `join`. */
  joined = false;

  constructor(
    /** The scheduler that runs this task. */
    readonly scheduler: Scheduler,
    /** Unique within the scheduler; the root task is 0, spawned tasks count from 1 in spawn order. */
    readonly id: number,
    /** The name given at spawn; diagnostics name tasks by it. */
    readonly name: string,
  ) {}

  /** Where the task is in its life. */
  get state(): TaskState {
    return this.st;
  }

  /** The locks this task holds, outermost first. */
  get heldLocks(): readonly HeldLock[] {
    return this.held;
  }

  /** What the task sleeps on, when blocked. */
  get waitingOn(): string | undefined {
    if (this.st !== "blocked" || this.wait === null) return undefined;
    return describeWait(this.wait);
  }

  /**
   * Wait for the task to exit and return its result (or throw its error). The joining task sleeps through the
   * scheduler meanwhile.
   * @linux kthread_stop
   */
  join(): Promise<T> {
    return this.scheduler.join(this);
  }

  /** `name#id`. */
  toString(): string {
    return `${this.name}#${this.id}`;
  }
}

/** @internal Human-readable description of what a wait is for. @linux none */
export function describeWait(w: Wait): string {
  if (w.kind === "join" && w.targets) {
    return `join of ${[...w.targets].map((t) => `task ${t.name} (${t.state})`).join(", ")}`;
  }
  if (w.kind === "idle") return "runUntilIdle (all other tasks to finish)";
  const what = w.on ? w.on.describeWait() : w.reason;
  return Number.isFinite(w.deadline) ? `${what} (timeout at ${w.deadline} ns)` : what;
}
