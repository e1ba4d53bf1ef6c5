/**
 * `npm run bench` for @iommu-sim/drivers-mock: the mock hardware model's translation with a cold and a warm IOTLB,
 * beside in-run baselines. Clears `results.json` first.
 */
import { rmSync } from "node:fs";

rmSync(new URL("./results.json", import.meta.url), { force: true });
for (const suite of ["./translate.bench.ts"]) {
  console.log(`\n=== ${suite}`);
  await import(suite);
}
