import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { Completion } from "../../src/kernel/sched/completion.js";
import { DeadlockError } from "../../src/kernel/sched/errors.js";
import { Scheduler } from "../../src/kernel/sched/scheduler.js";
import { WaitQueue } from "../../src/kernel/sched/waitqueue.js";

describe("WaitQueue", () => {
  it("waitEvent sleeps until the condition holds and wakeUp is called", async () => {
    const s = new Scheduler(new Diagnostics());
    const wq = new WaitQueue(s, "fault_wq");
    let ready = false;
    const log: string[] = [];
    const waiter = s.spawn("waiter", async () => {
      await wq.waitEvent(() => ready);
      log.push(`woke at ${s.now()}`);
    });
    await s.yield();
    expect(waiter.state).toBe("blocked");
    expect(wq.length).toBe(1);
    wq.wakeUp(); // spurious: condition still false, the waiter sleeps again
    await s.yield();
    expect(waiter.state).toBe("blocked");
    await s.sleep(40);
    ready = true;
    wq.wakeUp();
    await waiter.join();
    expect(log).toEqual(["woke at 40"]);
  });

  it("waitEventTimeout returns 0 after the timeout in virtual time, or the time left", async () => {
    const s = new Scheduler(new Diagnostics());
    const wq = new WaitQueue(s);
    let flag = false;
    expect(await wq.waitEventTimeout(() => flag, 1000)).toBe(0);
    expect(s.now()).toBe(1000);
    const setter = s.spawn("setter", async () => {
      await s.sleep(300);
      flag = true;
      wq.wakeUpAll();
    });
    expect(await wq.waitEventTimeout(() => flag, 1000)).toBe(700);
    expect(s.now()).toBe(1300);
    await setter.join();
    expect(await wq.waitEventTimeout(() => flag, 0)).toBe(1); // already true
  });

  it("wakeUp wakes one exclusive waiter, wakeUpAll every waiter", async () => {
    const s = new Scheduler(new Diagnostics());
    const wq = new WaitQueue(s);
    let tokens = 0;
    const got: string[] = [];
    const ts = ["x", "y", "z"].map((n) =>
      s.spawn(n, async () => {
        await wq.waitEvent(() => tokens > 0, { exclusive: true });
        tokens--;
        got.push(n);
      }),
    );
    await s.yield();
    tokens = 3;
    wq.wakeUp();
    await s.yield();
    expect(got).toEqual(["x"]);
    wq.wakeUpAll();
    await s.joinAll(ts);
    expect(got).toEqual(["x", "y", "z"]);
  });
});

describe("Completion", () => {
  it("wait blocks until complete; done and reinit", async () => {
    const s = new Scheduler(new Diagnostics());
    const c = new Completion(s, "probe_done");
    const t = s.spawn("prober", async () => {
      await s.sleep(50);
      c.complete();
    });
    expect(c.done).toBe(false);
    await c.wait();
    expect(s.now()).toBe(50);
    expect(c.done).toBe(false); // consumed
    c.complete();
    expect(c.done).toBe(true);
    c.reinit();
    expect(c.done).toBe(false);
    await t.join();
  });

  it("waitTimeout returns 0 on timeout and the time left otherwise", async () => {
    const s = new Scheduler(new Diagnostics());
    const c = new Completion(s);
    expect(await c.waitTimeout(500)).toBe(0);
    expect(s.now()).toBe(500);
    s.spawn("completer", async () => {
      await s.sleep(100);
      c.complete();
    });
    expect(await c.waitTimeout(500)).toBe(400);
    expect(s.now()).toBe(600);
  });

  it("completeAll releases every waiter, present and future; complete releases one", async () => {
    const s = new Scheduler(new Diagnostics());
    const c = new Completion(s);
    const woke: string[] = [];
    const ts = ["a", "b", "c"].map((n) =>
      s.spawn(n, async () => {
        await c.wait();
        woke.push(n);
      }),
    );
    await s.yield();
    c.complete();
    await s.yield();
    expect(woke).toEqual(["a"]);
    c.completeAll();
    await s.joinAll(ts);
    expect(woke).toEqual(["a", "b", "c"]);
    await c.wait(); // still done
    expect(c.tryWait()).toBe(true);
  });

  it("waiting for a completion nobody completes is a deadlock naming the completion", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const c = new Completion(s, "never");
    await expect(c.wait()).rejects.toThrow(DeadlockError);
    const [d] = diag.acknowledge({ kind: "deadlock", culprit: "main" });
    expect(d!.message).toContain("task main waits on completion never");
  });
});
