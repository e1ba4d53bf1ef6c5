import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import {
  Rcu,
  RcuPointer,
  rcuAccessPointer,
  rcuAssignPointer,
  rcuDereference,
  rcuDereferenceProtected,
} from "../../src/kernel/rcu.js";
import { Mutex } from "../../src/kernel/sched/mutex.js";
import { Scheduler } from "../../src/kernel/sched/scheduler.js";
import { freedAt } from "../../src/kernel/slab.js";

const THIS_FILE = "rcu.test.ts";

class Domain {
  constructor(readonly name: string) {}
}

function setup() {
  const diag = new Diagnostics();
  const s = new Scheduler(diag);
  return { diag, s, rcu: new Rcu(s, diag) };
}

describe("RCU grace periods", () => {
  it("kfreeRcu defers the free past a grace period: a reader inside its section still sees a live object", async () => {
    const { diag, s, rcu } = setup();
    const oldD = new Domain("old");
    const p = new RcuPointer<Domain | null>(rcu, oldD, "domain");
    rcu.readLock();
    const seen = rcuDereference(p);
    const updater = s.spawn("updater", async () => {
      rcuAssignPointer(p, new Domain("new"));
      rcu.kfreeRcu(oldD);
    });
    await s.preempt(); // the updater runs while main is preempted inside its read-side section
    expect(updater.state).toBe("done");
    expect(rcuDereference(p)!.name).toBe("new");
    expect(seen).toBe(oldD);
    expect(freedAt(oldD)).toBeUndefined(); // context switches happened, but the reader is still inside
    expect(rcu.pendingCallbacks).toBe(1);
    rcu.readUnlock();
    await rcu.rcuBarrier();
    expect(freedAt(oldD)).toBeDefined();
    expect(rcu.pendingCallbacks).toBe(0);
    expect(diag.records).toEqual([]);
  });

  it("synchronizeRcu waits for readers that began before it, not for readers that began after", async () => {
    const { diag, s, rcu } = setup();
    const log: string[] = [];
    rcu.readLock();
    const updater = s.spawn("updater", async () => {
      log.push("gp start");
      await rcu.synchronizeRcu();
      log.push("gp end");
    });
    const late = s.spawn("late-reader", async () => {
      rcu.readLock();
      log.push("late reader in");
      // Stay inside the section, preempted, while the grace period completes.
      for (let i = 0; i < 10 && updater.state !== "done"; i++) await s.preempt();
      log.push(`late reader out (updater ${updater.state})`);
      rcu.readUnlock();
    });
    await s.preempt();
    expect(updater.state).toBe("blocked");
    expect(updater.waitingOn).toContain("RCU grace period (readers: task main, task late-reader)");
    log.push("early reader out");
    rcu.readUnlock();
    await s.joinAll([updater, late]);
    expect(log).toEqual(["gp start", "late reader in", "early reader out", "gp end", "late reader out (updater done)"]);
    expect(diag.records).toEqual([]);
  });

  it("callbacks run at a context switch once no older reader remains, and at teardown", async () => {
    const { s, rcu } = setup();
    const ran: string[] = [];
    rcu.callRcu(() => ran.push("first"));
    await s.spawn("t", async () => undefined).join(); // context switches with no reader: quiescent
    expect(ran).toEqual(["first"]);
    rcu.readLock();
    rcu.callRcu(() => ran.push("second"));
    await s.preempt(); // nothing else runnable: no switch
    await s.spawn("t2", async () => undefined).join();
    expect(ran).toEqual(["first"]); // main's section is older than the callback
    rcu.readUnlock();
    await s.runUntilIdle();
    expect(ran).toEqual(["first", "second"]);
  });
});

describe("RCU misuse", () => {
  it("dereferencing a pointer to an object freed by kfreeRcu reports use-after-free naming where it was freed", async () => {
    const { diag, s, rcu } = setup();
    const d = new Domain("stale");
    const p = new RcuPointer<Domain>(rcu, d, "iommu_domain stale");
    const freer = s.spawn("freer", async () => {
      rcu.kfreeRcu(d); // bug: freed while still published in p
    });
    await freer.join();
    await rcu.synchronizeRcu();
    rcu.readLock();
    expect(rcuDereference(p)).toBe(d);
    rcu.readUnlock();
    const [uaf] = diag.acknowledge({ kind: "use-after-free", culprit: "iommu_domain stale" });
    expect(uaf!.related[0]!.label).toBe("freed at");
    expect(uaf!.related[0]!.task).toBe("freer");
    expect(uaf!.related[0]!.stack).toContain(THIS_FILE); // the kfreeRcu() call, not the scheduler
    expect(diag.unexpected()).toEqual([]);
  });

  it("sleeping inside a read-side section is reported once per section, naming the task", async () => {
    const { diag, s, rcu } = setup();
    const m = new Mutex(s, "m");
    rcu.readLock();
    await s.sleep(10);
    await m.lock(); // second offence in the same section: not reported again
    m.unlock();
    rcu.readUnlock();
    const [d] = diag.acknowledge({ kind: "rcu", culprit: "main" });
    expect(d!.message).toBe("sleeping in RCU read-side critical section: task main calls sleep 10 ns");
    expect(diag.ofKind("rcu")).toHaveLength(1);
    const t = s.spawn("locker", async () => {
      rcu.readLock();
      rcu.readLock();
      rcu.readUnlock();
      await m.lock(); // still nested once
      m.unlock();
      rcu.readUnlock();
    });
    await t.join();
    expect(diag.acknowledge({ kind: "rcu", culprit: "locker" })[0]!.message).toContain("mutex_lock(m)");
    rcu.readLock();
    await s.preempt(); // involuntary preemption is allowed (PREEMPT_RCU)
    rcu.readUnlock();
    await s.yield(); // outside any section: fine
    expect(diag.unexpected()).toEqual([]);
  });

  it("exiting inside a section, unbalanced unlock and a section open at teardown are reported", async () => {
    const { diag, s, rcu } = setup();
    await s.spawn("forgetful", async () => rcu.readLock()).join();
    expect(diag.acknowledge({ kind: "rcu", culprit: "forgetful" })[0]!.message).toContain("exited inside");
    rcu.readUnlock();
    expect(diag.acknowledge({ kind: "rcu", message: /without rcu_read_lock\(\) in task main/ })).toHaveLength(1);
    // The exited reader no longer holds up grace periods.
    await rcu.synchronizeRcu();
    rcu.readLock();
    diag.runTeardownChecks();
    expect(diag.acknowledge({ kind: "rcu", message: /still inside an RCU read-side critical section/ })).toHaveLength(
      1,
    );
    rcu.readUnlock();
    expect(diag.unexpected()).toEqual([]);
  });

  it("rcuDereferenceProtected without the protecting lock or a read-side section is reported", async () => {
    const { diag, s, rcu } = setup();
    const lock = new Mutex(s, "update_lock");
    const p = new RcuPointer(rcu, new Domain("d"), "domain");
    await lock.withLock(() => rcuDereferenceProtected(p, lock.owner === s.current()));
    expect(diag.records).toEqual([]);
    rcuDereferenceProtected(p, lock.owner === s.current());
    expect(diag.acknowledge({ kind: "rcu", culprit: "domain" })[0]!.message).toContain("suspicious");
    expect(rcuAccessPointer(p).name).toBe("d");
  });
});
