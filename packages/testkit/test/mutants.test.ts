/**
 * The suite has teeth: every deliberate bug the shipped drivers offer (skipped invalidation, leaked device
 * reference, wrong permission bit, half-written entry) and iommufd's missing vDEVICE tombstone (for drivers claiming
 * a vIOMMU) makes it fail, each alone, while the unmutated drivers pass (their own conformance tests).
 */
import { describe, expect, it } from "vitest";
import { conformanceTargets, formatMutantReport, runMutants, targetMutants } from "../src/index.js";

describe("mutants", () => {
  it.each(["mock", "smmuv3", "vtd", "amd"])(
    "every %s mutant is caught, each by the check meant for it",
    async (name) => {
      const target = conformanceTargets[name]!();
      const kinds = targetMutants(target).map((m) => m.split(":")[1]);
      expect(kinds).toEqual(
        expect.arrayContaining(["skip-invalidation", "leaked-device-ref", "wrong-permission", "half-written-entry"]),
      );
      if (target.caps.viommu) expect(kinds).toContain("missing-tombstone");
      const results = await runMutants(target);
      expect(results.filter((r) => !r.caught).map((r) => r.mutant)).toEqual([]);
      // Each is caught by the check meant for it, not by an accident of the setup.
      const by = Object.fromEntries(results.map((r) => [r.mutant.split(":")[1], r.by]));
      expect(by["skip-invalidation"]).toMatch(/^mapping\//);
      expect(by["leaked-device-ref"]).toBe("probe/probed");
      expect(by["wrong-permission"]).toMatch(/^mapping\//);
      expect(by["half-written-entry"]).toMatch(/^domains\//);
      if (target.caps.viommu) expect(by["missing-tombstone"]).toBe("iommufd/viommu-vdevice-tombstone");
      expect(formatMutantReport(results)).toContain(`${name}: ${results.length}/${results.length} mutants caught`);
    },
    300_000,
  );
});
