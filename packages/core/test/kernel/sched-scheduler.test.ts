import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { DeadlockError } from "../../src/kernel/sched/errors.js";
import { Mutex } from "../../src/kernel/sched/mutex.js";
import { pctScheduler } from "../../src/kernel/sched/pct.js";
import { randomScheduler } from "../../src/kernel/sched/random.js";
import { replayScheduler } from "../../src/kernel/sched/replay.js";
import { Scheduler } from "../../src/kernel/sched/scheduler.js";

/** Three tasks that log, take a shared mutex, and yield: enough decision points to tell interleavings apart. */
async function workload(s: Scheduler): Promise<string[]> {
  const log: string[] = [];
  const m = new Mutex(s, "m");
  const tasks = ["a", "b", "c"].map((name) =>
    s.spawn(name, async () => {
      for (let i = 0; i < 3; i++) {
        log.push(`${name}${i}`);
        await m.withLock(async () => {
          log.push(`${name}${i}+`);
          await s.yield();
        });
      }
    }),
  );
  await s.joinAll(tasks);
  return log;
}

describe("Scheduler (FIFO)", () => {
  it("runs spawned tasks only when the spawner blocks, in FIFO order, deterministically", async () => {
    const run = async () => {
      const s = new Scheduler(new Diagnostics());
      const log: string[] = [];
      const mk = (n: string) =>
        s.spawn(n, async () => {
          log.push(`${n}1`);
          await s.yield();
          log.push(`${n}2`);
          return n.toUpperCase();
        });
      const ts = [mk("a"), mk("b"), mk("c")];
      expect(log).toEqual([]); // nothing starts before main blocks
      const results = await s.joinAll(ts);
      return { log, results, schedule: s.schedule };
    };
    const first = await run();
    expect(first.log).toEqual(["a1", "b1", "c1", "a2", "b2", "c2"]);
    expect(first.results).toEqual(["A", "B", "C"]);
    expect(await run()).toEqual(first);
  });

  it("code that never sleeps runs like plain async code: no switches, no decisions", async () => {
    const s = new Scheduler(new Diagnostics());
    const m = new Mutex(s, "m");
    await m.lock();
    m.unlock();
    await s.yield();
    await m.withLock(async () => 1);
    expect(s.schedule).toBe("c:");
    expect(s.current()).toBe(s.root);
    expect(s.now()).toBe(0);
  });

  it("identifies tasks through async context and names them in diagnostics", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const seen: string[] = [];
    const t = s.spawn("worker", async () => {
      seen.push(s.current().name);
      await s.yield();
      seen.push(s.current().name);
      diag.warnOn(true, "from worker");
      return s.current().id;
    });
    expect(s.current().name).toBe("main");
    expect(await t.join()).toBe(t.id);
    expect(seen).toEqual(["worker", "worker"]);
    expect(diag.acknowledge("from worker")[0]!.task).toBe("worker");
    expect(t.state).toBe("done");
  });

  it("two schedulers (machines) never see each other's tasks", async () => {
    const a = new Scheduler(new Diagnostics());
    const b = new Scheduler(new Diagnostics());
    const seen = await a
      .spawn("a-task", async () => {
        await a.yield();
        return [a.current().name, b.current().name, b.current() === b.root];
      })
      .join();
    expect(seen).toEqual(["a-task", "main", true]);
  });

  it("propagates a task's error through join, and combines joins with Promise.all", async () => {
    const s = new Scheduler(new Diagnostics());
    const bad = s.spawn("bad", async () => {
      await s.yield();
      throw new Error("boom");
    });
    const a = s.spawn("a", async () => {
      await s.sleep(10);
      return 1;
    });
    const b = s.spawn("b", async () => 2);
    expect(await Promise.all([a.join(), b.join()])).toEqual([1, 2]);
    await expect(bad.join()).rejects.toThrow("boom");
  });

  it("reports a task that failed and was never joined", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    s.spawn("orphan", async () => {
      throw new Error("lost error");
    });
    await s.runUntilIdle();
    const [d] = diag.acknowledge({ kind: "warning", culprit: "orphan" });
    expect(d!.message).toContain("lost error");
  });

  it("advances virtual time only when every task sleeps, waking the earliest timeout first", async () => {
    const s = new Scheduler(new Diagnostics());
    const log: string[] = [];
    for (const [name, ns] of [
      ["slow", 300],
      ["fast", 100],
      ["mid", 200],
    ] as const) {
      s.spawn(name, async () => {
        await s.sleep(ns);
        log.push(`${name}@${s.now()}`);
      });
    }
    await s.runUntilIdle();
    expect(log).toEqual(["fast@100", "mid@200", "slow@300"]);
    expect(s.now()).toBe(300);
  });

  it("block/wake: a woken task resumes with 'woken', a timed out one with 'timeout'", async () => {
    const s = new Scheduler(new Diagnostics());
    const sleeper = s.spawn("sleeper", () => s.block("test wait", { timeout: 1000 }));
    const timed = s.spawn("timed", () => s.block("test wait", { timeout: 50 }));
    await s.yield(); // both start and go to sleep
    expect(sleeper.state).toBe("blocked");
    expect(sleeper.waitingOn).toContain("test wait");
    expect(s.wake(sleeper)).toBe(true);
    expect(s.wake(sleeper)).toBe(false); // no longer blocked
    expect(await sleeper.join()).toBe("woken");
    expect(await timed.join()).toBe("timeout");
    expect(s.now()).toBe(50);
  });

  it("detects main joining a task that waits for a lock main holds, without hanging", async () => {
    const diag = new Diagnostics();
    const s = new Scheduler(diag);
    const c = new Mutex(s, "never-unlocked");
    await c.lock();
    const t = s.spawn("stuck", () => c.lock());
    await expect(t.join()).rejects.toThrow(DeadlockError);
    const [d] = diag.acknowledge({ kind: "deadlock" });
    expect(d!.message).toContain("task stuck waits on mutex never-unlocked (owner: task main");
    expect(d!.message).toContain("task main waits on join of task stuck");
    c.unlock();
  });
});

describe("Scheduler strategies and replay", () => {
  it("random strategy explores different interleavings for different seeds, the same for the same seed", async () => {
    const logs = new Set<string>();
    for (let seed = 1; seed <= 12; seed++) logs.add((await workload(randomScheduler(seed))).join(" "));
    expect(logs.size).toBeGreaterThan(3);
    const again = await workload(randomScheduler(7));
    expect(again).toEqual(await workload(randomScheduler(7)));
  });

  it("replay reproduces a recorded random schedule exactly", async () => {
    for (const seed of [3, 11, 42]) {
      const rec = randomScheduler(seed);
      const log = await workload(rec);
      const schedule = rec.schedule;
      expect(schedule).toMatch(/^p:\d+(,\d+)+$/);
      const diag = new Diagnostics();
      const rep = replayScheduler(schedule, diag);
      expect(await workload(rep)).toEqual(log);
      expect(rep.schedule).toBe(schedule);
      expect(diag.unexpected()).toEqual([]);
    }
  });

  it("replay of a schedule from another program reports the divergence", async () => {
    const diag = new Diagnostics();
    const s = replayScheduler("p:9,9,9", diag);
    await workload(s);
    const [d] = diag.acknowledge({ kind: "warning", message: /scheduler strategy failed/ });
    expect(d!.message).toContain("task #9");
  });

  it("PCT is deterministic per seed and explores several interleavings", async () => {
    const logs = new Set<string>();
    for (let seed = 1; seed <= 12; seed++)
      logs.add((await workload(pctScheduler(seed, { depth: 3, steps: 40 }))).join(" "));
    expect(logs.size).toBeGreaterThan(1);
    const a = pctScheduler(5, { steps: 40 });
    const la = await workload(a);
    const b = replayScheduler(a.schedule);
    expect(await workload(b)).toEqual(la);
  });
});
