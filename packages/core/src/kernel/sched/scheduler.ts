import { AsyncLocalStorage } from "node:async_hooks";
import type { Diagnostics } from "../diagnostics.js";
import { DeadlockError } from "./errors.js";
import { FifoStrategy } from "./fifo.js";
import { formatSite, LockOrderRecorder } from "./lockdep.js";
import type { ScheduleStrategy } from "./strategy.js";
import { describeWait, Task, type TaskOutcome, type Wait, type WaitTarget, type WakeReason } from "./task.js";

/**
 * The task running the current async context, shared by every scheduler in the process. Sharing is deliberate:
 * Node 20 keeps every AsyncLocalStorage ever used in a global list walked on each promise creation, so one
 * instance per machine would slow every later test down. It holds no state of its own: each task names its
 * scheduler, and a scheduler ignores tasks of other schedulers.
 */
const TASK_CONTEXT = new AsyncLocalStorage<Task>();

/** Options of {@link Scheduler}. @linux none: machine configuration */
export interface SchedulerOptions {
  /** Who runs next at each decision; default {@link FifoStrategy}. */
  strategy?: ScheduleStrategy;
  /** Name of the implicit root task (code outside any spawned task). Default `main`. */
  rootName?: string;
}

/** Options of {@link Scheduler.block}. @linux schedule_timeout */
export interface BlockOptions {
  /** Wake with `'timeout'` after this many virtual nanoseconds. */
  timeout?: number;
  /** What the task sleeps on, for the deadlock report. */
  on?: WaitTarget;
}

/**
 * The machine's CPU: a cooperative scheduler over JS async functions. Exactly one task runs at a time; another
 * runs only when the running one sleeps (`block`, a contended lock, `join`, `sleep`), yields, or exits, or, under
 * a preemptive strategy, at a lock acquisition. Tasks are identified through an `AsyncLocalStorage`; code outside
 * any spawned task is the root task (`main`). Every decision between several runnable tasks is recorded in
 * {@link schedule}, which `replayScheduler` reproduces. Time is virtual: it advances only when every task sleeps
 * and one has a timeout. When every task sleeps with no timeout pending, the scheduler reports a `deadlock`
 * and throws {@link DeadlockError} into the sleepers, so tests never hang.
 * @linux kernel/sched/core.c (schedule, wake_up_process, kthread_run) with a virtual clock
 */
export class Scheduler {
  /** The lock-order recorder shared by every lock of this machine. */
  readonly lockdep: LockOrderRecorder;
  /** The strategy picking the next task. */
  readonly strategy: ScheduleStrategy;
  /** The implicit task running code outside any spawned task. */
  readonly root: Task<void>;

  private running: Task | null;
  private readonly runQueue: Task[] = [];
  private readonly blocked = new Set<Task>();
  private readonly live = new Set<Task>();
  private readonly failedUnjoined: Task[] = [];
  private readonly decisions: number[] = [];
  private readonly sleepHooks: ((task: Task, what: string) => void)[] = [];
  private readonly quiescentHooks: (() => void)[] = [];
  private readonly exitHooks: ((task: Task) => void)[] = [];
  private readonly idleHooks: (() => void)[] = [];
  private nextId = 1;
  private time = 0;
  private waitSeq = 0;

  constructor(
    /** The machine's diagnostics; the scheduler names the current task in it. */
    readonly diag: Diagnostics,
    opts: SchedulerOptions = {},
  ) {
    this.strategy = opts.strategy ?? new FifoStrategy();
    this.lockdep = new LockOrderRecorder(diag);
    this.root = new Task<void>(this, 0, opts.rootName ?? "main");
    this.root.st = "running";
    this.running = this.root;
    this.live.add(this.root);
    diag.currentTask = () => this.current().name;
    diag.currentTime = () => this.now();
    diag.addTeardownCheck("locks held at teardown", () => {
      const found = [];
      for (const t of this.live) found.push(...this.lockdep.reportHeld(t, "is still"));
      return found;
    });
  }

  /** Whether lock acquisitions are preemption points (the strategy is preemptive). */
  get preemptive(): boolean {
    return this.strategy.preemptive;
  }

  /**
   * The schedule string of this run so far: `p:` or `c:` then the id of the task chosen at each decision that had
   * more than one candidate. `replayScheduler(schedule)` reproduces the run.
   */
  get schedule(): string {
    return `${this.strategy.preemptive ? "p" : "c"}:${this.decisions.join(",")}`;
  }

  /** Strategy and schedule, for a failing test's message. */
  describe(): string {
    return `${this.strategy.describe()} schedule=${this.schedule}`;
  }

  /** Tasks that have not exited, the root included. */
  get tasks(): readonly Task[] {
    return [...this.live];
  }

  /**
   * The task running the caller.
   * @linux current
   */
  current(): Task {
    const t = TASK_CONTEXT.getStore();
    return t !== undefined && t.scheduler === this ? t : this.root;
  }

  /**
   * Virtual time in nanoseconds.
   * @linux ktime_get_ns
   */
  now(): number {
    return this.time;
  }

  /**
   * Create a task running `fn`. It starts when the scheduler picks it, i.e. once the spawner sleeps, yields or
   * joins; its result is observed with `join()`.
   * @linux kthread_run
   */
  spawn<T>(name: string, fn: () => T | Promise<T>): Task<T> {
    const task = new Task<T>(this, this.nextId++, name);
    const w = this.newWait("start", "start", undefined, undefined);
    w.result = "woken";
    task.wait = w;
    this.live.add(task);
    this.runQueue.push(task);
    TASK_CONTEXT.run(task, () => {
      void this.runTask(task, w.promise, fn);
    });
    return task;
  }

  /**
   * Voluntarily give up the CPU: the caller goes to the back of the run queue. With nothing else runnable this is
   * a resolved promise.
   * @linux cond_resched
   */
  async yield(): Promise<void> {
    const cur = this.current();
    this.mightSleep("cond_resched");
    this.runQuiescentHooks();
    if (this.runQueue.length === 0) return;
    await this.requeue(cur, "cond_resched");
  }

  /**
   * An involuntary preemption (as by the timer tick): the caller goes to the back of the run queue and another
   * task runs if any can. Unlike `yield`, allowed inside an RCU read-side critical section (PREEMPT_RCU).
   * @linux preempt_schedule
   */
  async preempt(): Promise<void> {
    if (this.runQueue.length === 0) return;
    await this.requeue(this.current(), "preempt");
  }

  /**
   * A preemption point inside a lock operation: under a preemptive strategy, the strategy may switch to another
   * runnable task here; under FIFO nothing happens.
   * @linux preempt_schedule (at preempt_enable)
   */
  async preemptionPoint(): Promise<void> {
    if (!this.strategy.preemptive || this.runQueue.length === 0) return;
    const cur = this.current();
    if (cur !== this.running) return;
    const idx = this.decide([cur, ...this.runQueue]);
    if (idx === 0) return;
    const next = this.runQueue.splice(idx - 1, 1)[0]!;
    const w = this.newWait("yield", "preempted", undefined, undefined);
    w.result = "woken";
    cur.wait = w;
    cur.st = "ready";
    this.runQueue.push(cur);
    this.grant(next);
    await w.promise;
  }

  /**
   * Announce that the caller is about to sleep: hooks (RCU) report sleeping in atomic context.
   * @linux might_sleep
   */
  mightSleep(what: string): void {
    if (this.sleepHooks.length === 0) return;
    const cur = this.current();
    for (const h of this.sleepHooks) h(cur, what);
  }

  /**
   * Put the running task to sleep until `wake(task)` or the timeout; resolves with why it woke. This is the
   * primitive the locks, wait queues and completions are built on. Rejects with {@link DeadlockError} when the
   * scheduler finds the task in a deadlock.
   * @linux schedule / schedule_timeout
   */
  block(reason: string, opts: BlockOptions = {}): Promise<WakeReason> {
    const cur = this.current();
    this.mightSleep(reason);
    this.assertRunning(cur, reason);
    const deadline = opts.timeout === undefined ? Number.POSITIVE_INFINITY : this.time + Math.max(0, opts.timeout);
    return this.suspend(cur, this.newWait("block", reason, opts.on, undefined, deadline));
  }

  /**
   * Make a blocked task runnable; returns false when it was not blocked.
   * @linux wake_up_process
   */
  wake(task: Task, reason: WakeReason = "woken"): boolean {
    // Joins and runUntilIdle are woken by the scheduler itself, never by another task.
    if (task.st !== "blocked" || task.wait === null || task.wait.kind !== "block") return false;
    return this.wakeAny(task, reason);
  }

  /**
   * Sleep for `ns` virtual nanoseconds (0 or less: just yield).
   * @linux fsleep / usleep_range
   */
  async sleep(ns: number): Promise<void> {
    if (ns <= 0) return this.yield();
    const end = this.time + ns;
    while (this.time < end) await this.block(`sleep ${ns} ns`, { timeout: end - this.time });
  }

  /**
   * Wait for `target` to exit and return its result. Several joins from one task may be combined with
   * `Promise.all`: the joiner then sleeps until all of them have exited.
   * @linux kthread_stop
   */
  join<T>(target: Task<T>): Promise<T> {
    const cur = this.current();
    if (target.scheduler !== this) throw new Error(`task ${target} belongs to another scheduler`);
    if (target === cur) {
      const d = this.diag.report("deadlock", `task ${cur.name} joins itself`, { culprit: cur.name });
      return Promise.reject(new DeadlockError(d.message));
    }
    if (target.st === "done") return this.resultOf(target);
    const w = cur.wait;
    if (cur.st === "blocked" && w !== null && w.kind === "join" && w.targets) {
      w.targets.add(target);
      target.joiners.push(cur);
      return w.promise.then(() => this.resultOf(target));
    }
    this.mightSleep(`join ${target.name}`);
    this.assertRunning(cur, `join ${target.name}`);
    target.joiners.push(cur);
    const p = this.suspend(cur, this.newWait("join", `join ${target.name}`, undefined, new Set<Task>([target])));
    return p.then(() => this.resultOf(target));
  }

  /**
   * Join every task in order and return their results; throws the first failure after all have exited.
   * @linux none: a convenience over kthread_stop
   */
  async joinAll<T>(tasks: readonly Task<T>[]): Promise<T[]> {
    const out: T[] = [];
    let failure: { error: unknown } | undefined;
    for (const t of tasks) {
      try {
        out.push(await t.join());
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure) throw failure.error;
    return out;
  }

  /**
   * Let every other task run to completion (advancing virtual time through their timeouts, breaking deadlocks),
   * then run the idle hooks (pending RCU callbacks). Tasks that exited holding locks have been reported as
   * `lock-held`; tasks that failed without anyone joining them are reported as warnings. Used by teardown.
   * @linux none: the machine's quiesce before teardown
   */
  async runUntilIdle(): Promise<void> {
    const cur = this.current();
    if (this.live.size > 1 || this.runQueue.length > 0) {
      this.assertRunning(cur, "runUntilIdle");
      await this.suspend(cur, this.newWait("idle", "runUntilIdle", undefined, undefined));
    }
    for (const h of this.idleHooks) h();
    for (const t of this.failedUnjoined.splice(0)) {
      if (t.joined || t.outcome?.ok !== false) continue;
      const e = t.outcome.error;
      this.diag.report(
        "warning",
        `task ${t.name} failed and was never joined: ${e instanceof Error ? e.stack : String(e)}`,
        {
          culprit: t.name,
        },
      );
    }
  }

  /**
   * Called with the task that is about to sleep and what it does; hooks report sleeping in atomic context.
   * @linux __might_sleep
   */
  onMightSleep(hook: (task: Task, what: string) => void): void {
    this.sleepHooks.push(hook);
  }

  /**
   * Called at every context switch (a point where no task is mid-step); RCU runs ready callbacks here.
   * @linux rcu_note_context_switch
   */
  onQuiescent(hook: () => void): void {
    this.quiescentHooks.push(hook);
  }

  /**
   * Called when a task exits, before its joiners wake.
   * @linux do_exit (exit_rcu, debug_check_no_locks_held)
   */
  onTaskExit(hook: (task: Task) => void): void {
    this.exitHooks.push(hook);
  }

  /**
   * Called by `runUntilIdle` once every other task has exited.
   * @linux none
   */
  onIdle(hook: () => void): void {
    this.idleHooks.push(hook);
  }

  // --- internals -------------------------------------------------------------------------------------------

  private async runTask<T>(task: Task<T>, start: Promise<WakeReason>, fn: () => T | Promise<T>): Promise<void> {
    await start;
    let outcome: TaskOutcome<T>;
    try {
      outcome = { ok: true, value: await fn() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    this.exit(task, outcome);
  }

  private exit<T>(task: Task<T>, outcome: TaskOutcome<T>): void {
    task.outcome = outcome;
    task.st = "done";
    this.live.delete(task);
    for (const h of this.exitHooks) h(task);
    const deadlocked = !outcome.ok && outcome.error instanceof DeadlockError;
    // A task killed by the deadlock breaker was already named in the deadlock report.
    if (task.held.length > 0 && !deadlocked) this.lockdep.reportHeld(task, "exited");
    if (!outcome.ok && !deadlocked) this.failedUnjoined.push(task);
    const joiners = task.joiners;
    task.joiners = [];
    for (const j of joiners) {
      const w = j.wait;
      if (j.st !== "blocked" || w === null || w.kind !== "join" || !w.targets) continue;
      let all = true;
      for (const t of w.targets) if (t.st !== "done") all = false;
      if (all) this.wakeAny(j);
    }
    if (this.running === task) {
      this.running = null;
      this.dispatch();
    }
  }

  private resultOf<T>(t: Task<T>): Promise<T> {
    t.joined = true;
    const o = t.outcome!;
    return o.ok ? Promise.resolve(o.value) : Promise.reject(o.error);
  }

  private assertRunning(cur: Task, what: string): void {
    if (cur === this.running) return;
    throw new Error(
      `scheduler: task ${cur.name} called ${what} while ${cur.state}, not running; a task waits for one thing ` +
        "at a time (spawn tasks for concurrent flows; combine joins with joinAll or Promise.all)",
    );
  }

  private newWait(
    kind: Wait["kind"],
    reason: string,
    on: WaitTarget | undefined,
    targets: Set<Task> | undefined,
    deadline = Number.POSITIVE_INFINITY,
  ): Wait {
    let resolve!: (r: WakeReason) => void;
    let reject!: (e: unknown) => void;
    const promise = new Promise<WakeReason>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const site = kind === "block" || kind === "join" || kind === "idle" ? new Error() : undefined;
    return {
      kind,
      reason,
      on,
      deadline,
      seq: this.waitSeq++,
      site,
      targets,
      promise,
      resolve,
      reject,
      result: "woken",
      error: undefined,
      failed: false,
    };
  }

  private suspend(cur: Task, w: Wait): Promise<WakeReason> {
    cur.wait = w;
    cur.st = "blocked";
    this.blocked.add(cur);
    this.running = null;
    this.dispatch();
    return w.promise;
  }

  private async requeue(cur: Task, reason: string): Promise<void> {
    this.assertRunning(cur, reason);
    const w = this.newWait("yield", reason, undefined, undefined);
    w.result = "woken";
    cur.wait = w;
    cur.st = "ready";
    this.runQueue.push(cur);
    this.running = null;
    this.dispatch();
    await w.promise;
  }

  private wakeAny(task: Task, reason: WakeReason = "woken"): boolean {
    if (task.st !== "blocked" || task.wait === null) return false;
    task.wait.result = reason;
    this.makeReady(task);
    return true;
  }

  private makeReady(task: Task): void {
    this.blocked.delete(task);
    task.st = "ready";
    this.runQueue.push(task);
  }

  private grant(task: Task): void {
    const w = task.wait!;
    task.wait = null;
    task.st = "running";
    this.running = task;
    if (w.failed) w.reject(w.error);
    else w.resolve(w.result);
  }

  private decide(candidates: readonly Task[]): number {
    let idx: number;
    try {
      idx = this.strategy.pick(candidates);
      if (!Number.isInteger(idx) || idx < 0 || idx >= candidates.length) {
        throw new RangeError(`strategy ${this.strategy.name} picked ${idx} of ${candidates.length}`);
      }
    } catch (e) {
      this.diag.report("warning", `scheduler strategy failed: ${e instanceof Error ? e.message : String(e)}`, {
        culprit: this.strategy.describe(),
      });
      idx = 0;
    }
    this.decisions.push(candidates[idx]!.id);
    return idx;
  }

  private runQuiescentHooks(): void {
    for (let i = 0; i < this.quiescentHooks.length; i++) this.quiescentHooks[i]!();
  }

  /** Hand the CPU to the next task. Called when the running task stopped running. */
  private dispatch(): void {
    for (;;) {
      this.runQuiescentHooks();
      const n = this.runQueue.length;
      if (n > 0) {
        const idx = n === 1 ? 0 : this.decide(this.runQueue);
        const next = idx === 0 ? this.runQueue.shift()! : this.runQueue.splice(idx, 1)[0]!;
        this.grant(next);
        return;
      }
      if (this.fireEarliestTimer()) continue;
      if (this.blocked.size === 0) return;
      if (this.wakeIdleWaiters()) continue;
      this.breakDeadlock();
    }
  }

  private fireEarliestTimer(): boolean {
    let best: Task | undefined;
    let bw: Wait | undefined;
    for (const t of this.blocked) {
      const w = t.wait!;
      if (w.deadline === Number.POSITIVE_INFINITY) continue;
      if (bw === undefined || w.deadline < bw.deadline || (w.deadline === bw.deadline && w.seq < bw.seq)) {
        best = t;
        bw = w;
      }
    }
    if (best === undefined || bw === undefined) return false;
    if (bw.deadline > this.time) this.time = bw.deadline;
    this.wakeAny(best, "timeout");
    return true;
  }

  private wakeIdleWaiters(): boolean {
    for (const t of this.blocked) if (t.wait!.kind !== "idle") return false;
    for (const t of [...this.blocked]) this.wakeAny(t);
    return true;
  }

  private breakDeadlock(): void {
    const stuck = [...this.blocked];
    // Sleepers on locks and events are the cycle; joiners and runUntilIdle merely wait for them.
    const primary = stuck.filter((t) => t.wait!.kind === "block");
    const victims = primary.length > 0 ? primary : stuck;
    const lines = stuck.map((t) => `  task ${t.name} waits on ${describeWait(t.wait!)}`);
    const d = this.diag.report("deadlock", `deadlock: every task is asleep and none can wake\n${lines.join("\n")}`, {
      culprit: victims.map((t) => t.name).join(", "),
      related: stuck.map((t) => ({
        label: `task ${t.name} went to sleep (${t.wait!.reason})`,
        task: t.name,
        stack: t.wait!.site ? formatSite(t.wait!.site) : "",
      })),
    });
    // Throw into the cycle only: joiners and runUntilIdle then see those tasks exit.
    for (const t of victims) {
      const w = t.wait!;
      w.failed = true;
      w.error = new DeadlockError(`${d.message}\n(thrown into task ${t.name})`);
      this.makeReady(t);
    }
  }
}
