/**
 * A driver written outside the monorepo: pack core, testkit and what they need, install the tarballs into a temporary
 * project, generate a driver there from the published drivers-mock sources, compile it against the published core,
 * and run the conformance suite on it with the published testkit. Slow (pack, install, tsc): it runs in CI
 * (`.ci/run` sets IOMMU_SIM_PACK_TEST=1) and with IOMMU_SIM_SOAK=1, and is skipped in a plain `npm test`.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { scaffoldDriver } from "../src/index.js";

const soak = process.env.IOMMU_SIM_SOAK === "1" || process.env.IOMMU_SIM_PACK_TEST === "1";
const root = fileURLToPath(new URL("../../..", import.meta.url));
const PACKAGES = ["core", "iommufd", "drivers-mock", "drivers-smmuv3", "drivers-vtd", "drivers-amd", "testkit"];

describe("the published packages", () => {
  it.skipIf(!soak)(
    "run the suite on a driver outside the monorepo (skipped without IOMMU_SIM_PACK_TEST=1 or IOMMU_SIM_SOAK=1: packs and installs)",
    async () => {
      const tmp = mkdtempSync(join(tmpdir(), "iommu-sim-pack-"));
      try {
        const tgz = PACKAGES.map(
          (p) =>
            execFileSync("npm", ["pack", "--silent", "--pack-destination", tmp], { cwd: join(root, "packages", p) })
              .toString()
              .trim()
              .split("\n")
              .at(-1)!,
        );
        writeFileSync(join(tmp, "package.json"), JSON.stringify({ name: "outside", private: true, type: "module" }));
        execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", ...tgz.map((t) => `./${t}`)], {
          cwd: tmp,
          stdio: "pipe",
        });
        const dir = join(tmp, "drivers-ext");
        await scaffoldDriver("ext", { dir, templateDir: join(tmp, "node_modules", "@iommu-sim", "drivers-mock") });
        execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", dir], {
          stdio: "pipe",
        });
        writeFileSync(
          join(tmp, "run.mjs"),
          `import { runConformance } from "@iommu-sim/testkit/runner";
import { conformanceTarget } from "./drivers-ext/dist/conformance-target.js";
const r = await runConformance({ drivers: [conformanceTarget()] });
console.log(JSON.stringify({ passed: r.passed, failed: r.failed, na: r.na,
  fails: r.results.filter((x) => x.status === "fail").map((x) => x.check + ": " + x.detail) }));
`,
        );
        const out = JSON.parse(execFileSync(process.execPath, ["run.mjs"], { cwd: tmp }).toString());
        expect(out.fails).toEqual([]);
        expect(out.passed).toBeGreaterThan(25);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    },
    600_000,
  );
});
