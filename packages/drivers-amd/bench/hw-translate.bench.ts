/**
 * AMD-Vi hardware-model translation beside the mock model (`mockModelBaseline` of `@iommu-sim/testkit/bench`) and
 * the raw baselines of packages/core/bench/baselines.ts, in the same process and run, same access pattern:
 *
 * - hit: v1 mode 4, 4 KiB pages, a working set of 512 pages already in the IOTLB (4096 entries, 4-way) vs the mock's
 *   IOTLB hit (target: at most 1.5x the mock's time);
 * - walk: v1 mode 4 over 1 GiB of 4 KiB pages, random pages, so nearly every lookup misses the IOTLB and walks (the
 *   page-directory cache of 64 entries holds few of the 512 regions) vs the mock's 4-level walk (target: at most 2x).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-amd/bench/hw-translate.bench.ts
 *
 * Tables written plainly with the architecture's layout (no engine, no driver). Medians of interleaved rounds
 * (packages/core/bench/harness.ts); results appended to bench/results.json here, the AMD-Vi rows with their
 * `target` (the least ratio mock ns / AMD-Vi ns that meets the goal: 1/1.5 for the hit, 0.5 for the walk).
 */
import { fileURLToPath } from "node:url";
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import { mockModelBaseline } from "@iommu-sim/testkit/bench";
import { mappedBaselines, randomIovas, randomPages, setIovas } from "../../core/bench/baselines.js";
import { type BenchResult, runBench } from "../../core/bench/harness.js";
import { AmdHw } from "../src/hw/index.js";

const GiB = 2 ** 30;
const PAGE = 4096;
const PAGES = GiB / PAGE;
const BASE_IOVA = 1 * GiB;
const BASE_PA = 2 * GiB;
const LOOKUPS = 1 << 19;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));
const TWO_32 = 4294967296;

const RANGE = { base: BASE_IOVA, pages: PAGES, pageSize: PAGE };
const warm = setIovas(RANGE, randomPages(PAGES, 512, 7), LOOKUPS, 8);
const cold = randomIovas(RANGE, LOOKUPS, 9);

// --- the model: a v1 table written plainly (no engine, no driver) ------------------------------------------------
const memory = new PhysicalMemory({ size: 4 * GiB });
const hw = new AmdHw({ name: "bench", memory, diag: new Diagnostics(), options: { tlbEntries: 4096, tlbWays: 4 } });
let bump = 0x1000_0000;
const alloc = () => {
  const pa = bump;
  bump += PAGE;
  return pa;
};
const IR_IW = (1 << 29) | (1 << 30);
function mapPage(root: number, iova: number, pa: number): void {
  let table = root;
  for (let level = 4; level > 1; level--) {
    const e = table + (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
    let lo = memory.read32(e);
    if (lo === 0) {
      lo = (alloc() | 1 | ((level - 1) << 9)) >>> 0;
      memory.write32(e, lo);
      memory.write32(e + 4, IR_IW);
    }
    table = (lo & ~0xfff) >>> 0;
  }
  const e = table + (Math.floor(iova / PAGE) % 512) * 8;
  memory.write32(e, ((pa >>> 0) & ~0xfff) | 1);
  memory.write32(e + 4, (Math.floor(pa / TWO_32) | IR_IW) >>> 0);
}
const root = alloc();
for (let i = 0; i < PAGES; i++) mapPage(root, BASE_IOVA + i * PAGE, BASE_PA + i * PAGE);
const devTab = alloc();
const DEVID = 8;
memory.write32(devTab + DEVID * 32, (1 | 2 | (4 << 9) | root) >>> 0); // V, TV, Mode 4, root
memory.write32(devTab + DEVID * 32 + 4, IR_IW);
memory.write32(devTab + DEVID * 32 + 8, 1); // DomainID 1
hw.write32(0x0000, devTab); // one page of DTEs
hw.write32(0x0018, 1); // IommuEn

const req = newDmaRequest();
const out = newDmaTranslation();
req.requesterId = DEVID;
function hwTranslate(iovas: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < iovas.length; i++) {
    req.iova = iovas[i]!;
    hw.translate(req, out);
    sum += out.pa;
  }
  if (out.faultCode !== 0) throw new Error(`bench: fault ${out.faultReason}`);
  return sum;
}
req.iova = BASE_IOVA + 777 * PAGE + 5;
hw.translate(req, out);
if (out.faultCode !== 0 || out.pa !== BASE_PA + 777 * PAGE + 5) throw new Error(`bench self-check: ${out.faultReason}`);

const mock = mockModelBaseline(RANGE, BASE_PA);
const { raw, tlb } = mappedBaselines(RANGE, BASE_PA);

const all: BenchResult[] = [];
function suite(name: string, cases: { name: string; fn: () => number; target?: number }[]): void {
  all.push(
    ...runBench({
      name,
      baseline: "mock",
      resultsFile: RESULTS,
      rounds: 11,
      cases: cases.map((c) => ({ name: c.name, ops: LOOKUPS, fn: c.fn, ...(c.target ? { target: c.target } : {}) })),
    }),
  );
}
suite("amd-translate-hit", [
  // Target: at most 1.5x the mock's cost (ratio = mock ns / AMD-Vi ns >= 1/1.5).
  { name: "amd-v1", fn: () => hwTranslate(warm), target: 1 / 1.5 },
  { name: "mock", fn: () => mock.translateAll(warm) },
  { name: "raw-tlb", fn: () => tlb.translateAll(warm) },
]);
const pdc0 = hw.stats.pdcHits;
const walks0 = hw.stats.walks;
suite("amd-translate-walk", [
  // Target: at most 2x the mock's 4-level walk.
  { name: "amd-v1-4level", fn: () => hwTranslate(cold), target: 0.5 },
  { name: "mock", fn: () => mock.translateAll(cold) },
  { name: "raw-walk", fn: () => raw.walkAll(cold) },
]);

const walks = hw.stats.walks - walks0;
console.log(
  `  page-directory-cache hits in amd-translate-walk: ${((100 * (hw.stats.pdcHits - pdc0)) / walks).toFixed(1)}% of ${walks} walks`,
);
console.log("\nsummary (ns/translation; x = model time / mock time; target and whether it is met)");
for (const r of all) {
  if (r.target === undefined) continue;
  const base = all.find((x) => x.name === r.baseline)!;
  const x = r.nsPerOp / base.nsPerOp;
  console.log(
    `  ${r.name.padEnd(36)} ${r.nsPerOp.toFixed(1).padStart(7)} ns   ${x.toFixed(2)}x mock   target <= ${(1 / r.target).toFixed(1)}x   ${r.ratio >= r.target ? "met" : "MISSED"}`,
  );
}
