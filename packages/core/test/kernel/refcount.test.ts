import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { REFCOUNT_MAX, REFCOUNT_SATURATED, Refcount } from "../../src/kernel/refcount.js";

function setup(initial = 1) {
  const diag = new Diagnostics();
  return { diag, r: new Refcount(diag, "iommu_group 3", initial) };
}

describe("Refcount", () => {
  it("counts get/put without diagnostics and reports the last put", () => {
    const { diag, r } = setup();
    r.inc();
    expect(r.incNotZero()).toBe(true);
    expect(r.read()).toBe(3);
    r.dec();
    expect(r.decAndTest()).toBe(false);
    expect(r.read()).toBe(1);
    expect(r.decAndTest()).toBe(true);
    expect(r.read()).toBe(0);
    expect(diag.records).toEqual([]);
  });

  it("REFCOUNT_SATURATED is INT_MIN/2, i.e. 0xc0000000", () => {
    expect(REFCOUNT_SATURATED).toBe(-0x40000000);
    expect(REFCOUNT_SATURATED >>> 0).toBe(0xc0000000);
  });

  it("incNotZero and addNotZero refuse a zero counter silently", () => {
    const { diag, r } = setup(0);
    expect(r.incNotZero()).toBe(false);
    expect(r.addNotZero(5)).toBe(false);
    expect(r.read()).toBe(0);
    expect(diag.records).toEqual([]);
  });

  it("inc on zero is 'addition on 0; use-after-free' and saturates, naming the counter", () => {
    const { diag, r } = setup(0);
    const [d] = diag.expectWarningSync({ kind: "refcount" }, () => r.inc());
    expect(d?.message).toBe("refcount_t: addition on 0; use-after-free.");
    expect(d?.culprit).toBe("iommu_group 3");
    expect(r.read()).toBe(REFCOUNT_SATURATED);
    expect(r.saturated).toBe(true);
  });

  it("decAndTest past zero is an underflow and saturates", () => {
    const { diag, r } = setup(1);
    expect(r.decAndTest()).toBe(true);
    let last = true;
    const ds = diag.expectWarningSync("underflow", () => {
      last = r.decAndTest();
    });
    expect(last).toBe(false);
    expect(ds).toHaveLength(1);
    expect(ds[0]?.message).toBe("refcount_t: underflow; use-after-free.");
    expect(ds[0]?.culprit).toBe("iommu_group 3");
    expect(r.read()).toBe(REFCOUNT_SATURATED);
  });

  it("dec to zero is 'decrement hit 0; leaking memory'", () => {
    const { diag, r } = setup(1);
    const [d] = diag.expectWarningSync({ kind: "refcount", culprit: "iommu_group 3" }, () => r.dec());
    expect(d?.message).toBe("refcount_t: decrement hit 0; leaking memory.");
    expect(r.read()).toBe(REFCOUNT_SATURATED);
  });

  it("overflow past INT_MAX saturates with 'saturated; leaking memory'", () => {
    const { diag, r } = setup(REFCOUNT_MAX);
    const [d] = diag.expectWarningSync({ kind: "refcount" }, () => r.inc());
    expect(d?.message).toBe("refcount_t: saturated; leaking memory.");
    expect(r.read()).toBe(REFCOUNT_SATURATED);

    const s2 = setup(REFCOUNT_MAX - 1);
    s2.diag.expectWarningSync("saturated; leaking memory", () => expect(s2.r.addNotZero(2)).toBe(true));
    expect(s2.r.read()).toBe(REFCOUNT_SATURATED);
  });

  it("a saturated counter stays saturated and never hits zero", () => {
    const { diag, r } = setup(0);
    diag.expectWarningSync("addition on 0", () => r.inc());
    const ds = diag.expectWarningSync({ kind: "refcount" }, () => {
      r.inc();
      expect(r.incNotZero()).toBe(true);
      expect(r.decAndTest()).toBe(false);
      r.dec();
    });
    expect(ds.map((d) => d.message)).toEqual([
      "refcount_t: saturated; leaking memory.",
      "refcount_t: saturated; leaking memory.",
      "refcount_t: underflow; use-after-free.",
      "refcount_t: decrement hit 0; leaking memory.",
    ]);
    expect(r.read()).toBe(REFCOUNT_SATURATED);
    expect(r.decIfOne()).toBe(false);
    expect(r.read()).toBe(REFCOUNT_SATURATED);
    expect(diag.unexpected()).toEqual([]);
  });

  it("decIfOne only drops the last reference", () => {
    const { diag, r } = setup(2);
    expect(r.decIfOne()).toBe(false);
    expect(r.read()).toBe(2);
    r.dec();
    expect(r.decIfOne()).toBe(true);
    expect(r.read()).toBe(0);
    expect(r.decIfOne()).toBe(false);
    expect(diag.records).toEqual([]);
  });

  it("decNotOne keeps the last reference and warns on zero without changing it", () => {
    const { diag, r } = setup(2);
    expect(r.decNotOne()).toBe(true);
    expect(r.decNotOne()).toBe(false);
    expect(r.read()).toBe(1);
    r.set(0);
    diag.expectWarningSync({ kind: "refcount", message: "underflow" }, () => expect(r.decNotOne()).toBe(true));
    expect(r.read()).toBe(0);
  });

  it("set does not check", () => {
    const { diag, r } = setup();
    r.set(7);
    expect(r.read()).toBe(7);
    r.set(0);
    expect(diag.records).toEqual([]);
  });
});
