import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defaultPlatformInput, platformJsonSchema } from "../../src/index.js";

const shipped = JSON.parse(readFileSync(new URL("../../platform.schema.json", import.meta.url), "utf8")) as Record<
  string,
  unknown
>;

describe("platform.schema.json (the platform schema as JSON Schema, for editors)", () => {
  it("is the committed output of platformJsonSchema() (run `npm run schema -w @iommu-sim/core` after a change)", () => {
    expect(shipped).toEqual(JSON.parse(JSON.stringify(platformJsonSchema())));
  });

  it("is exported by the package", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      exports: Record<string, unknown>;
      files: string[];
    };
    expect(pkg.exports["./platform.schema.json"]).toBe("./platform.schema.json");
    expect(pkg.files).toContain("platform.schema.json");
  });

  const check = z.fromJSONSchema(shipped as never);
  it("accepts the default platform and a file that names its $schema", () => {
    expect(check.safeParse(defaultPlatformInput()).success).toBe(true);
    expect(check.safeParse({ ...defaultPlatformInput(), $schema: "./platform.schema.json" }).success).toBe(true);
  });

  it("rejects what an editor should flag: unknown kinds, misspelled options per kind, bad enums, long names", () => {
    const bad = (f: (p: ReturnType<typeof defaultPlatformInput>) => void) => {
      const p = defaultPlatformInput();
      f(p);
      return check.safeParse(p).success;
    };
    expect(bad((p) => (p.iommus![2]!.kind = "vtx"))).toBe(false);
    expect(bad((p) => ((p.iommus![2]!.options as Record<string, unknown>).sidbits = 8))).toBe(false);
    expect(bad((p) => ((p.iommus![0]!.options as Record<string, unknown>).stages = "s1"))).toBe(false); // mock has none
    expect(bad((p) => ((p.iommus![2]!.options as Record<string, unknown>).stages = "s3"))).toBe(false);
    expect(bad((p) => (p.devices![0]!.name = "x".repeat(65)))).toBe(false);
    expect(bad((p) => Object.assign(p, { memroy: {} }))).toBe(false);
    expect(bad((p) => ((p.iommus![2]!.options as Record<string, unknown>).sidBits = 8))).toBe(true);
  });
});
