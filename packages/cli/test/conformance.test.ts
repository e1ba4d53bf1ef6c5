/**
 * `iommu-sim conformance`: the table, the JSON report, a driver loaded from a module path, progress on stderr, and
 * the exit codes (0 all pass, 1 a failure, 2 bad usage).
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { main } from "../src/index.js";

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

// Each run boots many machines; on a loaded 2-core box that takes longer than vitest's 5 s default.
const SLOW = { timeout: 120_000 };

describe("iommu-sim conformance", () => {
  it("prints the check x driver table with progress, n/a rows and a summary", SLOW, async () => {
    const r = await run("conformance", "--driver", "mock,smmuv3", "--only", "domains/identity", "--only", "mapping/");
    expect(r.code).toBe(0);
    const lines = r.out.split("\n");
    expect(lines[0]).toMatch(/^check\s+mock\s+smmuv3$/);
    expect(r.out).toMatch(/domains\/identity\s+pass\s+pass/);
    expect(r.out).toMatch(/mapping\/three-way-0x800\s+pass\s*\n/);
    expect(r.out).toMatch(/mapping\/three-way-0x1000\s+n\/a\s+pass/);
    expect(r.out).toMatch(/passed, 0 failed, \d+ n\/a \(2 driver\(s\)/);
    expect(r.err).toMatch(/\[1\/\d+\] mock domains\/identity: pass/);
  });

  it("prints a JSON report and loads a target from a module path", SLOW, async () => {
    const path = fileURLToPath(new URL("./fixtures/custom-target.ts", import.meta.url));
    const r = await run("conformance", "--driver", path, "--only", "probe/probed", "--json");
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.drivers).toEqual(["custom-mock"]);
    expect(report.results).toMatchObject([{ driver: "custom-mock", check: "probe/probed", status: "pass" }]);
  });

  it("exits 2 on an unknown driver or argument", async () => {
    const r = await run("conformance", "--driver", "nosuch");
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown driver "nosuch" \(known: mock, smmuv3, vtd, amd\)/);
    expect((await run("conformance", "--bogus")).code).toBe(2);
  });
});

describe("iommu-sim new-driver", () => {
  it("refuses a bad name or a non-empty directory with exit 2", async () => {
    const bad = await run("new-driver", "Bad-Name", "--dir", "/tmp/never-created-iommu-sim");
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/bad driver name/);
    expect((await run("new-driver")).code).toBe(2);
    const here = fileURLToPath(new URL(".", import.meta.url));
    const full = await run("new-driver", "acme", "--dir", here);
    expect(full.code).toBe(2);
    expect(full.err).toMatch(/not empty/);
  });
});
