/**
 * `npm run bench` for @iommu-sim/core: runs every suite in this folder in one process, after clearing
 * `results.json`, so the file holds exactly this run's figures.
 */
import { rmSync } from "node:fs";

rmSync(new URL("./results.json", import.meta.url), { force: true });
for (const suite of ["./memory.bench.ts", "./pgtable.bench.ts", "./machine.bench.ts"]) {
  console.log(`\n=== ${suite}`);
  await import(suite);
}
