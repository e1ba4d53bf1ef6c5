/**
 * VT-d driver: map and unmap 1 GiB in 4 KiB pages through `iommuMap` / `iommuUnmap` on a first-stage domain (each
 * unmap syncs: a PASID-based IOTLB invalidation and a wait descriptor through the invalidation queue, processed by
 * the hardware model), beside in-run baselines with the same pattern: core's engine with the x86-64 format alone
 * (no core, no driver, no invalidation; the baseline) and the raw radix table of packages/core/bench/baselines.ts.
 * Then the invalidation descriptors one `iommuUnmap` of a whole 1 GiB range issues (target: O(1), at most 4).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-vtd/bench/driver.bench.ts
 */
import { fileURLToPath } from "node:url";
import { IoPageTable, iommuMap, iommuUnmap } from "@iommu-sim/core";
import { benchPagingDomain, GIB_MAP_WORKLOAD, gibMapBaselineCases } from "@iommu-sim/testkit/bench";
import { RawRadix } from "../../core/bench/baselines.js";
import { recordCount, runBench } from "../../core/bench/harness.js";
import { intelIommuDriver, intelIommuDriverState, type VtdHw, x86_64Format } from "../src/index.js";

const { GiB, PAGE, PAGES, IOVA0, PA0, RW } = GIB_MAP_WORKLOAD;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));

const { m, domain } = await benchPagingDomain(intelIommuDriver, "xhci0");
const iommu = intelIommuDriverState(intelIommuDriver, m)!.units.get("vtd0")!;
const hw = m.dma.modelFor("vtd0") as VtdHw;

const engine = new IoPageTable(x86_64Format(4, true), m.memory, m.pages, { ias: 47, oas: 52 });
const raw = new RawRadix(12);
const baselines = gibMapBaselineCases(engine, m, raw);

let before = 0;
const r = runBench({
  name: "vtd-driver/map+unmap 1GiB in 4KiB pages",
  baseline: "engine",
  rounds: 5,
  warmup: 1,
  resultsFile: RESULTS,
  cases: [
    baselines.engine,
    baselines.rawRadix,
    {
      name: "vtd-iommuMap/iommuUnmap",
      ops: PAGES,
      setup: () => {
        before = iommu.descriptorsIssued;
      },
      fn: () => {
        for (let i = 0; i < PAGES; i++) iommuMap(domain, IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, RW);
        let n = 0;
        for (let i = 0; i < PAGES; i++) n += iommuUnmap(domain, IOVA0 + i * PAGE, PAGE);
        return n;
      },
    },
  ],
});
void r;
console.log(`descriptors issued during the per-page case: ${iommu.descriptorsIssued - before}`);

// One unmap of the whole GiB (mapped in 4 KiB pages): descriptors processed by the unit, the wait included.
for (let i = 0; i < PAGES; i++) iommuMap(domain, IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, RW);
const d0 = hw.stats.descriptors;
iommuUnmap(domain, IOVA0, GiB);
const perUnmap = hw.stats.descriptors - d0;
recordCount({
  name: "vtd-driver/descriptors per 1GiB unmap",
  count: perUnmap,
  max: 4,
  unit: "descriptors",
  resultsFile: RESULTS,
});
engine.free();
