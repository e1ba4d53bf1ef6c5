/**
 * Read-copy-update on the simulated scheduler. Readers mark their sections (sync, nestable, per task); an
 * updater publishes a new version with `rcuAssignPointer` and frees the old one after a grace period, i.e. once
 * every read-side section that began before the update has ended. Callbacks run at the scheduler's quiescent
 * points (context switches), at the end of `synchronizeRcu` / `rcuBarrier`, and when the machine goes idle.
 */
import type { Diagnostics } from "./diagnostics.js";
import type { Scheduler } from "./sched/scheduler.js";
import type { Task, WaitTarget } from "./sched/task.js";
import { assertLive, captureFreeSite, freedAt, kfree, setFreeStack } from "./slab.js";

interface ReadSection {
  depth: number;
  /** Sequence number of the outermost rcu_read_lock; grace periods wait for older sections. */
  readonly id: number;
  /** Whether sleeping in this section was reported already (once per section). */
  reported: boolean;
}

interface Callback {
  /** Sections with an id up to this one must end before the callback runs. */
  readonly snap: number;
  readonly fn: () => void;
}

interface GpWaiter {
  readonly snap: number;
  readonly task: Task;
}

/**
 * The machine's RCU state: read-side sections per task, grace-period waiters and the callback list.
 * @linux kernel/rcu/tree.c (rcu_read_lock, synchronize_rcu, call_rcu, rcu_barrier)
 */
export class Rcu implements WaitTarget {
  private readonly readers = new Map<Task, ReadSection>();
  private seq = 0;
  private callbacks: Callback[] = [];
  private readonly gpWaiters: GpWaiter[] = [];

  constructor(
    private readonly sched: Scheduler,
    /** Diagnostics for RCU misuse and use-after-free; defaults to the scheduler's. */
    readonly diag: Diagnostics = sched.diag,
  ) {
    sched.onMightSleep((task, what) => this.sleepCheck(task, what));
    sched.onQuiescent(() => this.processCallbacks());
    sched.onTaskExit((task) => this.exitCheck(task));
    sched.onIdle(() => this.processCallbacks());
    diag.addTeardownCheck("rcu read-side sections at teardown", () =>
      [...this.readers.keys()].map((t) =>
        this.diag.report("rcu", `task ${t.name} is still inside an RCU read-side critical section at teardown`, {
          culprit: t.name,
        }),
      ),
    );
  }

  /**
   * Enter a read-side critical section (nestable). Sleeping inside one is reported.
   * @linux rcu_read_lock
   */
  readLock(): void {
    const cur = this.sched.current();
    const r = this.readers.get(cur);
    if (r) r.depth++;
    else this.readers.set(cur, { depth: 1, id: ++this.seq, reported: false });
  }

  /**
   * Leave a read-side critical section; leaving the outermost one may end a grace period.
   * @linux rcu_read_unlock
   */
  readUnlock(): void {
    const cur = this.sched.current();
    const r = this.readers.get(cur);
    if (!r) {
      this.diag.report("rcu", `rcu_read_unlock() without rcu_read_lock() in task ${cur.name}`, {
        culprit: cur.name,
        skipFrames: 1,
      });
      return;
    }
    if (--r.depth === 0) {
      this.readers.delete(cur);
      this.wakeGpWaiters();
    }
  }

  /**
   * Whether the current task is inside a read-side critical section.
   * @linux rcu_read_lock_held
   */
  readLockHeld(): boolean {
    return this.readers.has(this.sched.current());
  }

  /**
   * Wait for a grace period: every read-side section that began before the call has ended. Always a scheduling
   * point; then runs the callbacks whose grace period has elapsed.
   * @linux synchronize_rcu
   */
  async synchronizeRcu(): Promise<void> {
    const s = this.sched;
    s.mightSleep("synchronize_rcu");
    const snap = this.seq;
    if (this.oldestReader() > snap) {
      await s.yield();
    } else {
      const w: GpWaiter = { snap, task: s.current() };
      this.gpWaiters.push(w);
      try {
        while (this.oldestReader() <= snap) await s.block("synchronize_rcu", { on: this });
      } finally {
        const i = this.gpWaiters.indexOf(w);
        if (i >= 0) this.gpWaiters.splice(i, 1);
      }
    }
    this.processCallbacks();
  }

  /**
   * Run `fn` after a grace period (at a later quiescent point). `fn` must not sleep.
   * @linux call_rcu
   */
  callRcu(fn: () => void): void {
    this.callbacks.push({ snap: this.seq, fn });
  }

  /**
   * Free `obj` (slab `kfree`) after a grace period. A later checked access reports a use-after-free naming this
   * call as where it was freed.
   * @linux kfree_rcu
   */
  kfreeRcu(obj: object, what?: string): void {
    const site = captureFreeSite(this.diag);
    site.task = this.sched.current().name;
    this.callRcu(() => {
      const before = freedAt(obj);
      if (what === undefined) kfree(this.diag, obj);
      else kfree(this.diag, obj, what);
      // The free happens in a callback; point the free site at the kfree_rcu() call that caused it.
      if (!before) setFreeStack(obj, site);
    });
  }

  /**
   * Wait until every callback queued so far has run.
   * @linux rcu_barrier
   */
  async rcuBarrier(): Promise<void> {
    await this.synchronizeRcu();
    this.processCallbacks();
  }

  /** Callbacks not yet run. */
  get pendingCallbacks(): number {
    return this.callbacks.length;
  }

  /** For the deadlock report. */
  describeWait(): string {
    const rs = [...this.readers.keys()].map((t) => `task ${t.name}`).join(", ");
    return `RCU grace period (readers: ${rs || "none"})`;
  }

  private oldestReader(): number {
    let min = Number.POSITIVE_INFINITY;
    for (const r of this.readers.values()) if (r.id < min) min = r.id;
    return min;
  }

  private wakeGpWaiters(): void {
    if (this.gpWaiters.length === 0) return;
    const oldest = this.oldestReader();
    for (const w of this.gpWaiters) if (w.snap < oldest) this.sched.wake(w.task);
  }

  /** Run, in order, every callback whose grace period has elapsed. */
  private processCallbacks(): void {
    if (this.callbacks.length === 0) return;
    const oldest = this.oldestReader();
    let n = 0;
    while (n < this.callbacks.length && this.callbacks[n]!.snap < oldest) n++;
    if (n === 0) return;
    const ready = this.callbacks.slice(0, n);
    this.callbacks = this.callbacks.slice(n);
    for (const cb of ready) {
      try {
        cb.fn();
      } catch (e) {
        this.diag.report("warning", `RCU callback threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
    }
  }

  private sleepCheck(task: Task, what: string): void {
    const r = this.readers.get(task);
    if (!r || r.reported) return;
    r.reported = true;
    this.diag.report("rcu", `sleeping in RCU read-side critical section: task ${task.name} calls ${what}`, {
      culprit: task.name,
      skipFrames: 2,
    });
  }

  private exitCheck(task: Task): void {
    if (!this.readers.has(task)) return;
    this.readers.delete(task);
    this.diag.report("rcu", `task ${task.name} exited inside an RCU read-side critical section`, {
      culprit: task.name,
    });
    this.wakeGpWaiters();
  }
}

/**
 * A pointer to RCU-protected data: readers load it with `rcuDereference` inside a read-side section, updaters
 * store it with `rcuAssignPointer`.
 * @linux an `__rcu` annotated pointer
 */
export class RcuPointer<T> {
  /** @internal the published value */
  value: T;

  constructor(
    /** The RCU instance whose diagnostics checked accesses report to. */
    readonly rcu: Rcu,
    initial: T,
    /** How use-after-free reports name the pointee. */
    readonly what?: string,
  ) {
    this.value = initial;
  }
}

/**
 * Publish `v` through `p` (readers that dereference later see it fully initialised).
 * @linux rcu_assign_pointer
 */
export function rcuAssignPointer<T>(p: RcuPointer<T>, v: T): void {
  p.value = v;
}

/**
 * Load the pointer for a reader. When the pointee is an object already freed (kfree or kfree_rcu), records a
 * use-after-free naming where it was freed; the value is returned either way.
 * @linux rcu_dereference
 */
export function rcuDereference<T>(p: RcuPointer<T>): T {
  const v = p.value;
  if (typeof v === "object" && v !== null && freedAt(v) !== undefined) {
    if (p.what === undefined) assertLive(p.rcu.diag, v);
    else assertLive(p.rcu.diag, v, p.what);
  }
  return v;
}

/**
 * Load the pointer on the update side, where `held` (usually `lock.isLocked()` or an ownership check) protects
 * it; records a `rcu` diagnostic when it does not and the caller is not a reader either.
 * @linux rcu_dereference_protected
 */
export function rcuDereferenceProtected<T>(p: RcuPointer<T>, held: boolean): T {
  if (!held && !p.rcu.readLockHeld()) {
    p.rcu.diag.report("rcu", "suspicious rcu_dereference_protected() usage: protecting condition is false", {
      culprit: p.what ?? "RcuPointer",
      skipFrames: 1,
    });
  }
  return rcuDereference(p);
}

/**
 * Read the pointer's value without dereferencing it (comparisons, NULL checks); no checks.
 * @linux rcu_access_pointer
 */
export function rcuAccessPointer<T>(p: RcuPointer<T>): T {
  return p.value;
}
