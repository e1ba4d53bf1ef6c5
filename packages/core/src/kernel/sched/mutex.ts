import { DeadlockError } from "./errors.js";
import { formatSite, type LockInstance, lockAssertFailed } from "./lockdep.js";
import type { Scheduler } from "./scheduler.js";
import type { Task, WaitTarget } from "./task.js";

/** Options of a lock. @linux lockdep_set_class */
export interface LockOptions {
  /** Lock class for ordering checks; locks of one class share their rules. Default: the lock's name. */
  lockClass?: string;
}

/**
 * A sleeping lock with a single owner, built on the scheduler. Waiters queue in FIFO order and `unlock` hands the
 * lock to the first of them. Acquisition is a preemption point for random strategies, and lockdep records the
 * order of acquisitions.
 * @linux struct mutex
 */
export class Mutex implements LockInstance, WaitTarget {
  /** For reports: `mutex`. */
  readonly kind = "mutex";
  /** Lock class used for ordering checks. */
  readonly lockClass: string;
  private own: Task | null = null;
  private readonly waiters: Task[] = [];

  constructor(
    private readonly sched: Scheduler,
    /** Name used in diagnostics. */
    readonly name: string,
    opts: LockOptions = {},
  ) {
    this.lockClass = opts.lockClass ?? name;
  }

  /** The owning task, or null. */
  get owner(): Task | null {
    return this.own;
  }

  /**
   * Acquire, sleeping while another task holds it. Locking a mutex the caller already holds records a `deadlock`
   * diagnostic and throws {@link DeadlockError}.
   * @linux mutex_lock
   */
  async lock(): Promise<void> {
    const s = this.sched;
    const cur = s.current();
    s.mightSleep(`mutex_lock(${this.name})`);
    if (this.own === cur) this.recursive(cur);
    const site = s.lockdep.captureSite();
    s.lockdep.acquiring(cur, this);
    if (s.preemptive) await s.preemptionPoint();
    if (this.own === null) {
      this.own = cur;
      s.lockdep.acquired(cur, this, "exclusive", site);
      return;
    }
    while (this.own !== cur) {
      this.waiters.push(cur);
      try {
        await s.block(`mutex_lock(${this.name})`, { on: this });
      } finally {
        const i = this.waiters.indexOf(cur);
        if (i >= 0) this.waiters.splice(i, 1);
      }
    }
    s.lockdep.acquired(cur, this, "exclusive", site);
  }

  /**
   * Acquire without sleeping; returns whether it succeeded.
   * @linux mutex_trylock
   */
  tryLock(): boolean {
    if (this.own !== null) return false;
    const cur = this.sched.current();
    this.own = cur;
    this.sched.lockdep.acquired(cur, this, "exclusive");
    return true;
  }

  /**
   * Release and hand the lock to the first waiter. Unlocking a mutex the caller does not own, or an unlocked
   * one, records a warning.
   * @linux mutex_unlock
   */
  unlock(): void {
    const s = this.sched;
    const owner = this.own;
    const cur = s.current();
    if (owner === null) {
      s.diag.report("warning", `mutex_unlock of unlocked mutex ${this.name} by task ${cur.name}`, {
        culprit: this.name,
      });
      return;
    }
    if (owner !== cur) {
      s.diag.report("warning", `mutex ${this.name} unlocked by task ${cur.name} but owned by task ${owner.name}`, {
        culprit: this.name,
      });
    }
    s.lockdep.released(owner, this);
    const next = this.waiters.shift();
    this.own = next ?? null;
    if (next) s.wake(next);
  }

  /**
   * Whether any task holds it.
   * @linux mutex_is_locked
   */
  isLocked(): boolean {
    return this.own !== null;
  }

  /**
   * Throw {@link LockAssertionError} (after a `lock-assert` diagnostic) unless the current task holds it.
   * @linux lockdep_assert_held
   */
  assertHeld(): void {
    const cur = this.sched.current();
    if (this.own === cur) return;
    lockAssertFailed(this.sched.diag, this, cur, this.own ? `(owner: task ${this.own.name})` : "(it is unlocked)");
  }

  /**
   * Run `fn` with the lock held; releasing it is a preemption point for random strategies.
   * @linux guard(mutex)
   */
  async withLock<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.lock();
    try {
      return await fn();
    } finally {
      this.unlock();
      if (this.sched.preemptive) await this.sched.preemptionPoint();
    }
  }

  /** For the deadlock report. */
  describeWait(): string {
    return `mutex ${this.name} (owner: ${this.own ? `task ${this.own.name}` : "none"})`;
  }

  private recursive(cur: Task): never {
    const held = cur.held.find((h) => h.lock === this);
    const d = this.sched.diag.report(
      "deadlock",
      `possible recursive locking detected: task ${cur.name} acquires mutex ${this.name}, which it already holds`,
      {
        culprit: this.name,
        related: held
          ? [{ label: `${this.name} first acquired at`, task: cur.name, stack: formatSite(held.site) }]
          : [],
        skipFrames: 1,
      },
    );
    // A report asked for acquisition sites: record them from now on.
    this.sched.lockdep.captureSites = true;
    throw new DeadlockError(d.message);
  }
}
