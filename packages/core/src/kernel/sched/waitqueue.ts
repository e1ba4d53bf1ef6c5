import type { Scheduler } from "./scheduler.js";
import type { Task, WaitTarget } from "./task.js";

interface Waiter {
  task: Task;
  exclusive: boolean;
}

/** Options of {@link WaitQueue.waitEvent}. @linux WQ_FLAG_EXCLUSIVE */
export interface WaitEventOptions {
  /** An exclusive waiter is woken one at a time by `wakeUp` (wait_event_exclusive). */
  exclusive?: boolean;
}

/**
 * A wait queue: tasks sleep until a condition holds; whoever makes it true calls `wakeUp`. The condition is
 * re-checked after every wake-up, so spurious wake-ups are harmless.
 * @linux wait_queue_head_t
 */
export class WaitQueue implements WaitTarget {
  private readonly waiters: Waiter[] = [];

  constructor(
    private readonly sched: Scheduler,
    /** Name used in diagnostics. */
    readonly name = "waitqueue",
  ) {}

  /** Number of sleeping waiters. */
  get length(): number {
    return this.waiters.length;
  }

  /**
   * Sleep until `cond()` holds (returns at once if it already does).
   * @linux wait_event
   */
  async waitEvent(cond: () => boolean, opts: WaitEventOptions = {}): Promise<void> {
    const s = this.sched;
    s.mightSleep(`wait_event(${this.name})`);
    const cur = s.current();
    while (!cond()) await this.sleep(cur, opts.exclusive ?? false, undefined);
  }

  /**
   * Sleep until `cond()` holds or `ns` virtual nanoseconds pass. Returns 0 if the condition is still false at the
   * timeout, otherwise the time left (at least 1).
   * @linux wait_event_timeout
   */
  async waitEventTimeout(cond: () => boolean, ns: number, opts: WaitEventOptions = {}): Promise<number> {
    const s = this.sched;
    s.mightSleep(`wait_event_timeout(${this.name})`);
    const cur = s.current();
    const deadline = s.now() + Math.max(0, ns);
    for (;;) {
      if (cond()) return Math.max(1, deadline - s.now());
      const left = deadline - s.now();
      if (left <= 0) return 0;
      const why = await this.sleep(cur, opts.exclusive ?? false, left);
      if (why === "timeout") return cond() ? 1 : 0;
    }
  }

  /**
   * Wake every non-exclusive waiter and the first exclusive one.
   * @linux wake_up
   */
  wakeUp(): void {
    let exclusiveWoken = false;
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]!;
      if (w.exclusive && exclusiveWoken) {
        i++;
        continue;
      }
      if (w.exclusive) exclusiveWoken = true;
      this.waiters.splice(i, 1);
      this.sched.wake(w.task);
    }
  }

  /**
   * Wake every waiter.
   * @linux wake_up_all
   */
  wakeUpAll(): void {
    for (const w of this.waiters.splice(0)) this.sched.wake(w.task);
  }

  /** For the deadlock report. */
  describeWait(): string {
    return `wait queue ${this.name}`;
  }

  private async sleep(cur: Task, exclusive: boolean, timeout: number | undefined) {
    const entry: Waiter = { task: cur, exclusive };
    this.waiters.push(entry);
    try {
      return await this.sched.block(
        `wait_event(${this.name})`,
        timeout === undefined ? { on: this } : { on: this, timeout },
      );
    } finally {
      const i = this.waiters.indexOf(entry);
      if (i >= 0) this.waiters.splice(i, 1);
    }
  }
}
