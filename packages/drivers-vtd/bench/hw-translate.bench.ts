/**
 * VT-d hardware-model translation beside the mock model (`mockModelBaseline` of `@iommu-sim/testkit/bench`) and the
 * raw baselines of packages/core/bench/baselines.ts, in the same process and run, same access pattern:
 *
 * - hit: a working set of 512 pages already in the IOTLB; VT-d first stage (scalable mode) vs the mock's IOTLB hit
 *   (target: ≤ 1.5× the mock);
 * - walk: random pages over 1 GiB of 4 KiB pages so nearly every lookup walks 4 levels; VT-d first stage and second
 *   stage vs the mock's 4-level walk (target: first stage ≤ 2× the mock);
 * - nested walk: first stage nested in a 4-level second stage over 64 MiB: every first-stage table fetch is
 *   translated by the second stage (informational).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-vtd/bench/hw-translate.bench.ts
 *
 * Tables are written plainly with the architecture's layouts (no engine, no driver). Results appended to
 * bench/results.json here; the VT-d rows carry the harness's `target` (the least ratio mock ns / VT-d ns that meets
 * the goal: 1/1.5 for the hit, 0.5 for the 4-level walks).
 */
import { fileURLToPath } from "node:url";
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import { mockModelBaseline } from "@iommu-sim/testkit/bench";
import { mappedBaselines, randomIovas, randomPages, setIovas } from "../../core/bench/baselines.js";
import { type BenchResult, runBench } from "../../core/bench/harness.js";
import { VtdHw } from "../src/hw/index.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const PAGE = 4 * KiB;
const PAGES = GiB / PAGE;
const NESTED_PAGES = (64 * MiB) / PAGE;
const BASE_IOVA = 1 * GiB;
const BASE_PA = 2 * GiB;
const LOOKUPS = 1 << 19;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));
const TWO_32 = 4294967296;

const RANGE = { base: BASE_IOVA, pages: PAGES, pageSize: PAGE };
const warm = setIovas(RANGE, randomPages(PAGES, 512, 7), LOOKUPS, 8);
const cold = randomIovas(RANGE, LOOKUPS, 9);
const nestedCold = randomIovas({ ...RANGE, pages: NESTED_PAGES }, LOOKUPS, 10);

// --- the VT-d model ---------------------------------------------------------------------------------------------
const memory = new PhysicalMemory({ size: 4 * GiB });
const hw = new VtdHw({
  name: "bench",
  memory,
  diag: new Diagnostics(),
  options: { tlbEntries: 4096, tlbWays: 4, pagingCacheEntries: 64, sagaw: [4] },
});
let bump = 0x1000_0000;
function alloc(): number {
  const pa = bump;
  bump += PAGE;
  return pa;
}
/** Map one 4 KiB page in a 4-level table (first stage: tables 0x27, leaf 0x67; second stage: tables/leaves R|W). */
function mapPage(root: number, iova: number, pa: number, tableBits: number, leafBits: number): void {
  let table = root;
  for (let l = 4; l > 1; l--) {
    const e = table + (Math.floor(iova / 2 ** (12 + 9 * (l - 1))) % 512) * 8;
    let lo = memory.read32(e);
    if (lo === 0) {
      lo = (alloc() | tableBits) >>> 0;
      memory.write32(e, lo);
    }
    table = (lo & ~0xfff) >>> 0;
  }
  const e = table + (Math.floor(iova / PAGE) % 512) * 8;
  memory.write32(e, ((pa >>> 0) & ~0xfff) | leafBits);
  memory.write32(e + 4, Math.floor(pa / TWO_32));
}
const fsRoot = alloc();
const ssRoot = alloc();
for (let i = 0; i < PAGES; i++) {
  mapPage(fsRoot, BASE_IOVA + i * PAGE, BASE_PA + i * PAGE, 0x27, 0x67);
  mapPage(ssRoot, BASE_IOVA + i * PAGE, BASE_PA + i * PAGE, 0x3, 0x3);
}
// Nested: a first stage whose tables live below 1 GiB, and a second stage identity-mapping them and the data.
const nFsRoot = alloc();
for (let i = 0; i < NESTED_PAGES; i++) mapPage(nFsRoot, BASE_IOVA + i * PAGE, BASE_PA + i * PAGE, 0x27, 0x67);
const nSsRoot = alloc();
const todo: number[] = [];
for (let pa = 0x1000_0000; pa < bump + 64 * PAGE; pa += PAGE) todo.push(pa);
for (let i = 0; i < NESTED_PAGES; i++) todo.push(BASE_PA + i * PAGE);
for (const pa of todo) mapPage(nSsRoot, pa, pa, 0x3, 0x3);

// Scalable mode: root → context (bus 0, devfn 1..3) → PASID directory → PASID entries 0 of each device.
const root = alloc();
const ctxTable = alloc();
memory.write32(root, (ctxTable | 1) >>> 0);
function device(devfn: number, pgtt: number, did: number): void {
  const dir = alloc();
  const pt = alloc();
  memory.write32(dir, (pt | 1) >>> 0);
  memory.write32(ctxTable + devfn * 32, (dir | 1 | (1 << 3)) >>> 0);
  memory.write32(pt, (1 | (2 << 2) | (pgtt << 6) | (pgtt === 1 ? 0 : pgtt === 3 ? nSsRoot : ssRoot)) >>> 0);
  memory.write32(pt + 8, did);
  memory.write32(pt + 16, (pgtt === 1 ? fsRoot : pgtt === 3 ? nFsRoot : 0) >>> 0);
}
device(1, 1, 11); // first stage
device(2, 2, 12); // second stage
device(3, 3, 13); // nested
hw.write32(0x20, (root | (1 << 10)) >>> 0);
hw.write32(0x18, 1 << 30);
hw.write32(0x18, (1 << 31) >>> 0);

const req = newDmaRequest();
const out = newDmaTranslation();
function vtdTranslate(sid: number, iovas: Float64Array): number {
  req.requesterId = sid;
  let sum = 0;
  for (let i = 0; i < iovas.length; i++) {
    req.iova = iovas[i]!;
    hw.translate(req, out);
    sum += out.pa;
  }
  if (out.faultCode !== 0) throw new Error(`bench: fault ${out.faultReason}`);
  return sum;
}
for (const sid of [1, 2, 3]) {
  req.requesterId = sid;
  req.iova = BASE_IOVA + 777 * PAGE + 5;
  hw.translate(req, out);
  if (out.faultCode !== 0 || out.pa !== BASE_PA + 777 * PAGE + 5) {
    throw new Error(`bench self-check: source-id ${sid} gave ${out.pa} (${out.faultReason})`);
  }
}

// --- the mock model (testkit's mockModelBaseline): the same GiB as 2 KiB pages, 4 levels, the same IOVAs ------
const mock = mockModelBaseline(RANGE, BASE_PA);
const mockTranslate = (iovas: Float64Array) => mock.translateAll(iovas);

const { raw, tlb } = mappedBaselines(RANGE, BASE_PA);

// --- suites ---------------------------------------------------------------------------------------------------------
const all: BenchResult[] = [];
function suite(name: string, cases: { name: string; fn: () => number; target?: number }[]): BenchResult[] {
  const r = runBench({
    name,
    baseline: "mock",
    resultsFile: RESULTS,
    rounds: 5,
    cases: cases.map((c) => ({ name: c.name, ops: LOOKUPS, fn: c.fn, ...(c.target ? { target: c.target } : {}) })),
  });
  all.push(...r);
  return r;
}

suite("vtd-translate-hit", [
  // Target: at most 1.5× the mock's cost (ratio = mock ns / VT-d ns ≥ 1/1.5).
  { name: "vtd-fs", fn: () => vtdTranslate(1, warm), target: 1 / 1.5 },
  { name: "mock", fn: () => mockTranslate(warm) },
  { name: "raw-tlb", fn: () => tlb.translateAll(warm) },
]);
suite("vtd-translate-walk", [
  // Target: at most 2× the mock's 4-level walk.
  { name: "vtd-fs-4level", fn: () => vtdTranslate(1, cold), target: 0.5 },
  { name: "vtd-ss-4level", fn: () => vtdTranslate(2, cold), target: 0.5 },
  { name: "mock", fn: () => mockTranslate(cold) },
  { name: "raw-walk", fn: () => raw.walkAll(cold) },
]);
suite("vtd-translate-nested-walk", [
  { name: "vtd-nested", fn: () => vtdTranslate(3, nestedCold) },
  { name: "mock", fn: () => mockTranslate(nestedCold) },
]);

console.log("\nsummary (ns/translation; ratio = model time / mock time)");
for (const r of all) {
  const base = all.find((x) => x.name === r.baseline)!;
  console.log(
    `  ${r.name.padEnd(40)} ${r.nsPerOp.toFixed(1).padStart(7)} ns   ${(r.nsPerOp / base.nsPerOp).toFixed(2)}×`,
  );
}
