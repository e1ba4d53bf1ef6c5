/**
 * Targets of the VT-d benchmark rows: after a suite ran, its entries in results.json get a numeric `target` (the
 * largest acceptable nsPerOp ratio to the suite's baseline, or the largest acceptable count) and `measured`, and the
 * check is printed. The harness (packages/core/bench/harness.ts) writes the timing fields; this adds the goal.
 */
import { readFileSync, writeFileSync } from "node:fs";

/** Annotate the entry named `name` in `file` with `fields`. */
export function annotate(file: string, name: string, fields: Record<string, number | string>): void {
  const all = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>[];
  for (let i = all.length - 1; i >= 0; i--) {
    if (all[i]!.name === name) {
      Object.assign(all[i]!, fields);
      break;
    }
  }
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
}

/** Print and record a ratio target: `measured` = nsPerOp / baseline nsPerOp, met when ≤ `target`. */
export function checkRatio(file: string, name: string, nsPerOp: number, baseNs: number, target: number): void {
  const measured = nsPerOp / baseNs;
  annotate(file, name, { target, measured, targetKind: "max nsPerOp / baseline nsPerOp" });
  console.log(`  target ${name}: ${measured.toFixed(2)}× (≤ ${target}) ${measured <= target ? "met" : "NOT met"}`);
}
