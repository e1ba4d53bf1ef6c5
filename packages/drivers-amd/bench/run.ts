/**
 * `npm run bench` for @iommu-sim/drivers-amd: the hardware model's translation (IOTLB hit, v1 walk) beside in-run
 * baselines, and the commands of a 1 GiB unmap through the driver. Clears `results.json` first.
 */
import { rmSync } from "node:fs";

rmSync(new URL("./results.json", import.meta.url), { force: true });
for (const suite of ["./hw-translate.bench.ts", "./driver.bench.ts"]) {
  console.log(`\n=== ${suite}`);
  await import(suite);
}
