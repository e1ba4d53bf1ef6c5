/**
 * The load case: several processes (a parent and its forks) share one iommufd and one IOAS, with a mock device
 * attached through its VFIO cdev, and map, unmap, query and DMA concurrently under the machine's random scheduler.
 * A simple model predicts every answer: each process owns a window of IOVA slots (a map of a free slot succeeds, of
 * a used one is EEXIST; an unmap returns the slot's length or ENOENT), and all race for a shared window (exactly one
 * map of each shared slot wins, the others see EEXIST). IOAS_IOVA_RANGES never changes, and DMA through the device
 * reads what the owning process wrote into the pages it mapped. Teardown must be clean.
 * @linux none: a multi-threaded VMM stress (several vCPU threads issuing iommufd ioctls on one fd)
 */
import { DmaFault, KernelError, type Process } from "@iommu-sim/core";
import { MOCK_APERTURE_START } from "@iommu-sim/drivers-mock";
import {
  ioasAlloc,
  ioasIovaRanges,
  ioasMap,
  ioasUnmap,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";
import { type Finding, normalizeMessage } from "./executor.js";
import { bootFuzzMachine } from "./machine.js";
import { Rng } from "./rng.js";

const PAGE = 4096;
/** Pages per slot. */
const SLOT_PAGES = 2;
const SLOTS = 6;
/** The device DMA goes through. */
export const LOAD_DEVICE = "mock-dev0";

/** Options of {@link runLoadCase}. */
export interface LoadOptions {
  /** Processes sharing the iommufd (default 3). */
  procs?: number;
  /** Operations per process (default 24). */
  ops?: number;
  /** Break the model on purpose (tests prove the case can fail). */
  plantWrongModel?: boolean;
}

/** What one load run did. */
export interface LoadResult {
  seed: number;
  ops: number;
  findings: Finding[];
  schedule: string;
}

function codeOf(e: unknown): string {
  if (e instanceof KernelError) return e.code;
  throw e;
}

/**
 * Run the load case once under a random schedule seeded by `seed`.
 * @linux none
 */
export async function runLoadCase(seed: number, opts: LoadOptions = {}): Promise<LoadResult> {
  const nprocs = opts.procs ?? 3;
  const nops = opts.ops ?? 24;
  const m = await bootFuzzMachine({ seed, scheduler: { kind: "random", seed } });
  const findings: Finding[] = [];
  const bad = (what: string, message: string): void => {
    findings.push({ kind: "model", signature: `model:${what}:${normalizeMessage(message)}`, message, callName: what });
  };
  const rng = new Rng(seed);
  let ops = 0;
  const p0 = m.spawnProcess();
  const fd = await p0.open("/dev/iommu");
  const ioas = await ioasAlloc(p0, fd);
  const dev = m.driverCore.deviceFor(LOAD_DEVICE);
  const vdev = dev ? vfioDeviceOf(m, dev) : undefined;
  if (!vdev) throw new Error(`${LOAD_DEVICE} has no VFIO node`);
  const dfd = await p0.open(vdev.path);
  await vfioDeviceBindIommufd(p0, dfd, fd);
  await vfioDeviceAttachPt(p0, dfd, ioas);
  const ranges0 = JSON.stringify((await ioasIovaRanges(p0, fd, ioas)).ranges, (_k, v) =>
    typeof v === "bigint" ? v.toString() : v,
  );
  const procs: Process[] = [p0];
  for (let i = 1; i < nprocs; i++) procs.push(p0.fork());
  // Each process's memory: SLOTS * SLOT_PAGES pages, every page filled with (process, page) bytes.
  const bufs = procs.map((p, i) => {
    const va = p.mmap(SLOTS * SLOT_PAGES * PAGE);
    for (let pg = 0; pg < SLOTS * SLOT_PAGES; pg++)
      p.writeMemory(va + BigInt(pg * PAGE), new Uint8Array(PAGE).fill((i * 31 + pg + 1) & 0xff));
    return va;
  });
  const slotLen = SLOT_PAGES * PAGE;
  const ownIova = (i: number, s: number) => MOCK_APERTURE_START + (i * SLOTS + s) * slotLen;
  const sharedBase = MOCK_APERTURE_START + nprocs * SLOTS * slotLen;
  const sharedIova = (s: number) => sharedBase + s * slotLen;
  /** Model: own slots mapped (by process), and the winner of each shared slot. */
  const own = procs.map(() => new Array<boolean>(SLOTS).fill(false));
  const sharedWinner = new Array<number | undefined>(SLOTS).fill(undefined);
  const pattern = (i: number, s: number) => (i * 31 + s * SLOT_PAGES + 1) & 0xff;

  const worker = (i: number) => async () => {
    const p = procs[i]!;
    const r = new Rng(rng.fork());
    for (let k = 0; k < nops; k++) {
      ops++;
      const what = r.weighted({ map: 4, unmap: 3, shared: 2, ranges: 1, dma: 2 });
      const s = r.int(SLOTS);
      if (what === "map") {
        const expect = own[i]![s] ? "EEXIST" : "ok";
        const got = await ioasMap(p, fd, {
          ioasId: ioas,
          userVa: bufs[i]! + BigInt(s * slotLen),
          length: slotLen,
          iova: ownIova(i, s),
        }).then(() => "ok", codeOf);
        if (got === "ok") own[i]![s] = true;
        const want = opts.plantWrongModel && k === 0 ? "EBUSY" : expect;
        if (got !== want) bad("IOMMU_IOAS_MAP", `proc ${i} map of own slot ${s}: got ${got}, the model says ${want}`);
      } else if (what === "unmap") {
        const expect = own[i]![s] ? String(slotLen) : "ENOENT";
        const got = await ioasUnmap(p, fd, ioas, ownIova(i, s), slotLen).then((n) => String(n), codeOf);
        if (got === String(slotLen)) own[i]![s] = false;
        if (got !== expect)
          bad("IOMMU_IOAS_UNMAP", `proc ${i} unmap of own slot ${s}: got ${got}, the model says ${expect}`);
      } else if (what === "shared") {
        const got = await ioasMap(p, fd, {
          ioasId: ioas,
          userVa: bufs[i]! + BigInt(s * slotLen),
          length: slotLen,
          iova: sharedIova(s),
        }).then(() => "ok", codeOf);
        const expect = sharedWinner[s] === undefined ? "ok" : "EEXIST";
        if (got === "ok") sharedWinner[s] = i;
        if (got !== expect)
          bad("IOMMU_IOAS_MAP", `proc ${i} map of shared slot ${s}: got ${got}, the model says ${expect}`);
      } else if (what === "ranges") {
        const got = JSON.stringify((await ioasIovaRanges(p, fd, ioas)).ranges, (_k, v) =>
          typeof v === "bigint" ? v.toString() : v,
        );
        if (got !== ranges0) bad("IOMMU_IOAS_IOVA_RANGES", `proc ${i}: ranges ${got}, the model says ${ranges0}`);
      } else {
        checkDma(i, s);
      }
      await m.scheduler.yield();
    }
  };

  const checkDma = (i: number, s: number): void => {
    const iova = ownIova(i, s);
    let got: string;
    try {
      const b = m.device(LOAD_DEVICE).dmaRead(iova, 16);
      got = b.every((x) => x === pattern(i, s)) ? "ok" : `bytes ${b[0]}`;
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      got = "fault";
    }
    const expect = own[i]![s] ? "ok" : "fault";
    if (got !== expect) bad("dma", `DMA at own slot ${s} of proc ${i}: ${got}, the model says ${expect}`);
  };

  try {
    const tasks = procs.map((_p, i) => m.scheduler.spawn(`proc${i}`, worker(i)));
    await m.scheduler.joinAll(tasks);
    for (let i = 0; i < nprocs; i++) for (let s = 0; s < SLOTS; s++) checkDma(i, s);
    for (let s = 0; s < SLOTS; s++) {
      const w = sharedWinner[s];
      let got: string;
      try {
        const b = m.device(LOAD_DEVICE).dmaRead(sharedIova(s), 16);
        got = w !== undefined && b.every((x) => x === pattern(w, s)) ? "ok" : `bytes ${b[0]}`;
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e;
        got = "fault";
      }
      const expect = w === undefined ? "fault" : "ok";
      if (got !== expect) bad("dma", `DMA at shared slot ${s}: ${got}, the model says ${expect}`);
    }
  } catch (e) {
    const msg = e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
    findings.push({ kind: "exception", signature: `exception:load:${normalizeMessage(msg)}`, message: msg });
  }
  const schedule = m.scheduler.describe();
  for (const p of procs) await p.exit();
  try {
    await m.teardown();
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    findings.push({
      kind: "teardown",
      signature: `teardown:load:${normalizeMessage(msg.split("\n")[1] ?? msg)}`,
      message: msg,
    });
  }
  return { seed, ops, findings, schedule };
}
