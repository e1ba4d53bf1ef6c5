import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { Kref } from "../../src/kernel/kref.js";
import { RefTracker } from "../../src/kernel/ref-tracker.js";
import { REFCOUNT_SATURATED } from "../../src/kernel/refcount.js";

function setup() {
  const diag = new Diagnostics();
  const tracker = new RefTracker(diag);
  tracker.install();
  return { diag, tracker };
}

describe("Kref", () => {
  it("releases exactly once, on the last put, and counts per holder", () => {
    const { diag, tracker } = setup();
    let released = 0;
    const k = new Kref(diag, "device nic0", () => released++, tracker);
    expect([...k.holders()]).toEqual([["owner", 1]]);
    k.get("iommu_probe");
    k.get("test");
    k.get("test");
    expect(k.read()).toBe(4);
    expect([...k.holders()]).toEqual([
      ["owner", 1],
      ["iommu_probe", 1],
      ["test", 2],
    ]);
    expect(k.put("test")).toBe(false);
    expect(k.put("iommu_probe")).toBe(false);
    expect(k.put("test")).toBe(false);
    expect(released).toBe(0);
    expect(k.put("owner")).toBe(true);
    expect(released).toBe(1);
    expect(k.read()).toBe(0);
    expect(k.holders().size).toBe(0);
    expect(tracker.leaks()).toEqual([]);
    diag.runTeardownChecks();
    expect(diag.records).toEqual([]);
  });

  it("getUnlessZero fails once released", () => {
    const { diag } = setup();
    const k = new Kref(diag, "obj", () => {});
    expect(k.getUnlessZero("a")).toBe(true);
    k.put("a");
    k.put("owner");
    expect(k.getUnlessZero("b")).toBe(false);
    expect(k.read()).toBe(0);
    expect(k.holders().has("b")).toBe(false);
    expect(diag.records).toEqual([]);
  });

  it("the tracker reports leaks with every holder at teardown", () => {
    const { diag, tracker } = setup();
    const k = new Kref(diag, "device nic0", () => {}, tracker, { initialHolder: "bus" });
    k.get("iommu_probe");
    k.get("test");
    k.get("test");
    k.put("bus");
    expect(tracker.leaks()).toEqual(["device nic0 still held by: iommu_probe(1), test(2)"]);
    diag.runTeardownChecks();
    const leaks = diag.ofKind("leak");
    expect(leaks).toHaveLength(1);
    expect(leaks[0]?.message).toBe("device nic0 still held by: iommu_probe(1), test(2)");
    expect(leaks[0]?.culprit).toBe("device nic0");
    expect(diag.formatReport()).toContain("iommu_probe(1), test(2)");
  });

  it("an object whose owner reference is still held is a leak naming the owner", () => {
    const { diag, tracker } = setup();
    new Kref(diag, "domain 1", () => {}, tracker);
    const released = new Kref(diag, "domain 2", () => {}, tracker);
    released.put("owner");
    diag.runTeardownChecks();
    expect(diag.unexpected().map((d) => d.message)).toEqual(["domain 1 still held by: owner(1)"]);
  });

  it("an unbalanced put names the object and the holder, and still drops the count as Linux does", () => {
    const { diag, tracker } = setup();
    let released = 0;
    const k = new Kref(diag, "hwpt 4", () => released++, tracker);
    k.get("attach");
    const [d] = diag.expectWarningSync({ kind: "refcount", culprit: "detach" }, () => k.put("detach"));
    expect(d?.message).toContain("hwpt 4");
    expect(d?.message).toContain("detach");
    expect(k.read()).toBe(1);
    // The holder tags now disagree with the count, and the leak report says so.
    expect(tracker.leaks()).toEqual(["hwpt 4 still held by: owner(1), attach(1) [refcount 1]"]);
    expect(released).toBe(0);
  });

  it("a put after release is an unbalanced put and an underflow, and release does not run again", () => {
    const { diag, tracker } = setup();
    let released = 0;
    const k = new Kref(diag, "ioas 2", () => released++, tracker);
    k.put("owner");
    const ds = diag.expectWarningSync({ kind: "refcount" }, () => expect(k.put("owner")).toBe(false));
    expect(ds.map((x) => [x.message, x.culprit])).toEqual([
      ["unbalanced put of ioas 2 by owner, which holds no reference", "owner"],
      ["refcount_t: underflow; use-after-free.", "ioas 2"],
    ]);
    expect(released).toBe(1);
    expect(k.read()).toBe(REFCOUNT_SATURATED);
  });

  it("get after release is addition on 0, and the saturated object is reported as leaked", () => {
    const { diag, tracker } = setup();
    const k = new Kref(diag, "vdev 9", () => {}, tracker);
    k.put("owner");
    expect(tracker.size).toBe(0);
    diag.expectWarningSync({ kind: "refcount", message: "addition on 0", culprit: "vdev 9" }, () => k.get("late"));
    expect(tracker.leaks()).toEqual([`vdev 9 still held by: late(1) [refcount ${REFCOUNT_SATURATED}]`]);
  });

  it("works without a tracker", () => {
    const diag = new Diagnostics();
    let released = false;
    const k = new Kref(diag, "x", () => {
      released = true;
    });
    k.get();
    expect(k.holders().get("anon")).toBe(1);
    k.put();
    expect(k.put("owner")).toBe(true);
    expect(released).toBe(true);
  });

  it("install registers one check however often it is called", () => {
    const { diag, tracker } = setup();
    tracker.install();
    new Kref(diag, "once", () => {}, tracker);
    diag.runTeardownChecks();
    expect(diag.ofKind("leak")).toHaveLength(1);
  });
});
