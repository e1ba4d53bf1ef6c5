/**
 * `npm run bench` for @iommu-sim/drivers-smmuv3: the hardware model's translation (TLB hit, full stage-1 walk,
 * nested walk) and map/unmap through the driver, each beside in-run baselines. Clears `results.json` first.
 */
import { rmSync } from "node:fs";

rmSync(new URL("./results.json", import.meta.url), { force: true });
for (const suite of ["./hw-translate.bench.ts", "./driver.bench.ts"]) {
  console.log(`\n=== ${suite}`);
  await import(suite);
}
