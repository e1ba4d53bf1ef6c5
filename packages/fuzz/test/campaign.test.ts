/**
 * The CI campaign: a bounded, seeded run of the fuzzer over the whole uAPI (about a minute here; IOMMU_SIM_SOAK=1
 * runs half a million calls). It must find nothing beyond the allow-list, issue every ioctl of the spec, reach
 * deep states (objects that need several earlier calls), and run the multi-process load case.
 */
import { describe, expect, it } from "vitest";
import { formatReport, programToJson, runCampaign } from "../src/index.js";

const SOAK = process.env.IOMMU_SIM_SOAK === "1";
const CALLS = SOAK ? 500_000 : 120_000;

describe("CI fuzz campaign", () => {
  it(`${CALLS} calls find nothing new`, async () => {
    const r = await runCampaign({ seed: 20261207, calls: CALLS, shrinkBudget: 150 });
    const text = formatReport(r);
    const found = r.findings.map((f) => `${f.finding.signature}\n${programToJson(f.program)}`).join("\n\n");
    expect(r.findings, `${found}\n\n${text}`).toEqual([]);
    expect(r.uncovered, text).toEqual([]);
    expect(r.loadRuns).toBeGreaterThan(0);
    // Depth: these succeed only after the right earlier calls made the right objects.
    const ok = (name: string) => r.errnos.get(name)?.get("0") ?? 0;
    for (const name of [
      "IOMMU_IOAS_MAP",
      "IOMMU_IOAS_UNMAP",
      "IOMMU_IOAS_COPY",
      "IOMMU_TEST_OP_MOCK_DOMAIN",
      "IOMMU_HWPT_ALLOC",
      "IOMMU_VIOMMU_ALLOC",
      "IOMMU_VDEVICE_ALLOC",
      "IOMMU_TEST_OP_ACCESS_PAGES",
      "IOMMU_TEST_OP_PASID_ATTACH",
      "VFIO_DEVICE_BIND_IOMMUFD",
      "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    ]) {
      expect(ok(name), `${name} never succeeded\n${text}`).toBeGreaterThan(0);
    }
  }, 1_800_000);
});
