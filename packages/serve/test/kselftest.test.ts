/**
 * The kernel's own iommufd selftest (tools/testing/selftests/iommu/iommufd.c), compiled unmodified from a kernel
 * tree and run through the preload shim against the server. The project ships no kernel sources: this runs only
 * when IOMMU_SIM_KERNEL_TREE names a tree (see docs/kselftest-results.md), and checks that every test the harness
 * reports as failing is one docs/kselftest-results.md lists with its reason — so a new failure, or a listed one
 * that now passes, shows up.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const tree = process.env.IOMMU_SIM_KERNEL_TREE;
const hasCc = spawnSync("cc", ["--version"]).status === 0;
const root = resolve(import.meta.dirname, "..", "..", "..");

/** The failures docs/kselftest-results.md lists: the test names in its "Failures" table. */
function documentedFailures(): Set<string> {
  const doc = readFileSync(join(root, "docs", "kselftest-results.md"), "utf8");
  const section = doc.split("## Failures")[1]?.split("\n## ")[0] ?? "";
  const names = [...section.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]!);
  return new Set(names);
}

describe.skipIf(!tree || !hasCc)(
  "the kernel's iommufd selftest through the shim (skipped unless IOMMU_SIM_KERNEL_TREE names a kernel tree and cc exists)",
  () => {
    it("runs every test to a TAP result; each failure is a documented one; the machine tears down clean", async () => {
      const { runKselftest } = await import("../scripts/kselftest-iommufd.mjs");
      const out = mkdtempSync(join(tmpdir(), "iommu-sim-kselftest-"));
      try {
        const run = await runKselftest({ tree: resolve(tree!), out });
        const { results } = run;
        expect(results.tests.length).toBe(results.plan);
        const failing = results.tests.filter((t: { status: string }) => t.status === "fail");
        const known = documentedFailures();
        expect(failing.map((t: { name: string }) => t.name).filter((n: string) => !known.has(n))).toEqual([]);
        expect(results.pass).toBeGreaterThan(0);
        expect(run.teardown.exitStatus).toBe(0);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    }, 3_600_000);
  },
);

describe("kselftest TAP parsing", () => {
  it("reads pass, fail with the harness's diagnostics, and skip with its reason", async () => {
    const { parseTap } = await import("../scripts/kselftest-iommufd.mjs");
    const tap = [
      "TAP version 13",
      "1..3",
      "#  RUN           f.a ...",
      "#            OK  f.a",
      "ok 1 f.a",
      "#  RUN           f.v.b ...",
      "# iommufd.c:10:b:Expected 0 (0) == x (1)",
      "# b: Test terminated by assertion",
      "#          FAIL  f.v.b",
      "not ok 2 f.v.b",
      "#  RUN           f.c ...",
      "#      SKIP      no viommu",
      "#            OK  f.c",
      "ok 3 f.c # SKIP no viommu",
    ].join("\n");
    const r = parseTap(tap);
    expect([r.plan, r.pass, r.fail, r.skip]).toEqual([3, 1, 1, 1]);
    expect(r.tests[1]).toMatchObject({ name: "f.v.b", status: "fail" });
    expect(r.tests[1].reason).toContain("Expected 0 (0) == x (1)");
    expect(r.tests[2]).toMatchObject({ name: "f.c", status: "skip" });
    expect(r.tests[2].reason).toContain("no viommu");
  });
});
