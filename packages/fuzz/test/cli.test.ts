/** `npm run fuzz`: its options, and --replay of a program that still fails (exit 1) or is clean (exit 0). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Machine } from "@iommu-sim/core";
import { IOMMUFD_CMD } from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import { fuzzMain, parseFuzzArgs, programToJson, seedPrograms } from "../src/index.js";
import { plantAfter } from "./plant.js";

describe("npm run fuzz", () => {
  it("parses its options", () => {
    expect(
      parseFuzzArgs(["--seconds", "5", "--seed", "7", "--calls", "100", "--out", "x", "--no-allow"]),
    ).toMatchObject({
      seconds: 5,
      seed: 7,
      calls: 100,
      out: "x",
      allow: false,
    });
    expect(() => parseFuzzArgs(["--calls", "-1"])).toThrow(/non-negative/);
    expect(() => parseFuzzArgs(["--frobnicate"])).toThrow(/unknown option/);
  });

  it("--replay answers 1 for a program that still fails and writes its reproducer, 0 for a clean one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fuzz-cli-"));
    try {
      const clean = join(dir, "clean.json");
      writeFileSync(clean, programToJson(seedPrograms()[0]!));
      const lines: string[] = [];
      expect(await fuzzMain(["--replay", clean, "--out", dir], (l) => lines.push(l))).toBe(0);
      expect(lines.join("\n")).toMatch(/0 finding\(s\)/);
      // The same program on a machine with a planted WARN after an unmap of a mapped range.
      const planted = (m: Machine) =>
        plantAfter(m, IOMMUFD_CMD.IOAS_UNMAP, (ucmd) => {
          if ((ucmd.cmd as { length: bigint }).length > 0n) m.diag.warnOn(true, "planted: unmap of a mapped range");
        });
      lines.length = 0;
      expect(await fuzzMain(["--replay", clean, "--out", dir], (l) => lines.push(l), planted)).toBe(1);
      expect(lines.join("\n")).toMatch(/planted: unmap[\s\S]*shrunk to \d+ calls/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
