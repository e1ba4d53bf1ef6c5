import { describe, expect, it } from "vitest";
import { IommuThreadedIrq } from "../../src/iommu/threaded-irq.js";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { Scheduler } from "../../src/kernel/sched/scheduler.js";

describe("IommuThreadedIrq", () => {
  it("reruns the handler for a raise during a pass, never runs it twice at once, and synchronize waits", async () => {
    const s = new Scheduler(new Diagnostics());
    let passes = 0;
    let running = 0;
    let maxRunning = 0;
    const irq = new IommuThreadedIrq(
      s,
      () => "irq/test",
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        passes++;
        // A raise while the thread runs: one more pass, not a second thread.
        if (passes === 1) irq.raise();
        await s.yield();
        running--;
      },
    );
    irq.raise();
    irq.raise();
    await irq.synchronize();
    expect(passes).toBe(2);
    expect(maxRunning).toBe(1);
    // A later raise starts a new thread.
    irq.raise();
    await irq.synchronize();
    expect(passes).toBe(3);
  });
});
