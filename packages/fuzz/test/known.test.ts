/**
 * The allow-list stays honest: every entry has a shrunk reproducer in test/known/<name>.json that still shows it.
 * When a fix lands, its test here fails: delete the entry from KNOWN_FINDINGS and its .json, and the CI campaign
 * then guards the fix.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { KNOWN_FINDINGS, programFromJson, replay } from "../src/index.js";

const DIR = join(import.meta.dirname, "known");

describe("known findings (the allow-list)", () => {
  it("every entry has a reproducer and every reproducer an entry", () => {
    const files = readdirSync(DIR).filter((f) => f.endsWith(".json"));
    expect(files.map((f) => f.replace(/\.json$/, "")).sort()).toEqual(KNOWN_FINDINGS.map((k) => k.name).sort());
  });

  for (const k of KNOWN_FINDINGS) {
    // `npm run fuzz` (its --slow-ms check) reports the wall-clock one.
    const wallClock = k.name === "huge-object-size-allocates-by-size";
    it.skipIf(wallClock)(
      `${k.name} (${k.issue}) still reproduces`,
      async () => {
        const program = programFromJson(readFileSync(join(DIR, `${k.name}.json`), "utf8"));
        const found = await replay(program);
        const hit = found.some((f) => k.match(f));
        expect(
          hit,
          `${k.name} no longer reproduces (fixed?): remove it from KNOWN_FINDINGS and delete test/known/${k.name}.json.\n` +
            `found: ${found.map((f) => f.signature).join("\n") || "nothing"}`,
        ).toBe(true);
      },
      60_000,
    );
  }
});
