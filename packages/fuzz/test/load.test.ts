/** The load case: processes on one iommufd under the random scheduler agree with the model, and can disagree. */
import { describe, expect, it } from "vitest";
import { runLoadCase } from "../src/index.js";

describe("load case", () => {
  it("several processes on one iommufd match the model under many random schedules", async () => {
    const schedules = new Set<string>();
    for (let seed = 1; seed <= 8; seed++) {
      const r = await runLoadCase(seed, { procs: 3, ops: 20 });
      expect(r.findings, r.schedule).toEqual([]);
      expect(r.ops).toBe(60);
      schedules.add(r.schedule);
    }
    // The scheduler really interleaved the processes differently.
    expect(schedules.size).toBe(8);
  }, 120_000);

  it("a wrong model is caught", async () => {
    const r = await runLoadCase(3, { plantWrongModel: true });
    expect(r.findings.map((f) => f.kind)).toContain("model");
  }, 60_000);
});
