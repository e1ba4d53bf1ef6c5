import { describe, expect, it } from "vitest";
import { captureStack, Diagnostics, formatDiagnostic, MissingDiagnosticError } from "../../src/kernel/diagnostics.js";

describe("Diagnostics", () => {
  it("report records kind, message, culprit, the running task and the caller's stack", () => {
    const diag = new Diagnostics();
    diag.currentTask = () => "probe-worker";
    function reportingSite() {
      return diag.report("refcount", "bad", { culprit: "dev0" });
    }
    const d = reportingSite();
    expect(d).toMatchObject({ kind: "refcount", message: "bad", culprit: "dev0", task: "probe-worker" });
    expect(d.expected).toBe(false);
    expect(d.stack.split("\n")[0]).toContain("reportingSite");
    expect(diag.unexpected()).toEqual([d]);
    expect(diag.formatReport()).toContain("[refcount] bad (culprit: dev0) — task probe-worker");
  });

  it("warnOn records only when the condition holds; warnOnOnce once per message", () => {
    const diag = new Diagnostics();
    expect(diag.warnOn(false, "no")).toBe(false);
    expect(diag.warnOn(true, "yes")).toBe(true);
    diag.warnOnOnce(true, "once");
    diag.warnOnOnce(true, "once");
    diag.warnOnOnce(true, "other");
    expect(diag.records.map((r) => r.message)).toEqual(["yes", "once", "other"]);
    expect(diag.ofKind("warning")).toHaveLength(3);
  });

  it("expectWarning marks matching records expected and returns them", async () => {
    const diag = new Diagnostics();
    const hits = await diag.expectWarning({ kind: "leak", culprit: /nic/ }, async () => {
      await Promise.resolve();
      diag.report("leak", "device nic0 still held", { culprit: "nic0" });
      diag.report("warning", "unrelated");
    });
    expect(hits.map((h) => h.message)).toEqual(["device nic0 still held"]);
    expect(hits[0]?.expected).toBe(true);
    expect(diag.unexpected().map((d) => d.message)).toEqual(["unrelated"]);
  });

  it("expectWarning throws MissingDiagnosticError when nothing matching happens", async () => {
    const diag = new Diagnostics();
    await expect(diag.expectWarning("never", () => {})).rejects.toBeInstanceOf(MissingDiagnosticError);
    await expect(
      diag.expectWarning({ kind: "double-free" }, () => diag.report("use-after-free", "uaf of x")),
    ).rejects.toThrow(/only saw:\n\[use-after-free\] uaf of x/);
    expect(() => diag.expectWarningSync(/x/, () => {})).toThrow(MissingDiagnosticError);
  });

  it("expectWarning only claims records made inside it", () => {
    const diag = new Diagnostics();
    diag.report("warning", "before");
    expect(() => diag.expectWarningSync("before", () => {})).toThrow(MissingDiagnosticError);
    expect(diag.unexpected()).toHaveLength(1);
  });

  it("acknowledge marks earlier records expected without requiring any", () => {
    const diag = new Diagnostics();
    diag.report("warning", "w1");
    expect(diag.acknowledge("nothing")).toEqual([]);
    expect(diag.acknowledge("w1")).toHaveLength(1);
    expect(diag.formatReport()).toBeUndefined();
  });

  it("teardown checks record string results as leaks culprited by the check, diagnostics as given", () => {
    const diag = new Diagnostics();
    diag.addTeardownCheck("pages", () => ["page 0x1000 allocated at iommu_alloc_pages"]);
    diag.addTeardownCheck("locks", () => [diag.report("lock-held", "mutex held", { culprit: "group->mutex" })]);
    diag.addTeardownCheck("clean", () => []);
    diag.runTeardownChecks();
    expect(diag.records.map((d) => [d.kind, d.message, d.culprit])).toEqual([
      ["leak", "page 0x1000 allocated at iommu_alloc_pages", "pages"],
      ["lock-held", "mutex held", "group->mutex"],
    ]);
  });

  it("formatDiagnostic includes related sites; captureStack starts at the caller", () => {
    const text = formatDiagnostic({
      kind: "use-after-free",
      message: "uaf",
      task: "t1",
      stack: "at a\nat b",
      related: [{ label: "freed at", task: "t0", stack: "at free_it" }],
      expected: false,
    });
    expect(text).toContain("freed at (task t0):\n    at free_it");
    function whereAmI() {
      return captureStack();
    }
    expect(whereAmI().split("\n")[0]).toContain("whereAmI");
  });
});
