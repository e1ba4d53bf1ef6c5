/**
 * Generic page-table engine: map/unmap/iova_to_phys against plain-JS baselines measured in the same process.
 *
 *   npx tsx packages/core/bench/pgtable.bench.ts
 *
 * Format: the test LPAE-shaped 4 KiB, 4-level format (fmt/test-4k.ts), IAS 48.
 * Baselines, the shared ones of baselines.ts:
 * - raw radix (RawRadix): a 4-level, 512-way radix table over Int32Array frames (lo/hi words per entry) with integer
 *   arithmetic, walking to the leaf table once per 512 pages as the engine does; its map allocates zeroed frames, its
 *   unmap clears entries (and drops emptied leaf frames when a whole table is covered).
 * - map (PageMap): a Map<pageNumber, frame> set/delete/get per page.
 * - tlb (DirectTlb): a direct-mapped Int32Array TLB lookup (tag + data arrays), for iova_to_phys only.
 * Figures are medians of ROUNDS rounds, interleaved across cases. Results are appended to bench/results.json.
 */
import { IoPageTable } from "../src/pgtable/engine.js";
import { TEST_4K_FORMAT } from "../src/pgtable/fmt/test-4k.js";
import { IotlbGather } from "../src/pgtable/gather.js";
import { IOMMU_READ, IOMMU_WRITE } from "../src/pgtable/prot.js";
import { PhysicalMemory } from "../src/platform/memory.js";
import { PageAllocator } from "../src/platform/page-alloc.js";
import { DirectTlb, PageMap, pageNumbers, RawRadix, randomIovas } from "./baselines.js";
import { appendResults, type BenchResult } from "./harness.js";

const ROUNDS = 7;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const RW = IOMMU_READ | IOMMU_WRITE;
const PAGES_1G = GiB / (4 * KiB); // 262144
const BASE_IOVA = 64 * GiB;
const BASE_PA = 8 * GiB;
const LOOKUPS = 1 << 20;

// --- the engine ---------------------------------------------------------------------------------------------------
const memory = new PhysicalMemory({ size: 16 * GiB });
const alloc = new PageAllocator(memory);
const pt = new IoPageTable(TEST_4K_FORMAT, memory, alloc, { ias: 48, oas: 48 });
const gather = new IotlbGather();

function engineUnmap(iova: number, pgsize: number, count: number): number {
  gather.reset();
  const n = pt.unmap(iova, pgsize, count, gather);
  gather.freePages(alloc);
  return n;
}

// --- baselines (baselines.ts) ----------------------------------------------------------------------------------
const raw = new RawRadix(12);
const jsMap = new PageMap(4096);
const tlb = new DirectTlb(12, 4096);

// --- timing -------------------------------------------------------------------------------------------------------
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
let sink = 0;
function time(fn: () => number): number {
  const t0 = process.hrtime.bigint();
  sink += fn();
  return Number(process.hrtime.bigint() - t0);
}

interface Pair {
  name: string;
  ops: number;
  /** Cases timed in one round, in order (e.g. map then unmap, so the state returns to empty). */
  steps: { name: string; fn: () => number }[];
}

/** Run every pair's steps ROUNDS times (after 2 warm-up rounds), interleaved; ns per op per step name. */
function measure(pairs: Pair[]): Map<string, number> {
  const out = new Map<string, number[]>();
  for (let r = -2; r < ROUNDS; r++) {
    for (const p of pairs) {
      for (const s of p.steps) {
        const ns = time(s.fn) / p.ops;
        if (r >= 0) {
          const k = `${p.name}/${s.name}`;
          if (!out.has(k)) out.set(k, []);
          out.get(k)!.push(ns);
        }
      }
    }
  }
  return new Map([...out].map(([k, v]) => [k, median(v)]));
}

const results: BenchResult[] = [];
const date = new Date().toISOString();
function report(title: string, rows: { name: string; ns: number }[], baselines: string[]) {
  console.log(`\n${title} (median of ${ROUNDS} rounds, ns per page/op)`);
  const byName = new Map(rows.map((r) => [r.name, r.ns]));
  for (const r of rows) {
    const ratios = baselines
      .filter((b) => b !== r.name && byName.has(b))
      .map((b) => `${(r.ns / byName.get(b)!).toFixed(2)}× ${b}`)
      .join(", ");
    console.log(`  ${r.name.padEnd(40)} ${r.ns.toFixed(2).padStart(9)} ns   ${ratios}`);
    const base = baselines[0]!;
    const baseNs = byName.get(base)!;
    results.push({
      name: `pgtable/${r.name}`,
      opsPerSec: 1e9 / r.ns,
      nsPerOp: r.ns,
      baseline: `pgtable/${base}`,
      ratio: baseNs / r.ns,
      roundsNsPerOp: [],
      date,
    });
  }
}

// (1) 1 GiB as 4 KiB pages, one call each.
const pn0 = BASE_IOVA / 4096;
const pfn0 = BASE_PA / 4096;
{
  const m = measure([
    {
      name: "1g-4k",
      ops: PAGES_1G,
      steps: [
        { name: "engine-map", fn: () => pt.map(BASE_IOVA, BASE_PA, 4 * KiB, PAGES_1G, RW) },
        { name: "engine-unmap", fn: () => engineUnmap(BASE_IOVA, 4 * KiB, PAGES_1G) },
        {
          name: "raw-map",
          fn: () => {
            raw.map(pn0, pfn0, PAGES_1G);
            return 0;
          },
        },
        { name: "raw-unmap", fn: () => raw.unmap(pn0, PAGES_1G) },
        {
          name: "jsmap-map",
          fn: () => {
            jsMap.map(pn0, pfn0, PAGES_1G);
            return 0;
          },
        },
        {
          name: "jsmap-unmap",
          fn: () => {
            jsMap.unmap(pn0, PAGES_1G);
            return 0;
          },
        },
      ],
    },
  ]);
  const g = (k: string) => ({ name: k, ns: m.get(`1g-4k/${k}`)! });
  report("map 1 GiB as 4 KiB pages", [g("engine-map"), g("raw-map"), g("jsmap-map")], ["raw-map", "jsmap-map"]);
  report(
    "unmap 1 GiB of 4 KiB pages",
    [g("engine-unmap"), g("raw-unmap"), g("jsmap-unmap")],
    ["raw-unmap", "jsmap-unmap"],
  );
}

// (2) 1 GiB as 2 MiB pages (per 2 MiB page; the Map baseline stores 512 page numbers per 2 MiB).
{
  const n = GiB / (2 * MiB);
  const m = measure([
    {
      name: "1g-2m",
      ops: n,
      steps: [
        { name: "engine-map", fn: () => pt.map(BASE_IOVA, BASE_PA, 2 * MiB, n, RW) },
        { name: "engine-unmap", fn: () => engineUnmap(BASE_IOVA, 2 * MiB, n) },
      ],
    },
  ]);
  report(
    "map/unmap 1 GiB as 2 MiB pages (ns per 2 MiB page)",
    [
      { name: "2m-engine-map", ns: m.get("1g-2m/engine-map")! },
      { name: "2m-engine-unmap", ns: m.get("1g-2m/engine-unmap")! },
    ],
    ["2m-engine-map"],
  );
}

// (3) a single 4 KiB map + unmap, tables already present; (4) 256 × 4 KiB in one call.
{
  const REPS = 20000;
  // Keep the leaf tables alive: a neighbour page in each 2 MiB stays mapped.
  pt.map(BASE_IOVA - 4096, BASE_PA, 4 * KiB, 1, RW);
  raw.map(pn0 - 1, pfn0, 1);
  const m = measure([
    {
      name: "single",
      ops: REPS,
      steps: [
        {
          name: "engine-map+unmap",
          fn: () => {
            let s = 0;
            for (let i = 0; i < REPS; i++) {
              const iova = BASE_IOVA - 8192 - (i & 255) * 4096;
              s += pt.map(iova, BASE_PA, 4 * KiB, 1, RW);
              gather.reset();
              s += pt.unmap(iova, 4 * KiB, 1, gather);
            }
            return s;
          },
        },
        {
          name: "raw-map+unmap",
          fn: () => {
            let s = 0;
            for (let i = 0; i < REPS; i++) {
              const pn = pn0 - 2 - (i & 255);
              raw.map(pn, pfn0, 1);
              s += raw.unmap(pn, 1);
            }
            return s;
          },
        },
        {
          name: "jsmap-map+unmap",
          fn: () => {
            for (let i = 0; i < REPS; i++) {
              const pn = pn0 - 2 - (i & 255);
              jsMap.map(pn, pfn0);
              jsMap.unmap(pn);
            }
            return jsMap.size;
          },
        },
      ],
    },
    {
      name: "256x4k",
      ops: 256 * 200,
      steps: [
        {
          name: "engine-map+unmap",
          fn: () => {
            let s = 0;
            for (let i = 0; i < 200; i++) {
              s += pt.map(BASE_IOVA + MiB, BASE_PA, 4 * KiB, 256, RW);
              gather.reset();
              s += pt.unmap(BASE_IOVA + MiB, 4 * KiB, 256, gather);
            }
            return s;
          },
        },
        {
          name: "raw-map+unmap",
          fn: () => {
            let s = 0;
            for (let i = 0; i < 200; i++) {
              raw.map(pn0 + 256, pfn0, 256);
              s += raw.unmap(pn0 + 256, 256);
            }
            return s;
          },
        },
        {
          name: "jsmap-map+unmap",
          fn: () => {
            for (let i = 0; i < 200; i++) {
              jsMap.map(pn0 + 256, pfn0, 256);
              jsMap.unmap(pn0 + 256, 256);
            }
            return jsMap.size;
          },
        },
      ],
    },
  ]);
  const g = (p: string, k: string, label: string) => ({ name: label, ns: m.get(`${p}/${k}`)! });
  report(
    "single 4 KiB map+unmap (ns per map+unmap)",
    [
      g("single", "engine-map+unmap", "single-engine"),
      g("single", "raw-map+unmap", "single-raw"),
      g("single", "jsmap-map+unmap", "single-jsmap"),
    ],
    ["single-raw", "single-jsmap"],
  );
  report(
    "256 × 4 KiB map+unmap in one call (ns per page)",
    [
      g("256x4k", "engine-map+unmap", "256-engine"),
      g("256x4k", "raw-map+unmap", "256-raw"),
      g("256x4k", "jsmap-map+unmap", "256-jsmap"),
    ],
    ["256-raw", "256-jsmap"],
  );
}

// (5) iova_to_phys at random pages of 1 GiB mapped as 4 KiB pages.
{
  pt.map(BASE_IOVA, BASE_PA, 4 * KiB, PAGES_1G, RW);
  raw.map(pn0, pfn0, PAGES_1G);
  jsMap.map(pn0, pfn0, PAGES_1G);
  const iovas = randomIovas({ base: BASE_IOVA, pages: PAGES_1G, pageSize: 4096 }, LOOKUPS, 7, 1);
  const pns = pageNumbers(iovas, 4096);
  for (let i = 0; i < tlb.tag.length; i++) tlb.fill(pn0 + i, pfn0 + i);
  const m = measure([
    {
      name: "lookup",
      ops: LOOKUPS,
      steps: [
        {
          name: "engine",
          fn: () => {
            let s = 0;
            for (let i = 0; i < LOOKUPS; i++) s += pt.iovaToPhys(iovas[i]!);
            return s;
          },
        },
        {
          name: "raw-walk",
          fn: () => raw.walkAll(iovas),
        },
        {
          name: "tlb",
          fn: tlb.lookupAllFn(pns),
        },
        {
          name: "jsmap",
          fn: () => {
            let s = 0;
            for (let i = 0; i < LOOKUPS; i++) s += jsMap.lookup(pns[i]!);
            return s;
          },
        },
      ],
    },
  ]);
  const g = (k: string) => ({ name: `lookup-${k}`, ns: m.get(`lookup/${k}`)! });
  report(
    "iova_to_phys, random 4 KiB pages of 1 GiB",
    [g("engine"), g("raw-walk"), g("tlb"), g("jsmap")],
    ["lookup-raw-walk", "lookup-tlb", "lookup-jsmap"],
  );
}

console.log(
  `\ntable pages in use: ${pt.tablePages} (${((pt.tablePages * 4096) / (PAGES_1G * 8)).toFixed(3)} × N × 8 bytes)`,
);
pt.free();
appendResults(new URL("./results.json", import.meta.url).pathname, results);
if (sink === -1) console.log(sink);
