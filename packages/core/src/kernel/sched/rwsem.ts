import { DeadlockError } from "./errors.js";
import { formatSite, type LockInstance, lockAssertFailed } from "./lockdep.js";
import type { LockOptions } from "./mutex.js";
import type { Scheduler } from "./scheduler.js";
import type { Task, WaitTarget } from "./task.js";

interface RwWaiter {
  task: Task;
  write: boolean;
}

/**
 * A reader-writer semaphore: many readers or one writer. Waiters queue in FIFO order; a queued writer blocks new
 * readers (writer preference), and a release grants the head of the queue: one writer, or the run of readers
 * at its front. Recursive acquisition (in any mode) is reported as a deadlock, as lockdep does.
 * @linux struct rw_semaphore
 */
export class RwSemaphore implements LockInstance, WaitTarget {
  /** For reports: `rwsem`. */
  readonly kind = "rwsem";
  /** Lock class used for ordering checks. */
  readonly lockClass: string;
  private writerTask: Task | null = null;
  private readonly readerTasks = new Set<Task>();
  private readonly queue: RwWaiter[] = [];

  constructor(
    private readonly sched: Scheduler,
    /** Name used in diagnostics. */
    readonly name: string,
    opts: LockOptions = {},
  ) {
    this.lockClass = opts.lockClass ?? name;
  }

  /** The task holding it for write, or null. */
  get writer(): Task | null {
    return this.writerTask;
  }

  /** The tasks holding it for read. */
  get readers(): readonly Task[] {
    return [...this.readerTasks];
  }

  /**
   * Acquire for read, sleeping while a writer holds it or waits for it.
   * @linux down_read
   */
  async downRead(): Promise<void> {
    const w = this.downReadOrWait();
    if (w) await w;
  }

  /**
   * {@link downRead} without an asynchronous step when it need not sleep: the same checks (might_sleep, recursion,
   * lockdep ordering) run first; when the lock is free, nobody queues and the scheduler is not preemptive, it is
   * taken at once and `undefined` returned; otherwise the returned promise settles once it is held. Check errors
   * throw synchronously.
   * @linux down_read (the uncontended fast path)
   */
  downReadOrWait(): Promise<void> | undefined {
    const s = this.sched;
    const cur = s.current();
    s.mightSleep(`down_read(${this.name})`);
    this.checkRecursion(cur, "down_read");
    const site = s.lockdep.captureSite();
    s.lockdep.acquiring(cur, this);
    if (!s.preemptive && this.writerTask === null && this.queue.length === 0) {
      this.readerTasks.add(cur);
      s.lockdep.acquired(cur, this, "shared", site);
      return undefined;
    }
    return this.downSlow(cur, false, site);
  }

  /**
   * Acquire for write, sleeping while anyone holds it.
   * @linux down_write
   */
  async downWrite(): Promise<void> {
    const w = this.downWriteOrWait();
    if (w) await w;
  }

  /**
   * {@link downWrite} without an asynchronous step when it need not sleep (see {@link downReadOrWait}).
   * @linux down_write (the uncontended fast path)
   */
  downWriteOrWait(): Promise<void> | undefined {
    const s = this.sched;
    const cur = s.current();
    s.mightSleep(`down_write(${this.name})`);
    this.checkRecursion(cur, "down_write");
    const site = s.lockdep.captureSite();
    s.lockdep.acquiring(cur, this);
    if (!s.preemptive && this.writerTask === null && this.readerTasks.size === 0 && this.queue.length === 0) {
      this.writerTask = cur;
      s.lockdep.acquired(cur, this, "exclusive", site);
      return undefined;
    }
    return this.downSlow(cur, true, site);
  }

  /** The sleeping half of an acquisition whose checks ran: a preemption point, then wait unless free. */
  private async downSlow(cur: Task, write: boolean, site: ReturnType<Scheduler["lockdep"]["captureSite"]>) {
    const s = this.sched;
    if (s.preemptive) await s.preemptionPoint();
    const free = write
      ? this.writerTask === null && this.readerTasks.size === 0 && this.queue.length === 0
      : this.writerTask === null && this.queue.length === 0;
    if (!free) await this.wait(cur, write);
    else if (write) this.writerTask = cur;
    else this.readerTasks.add(cur);
    s.lockdep.acquired(cur, this, write ? "exclusive" : "shared", site);
  }

  /**
   * Acquire for write while holding `nest`, the outer lock that serialises every task taking several locks of this
   * class at once (so their order among themselves cannot deadlock). Asserts `nest` is held, as lockdep does.
   * @linux down_write_nest_lock
   */
  async downWriteNestLock(nest: { assertHeld(): void }): Promise<void> {
    nest.assertHeld();
    await this.downWrite();
  }

  /**
   * Acquire for read without sleeping; fails while a writer holds or waits for it.
   * @linux down_read_trylock
   */
  tryDownRead(): boolean {
    const cur = this.sched.current();
    if (this.writerTask !== null || this.queue.length > 0 || this.readerTasks.has(cur)) return false;
    this.readerTasks.add(cur);
    this.sched.lockdep.acquired(cur, this, "shared");
    return true;
  }

  /**
   * Acquire for write without sleeping; fails while anyone holds it.
   * @linux down_write_trylock
   */
  tryDownWrite(): boolean {
    if (this.writerTask !== null || this.readerTasks.size > 0) return false;
    const cur = this.sched.current();
    this.writerTask = cur;
    this.sched.lockdep.acquired(cur, this, "exclusive");
    return true;
  }

  /**
   * Release a read hold; the last reader lets the head of the queue in. Records a warning when the caller is
   * not a reader.
   * @linux up_read
   */
  upRead(): void {
    const s = this.sched;
    const cur = s.current();
    if (!this.readerTasks.delete(cur)) {
      s.diag.report("warning", `up_read of rwsem ${this.name} by task ${cur.name}, which does not hold it for read`, {
        culprit: this.name,
      });
      return;
    }
    s.lockdep.released(cur, this);
    if (this.readerTasks.size === 0) this.grant();
  }

  /**
   * Release the write hold and let the head of the queue in. Records a warning when the caller is not the
   * writer.
   * @linux up_write
   */
  upWrite(): void {
    const s = this.sched;
    const cur = s.current();
    const w = this.writerTask;
    if (w === null) {
      s.diag.report("warning", `up_write of rwsem ${this.name} by task ${cur.name}, but no writer holds it`, {
        culprit: this.name,
      });
      return;
    }
    if (w !== cur) {
      s.diag.report("warning", `rwsem ${this.name} up_write by task ${cur.name} but held for write by task ${w.name}`, {
        culprit: this.name,
      });
    }
    s.lockdep.released(w, this);
    this.writerTask = null;
    this.grant();
  }

  /**
   * Turn the caller's write hold into a read hold, letting queued readers in.
   * @linux downgrade_write
   */
  downgradeWrite(): void {
    const cur = this.sched.current();
    if (this.writerTask !== cur) lockAssertFailed(this.sched.diag, this, cur, "for write (downgrade_write)");
    this.writerTask = null;
    this.readerTasks.add(cur);
    const h = cur.held.find((x) => x.lock === this);
    if (h) h.mode = "shared";
    this.grant();
  }

  /**
   * Whether anyone holds it.
   * @linux rwsem_is_locked
   */
  isLocked(): boolean {
    return this.writerTask !== null || this.readerTasks.size > 0;
  }

  /**
   * Throw {@link LockAssertionError} unless the current task holds it for read or write.
   * @linux lockdep_assert_held
   */
  assertHeld(): void {
    const cur = this.sched.current();
    if (this.writerTask === cur || this.readerTasks.has(cur)) return;
    lockAssertFailed(this.sched.diag, this, cur, `(${this.holders()})`);
  }

  /**
   * Throw {@link LockAssertionError} unless the current task holds it for write.
   * @linux lockdep_assert_held_write
   */
  assertWriteHeld(): void {
    const cur = this.sched.current();
    if (this.writerTask === cur) return;
    lockAssertFailed(this.sched.diag, this, cur, `for write (${this.holders()})`);
  }

  /**
   * Throw {@link LockAssertionError} unless the current task holds it for read.
   * @linux lockdep_assert_held_read
   */
  assertReadHeld(): void {
    const cur = this.sched.current();
    if (this.readerTasks.has(cur)) return;
    lockAssertFailed(this.sched.diag, this, cur, `for read (${this.holders()})`);
  }

  /** For the deadlock report. */
  describeWait(): string {
    const q = this.queue.map((w) => `${w.task.name}(${w.write ? "w" : "r"})`).join(", ");
    return `rwsem ${this.name} (${this.holders()}${q ? `; queued: ${q}` : ""})`;
  }

  private holders(): string {
    if (this.writerTask) return `writer: task ${this.writerTask.name}`;
    if (this.readerTasks.size > 0) return `readers: ${[...this.readerTasks].map((t) => `task ${t.name}`).join(", ")}`;
    return "unlocked";
  }

  private owns(cur: Task, write: boolean): boolean {
    return write ? this.writerTask === cur : this.readerTasks.has(cur);
  }

  private async wait(cur: Task, write: boolean): Promise<void> {
    const s = this.sched;
    while (!this.owns(cur, write)) {
      const entry: RwWaiter = { task: cur, write };
      this.queue.push(entry);
      try {
        await s.block(`${write ? "down_write" : "down_read"}(${this.name})`, { on: this });
      } finally {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
      }
    }
  }

  /** Grant the head of the queue: one writer once free, or every reader at the front while no writer holds it. */
  private grant(): void {
    const s = this.sched;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (head.write) {
        if (this.writerTask === null && this.readerTasks.size === 0) {
          this.queue.shift();
          this.writerTask = head.task;
          s.wake(head.task);
        }
        return;
      }
      if (this.writerTask !== null) return;
      this.queue.shift();
      this.readerTasks.add(head.task);
      s.wake(head.task);
    }
  }

  private checkRecursion(cur: Task, op: string): void {
    if (this.writerTask !== cur && !this.readerTasks.has(cur)) return;
    const held = cur.held.find((h) => h.lock === this);
    const d = this.sched.diag.report(
      "deadlock",
      `possible recursive locking detected: task ${cur.name} calls ${op} on rwsem ${this.name}, which it already holds`,
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
