/**
 * The HTML report in a real browser: headless Chromium (Debian's `chromium`, which .ci/run installs) driven by
 * playwright-core opens the report of the default scenario, and the test checks what a person sees: the object
 * graph's boxes (with the tombstone), a translation path's levels, the counter charts. A screenshot is kept in
 * test-artifacts/ (gitignored). Without Chromium the test fails in CI (CI=true or IOMMU_SIM_BROWSER=1) and is
 * skipped elsewhere, with the reason in its name.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { describe, expect, it } from "vitest";
import { main } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = join(here, "..", "test-artifacts");
const CANDIDATES = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(
  (p): p is string => typeof p === "string" && p !== "",
);
const browserPath = CANDIDATES.find((p) => existsSync(p));
const required = process.env.CI === "true" || process.env.IOMMU_SIM_BROWSER === "1";

async function writeReport(): Promise<string> {
  const file = join(mkdtempSync(join(tmpdir(), "iommu-sim-report-")), "report.html");
  let err = "";
  const code = await main(["run", "--report", file], { out: () => {}, err: (s) => (err += s) });
  expect({ code, err }).toEqual({ code: 0, err: "" });
  return file;
}

describe("the HTML report", () => {
  it("is one self-contained page: no script, nothing loaded from elsewhere", async () => {
    const html = readFileSync(await writeReport(), "utf8");
    expect(html).not.toMatch(/<script|<link|src=|@import|url\(http/i);
    expect(html).toContain('<svg class="graph"');
  });

  const name = browserPath
    ? "Chromium shows the object graph, a translation path's levels and the counter charts"
    : required
      ? "Chromium shows the report (Chromium is REQUIRED here and was not found: apt-get install -y chromium)"
      : "Chromium shows the report (skipped: Chromium not installed — apt-get install -y chromium, or CI=true to require it)";
  it.skipIf(!browserPath && !required)(name, { timeout: 60_000 }, async () => {
    expect(browserPath, "Chromium is not installed: apt-get install -y chromium (.ci/run installs it)").toBeDefined();
    const file = await writeReport();
    const browser = await chromium.launch({ executablePath: browserPath!, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      await page.goto(pathToFileURL(file).href);
      await expect(page.title()).resolves.toBe("iommu-sim report: default");
      expect(await page.locator(".verdict").innerText()).toMatch(/^PASS/);

      // The object graph after the unbind: seventeen boxes, the vDEVICE a (dashed) tombstone, references drawn.
      const after = page.locator('section.snapshot[data-label="after the unbind"]');
      await expect(after.locator("svg.graph").isVisible()).resolves.toBe(true);
      expect(await after.locator("g.node").count()).toBe(17);
      const tomb = after.locator("g.node.tombstone");
      expect(await tomb.count()).toBe(1);
      expect(await tomb.locator("text").first().textContent()).toMatch(/^VDEVICE#\d+$/);
      expect(await tomb.isVisible()).toBe(true);
      expect(await after.locator("g.edge").count()).toBeGreaterThan(3);
      const live = page.locator('section.snapshot[data-label="everything live"]');
      expect(await live.locator('g.node[data-type="HWPT_NESTED"]').count()).toBe(1);

      // The nested SMMUv3 path: STE, the CD in guest memory, both stages' levels, the output address.
      const path = page.locator('section.path[data-device="smmu-dma0"]');
      const levels = await path.locator("tr.level td:first-child").allInnerTexts();
      expect(levels[levels.indexOf("STE") + 1]).toMatch(/^CD \(IPA 0x40000000\)$/);
      expect(levels).toContain("S1 L3 page");
      expect(levels).toContain("S2 L3 page");
      expect(await path.locator("tr.result").innerText()).toMatch(/PA 0x[0-9a-f]+/);
      // The AMD-Vi path: the DTE, then each v1 level down to the 4 KiB page.
      const amd = page.locator('section.path[data-device="amd-nic0"]');
      const amdLevels = await amd.locator("tr.level td:first-child").allInnerTexts();
      expect(amdLevels).toEqual(["DTE", "L4 PDE", "L3 PDE", "L2 PDE", "L1 page"]);

      // The counters as charts: a bar per IOMMU, drawn with a width that follows the value.
      const commands = page.locator('svg.chart[aria-label="commands"]');
      await expect(commands.isVisible()).resolves.toBe(true);
      const smmuBar = commands.locator("g.bar-row", { hasText: "smmu0" }).locator("rect.bar");
      const box = await smmuBar.boundingBox();
      expect(box?.width ?? 0).toBeGreaterThan(50);
      expect(await page.locator("svg.timeline g.mark").count()).toBeGreaterThan(3);

      mkdirSync(artifacts, { recursive: true });
      const shot = join(artifacts, "report.png");
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
    } finally {
      await browser.close();
    }
  });
});
