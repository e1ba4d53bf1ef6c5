/**
 * The workqueue an IOPF queue owns: domain fault handlers (SVA) defer a group's handling to it, and
 * `iopfQueueFlushDev` waits for what was queued. Each work item runs as a task of the machine's scheduler, so work
 * interleaves with other tasks like kworkers do.
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import type { Scheduler } from "../kernel/sched/scheduler.js";
import type { Task } from "../kernel/sched/task.js";

/**
 * An unbound workqueue: work items run concurrently, each in its own task.
 * @linux struct workqueue_struct (alloc_workqueue with WQ_UNBOUND)
 */
export class IopfWorkqueue {
  /** Work items queued and not finished, keyed by their work object. */
  private readonly running = new Map<object, Task<void>>();
  private destroyed = false;

  constructor(
    private readonly sched: Scheduler,
    private readonly diag: Diagnostics,
    /** `iopf_queue/<name>`. */
    readonly name: string,
  ) {}

  /**
   * Run `fn` for `work` in a new task. Returns false, queuing nothing, when `work` is still pending.
   * A work function that throws is reported as a warning.
   * @linux queue_work
   */
  queueWork(work: object, fn: () => Promise<void> | void): boolean {
    if (this.diag.warnOn(this.destroyed, `queue_work on destroyed workqueue ${this.name}`)) return false;
    if (this.running.has(work)) return false;
    const task = this.sched.spawn(`kworker/${this.name}`, async () => {
      try {
        await fn();
      } catch (e) {
        this.diag.report("warning", `work on ${this.name} failed: ${e instanceof Error ? e.message : String(e)}`, {
          culprit: this.name,
        });
      } finally {
        this.running.delete(work);
      }
    });
    this.running.set(work, task);
    return true;
  }

  /** Number of work items queued or running. */
  get pending(): number {
    return this.running.size;
  }

  /**
   * Wait until every work item queued before the call has finished.
   * @linux flush_workqueue
   */
  async flush(): Promise<void> {
    this.sched.mightSleep(`flush_workqueue(${this.name})`);
    for (const t of [...this.running.values()]) await t.join();
  }

  /**
   * Drain the queue (work queued by running work included), then refuse new work.
   * @linux destroy_workqueue
   */
  async destroy(): Promise<void> {
    while (this.running.size > 0) await this.flush();
    this.destroyed = true;
  }
}
