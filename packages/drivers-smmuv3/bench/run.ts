/**
 * `npm run bench` for @iommu-sim/drivers-smmuv3: the hardware model's translation (TLB hit, full stage-1 walk,
 * nested walk), map/unmap through the driver (page by page, and in large calls), the LPAE format against the
 * engine's test format, and IOAS_MAP+IOAS_UNMAP through iommufd against the bare calls on the same domain, each
 * beside in-run baselines. Clears `results.json` first.
 */
import { rmSync } from "node:fs";

rmSync(new URL("./results.json", import.meta.url), { force: true });
for (const suite of [
  "./hw-translate.bench.ts",
  "./driver.bench.ts",
  "./lpae-format.bench.ts",
  "./iommufd-ioas.bench.ts",
]) {
  console.log(`\n=== ${suite}`);
  await import(suite);
}
