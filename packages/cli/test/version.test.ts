import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { cliVersion, main } from "../src/index.js";

describe("iommu-sim --version", () => {
  it("prints the version of @iommu-sim/cli's package.json", async () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
    let out = "";
    const code = await main(["--version"], { out: (s) => (out += s), err: () => undefined });
    expect(code).toBe(0);
    expect(out).toBe(`iommu-sim ${pkg.version}\n`);
    expect(cliVersion()).toBe(pkg.version);
  });
});
