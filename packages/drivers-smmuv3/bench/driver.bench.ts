/**
 * SMMUv3 driver: map and unmap 1 GiB in 4 KiB pages through `iommuMap` / `iommuUnmap` on a stage-1 domain of the
 * driver (each unmap syncs: TLBI_NH_VA + CMD_SYNC through the command queue, consumed by the hardware model),
 * beside in-run baselines measured in this process with the same pattern:
 *
 * - raw-radix (the baseline): a 4-level, 512-way radix table over `Int32Array` frames, as in core's pgtable bench;
 * - engine: core's `IoPageTable` with the driver's ARM LPAE stage-1 format, called directly (no core, no driver,
 *   no invalidation).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-smmuv3/bench/driver.bench.ts
 *
 * One op = map one 4 KiB page + unmap it again later (the whole GiB is mapped, then unmapped, per round).
 * Medians of interleaved rounds (harness.ts from packages/core/bench); results appended to bench/results.json.
 */
import { fileURLToPath } from "node:url";
import {
  createMachine,
  defaultPlatform,
  IOMMU_READ,
  IOMMU_WRITE,
  IoPageTable,
  IotlbGather,
  iommuAttachDevice,
  iommuDeviceClaimDmaOwner,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { runBench } from "../../core/bench/harness.js";
import { type ArmSmmuDevice, armLpaeFormat, armSmmuV3Driver } from "../src/index.js";

const GiB = 2 ** 30;
const PAGE = 4096;
const PAGES = GiB / PAGE;
const IOVA0 = 4 * GiB;
const PA0 = GiB;
const RW = IOMMU_READ | IOMMU_WRITE;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));

// --- baseline: raw 4-level radix over Int32Array frames ---------------------------------------------------------
class RawRadix {
  frames: Int32Array[] = [new Int32Array(1024)];
  free: number[] = [];
  private alloc(): number {
    const f = this.free.pop();
    if (f !== undefined) return f;
    this.frames.push(new Int32Array(1024));
    return this.frames.length - 1;
  }
  private leafFor(pn: number, create: boolean): number {
    let t = 0;
    for (let l = 3; l > 0; l--) {
      const idx = Math.floor(pn / 2 ** (9 * l)) & 511;
      const f = this.frames[t]!;
      let lo = f[idx << 1]!;
      if (lo === 0) {
        if (!create) return -1;
        lo = (this.alloc() << 12) | 3;
        f[idx << 1] = lo;
      }
      t = lo >>> 12;
    }
    return t;
  }
  map(pn: number, pfn: number): void {
    const f = this.frames[this.leafFor(pn, true)]!;
    const w = (pn & 511) << 1;
    if (f[w] !== 0) throw new Error("exists");
    f[w + 1] = (pfn / 1048576) | 0;
    f[w] = (pfn << 12) | 0x403;
  }
  unmap(pn: number): number {
    const t = this.leafFor(pn, false);
    if (t < 0) return 0;
    const f = this.frames[t]!;
    const w = (pn & 511) << 1;
    if (f[w] === 0) return 0;
    f[w] = 0;
    f[w + 1] = 0;
    return 1;
  }
}
const raw = new RawRadix();

// --- the machine with the SMMUv3 driver and model ----------------------------------------------------------------
const m = await createMachine({ platform: defaultPlatform(), modules: [armSmmuV3Driver], seed: 1 });
await m.boot();
const dev = m.driverCore.deviceFor("smmu-dma0")!;
await iommuDeviceClaimDmaOwner(dev, "bench");
const domain = await iommuPagingDomainAllocFlags(dev, 0);
await iommuAttachDevice(domain, dev);
const smmu = armSmmuV3Driver.instanceFor(m, "smmu0") as ArmSmmuDevice;

// --- the engine alone, same format ---------------------------------------------------------------------------------
const engine = new IoPageTable(armLpaeFormat(1, 12), m.memory, m.pages, { ias: 48, oas: 48 });
const gather = new IotlbGather();

let before = 0;
runBench({
  name: "smmuv3-driver/map+unmap 1GiB in 4KiB pages",
  baseline: "raw-radix",
  rounds: 5,
  warmup: 1,
  resultsFile: RESULTS,
  cases: [
    {
      name: "raw-radix",
      ops: PAGES,
      fn: () => {
        const pn0 = IOVA0 / PAGE;
        for (let i = 0; i < PAGES; i++) raw.map(pn0 + i, PA0 / PAGE + i);
        let n = 0;
        for (let i = 0; i < PAGES; i++) n += raw.unmap(pn0 + i);
        return n;
      },
    },
    {
      name: "engine",
      ops: PAGES,
      fn: () => {
        for (let i = 0; i < PAGES; i++) engine.map(IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, 1, RW);
        let n = 0;
        for (let i = 0; i < PAGES; i++) {
          n += engine.unmap(IOVA0 + i * PAGE, PAGE, 1, gather);
          gather.freePages(m.pages);
          gather.reset();
        }
        return n;
      },
    },
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
engine.free();
