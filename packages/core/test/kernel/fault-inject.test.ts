import { describe, expect, it } from "vitest";
import { FaultInjector, mulberry32 } from "../../src/kernel/fault-inject.js";

function outcomes(f: FaultInjector, sites: string[]): boolean[] {
  return sites.map((s) => f.shouldFail(s));
}

describe("FaultInjector", () => {
  it("passes everything with no rule, counting calls per site", () => {
    const f = new FaultInjector();
    expect(outcomes(f, ["a", "b", "a"])).toEqual([false, false, false]);
    expect(f.calls).toBe(3);
    expect(f.siteCalls.get("a")).toBe(2);
    expect(f.injected).toBe(0);
  });

  it("failNth fails exactly the nth eligible call, once, and reports it consumed", () => {
    const f = new FaultInjector();
    f.failNth(3);
    expect(f.nthConsumed).toBe(false);
    expect(outcomes(f, ["a", "b"])).toEqual([false, false]);
    expect(f.nthConsumed).toBe(false);
    expect(f.shouldFail("c")).toBe(true);
    expect(f.nthConsumed).toBe(true);
    expect(outcomes(f, ["d", "e"])).toEqual([false, false]);
    expect(f.failedSites).toEqual(["c"]);
    expect(f.injected).toBe(1);
  });

  it("failNth with a filter counts only matching sites", () => {
    const f = new FaultInjector();
    f.failNth(2, /^xa_/);
    expect(outcomes(f, ["kzalloc", "xa_alloc", "kzalloc", "xa_store", "xa_alloc"])).toEqual([
      false,
      false,
      false,
      true,
      false,
    ]);
    const g = new FaultInjector();
    g.failNth(1, ["alloc_pages"]);
    expect(outcomes(g, ["kzalloc", "alloc_pages"])).toEqual([false, true]);
  });

  it("failNth rejects n < 1", () => {
    expect(() => new FaultInjector().failNth(0)).toThrow(RangeError);
  });

  it("a fail-nth sweep ends when nth is no longer consumed", () => {
    // The iommufd_fail_nth pattern: fail call 1, 2, ... until the operation runs without hitting the rule.
    const op = (f: FaultInjector) => {
      for (const s of ["a", "b", "c"]) f.check(s);
    };
    const failedAt: string[] = [];
    for (let n = 1; ; n++) {
      const f = new FaultInjector();
      f.failNth(n);
      try {
        op(f);
      } catch (e) {
        expect(e).toMatchObject({ code: "ENOMEM" });
      }
      if (!f.nthConsumed) break;
      failedAt.push(...f.failedSites);
    }
    expect(failedAt).toEqual(["a", "b", "c"]);
  });

  it("check throws the requested errno naming the site", () => {
    const f = new FaultInjector();
    f.failSite("domain_alloc");
    expect(() => f.check("domain_alloc", "ENODEV")).toThrow(/ENODEV: injected failure at domain_alloc/);
    expect(() => f.check("other")).not.toThrow();
  });

  it("failSite fails a named site a bounded number of times, or by pattern", () => {
    const f = new FaultInjector();
    f.failSite("x", 2);
    expect(outcomes(f, ["x", "y", "x", "x"])).toEqual([true, false, true, false]);
    const g = new FaultInjector();
    g.failSite(/pgtable/);
    expect(outcomes(g, ["pgtable_l1", "kzalloc", "pgtable_l2", "pgtable_l1"])).toEqual([true, false, true, true]);
  });

  it("failProbability is reproducible by seed and respects its filter", () => {
    const sites = Array.from({ length: 200 }, (_, i) => (i % 2 ? "a" : "b"));
    const run = (seed: number) => {
      const f = new FaultInjector();
      f.failProbability(0.25, seed, ["a"]);
      return outcomes(f, sites);
    };
    const r1 = run(7);
    expect(run(7)).toEqual(r1);
    expect(run(8)).not.toEqual(r1);
    expect(r1.some((x, i) => x && sites[i] === "b")).toBe(false);
    const hits = r1.filter(Boolean).length;
    expect(hits).toBeGreaterThan(5);
    expect(hits).toBeLessThan(60);
  });

  it("reset drops rules and counters", () => {
    const f = new FaultInjector();
    f.failSite("a");
    f.shouldFail("a");
    f.reset();
    expect(f.shouldFail("a")).toBe(false);
    expect([f.calls, f.injected, f.failedSites.length]).toEqual([1, 0, 0]);
  });

  it("mulberry32 is deterministic and in [0, 1)", () => {
    const a = mulberry32(1);
    const b = mulberry32(1);
    const xs = Array.from({ length: 100 }, () => a());
    expect(Array.from({ length: 100 }, () => b())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(new Set(xs).size).toBeGreaterThan(95);
  });
});
