/**
 * The suite has teeth: every deliberate bug the shipped drivers offer (skipped invalidation, leaked device
 * reference, wrong permission bit, half-written entry) makes it fail, each alone, while the unmutated drivers pass
 * (their own conformance tests).
 */
import { describe, expect, it } from "vitest";
import { conformanceTargets, runMutants } from "../src/index.js";

describe("mutants", () => {
  it.each(["mock", "smmuv3", "vtd"])(
    "every %s mutant is caught",
    async (name) => {
      const target = conformanceTargets[name]!();
      expect(target.mutants?.length).toBeGreaterThanOrEqual(4);
      const results = await runMutants(target);
      expect(results.filter((r) => !r.caught).map((r) => r.mutant)).toEqual([]);
      // Each is caught by the check meant for it, not by an accident of the setup.
      const by = Object.fromEntries(results.map((r) => [r.mutant.split(":")[1], r.by]));
      expect(by["skip-invalidation"]).toMatch(/^mapping\//);
      expect(by["leaked-device-ref"]).toBe("probe/probed");
      expect(by["wrong-permission"]).toMatch(/^mapping\//);
      expect(by["half-written-entry"]).toMatch(/^domains\//);
    },
    300_000,
  );
});
