/**
 * The ARM LPAE stage-1 format (driver/io-pgtable-arm.ts) on core's page-table engine against the engine's own
 * test format (core/src/pgtable/fmt/test-4k.ts), doing the same work in the same process: same memory, same page
 * allocator, 1 GiB of 4 KiB pages mapped and unmapped
 *
 * - in one call each (what the engine's own bench measures: 1 map of 262144 pages, 1 unmap), and
 * - one page per call (what a caller mapping page by page pays: the per-call checks and the root-to-leaf descent
 *   are paid per page, for either format).
 *
 * Target (issue #17): the LPAE format costs at most 1.5x the test format for the same work (ratio >= 0.667).
 * Comparing one-page-per-call LPAE against the one-call test format measures the calling pattern, not the format.
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-smmuv3/bench/lpae-format.bench.ts
 */
import { fileURLToPath } from "node:url";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  IoPageTable,
  IotlbGather,
  PageAllocator,
  type PageTableFormat,
  PhysicalMemory,
} from "@iommu-sim/core";
import { runBench } from "../../core/bench/harness.js";
import { TEST_4K_FORMAT } from "../../core/src/pgtable/fmt/test-4k.js";
import { armLpaeFormat } from "../src/index.js";

const GiB = 2 ** 30;
const PAGE = 4096;
const PAGES = GiB / PAGE;
const IOVA0 = 64 * GiB;
const PA0 = 8 * GiB;
const RW = IOMMU_READ | IOMMU_WRITE;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));
const TARGET = 1 / 1.5;

const memory = new PhysicalMemory({ size: 16 * GiB });
const pages = new PageAllocator(memory);
const gather = new IotlbGather();

function table(fmt: PageTableFormat): IoPageTable {
  return new IoPageTable(fmt, memory, pages, { ias: 48, oas: 48 });
}
const test4k = table(TEST_4K_FORMAT);
const lpae = table(armLpaeFormat(1, 12));

function oneCall(pt: IoPageTable): number {
  pt.map(IOVA0, PA0, PAGE, PAGES, RW);
  gather.reset();
  const n = pt.unmap(IOVA0, PAGE, PAGES, gather);
  gather.freePages(pages);
  return n;
}

function perPage(pt: IoPageTable): number {
  for (let i = 0; i < PAGES; i++) pt.map(IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, 1, RW);
  let n = 0;
  for (let i = 0; i < PAGES; i++) {
    gather.reset();
    n += pt.unmap(IOVA0 + i * PAGE, PAGE, 1, gather);
    gather.freePages(pages);
  }
  return n;
}

runBench({
  name: "lpae-format/map+unmap 1GiB of 4KiB pages in one call each",
  baseline: "test-4k",
  rounds: 7,
  resultsFile: RESULTS,
  cases: [
    { name: "test-4k", ops: PAGES, fn: () => oneCall(test4k) },
    { name: "arm-lpae-s1-4k", ops: PAGES, target: TARGET, fn: () => oneCall(lpae) },
  ],
});

runBench({
  name: "lpae-format/map+unmap 1GiB one 4KiB page per call",
  baseline: "test-4k",
  rounds: 5,
  warmup: 1,
  resultsFile: RESULTS,
  cases: [
    { name: "test-4k", ops: PAGES, fn: () => perPage(test4k) },
    { name: "arm-lpae-s1-4k", ops: PAGES, target: TARGET, fn: () => perPage(lpae) },
  ],
});

test4k.free();
lpae.free();
