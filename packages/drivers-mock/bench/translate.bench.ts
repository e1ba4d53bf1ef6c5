/**
 * Mock IOMMU hardware-model translation, warm and cold IOTLB, random and sequential pages, beside the in-run
 * baselines of packages/core/bench/baselines.ts with the same access pattern:
 *
 * - raw-walk: a 4-level, 512-way radix table over `Int32Array` frames (lo/hi words per entry), 2 KiB granule,
 *   integer arithmetic, walked from the root for every lookup;
 * - raw-tlb: a direct-mapped `Int32Array` TLB (tag + data arrays), 4096 entries, hit on every lookup;
 * - jsmap: a `Map` from page number to frame.
 *
 * The model (1 GiB mapped as 2 KiB pages with a 4-level table, IOTLB of 4096 entries, 2-way) is called through its
 * `translate(req, out)` hot path, as the platform's DMA engine calls it. "warm": a working set of 512 pages already
 * in the IOTLB; "cold": pages over the whole GiB, so nearly every lookup walks the table.
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-mock/bench/translate.bench.ts
 *
 * Medians of interleaved rounds (harness.ts from packages/core/bench); results appended to bench/results.json here.
 */
import { fileURLToPath } from "node:url";
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import { mappedBaselines, randomIovas, randomPages, sequentialIovas, setIovas } from "../../core/bench/baselines.js";
import { type BenchResult, runBench } from "../../core/bench/harness.js";
import { BASE, CR, CTX, CTX_MODE, fieldPrep, MockIommuHw, PTE, REG } from "../src/index.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const PAGE = 2 * KiB;
const PAGES = GiB / PAGE; // 524288
const LEVELS = 4;
const BASE_IOVA = 1 * GiB;
const BASE_PA = 2 * GiB;
const LOOKUPS = 1 << 20;
const WARM_SET = 512;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));
const TWO_32 = 4294967296;

// --- access patterns (shared by every case) -------------------------------------------------------------------
const RANGE = { base: BASE_IOVA, pages: PAGES, pageSize: PAGE };
const warmPages = randomPages(PAGES, WARM_SET, 42);
const coldRandom = randomIovas(RANGE, LOOKUPS, 43);
const coldSeq = sequentialIovas(RANGE, LOOKUPS);
const warmRandom = setIovas(RANGE, warmPages, LOOKUPS, 44);
const warmSeq = sequentialIovas(RANGE, LOOKUPS, warmPages[0]!, WARM_SET);

// --- the hardware model ---------------------------------------------------------------------------------------
const memory = new PhysicalMemory({ size: 4 * GiB });
const hw = new MockIommuHw({ name: "bench", memory, diag: new Diagnostics(), options: { tlbEntries: 4096 } });
let bump = 0x1000_0000;
function allocTable(): number {
  const pa = bump;
  bump += 4096;
  return pa;
}
const root = allocTable();
/** Map 2 KiB page `i` of the GiB with the model's field definitions (a plain table writer, no engine). */
function mapPage(i: number): void {
  const iova = BASE_IOVA + i * PAGE;
  let table = root;
  for (let l = LEVELS - 1; l > 0; l--) {
    const e = table + (Math.floor(iova / 2 ** (11 + 9 * l)) % 512) * 8;
    let lo = memory.read32(e);
    if (lo === 0) {
      lo = (fieldPrep(PTE.V, 1) | fieldPrep(PTE.T, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1) | allocTable()) >>> 0;
      memory.write32(e, lo);
    }
    table = (lo & ~0xfff) >>> 0;
  }
  const pa = BASE_PA + i * PAGE;
  memory.write32(
    table + (Math.floor(iova / PAGE) % 512) * 8,
    (fieldPrep(PTE.V, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1) | pa) >>> 0,
  );
  memory.write32(table + (Math.floor(iova / PAGE) % 512) * 8 + 4, Math.floor(pa / TWO_32));
}
for (let i = 0; i < PAGES; i++) mapPage(i);
const dt = allocTable();
const RID = 1;
memory.write32(
  dt + RID * 32,
  fieldPrep(CTX.V, 1) | fieldPrep(CTX.MODE, CTX_MODE.TRANSLATE) | fieldPrep(CTX.LEVELS, LEVELS),
);
memory.write32(dt + RID * 32 + 4, fieldPrep(CTX.DID, 1));
memory.write32(dt + RID * 32 + 8, root >>> 0);
hw.write32(REG.DT_BASE_LO.offset, (dt >>> 0) | fieldPrep(BASE.LOG2SIZE, 4));
hw.write32(REG.CR.offset, fieldPrep(CR.EN, 1));

const req = newDmaRequest();
req.requesterId = RID;
const out = newDmaTranslation();
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
// Self-check: the model agrees with the layout we wrote.
req.iova = BASE_IOVA + 12345 * PAGE + 7;
hw.translate(req, out);
if (out.pa !== BASE_PA + 12345 * PAGE + 7) throw new Error(`bench: model translated to ${out.pa}`);

// --- baselines (core's bench/baselines.ts), mapping the same GiB with a 2 KiB granule --------------------------------
const { raw, tlb, jsMap } = mappedBaselines(RANGE, BASE_PA);
const rawWalk = (iovas: Float64Array) => raw.walkAll(iovas);
const rawTlb = (iovas: Float64Array) => tlb.translateAll(iovas);

// --- suites -------------------------------------------------------------------------------------------------------
const all: BenchResult[] = [];
function suite(name: string, baseline: string, iovas: Float64Array, hwName: string, base: (a: Float64Array) => number) {
  const before = { ...hw.stats };
  const r = runBench({
    name,
    baseline,
    resultsFile: RESULTS,
    cases: [
      // Target: the model within 2× the time of the bare structure it is built on.
      { name: hwName, ops: LOOKUPS, fn: () => hwTranslate(iovas), target: 0.5 },
      { name: baseline, ops: LOOKUPS, fn: () => base(iovas) },
      { name: "jsmap", ops: LOOKUPS, fn: () => jsMap.translateAll(iovas) },
    ],
  });
  const hits = hw.stats.tlbHits - before.tlbHits;
  const misses = hw.stats.tlbMisses - before.tlbMisses;
  console.log(`  model IOTLB hit rate in ${name}: ${((100 * hits) / Math.max(1, hits + misses)).toFixed(1)}%`);
  all.push(...r);
}

suite("translate-warm-random", "raw-tlb", warmRandom, "hw-warm-random", rawTlb);
suite("translate-warm-seq", "raw-tlb", warmSeq, "hw-warm-seq", rawTlb);
suite("translate-cold-random", "raw-walk", coldRandom, "hw-cold-random", rawWalk);
suite("translate-cold-seq", "raw-walk", coldSeq, "hw-cold-seq", rawWalk);

console.log("\nsummary (model ns/translation, ratio = model time / baseline time; target ≤ 2)");
for (const r of all) {
  if (!r.name.includes("/hw-")) continue;
  const base = all.find((b) => b.name === r.baseline)!;
  console.log(
    `  ${r.name.padEnd(40)} ${r.nsPerOp.toFixed(1).padStart(7)} ns   ${(r.nsPerOp / base.nsPerOp).toFixed(2)}× ${base.name}`,
  );
}
