/**
 * The threaded half of an IOMMU interrupt whose hard half only notes that work is pending: raising it starts the
 * handler thread unless one runs already, and that thread runs the handler again while new raises arrived during
 * a pass, so no raise is lost and the handler never runs twice at once.
 * @linux request_threaded_irq with IRQF_ONESHOT (irq_wake_thread / irq_thread), as the VT-d PRQ and AMD PPR
 * interrupts use it
 */
import type { Scheduler } from "../kernel/sched/scheduler.js";
import type { Task } from "../kernel/sched/task.js";

/**
 * One threaded interrupt handler.
 * @linux struct irqaction with a thread_fn
 */
export class IommuThreadedIrq {
  private thread: Task<void> | undefined;
  private pending = false;

  /** `name()` names the thread when it starts; `handler` is one pass of the thread function. */
  constructor(
    private readonly scheduler: Scheduler,
    private readonly name: () => string,
    private readonly handler: () => Promise<void>,
  ) {}

  /**
   * Note pending work and start the thread if it is not running.
   * @linux irq_wake_thread
   */
  raise(): void {
    this.pending = true;
    if (this.thread !== undefined) return;
    this.thread = this.scheduler.spawn(this.name(), async () => {
      try {
        while (this.pending) {
          this.pending = false;
          await this.handler();
        }
      } finally {
        this.thread = undefined;
      }
    });
  }

  /**
   * Wait until no handler thread runs.
   * @linux synchronize_irq
   */
  async synchronize(): Promise<void> {
    while (this.thread) await this.thread.join();
  }
}
