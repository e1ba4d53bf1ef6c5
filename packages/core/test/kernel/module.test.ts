import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { Module, ModuleRegistry, modulePut, moduleRefcount, tryModuleGet } from "../../src/kernel/module.js";

function setup() {
  const diag = new Diagnostics();
  return { diag, reg: new ModuleRegistry(diag) };
}

describe("Module", () => {
  it("built-in code (undefined owner) always pins", () => {
    expect(tryModuleGet(undefined)).toBe(true);
    modulePut(undefined);
    expect(moduleRefcount(undefined)).toBe(0);
  });

  it("load runs init in state coming and ends live", async () => {
    const { reg } = setup();
    const mod = new Module("arm_smmu_v3");
    const seen: string[] = [];
    await reg.load(mod, {
      init: async () => {
        seen.push(mod.state);
        expect(tryModuleGet(mod, "self")).toBe(true); // a coming module can be pinned, as in Linux
        modulePut(mod, "self");
      },
    });
    expect(seen).toEqual(["coming"]);
    expect(mod.state).toBe("live");
    expect(reg.get("arm_smmu_v3")).toBe(mod);
    expect(reg.list()).toEqual([mod]);
  });

  it("a failing init leaves the module gone and rethrows", async () => {
    const { reg } = setup();
    const mod = new Module("bad");
    await expect(reg.load(mod, { init: async () => Promise.reject(new Error("probe failed")) })).rejects.toThrow(
      "probe failed",
    );
    expect(mod.state).toBe("gone");
    expect(reg.get("bad")).toBeUndefined();
    expect(tryModuleGet(mod)).toBe(false);
  });

  it("loading a name twice is EEXIST", async () => {
    const { reg } = setup();
    await reg.load(new Module("m"));
    await expect(reg.load(new Module("m"))).rejects.toMatchObject({ code: "EEXIST" });
  });

  it("unload is EBUSY while referenced, ENOENT when unknown, then runs exit and refuses new pins", async () => {
    const { diag, reg } = setup();
    const mod = new Module("mock_iommu");
    const states: string[] = [];
    await reg.load(mod, {
      exit: async () => {
        states.push(mod.state);
        expect(tryModuleGet(mod, "late")).toBe(false);
      },
    });
    expect(tryModuleGet(mod, "iommu_probe")).toBe(true);
    expect(moduleRefcount(mod)).toBe(1);
    await expect(reg.unload("mock_iommu")).rejects.toMatchObject({ code: "EBUSY", errno: 16 });
    expect(mod.state).toBe("live");
    await expect(reg.unload("nope")).rejects.toMatchObject({ code: "ENOENT" });
    modulePut(mod, "iommu_probe");
    await reg.unload("mock_iommu");
    expect(states).toEqual(["going"]);
    expect(mod.state).toBe("gone");
    expect(reg.get("mock_iommu")).toBeUndefined();
    expect(tryModuleGet(mod)).toBe(false);
    diag.runTeardownChecks();
    expect(diag.records).toEqual([]);
  });

  it("module_put underflow is a refcount diagnostic naming the module; the count stays 0", async () => {
    const { diag, reg } = setup();
    const mod = new Module("iommufd");
    await reg.load(mod);
    const [d] = diag.expectWarningSync({ kind: "refcount", culprit: "iommufd" }, () => modulePut(mod, "vfio"));
    expect(d?.message).toContain("underflow");
    expect(d?.message).toContain("vfio");
    expect(moduleRefcount(mod)).toBe(0);
  });

  it("a put by a holder that holds nothing is reported as unbalanced", async () => {
    const { diag, reg } = setup();
    const mod = new Module("iommufd");
    await reg.load(mod);
    tryModuleGet(mod, "a");
    const [d] = diag.expectWarningSync({ kind: "refcount", culprit: "iommufd" }, () => modulePut(mod, "b"));
    expect(d?.message).toBe("module_put: unbalanced put of module iommufd by b, which holds no reference");
    expect(moduleRefcount(mod)).toBe(0);
  });

  it("misuse of a module never loaded throws when it has no diagnostics to report to", () => {
    expect(() => modulePut(new Module("loose"))).toThrow(/underflow of module loose/);
    const diag = new Diagnostics();
    diag.expectWarningSync({ culprit: "own" }, () => modulePut(new Module("own", diag)));
  });

  it("teardown reports modules still referenced with their holders", async () => {
    const { diag, reg } = setup();
    const a = new Module("mock_iommu");
    const b = new Module("iommufd");
    await reg.load(a);
    await reg.load(b);
    tryModuleGet(a, "iommu_probe");
    tryModuleGet(a, "test");
    tryModuleGet(a, "test");
    diag.runTeardownChecks();
    const leaks = diag.ofKind("leak");
    expect(leaks).toHaveLength(1);
    expect(leaks[0]?.culprit).toBe("mock_iommu");
    expect(leaks[0]?.message).toBe("module mock_iommu still held by: iommu_probe(1), test(2) (refcnt 3)");
  });

  it("unloadAll unloads last-loaded first and returns the busy ones", async () => {
    const { reg } = setup();
    const order: string[] = [];
    const hooks = (n: string) => ({
      exit: async () => {
        order.push(n);
      },
    });
    const a = new Module("a");
    await reg.load(a, hooks("a"));
    await reg.load(new Module("b"), hooks("b"));
    await reg.load(new Module("c"), hooks("c"));
    tryModuleGet(a, "pin");
    expect(await reg.unloadAll()).toEqual(["a"]);
    expect(order).toEqual(["c", "b"]);
    expect(reg.list()).toEqual([a]);
  });

  it("a throwing exit hook is a warning and the module is still gone", async () => {
    const { diag, reg } = setup();
    const mod = new Module("flaky");
    await reg.load(mod, { exit: async () => Promise.reject(new Error("boom")) });
    await diag.expectWarning({ kind: "warning", culprit: "flaky" }, () => reg.unload("flaky"));
    expect(mod.state).toBe("gone");
  });

  it("a gone module can be loaded again", async () => {
    const { reg } = setup();
    const mod = new Module("again");
    await reg.load(mod);
    await reg.unload("again");
    await reg.load(mod);
    expect(mod.state).toBe("live");
  });
});
