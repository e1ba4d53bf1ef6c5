/**
 * `npm run bench` for @iommu-sim/drivers-vtd: the hardware model's translation (IOTLB hit, first- and second-stage
 * walks, nested walk) beside the mock model, and map/unmap through the driver. Clears `results.json` first.
 */
import { rmSync } from "node:fs";

rmSync(new URL("./results.json", import.meta.url), { force: true });
for (const suite of ["./hw-translate.bench.ts", "./driver.bench.ts"]) {
  console.log(`\n=== ${suite}`);
  await import(suite);
}
