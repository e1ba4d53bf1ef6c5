import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { DeadlockError, LockAssertionError } from "../../src/kernel/sched/errors.js";
import { randomScheduler } from "../../src/kernel/sched/random.js";
import { RwSemaphore } from "../../src/kernel/sched/rwsem.js";
import { Scheduler } from "../../src/kernel/sched/scheduler.js";

function setup() {
  const diag = new Diagnostics();
  const s = new Scheduler(diag);
  return { diag, s, sem: new RwSemaphore(s, "ioas->iova_rwsem") };
}

describe("RwSemaphore", () => {
  it("lets readers share and makes a writer wait for all of them", async () => {
    const { diag, s, sem } = setup();
    const log: string[] = [];
    const reader = (n: string) =>
      s.spawn(n, async () => {
        await sem.downRead();
        log.push(`${n} in (${sem.readers.length} readers)`);
        await s.sleep(100);
        log.push(`${n} out`);
        sem.upRead();
      });
    const ts = [reader("r1"), reader("r2")];
    ts.push(
      s.spawn("w", async () => {
        await sem.downWrite();
        log.push(`w in at ${s.now()}`);
        sem.assertWriteHeld();
        sem.upWrite();
      }),
    );
    await s.joinAll(ts);
    expect(log).toEqual(["r1 in (1 readers)", "r2 in (2 readers)", "r1 out", "r2 out", "w in at 100"]);
    expect(sem.isLocked()).toBe(false);
    expect(diag.records).toEqual([]);
  });

  it("writer preference: a waiting writer blocks new readers; trylocks fail meanwhile", async () => {
    const { s, sem } = setup();
    const log: string[] = [];
    await sem.downRead(); // main reads
    const w = s.spawn("w", async () => {
      await sem.downWrite();
      log.push("w");
      await s.sleep(10);
      sem.upWrite();
    });
    const r2 = s.spawn("r2", async () => {
      await sem.downRead();
      log.push("r2");
      sem.upRead();
    });
    await s.yield(); // w queues behind main's read hold, r2 queues behind w
    expect(w.state).toBe("blocked");
    expect(r2.state).toBe("blocked");
    expect(sem.tryDownRead()).toBe(false);
    expect(sem.tryDownWrite()).toBe(false);
    sem.upRead();
    await s.joinAll([w, r2]);
    expect(log).toEqual(["w", "r2"]);
    expect(sem.tryDownWrite()).toBe(true);
    expect(sem.tryDownRead()).toBe(false);
    sem.upWrite();
    expect(sem.tryDownRead()).toBe(true);
    sem.upRead();
  });

  it("a writer's release admits the run of readers at the head of the queue", async () => {
    const { s, sem } = setup();
    await sem.downWrite();
    const inside: number[] = [];
    const rs = ["a", "b", "c"].map((n) =>
      s.spawn(n, async () => {
        await sem.downRead();
        inside.push(sem.readers.length);
        await s.yield();
        sem.upRead();
      }),
    );
    await s.yield();
    sem.upWrite();
    expect(sem.readers.map((t) => t.name)).toEqual(["a", "b", "c"]);
    await s.joinAll(rs);
    expect(inside).toEqual([3, 3, 3]);
  });

  // down_write_nest_lock: several locks of one class under an outer lock; the outer lock must be held.
  it("downWriteNestLock takes several locks of one class under the held nest lock, and asserts it", async () => {
    const { diag, s } = setup();
    const outer = new RwSemaphore(s, "ictx->ioas_creation_lock");
    const a = new RwSemaphore(s, "iova_rwsem#1", { lockClass: "iopt.iova_rwsem" });
    const b = new RwSemaphore(s, "iova_rwsem#2", { lockClass: "iopt.iova_rwsem" });
    await expect(a.downWriteNestLock(outer)).rejects.toThrow(LockAssertionError);
    diag.acknowledge({ kind: "lock-assert", culprit: "ictx->ioas_creation_lock" });
    expect(a.isLocked()).toBe(false);
    await outer.downWrite();
    await a.downWriteNestLock(outer);
    await b.downWriteNestLock(outer);
    a.assertWriteHeld();
    b.assertWriteHeld();
    b.upWrite();
    a.upWrite();
    outer.upWrite();
    expect(diag.unexpected()).toEqual([]);
  });

  it("assertHeld / assertWriteHeld / assertReadHeld report the lock and the task", async () => {
    const { diag, sem } = setup();
    expect(() => sem.assertHeld()).toThrow(LockAssertionError);
    expect(diag.acknowledge({ kind: "lock-assert", culprit: "ioas->iova_rwsem" })[0]!.message).toContain("task main");
    await sem.downRead();
    sem.assertHeld();
    sem.assertReadHeld();
    expect(() => sem.assertWriteHeld()).toThrow(LockAssertionError);
    expect(diag.acknowledge({ kind: "lock-assert", message: /for write \(readers: task main\)/ })).toHaveLength(1);
    sem.upRead();
    await sem.downWrite();
    sem.assertHeld();
    expect(() => sem.assertReadHeld()).toThrow(LockAssertionError);
    diag.acknowledge({ kind: "lock-assert", message: /for read/ });
    sem.downgradeWrite();
    sem.assertReadHeld();
    sem.upRead();
    expect(diag.unexpected()).toEqual([]);
  });

  it("recursive acquisition and release by a non-holder are reported", async () => {
    const { diag, s, sem } = setup();
    await sem.downRead();
    await expect(sem.downRead()).rejects.toThrow(DeadlockError);
    expect(diag.acknowledge({ kind: "deadlock", culprit: "ioas->iova_rwsem" })[0]!.message).toContain(
      "task main calls down_read",
    );
    await expect(sem.downWrite()).rejects.toThrow(DeadlockError);
    diag.acknowledge({ kind: "deadlock", message: /down_write/ });
    await s.spawn("other", async () => sem.upRead()).join();
    expect(diag.acknowledge({ kind: "warning", culprit: "ioas->iova_rwsem" })[0]!.message).toContain("task other");
    sem.upRead();
    expect(diag.unexpected()).toEqual([]);
  });

  it("keeps writers exclusive under random schedules", async () => {
    for (let seed = 0; seed < 25; seed++) {
      const diag = new Diagnostics();
      const s = randomScheduler(seed, diag);
      const sem = new RwSemaphore(s, "sem");
      let readers = 0;
      let writers = 0;
      let bad = false;
      const ts = [0, 1, 2, 3].map((i) =>
        s.spawn(`t${i}`, async () => {
          for (let k = 0; k < 3; k++) {
            if ((i + k) % 2 === 0) {
              await sem.downWrite();
              writers++;
              bad ||= writers > 1 || readers > 0;
              await s.yield();
              writers--;
              sem.upWrite();
            } else {
              await sem.downRead();
              readers++;
              bad ||= writers > 0;
              await s.yield();
              readers--;
              sem.upRead();
            }
          }
        }),
      );
      await s.joinAll(ts);
      expect(bad, s.describe()).toBe(false);
      expect(diag.records, s.describe()).toEqual([]);
    }
  });
});

describe("RwSemaphore downReadOrWait / downWriteOrWait", () => {
  it("takes a free lock at once and returns the sleeping acquisition when it must wait", async () => {
    const { diag, s, sem } = setup();
    expect(sem.downReadOrWait()).toBeUndefined();
    expect(sem.readers.length).toBe(1);
    const log: string[] = [];
    const w = s.spawn("w", async () => {
      const wait = sem.downWriteOrWait();
      log.push(wait ? "w waits" : "w took it");
      if (wait) await wait;
      log.push("w in");
      sem.upWrite();
    });
    await s.yield(); // w queues behind the read hold
    expect(w.state).toBe("blocked");
    sem.upRead();
    await s.joinAll([w]);
    expect(log).toEqual(["w waits", "w in"]);
    expect(sem.isLocked()).toBe(false);
    expect(diag.records).toEqual([]);
  });

  it("reports recursion synchronously, as down_read does", () => {
    const { diag, sem } = setup();
    expect(sem.downWriteOrWait()).toBeUndefined();
    expect(() => sem.downReadOrWait()).toThrow(DeadlockError);
    expect(diag.records.map((r) => r.kind)).toEqual(["deadlock"]);
  });

  it("under a preemptive scheduler always goes through the preemption point", async () => {
    const diag = new Diagnostics();
    const s = randomScheduler(1, diag);
    const sem = new RwSemaphore(s, "ioas->iova_rwsem");
    const wait = sem.downReadOrWait();
    expect(wait).toBeInstanceOf(Promise);
    await wait;
    expect(sem.readers.length).toBe(1);
    sem.upRead();
    expect(diag.records).toEqual([]);
  });
});
