/**
 * AMD-Vi hardware-model translation, beside the in-run baselines of packages/core/bench/baselines.ts with the same
 * access pattern (raw-walk: a 4-level radix walk over typed arrays; raw-tlb: a direct-mapped typed-array TLB;
 * jsmap: a `Map`):
 *
 * - tlb-hit: v1 mode 4, 4 KiB pages, a working set of 512 pages already in the IOTLB (4096 entries, 4-way);
 * - v1-walk: v1 mode 4 over 1 GiB of 4 KiB pages, random pages, so nearly every lookup misses and walks.
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-amd/bench/hw-translate.bench.ts
 *
 * Medians of interleaved rounds (packages/core/bench/harness.ts); results appended to bench/results.json here.
 */
import { fileURLToPath } from "node:url";
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
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

const { raw, tlb, jsMap } = mappedBaselines(RANGE, BASE_PA);
const all: BenchResult[] = [];
function suite(name: string, baseline: string, base: (a: Float64Array) => number, iovas: Float64Array) {
  all.push(
    ...runBench({
      name,
      baseline,
      resultsFile: RESULTS,
      rounds: 5,
      cases: [
        { name: "amd", ops: LOOKUPS, fn: () => hwTranslate(iovas) },
        { name: baseline, ops: LOOKUPS, fn: () => base(iovas) },
        { name: "jsmap", ops: LOOKUPS, fn: () => jsMap.translateAll(iovas) },
      ],
    }),
  );
}
suite("amd-tlb-hit", "raw-tlb", (a) => tlb.translateAll(a), warm);
suite("amd-v1-walk", "raw-walk", (a) => raw.walkAll(a), cold);

console.log("\nsummary (model ns/translation; ratio = model time / baseline time)");
for (const r of all) {
  if (!r.name.endsWith("/amd")) continue;
  const base = all.find((x) => x.name === r.baseline)!;
  console.log(
    `  ${r.name.padEnd(24)} ${r.nsPerOp.toFixed(1).padStart(7)} ns   ${(r.nsPerOp / base.nsPerOp).toFixed(2)}× ${base.name}`,
  );
}
