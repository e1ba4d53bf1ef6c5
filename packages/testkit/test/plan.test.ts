/**
 * The suite's bookkeeping: unclaimed capabilities make their checks n/a with the reason, never a pass; seeds are
 * per check and stable; `only` filters by id prefix.
 */
import { describe, expect, it } from "vitest";
import { type ConformanceTarget, mockTarget, planConformance } from "../src/index.js";

function bare(): ConformanceTarget {
  const t = mockTarget();
  return { ...t, caps: { pageSizes: t.caps.pageSizes, iova: t.caps.iova } };
}

describe("planConformance", () => {
  it("reports every check of an unclaimed capability as n/a with the capability named", () => {
    const plan = planConformance(bare());
    const na = Object.fromEntries(plan.filter((p) => p.na).map((p) => [p.check.id, p.na]));
    expect(na["domains/identity"]).toBe("identity domains not claimed");
    expect(na["domains/pasid"]).toBe("PASID not claimed");
    expect(na["faults/iopf-round-trip"]).toBe("PRI/IOPF not claimed");
    expect(na["faults/iopf-device-removal"]).toBe("PRI/IOPF not claimed");
    expect(na["iommufd/hwpt-invalidate"]).toBe("iommufd not claimed");
    expect(na["iommufd/veventq"]).toBe("iommufd not claimed");
    expect(na["iommufd/dirty"]).toBe("iommufd not claimed");
    expect(na["invalidation/strict-random"]).toBe("no strict mode in the hardware model");
    // Always-applicable checks stay applicable.
    for (const id of [
      "probe/probed",
      "probe/iommu-fail-nth",
      "domains/transitions",
      "isolation/random",
      "mapping/three-way-0x800",
    ]) {
      expect(plan.find((p) => p.check.id === id)?.na).toBeUndefined();
    }
    const full = planConformance(mockTarget());
    expect(full.filter((p) => p.na).length).toBeLessThan(plan.filter((p) => p.na).length);
  });

  it("derives a stable seed per check, uses a seed asked for as is, and filters by id prefix", () => {
    const a = planConformance(mockTarget(), { only: ["domains/"] });
    const b = planConformance(mockTarget(), { only: ["domains/"] });
    expect(a.map((p) => p.check.id).every((id) => id.startsWith("domains/"))).toBe(true);
    expect(a.map((p) => p.seed)).toEqual(b.map((p) => p.seed));
    expect(new Set(a.map((p) => p.seed)).size).toBe(a.length);
    expect(planConformance(mockTarget(), { seed: 8, only: ["domains/"] }).map((p) => p.seed)).toEqual(a.map(() => 8));
  });
});
