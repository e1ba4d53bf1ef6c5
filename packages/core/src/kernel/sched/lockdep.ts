import type { Diagnostic, Diagnostics, RelatedSite } from "../diagnostics.js";
import { LockAssertionError } from "./errors.js";
import type { Task } from "./task.js";

/** Exclusive (mutex, write side) or shared (read side) ownership. @linux lock_acquire (its read argument) */
export type LockMode = "exclusive" | "shared";

/**
 * What the lock-order recorder knows about a lock: its name, its class (locks of one class share ordering
 * rules, like the static `lock_class_key` of a lock initialised at one site) and its kind.
 * @linux struct lockdep_map
 */
export interface LockInstance {
  readonly name: string;
  readonly lockClass: string;
  readonly kind: string;
}

/**
 * One lock held by a task, with where it was taken.
 * @linux struct held_lock
 */
export interface HeldLock {
  readonly lock: LockInstance;
  mode: LockMode;
  /** Captured at acquisition (unless site capture is off); formatted only when a report needs it. */
  readonly site: Error | undefined;
}

/** A recorded dependency: `from` was held when `to` was acquired. */
interface Edge {
  readonly from: string;
  readonly to: string;
  readonly task: string;
  readonly stack: string;
}

const INTERNAL_FRAME = /[\\/]kernel[\\/](?:sched[\\/]|rcu\.[tj]s)/;

/**
 * Render a captured site as a stack, dropping the scheduler's and the locks' own frames so it starts at the caller.
 * @linux print_stack_trace
 */
export function formatSite(site: Error | undefined): string {
  if (site === undefined) {
    return "(acquisition site not recorded: createMachine({ trackLockSites: true }) or lockdep.captureSites records it)";
  }
  const lines = (site.stack ?? "")
    .split("\n")
    .slice(1)
    .map((l) => l.trim());
  const outside = lines.filter((l) => !INTERNAL_FRAME.test(l));
  return (outside.length > 0 ? outside : lines).join("\n");
}

/**
 * Lockdep in miniature: records which lock classes are taken while holding which, reports the first
 * acquisition that closes a cycle (A->B then B->A, directly or through other classes) with the stacks of both
 * orders, and tracks the locks each task holds (for `assertHeld` and for locks held at task exit or teardown).
 * One per machine, owned by the scheduler.
 * @linux kernel/locking/lockdep.c (check_prev_add, check_noncircular)
 */
export class LockOrderRecorder {
  private readonly edges = new Map<string, Map<string, Edge>>();
  private readonly reported = new Set<string>();
  /**
   * Whether each acquisition records its stack for lock-held and recursion reports (a capture costs more than the
   * rest of a lock operation). On for a standalone recorder; machines take it from `createMachine({
   * trackLockSites })` (off by default), and a lock-held report turns it on so the next one names the acquisition
   * site. Every check runs either way; dependency stacks for inversion reports are always recorded (once per pair).
   */
  captureSites = true;

  constructor(readonly diag: Diagnostics) {}

  /** A site for {@link acquired}, captured at the caller, or undefined when site capture is off. */
  captureSite(): Error | undefined {
    return this.captureSites ? new Error() : undefined;
  }

  /**
   * Called before `task` (possibly) sleeps to acquire `lock`: adds the dependencies held->lock and reports an
   * inversion. Trylocks skip this, as they cannot deadlock.
   * @linux lock_acquire (the dependency check of __lock_acquire)
   */
  acquiring(task: Task, lock: LockInstance): void {
    const held = task.held;
    for (let i = 0; i < held.length; i++) {
      const h = held[i]!.lock;
      if (h.lockClass !== lock.lockClass) this.addEdge(task, h, lock);
    }
  }

  /**
   * `task` now holds `lock`.
   * @linux lock_acquire (held_lock bookkeeping)
   */
  acquired(task: Task, lock: LockInstance, mode: LockMode = "exclusive", site?: Error): void {
    task.held.push({ lock, mode, site: site ?? this.captureSite() });
  }

  /**
   * `task` released `lock`; returns false when it did not hold it.
   * @linux lock_release
   */
  released(task: Task, lock: LockInstance): boolean {
    const held = task.held;
    for (let i = held.length - 1; i >= 0; i--) {
      if (held[i]!.lock === lock) {
        held.splice(i, 1);
        return true;
      }
    }
    return false;
  }

  /**
   * Whether `task` holds `lock` (in any mode).
   * @linux lock_is_held
   */
  holds(task: Task, lock: LockInstance): boolean {
    return task.held.some((h) => h.lock === lock);
  }

  /** Number of recorded dependencies (class pairs). */
  get dependencyCount(): number {
    let n = 0;
    for (const m of this.edges.values()) n += m.size;
    return n;
  }

  /** Whether the dependency `from` -> `to` (lock classes) has been recorded. */
  hasDependency(from: string, to: string): boolean {
    return this.edges.get(from)?.has(to) ?? false;
  }

  /**
   * Record a `lock-held` diagnostic for every lock `task` holds, saying why it matters (`exited`, `at teardown`).
   * @linux debug_check_no_locks_held / lockdep_print_held_locks
   */
  reportHeld(task: Task, why: string): Diagnostic[] {
    const out = task.held.map((h) =>
      this.diag.report("lock-held", `task ${task.name} ${why} holding ${h.lock.kind} ${h.lock.name}`, {
        culprit: h.lock.name,
        related: [{ label: `${h.lock.name} acquired at`, task: task.name, stack: formatSite(h.site) }],
      }),
    );
    // A report asked for acquisition sites: record them from now on.
    if (out.length > 0) this.captureSites = true;
    return out;
  }

  private addEdge(task: Task, from: LockInstance, to: LockInstance): void {
    let out = this.edges.get(from.lockClass);
    if (out === undefined) {
      out = new Map();
      this.edges.set(from.lockClass, out);
    }
    if (out.has(to.lockClass)) return;
    const edge: Edge = { from: from.lockClass, to: to.lockClass, task: task.name, stack: formatSite(new Error()) };
    const cycle = this.findPath(to.lockClass, from.lockClass);
    out.set(to.lockClass, edge);
    if (cycle) this.reportInversion(task, from, to, edge, cycle);
  }

  /** Breadth-first search for a chain of recorded dependencies from `src` to `dst`. */
  private findPath(src: string, dst: string): Edge[] | undefined {
    const prev = new Map<string, Edge>();
    const queue = [src];
    const seen = new Set([src]);
    while (queue.length > 0) {
      const c = queue.shift()!;
      const out = this.edges.get(c);
      if (!out) continue;
      for (const e of out.values()) {
        if (seen.has(e.to)) continue;
        seen.add(e.to);
        prev.set(e.to, e);
        if (e.to === dst) {
          const path: Edge[] = [];
          for (let x: Edge | undefined = e; x; x = x.from === src ? undefined : prev.get(x.from)) path.unshift(x);
          return path;
        }
        queue.push(e.to);
      }
    }
    return undefined;
  }

  private reportInversion(task: Task, from: LockInstance, to: LockInstance, edge: Edge, cycle: Edge[]): void {
    const key = [edge, ...cycle]
      .map((e) => `${e.from}->${e.to}`)
      .sort()
      .join("|");
    if (this.reported.has(key)) return;
    this.reported.add(key);
    const chain = cycle.map((e) => `${e.from} -> ${e.to}`).join(", ");
    const others = [...new Set(cycle.map((e) => e.task))].join(", ");
    const related: RelatedSite[] = [
      {
        label: `new dependency ${edge.from} -> ${edge.to}: acquired ${to.name} while holding ${from.name}`,
        task: task.name,
        stack: edge.stack,
      },
      ...cycle.map((e) => ({
        label: `existing dependency ${e.from} -> ${e.to} recorded at`,
        task: e.task,
        stack: e.stack,
      })),
    ];
    this.diag.report(
      "lock-inversion",
      `possible circular locking dependency: task ${task.name} acquires ${to.name} (class ${to.lockClass}) while ` +
        `holding ${from.name} (class ${from.lockClass}), but task ${others} established ${chain}`,
      { culprit: `${from.lockClass} <-> ${to.lockClass}`, related, skipFrames: 2 },
    );
  }
}

/**
 * Record a `lock-assert` diagnostic naming the lock and the task, then throw {@link LockAssertionError}.
 * @linux lockdep_assert_held (the WARN it prints)
 */
export function lockAssertFailed(diag: Diagnostics, lock: LockInstance, task: Task, detail: string): never {
  const d = diag.report(
    "lock-assert",
    `lockdep_assert_held(${lock.name}) failed: task ${task.name} does not hold ${lock.kind} ${lock.name} ${detail}`,
    { culprit: lock.name, skipFrames: 2 },
  );
  throw new LockAssertionError(d.message);
}
