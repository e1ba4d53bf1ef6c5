import type { Scheduler } from "./scheduler.js";
import type { Task, WaitTarget } from "./task.js";

/**
 * A one-shot (or counting) event: `complete` lets one waiter through, `completeAll` every waiter now and later
 * until `reinit`.
 * @linux struct completion
 */
export class Completion implements WaitTarget {
  /** Completions not yet consumed; `Infinity` after `completeAll` (Linux's UINT_MAX). */
  private count = 0;
  private readonly waiters: Task[] = [];

  constructor(
    private readonly sched: Scheduler,
    /** Name used in diagnostics. */
    readonly name = "completion",
  ) {}

  /**
   * Whether a wait would return at once.
   * @linux completion_done
   */
  get done(): boolean {
    return this.count > 0;
  }

  /**
   * Sleep until completed, consuming one completion.
   * @linux wait_for_completion
   */
  async wait(): Promise<void> {
    const s = this.sched;
    s.mightSleep(`wait_for_completion(${this.name})`);
    const cur = s.current();
    while (this.count === 0) await this.sleep(cur, undefined);
    this.consume();
  }

  /**
   * Sleep until completed or `ns` virtual nanoseconds pass: 0 on timeout, otherwise the time left (at least 1).
   * @linux wait_for_completion_timeout
   */
  async waitTimeout(ns: number): Promise<number> {
    const s = this.sched;
    s.mightSleep(`wait_for_completion_timeout(${this.name})`);
    const cur = s.current();
    const deadline = s.now() + Math.max(0, ns);
    while (this.count === 0) {
      const left = deadline - s.now();
      if (left <= 0) return 0;
      await this.sleep(cur, left);
    }
    this.consume();
    return Math.max(1, deadline - s.now());
  }

  /**
   * Consume a completion without sleeping; returns whether there was one.
   * @linux try_wait_for_completion
   */
  tryWait(): boolean {
    if (this.count === 0) return false;
    this.consume();
    return true;
  }

  /**
   * Signal one completion, waking the first waiter.
   * @linux complete
   */
  complete(): void {
    if (this.count !== Number.POSITIVE_INFINITY) this.count++;
    const t = this.waiters.shift();
    if (t) this.sched.wake(t);
  }

  /**
   * Complete for every waiter, present and future, until `reinit`.
   * @linux complete_all
   */
  completeAll(): void {
    this.count = Number.POSITIVE_INFINITY;
    for (const t of this.waiters.splice(0)) this.sched.wake(t);
  }

  /**
   * Reset to not completed.
   * @linux reinit_completion
   */
  reinit(): void {
    this.count = 0;
  }

  /** For the deadlock report. */
  describeWait(): string {
    return `completion ${this.name}`;
  }

  private consume(): void {
    if (this.count !== Number.POSITIVE_INFINITY) this.count--;
  }

  private async sleep(cur: Task, timeout: number | undefined): Promise<void> {
    this.waiters.push(cur);
    try {
      await this.sched.block(
        `wait_for_completion(${this.name})`,
        timeout === undefined ? { on: this } : { on: this, timeout },
      );
    } finally {
      const i = this.waiters.indexOf(cur);
      if (i >= 0) this.waiters.splice(i, 1);
    }
  }
}
