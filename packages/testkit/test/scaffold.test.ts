/**
 * `new-driver`: a package generated from drivers-mock under a new name passes the whole conformance suite as
 * generated (its own target, its own hardware kind on its own platform IOMMU).
 */
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { type ConformanceTarget, renameMock, runConformance, scaffoldDriver, validDriverName } from "../src/index.js";

const dir = fileURLToPath(new URL("../.scaffold-tmp/drivers-acme", import.meta.url));

afterAll(async () => {
  await rm(fileURLToPath(new URL("../.scaffold-tmp", import.meta.url)), { recursive: true, force: true });
});

describe("new-driver scaffold", () => {
  it("renames every mock identifier but the ones imported from core, and validates names", () => {
    expect(renameMock("class MockIommu { x = MOCK_PAGE_SIZE; f = mockFormat; k = 'mock' }", "acme")).toBe(
      "class AcmeIommu { x = ACME_PAGE_SIZE; f = mockFormat; k = 'acme' }",
    );
    expect(validDriverName("acme")).toBe(true);
    for (const bad of ["Acme", "mock", "a", "9x", "acme-iommu"]) expect(validDriverName(bad)).toBe(false);
  });

  it("generates a package that passes the conformance suite out of the box", async () => {
    await rm(dir, { recursive: true, force: true });
    const files = await scaffoldDriver("acme", { dir });
    expect(files).toContain("src/hw/acme-iommu.ts");
    expect(files).toContain("src/conformance-target.ts");
    expect(existsSync(`${dir}/src/driver/acme-iommu.ts`)).toBe(true);
    await expect(scaffoldDriver("acme", { dir })).rejects.toThrow(/not empty/);
    const { conformanceTarget } = (await import(`${dir}/src/conformance-target.ts`)) as {
      conformanceTarget(): ConformanceTarget;
    };
    const target = conformanceTarget();
    expect(target.driver.compatible).toEqual(["acme"]);
    const report = await runConformance({ drivers: [target] });
    expect(report.results.filter((r) => r.status === "fail")).toEqual([]);
    expect(report.passed).toBeGreaterThan(25);
  }, 300_000);
});
