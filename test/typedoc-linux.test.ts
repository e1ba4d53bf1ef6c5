/**
 * The API docs' @linux rendering (scripts/typedoc-linux-plugin.mjs): kernel identifiers become inline code linked
 * to the kernel cross-reference, source paths link to the file, prose stays prose. The full docs build, with the
 * search check, runs in `npm run docs` (CI) and here under IOMMU_SIM_SOAK=1.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain-JS TypeDoc plugin without declarations
import { ELIXIR, linuxMarkdown, linuxNames } from "../scripts/typedoc-linux-plugin.mjs";

const id = (n: string) => `[\`${n}\`](${ELIXIR}/A/ident/${n})`;
const src = (p: string) => `[\`${p}\`](${ELIXIR}/source/${p})`;

describe("@linux tags in the API docs", () => {
  it("link each kernel identifier to the cross-reference", () => {
    expect(linuxMarkdown("iommu_probe_device")).toBe(id("iommu_probe_device"));
    expect(linuxMarkdown("arm_smmu_probe_device + arm_smmu_insert_master")).toBe(
      `${id("arm_smmu_probe_device")} + ${id("arm_smmu_insert_master")}`,
    );
    expect(linuxMarkdown("memparse")).toBe(id("memparse")); // a lone word is a name
    expect(linuxMarkdown("struct iommu_group")).toBe(`struct ${id("iommu_group")}`);
  });

  it("link source paths to the file and leave prose alone", () => {
    expect(linuxMarkdown("refcount_t (include/linux/refcount.h, lib/refcount.c)")).toBe(
      `${id("refcount_t")} (${src("include/linux/refcount.h")}, ${src("lib/refcount.c")})`,
    );
    const prose = "the DT/ACPI and ID-register feature bits of each IOMMU (IDR0-5, CAP/ECAP, EFR)";
    expect(linuxMarkdown(prose)).toBe(prose);
    expect(linuxNames("none: a validation cache")).toEqual([]);
    expect(linuxNames("the iommu-map property (Documentation/devicetree/bindings/pci/pci-iommu.txt)")).toEqual([]);
  });

  it.runIf(process.env.IOMMU_SIM_SOAK === "1")(
    "the docs build finds arm_smmu_write_entry by search (IOMMU_SIM_SOAK=1; `npm run docs` checks it too)",
    { timeout: 600_000 },
    () => {
      const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
      const out = mkdtempSync(join(tmpdir(), "iommu-sim-docs-"));
      try {
        const typedoc = join(repo, "node_modules/typedoc/bin/typedoc");
        const b = spawnSync(process.execPath, [typedoc, "--out", out, "--logLevel", "Warn"], {
          cwd: repo,
          encoding: "utf8",
        });
        expect(b.stdout + b.stderr).toBe("");
        const c = spawnSync(process.execPath, ["scripts/check-docs.mjs", out], { cwd: repo, encoding: "utf8" });
        expect(c.stderr).toBe("");
        expect(c.status).toBe(0);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    },
  );
});
