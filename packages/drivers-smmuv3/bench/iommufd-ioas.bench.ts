/**
 * iommufd on the SMMUv3 driver: IOMMU_IOAS_MAP + IOMMU_IOAS_UNMAP of 1 GiB of 4 KiB user pages into an IOAS whose
 * paging domain is an SMMUv3 stage-1 domain (a VFIO device bound and attached, as a VMM does it), beside the bare
 * `iommuMap` + `iommuUnmap` of the same physically contiguous runs into that same domain (the baseline, measured
 * in this process between the iommufd rounds, while the IOAS is empty).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-smmuv3/bench/iommufd-ioas.bench.ts
 *
 * One op = one 4 KiB page mapped and unmapped again. Target (issue #17): the iommufd path costs at most 3x the
 * bare calls (ratio >= 0.333). Medians of interleaved rounds; results appended to bench/results.json.
 */
import { fileURLToPath } from "node:url";
import { createMachine, defaultPlatform, iommuGetDomainForDev, RLIM_INFINITY } from "@iommu-sim/core";
import { ioasAlloc, iommufdModule, vfioDeviceAttachPt, vfioDeviceBindIommufd, vfioDeviceOf } from "@iommu-sim/iommufd";
import { appendResults, type BenchResult } from "../../core/bench/harness.js";
import { ioasWorkload } from "../../iommufd/bench/ioas-workload.js";
import { armSmmuV3Driver } from "../src/index.js";

const PAGE = 4096;
const GIB = 2 ** 30;
const NPAGES = GIB / PAGE;
const IOVA0 = 4 * GIB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SUITE = "smmuv3-iommufd/IOAS_MAP+IOAS_UNMAP 1GiB";

const m = await createMachine({
  platform: defaultPlatform(),
  modules: [armSmmuV3Driver, iommufdModule],
  seed: 1,
  trackFreeStacks: false,
});
await m.boot();
const dev = m.driverCore.deviceFor("smmu-dma0")!;
const p = m.spawnProcess({ rlimits: { RLIMIT_MEMLOCK: RLIM_INFINITY } });
const fd = await p.open("/dev/iommu");
const ioasId = await ioasAlloc(p, fd);
const devfd = await p.open(vfioDeviceOf(m, dev)!.path);
await vfioDeviceBindIommufd(p, devfd, fd);
await vfioDeviceAttachPt(p, devfd, ioasId);
const domain = iommuGetDomainForDev(dev)!;
const buf = p.mmap(GIB);

// The first IOAS_MAP faults the buffer in; the baseline maps exactly its physically contiguous runs, as iommufd does.
const { mapUnmapIommufd, mapUnmapBare: bare, runs } = await ioasWorkload(p, fd, ioasId, buf, GIB, IOVA0);
const mapUnmapBare = async () => bare(domain);

const cases = [
  { name: "bare-iommuMap/iommuUnmap", fn: mapUnmapBare, t: [] as number[], cpu: [] as number[] },
  { name: "IOAS_MAP+IOAS_UNMAP", fn: mapUnmapIommufd, t: [] as number[], cpu: [] as number[] },
];
for (const c of cases) await c.fn();
for (let r = 0; r < ROUNDS; r++) {
  for (const c of cases) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await c.fn();
    c.t.push(Number(process.hrtime.bigint() - t0));
    const c1 = process.cpuUsage(c0);
    c.cpu.push((c1.user + c1.system) * 1000);
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const baseNs = med(cases[0]!.t);
const results: BenchResult[] = cases.map((c, k) => {
  const ns = med(c.t);
  const r: BenchResult = {
    name: `${SUITE}/${c.name}`,
    opsPerSec: (NPAGES * 1e9) / ns,
    nsPerOp: ns / NPAGES,
    baseline: `${SUITE}/${cases[0]!.name}`,
    ratio: baseNs / ns,
    roundsNsPerOp: c.t.map((t) => t / NPAGES),
    date: new Date().toISOString(),
  };
  if (k === 1) r.target = 1 / 3;
  const verdict = r.target === undefined ? "" : `  target >= 0.333 ${r.ratio >= r.target ? "met" : "MISSED"}`;
  // CPU time (all threads, GC included): on a loaded machine a steadier figure than the wall clock.
  const cpu = med(c.cpu) / NPAGES;
  console.log(
    `${c.name.padEnd(28)} ${r.nsPerOp.toFixed(1).padStart(8)} ns/page  ratio ${r.ratio.toFixed(3)}${verdict}  (cpu ${cpu.toFixed(1)} ns/page)`,
  );
  return r;
});
appendResults(fileURLToPath(new URL("./results.json", import.meta.url)), results);
console.log(`(${runs.length} physically contiguous runs in the 1 GiB buffer)`);
await p.exit();
await m.teardown();
