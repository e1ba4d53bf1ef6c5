/**
 * SMMUv3 driver: map and unmap 1 GiB in 4 KiB pages through `iommuMap` / `iommuUnmap` on a stage-1 domain of the
 * driver (each unmap syncs: TLBI_NH_VA + CMD_SYNC through the command queue, consumed by the hardware model),
 * beside in-run baselines measured in this process with the same pattern:
 *
 * - raw-radix (the baseline): the 4-level, 512-way radix table over `Int32Array` frames of
 *   packages/core/bench/baselines.ts, one page per map and per unmap;
 * - engine: core's `IoPageTable` with the driver's ARM LPAE stage-1 format, called directly (no core, no driver,
 *   no invalidation).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-smmuv3/bench/driver.bench.ts
 *
 * One op = map one 4 KiB page + unmap it again later (the whole GiB is mapped, then unmapped, per round).
 * A second suite maps and unmaps the same GiB in one call each, through the core API and through the engine alone.
 * Medians of interleaved rounds (harness.ts from packages/core/bench); results appended to bench/results.json.
 */
import { fileURLToPath } from "node:url";
import { IoPageTable, IotlbGather, iommuMap, iommuUnmap } from "@iommu-sim/core";
import { benchPagingDomain, GIB_MAP_WORKLOAD, gibMapBaselineCases } from "@iommu-sim/testkit/bench";
import { RawRadix } from "../../core/bench/baselines.js";
import { runBench } from "../../core/bench/harness.js";
import { type ArmSmmuDevice, armLpaeFormat, armSmmuV3Driver } from "../src/index.js";

const { GiB, PAGE, PAGES, IOVA0, PA0, RW } = GIB_MAP_WORKLOAD;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));

const raw = new RawRadix(12);

// --- the machine with the SMMUv3 driver and model ----------------------------------------------------------------
const { m, domain } = await benchPagingDomain(armSmmuV3Driver, "smmu-dma0");
const smmu = armSmmuV3Driver.instanceFor(m, "smmu0") as ArmSmmuDevice;

// --- the engine alone, same format ---------------------------------------------------------------------------------
const engine = new IoPageTable(armLpaeFormat(1, 12), m.memory, m.pages, { ias: 48, oas: 48 });
const baselines = gibMapBaselineCases(engine, m, raw);
const gather = new IotlbGather();

let before = 0;
runBench({
  name: "smmuv3-driver/map+unmap 1GiB in 4KiB pages",
  baseline: "raw-radix",
  rounds: 5,
  warmup: 1,
  resultsFile: RESULTS,
  cases: [
    baselines.rawRadix,
    baselines.engine,
    {
      name: "smmuv3-iommuMap/iommuUnmap",
      ops: PAGES,
      setup: () => {
        before = smmu.cmdq.issued;
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
console.log(`commands issued during the SMMUv3 case: ${smmu.cmdq.issued - before}`);

// --- large calls: one iommuMap of 1 GiB, one iommuUnmap of it ------------------------------------------------------
// The PA is 4 KiB-aligned only, so the core picks 4 KiB pages for both (as for scattered guest RAM); the engine
// alone does the same work in one map_pages and one unmap_pages call. Target (issue #17): the SMMUv3 path through
// the core API costs at most 3x the engine alone (ratio >= 0.333).
const PA_4K = PA0 + PAGE;
let largeCmds = 0;
runBench({
  name: "smmuv3-driver/map+unmap 1GiB in one call each",
  baseline: "engine",
  rounds: 7,
  resultsFile: RESULTS,
  cases: [
    {
      name: "engine",
      ops: PAGES,
      fn: () => {
        engine.map(IOVA0, PA_4K, PAGE, PAGES, RW);
        gather.reset();
        const n = engine.unmap(IOVA0, PAGE, PAGES, gather);
        gather.freePages(m.pages);
        return n;
      },
    },
    {
      name: "smmuv3-iommuMap/iommuUnmap",
      ops: PAGES,
      target: 1 / 3,
      fn: () => {
        const c0 = smmu.cmdq.issued;
        iommuMap(domain, IOVA0, PA_4K, GiB, RW);
        const n = iommuUnmap(domain, IOVA0, GiB);
        largeCmds = smmu.cmdq.issued - c0;
        return n;
      },
    },
  ],
});
console.log(`commands issued per large map+unmap: ${largeCmds}`);
engine.free();
