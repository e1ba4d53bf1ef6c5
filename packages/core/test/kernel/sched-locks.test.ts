import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { DeadlockError, LockAssertionError } from "../../src/kernel/sched/errors.js";
import { Mutex } from "../../src/kernel/sched/mutex.js";
import { randomScheduler } from "../../src/kernel/sched/random.js";
import { Scheduler } from "../../src/kernel/sched/scheduler.js";

const RUNS = process.env.IOMMU_SIM_SOAK ? 2000 : 60;
const THIS_FILE = "sched-locks.test.ts";

/** Three tasks increment a counter with a read, a yield, and a write; `locked` decides whether a mutex guards it. */
async function incrementers(s: Scheduler, locked: boolean) {
  const m = new Mutex(s, "counter_lock");
  let counter = 0;
  let inside = 0;
  let maxInside = 0;
  const body = async () => {
    inside++;
    maxInside = Math.max(maxInside, inside);
    const v = counter;
    await s.yield();
    counter = v + 1;
    inside--;
  };
  const tasks = [0, 1, 2].map((i) =>
    s.spawn(`inc${i}`, async () => {
      for (let k = 0; k < 3; k++) {
        if (locked) {
          await m.withLock(async () => {
            m.assertHeld();
            await body();
          });
        } else {
          await body();
        }
      }
    }),
  );
  await s.joinAll(tasks);
  return { counter, maxInside };
}

describe("Mutex", () => {
  it("excludes under many random schedules (property over seeds)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 0x7fffffff }), async (seed) => {
        const diag = new Diagnostics();
        const s = randomScheduler(seed, diag);
        const r = await incrementers(s, true);
        await s.runUntilIdle();
        expect(r, s.describe()).toEqual({ counter: 9, maxInside: 1 });
        expect(diag.formatReport(), s.describe()).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  }, 120_000);

  it("the same workload without the mutex loses updates under some seed (the property above can fail)", async () => {
    let lost = false;
    for (let seed = 0; seed < 20 && !lost; seed++) {
      const r = await incrementers(randomScheduler(seed), false);
      lost = r.counter < 9 && r.maxInside > 1;
    }
    expect(lost).toBe(true);
  });

  it("tryLock, isLocked, owner and FIFO hand-off", async () => {
    const s = new Scheduler(new Diagnostics());
    const m = new Mutex(s, "m");
    const order: string[] = [];
    expect(m.tryLock()).toBe(true);
    expect(m.tryLock()).toBe(false);
    expect(m.isLocked()).toBe(true);
    expect(m.owner).toBe(s.root);
    const ts = ["w1", "w2"].map((n) => s.spawn(n, () => m.withLock(() => order.push(n))));
    await s.yield(); // both queue behind main
    expect(order).toEqual([]);
    m.unlock();
    expect(m.owner?.name).toBe("w1"); // handed to the first waiter
    await s.joinAll(ts);
    expect(order).toEqual(["w1", "w2"]);
    expect(m.isLocked()).toBe(false);
  });

  it("assertHeld throws and reports lock-assert naming the lock and the task", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const m = new Mutex(s, "group->mutex");
    expect(() => m.assertHeld()).toThrow(LockAssertionError);
    let [d] = diag.acknowledge({ kind: "lock-assert", culprit: "group->mutex" });
    expect(d!.message).toContain("task main");
    expect(d!.message).toContain("unlocked");

    const holder = s.spawn("holder", async () => {
      await m.lock();
      await s.sleep(100);
      m.unlock();
    });
    await s.sleep(10); // holder runs and takes the lock
    expect(() => m.assertHeld()).toThrow(LockAssertionError);
    d = diag.acknowledge({ kind: "lock-assert", message: /owner: task holder/ })[0];
    expect(d!.task).toBe("main");
    await holder.join();
    await m.lock();
    expect(() => m.assertHeld()).not.toThrow();
    m.unlock();
    expect(diag.unexpected()).toEqual([]);
  });

  it("unlock by a non-owner and of an unlocked mutex are warnings naming the lock", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const m = new Mutex(s, "m");
    await m.lock();
    await s.spawn("thief", async () => m.unlock()).join();
    const [d] = diag.acknowledge({ kind: "warning", culprit: "m" });
    expect(d!.message).toBe("mutex m unlocked by task thief but owned by task main");
    m.unlock();
    expect(
      diag.acknowledge({ kind: "warning", message: "mutex_unlock of unlocked mutex m by task main" }),
    ).toHaveLength(1);
  });

  it("recursive locking is a deadlock diagnostic and throws", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const m = new Mutex(s, "m");
    await m.lock();
    await expect(m.lock()).rejects.toThrow(DeadlockError);
    const [d] = diag.acknowledge({ kind: "deadlock", culprit: "m" });
    expect(d!.message).toContain("possible recursive locking");
    expect(d!.related[0]!.stack).toContain(THIS_FILE);
    m.unlock();
  });
});

describe("lock-order recorder", () => {
  it("reports A->B / B->A taken by two tasks, with both stacks and both task names", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const a = new Mutex(s, "A");
    const b = new Mutex(s, "B");
    const t1 = s.spawn("t1", async () => {
      await a.lock();
      await b.lock();
      b.unlock();
      a.unlock();
    });
    await t1.join();
    expect(diag.records).toEqual([]);
    const t2 = s.spawn("t2", async () => {
      await b.lock();
      await a.lock();
      a.unlock();
      b.unlock();
    });
    await t2.join();
    const inv = diag.acknowledge({ kind: "lock-inversion" });
    expect(inv).toHaveLength(1);
    const d = inv[0]!;
    expect(d.culprit).toBe("B <-> A");
    expect(d.task).toBe("t2");
    expect(d.message).toContain("task t2 acquires A");
    expect(d.message).toContain("task t1 established A -> B");
    expect(d.related.map((r) => r.task)).toEqual(["t2", "t1"]);
    for (const r of d.related) expect(r.stack).toContain(THIS_FILE);
    expect(d.related[0]!.stack).not.toBe(d.related[1]!.stack);
    // Reported once per cycle.
    await s.spawn("t3", () => b.withLock(() => a.withLock(() => undefined))).join();
    expect(diag.ofKind("lock-inversion")).toHaveLength(1);
  });

  it("finds a cycle through three classes, and none when the order is consistent", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const [a, b, c] = ["A", "B", "C"].map((n) => new Mutex(s, n)) as [Mutex, Mutex, Mutex];
    await a.withLock(() => b.withLock(() => undefined));
    await b.withLock(() => c.withLock(() => undefined));
    await a.withLock(() => c.withLock(() => undefined));
    expect(diag.records).toEqual([]);
    expect(s.lockdep.hasDependency("A", "B")).toBe(true);
    await c.withLock(() => a.withLock(() => undefined));
    const [d] = diag.acknowledge({ kind: "lock-inversion", culprit: "C <-> A" });
    expect(d!.related).toHaveLength(2); // C->A (new) and the direct A->C found first
  });

  it("locks of one lock class share ordering rules", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const g1 = new Mutex(s, "group1", { lockClass: "iommu_group.mutex" });
    const g2 = new Mutex(s, "group2", { lockClass: "iommu_group.mutex" });
    const dev = new Mutex(s, "device_lock");
    await g1.withLock(() => dev.withLock(() => undefined));
    await dev.withLock(() => g2.withLock(() => undefined));
    const [d] = diag.acknowledge({ kind: "lock-inversion" });
    expect(d!.culprit).toBe("device_lock <-> iommu_group.mutex");
  });
});

describe("deadlock detection", () => {
  it("two tasks each holding one mutex and waiting for the other: reported, both thrown out, no hang", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const a = new Mutex(s, "A");
    const b = new Mutex(s, "B");
    const t1 = s.spawn("t1", async () => {
      await a.lock();
      await s.yield();
      await b.lock();
    });
    const t2 = s.spawn("t2", async () => {
      await b.lock();
      await s.yield();
      await a.lock();
    });
    await expect(t1.join()).rejects.toThrow(DeadlockError);
    await expect(t2.join()).rejects.toThrow(DeadlockError);
    const [d] = diag.acknowledge({ kind: "deadlock" });
    expect(d!.message).toContain("task t1 waits on mutex B (owner: task t2)");
    expect(d!.message).toContain("task t2 waits on mutex A (owner: task t1)");
    expect(d!.culprit).toBe("t1, t2");
    expect(d!.related.map((r) => r.task)).toEqual(expect.arrayContaining(["t1", "t2"]));
    expect(d!.related.find((r) => r.task === "t1")!.stack).toContain(THIS_FILE);
    // lockdep saw the inversion before the deadlock happened.
    expect(diag.acknowledge({ kind: "lock-inversion", culprit: "B <-> A" })).toHaveLength(1);
    expect(diag.unexpected()).toEqual([]);
  });

  it("a deadlock found while tearing down (runUntilIdle) is reported and does not hang", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const gate = new Mutex(s, "gate");
    await gate.lock();
    const waiter2 = s.spawn("waiter2", () => gate.lock());
    await s.runUntilIdle();
    expect(waiter2.state).toBe("done");
    const deadlocks = diag.acknowledge({ kind: "deadlock" });
    expect(deadlocks[0]!.message).toContain("task waiter2 waits on mutex gate (owner: task main");
    expect(deadlocks[0]!.message).toContain("runUntilIdle");
    gate.unlock();
  });
});

describe("locks held at exit and teardown", () => {
  it("a task that exits holding a mutex is reported, naming lock and task", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const m = new Mutex(s, "iommufd->lock");
    s.spawn("leaky", () => m.lock());
    await s.runUntilIdle();
    const [d] = diag.acknowledge({ kind: "lock-held", culprit: "iommufd->lock" });
    expect(d!.message).toBe("task leaky exited holding mutex iommufd->lock");
    expect(d!.related[0]!.stack).toContain(THIS_FILE);
  });

  it("without acquisition sites the report says how to get one, and turns capture on for the next", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    s.lockdep.captureSites = false;
    const a = new Mutex(s, "a_lock");
    const b = new Mutex(s, "b_lock");
    s.spawn("leaky-a", () => a.lock());
    await s.runUntilIdle();
    const [d] = diag.acknowledge({ kind: "lock-held", culprit: "a_lock" });
    expect(d!.related[0]!.stack).toContain("trackLockSites");
    expect(s.lockdep.captureSites).toBe(true);
    s.spawn("leaky-b", () => b.lock());
    await s.runUntilIdle();
    const [d2] = diag.acknowledge({ kind: "lock-held", culprit: "b_lock" });
    expect(d2!.related[0]!.stack).toContain(THIS_FILE);
  });

  it("a lock still held by main at teardown is reported by the teardown check", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const m = new Mutex(s, "held_forever");
    await m.lock();
    diag.runTeardownChecks();
    const [d] = diag.acknowledge({ kind: "lock-held", culprit: "held_forever" });
    expect(d!.message).toContain("task main is still holding mutex held_forever");
  });
});
