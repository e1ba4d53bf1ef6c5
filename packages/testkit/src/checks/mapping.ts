/**
 * Mapping: random map/unmap sequences compared three ways after every step — the driver's iova_to_phys, the
 * hardware model's translation of a real device DMA (read and write, with permissions), and a plain reference
 * model — for every claimed page size. Also the invalidation discipline: the same sequences in the model's strict
 * mode (every cache hit re-checked against memory) with domain replacement and reuse.
 * @linux iommu_map / iommu_unmap / iommu_iova_to_phys, the io-pgtable and generic_pt kunit tests
 */
import {
  type Device,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuIovaToPhys,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  mulberry32,
} from "@iommu-sim/core";
import { check, hex } from "../errors.js";
import { type Rig, withRig } from "../rig.js";
import type { ConformanceTarget } from "../target.js";
import type { CheckContext, ConformanceCheck } from "./types.js";

const SLOTS = 8;
const CHUNKS = 4;

/** What the reference model says one slot holds. */
interface Entry {
  chunk: number;
  writable: boolean;
}

/** A pool of `CHUNKS` physically contiguous, `size`-aligned chunks, each filled with its own byte. */
function chunkPool(rig: Rig, size: number): number[] {
  const order = Math.max(0, Math.log2(size / 4096));
  const pool: number[] = [];
  if (size < 4096) {
    const per = 4096 / size;
    for (let i = 0; i < CHUNKS; i += per) {
      const pa = rig.page();
      for (let j = 0; j < per && i + j < CHUNKS; j++) pool.push(pa + j * size);
    }
  } else {
    for (let i = 0; i < CHUNKS; i++) pool.push(rig.page(0, order));
  }
  for (const [i, pa] of pool.entries()) rig.m.memory.fill(pa, size, 0x40 + i);
  return pool;
}

/**
 * Drive one domain (attached to `dev`) through `steps` random map/unmap operations at page size `size`, checking
 * the three views after each. Returns the model so the caller can unmap what is left.
 */
export async function randomMapSequence(
  rig: Rig,
  ctx: { seed: number; steps: number; size: number; devName: string; domain: IommuDomain; pool: number[] },
): Promise<Map<number, Entry>> {
  const { size, domain, pool, seed, devName } = ctx;
  const rnd = mulberry32(seed);
  const pick = (n: number) => Math.floor(rnd() * n);
  const base = Math.ceil(rig.target.caps.iova.base / size) * size;
  const model = new Map<number, Entry>();
  const mem = rig.m.memory;
  const where = (step: number, what: string) => `page size ${hex(size)}, step ${step} (${what})`;
  let stamp = 1;
  for (let step = 0; step < ctx.steps; step++) {
    const slot = pick(SLOTS);
    const iova = base + slot * size;
    const e = model.get(slot);
    let what: string;
    if (e === undefined && rnd() < 0.6) {
      // Map a run of free slots (1..3) onto consecutive chunks.
      let n = 1 + pick(3);
      while (n > 1 && (slot + n > SLOTS || [...Array(n).keys()].some((k) => model.has(slot + k)))) n--;
      const chunk = pick(CHUNKS - n + 1);
      const writable = rnd() < 0.7;
      // Consecutive chunks are contiguous only when allocated so; map each page separately unless they are.
      for (let k = 0; k < n; k++) {
        iommuMap(domain, iova + k * size, pool[chunk + k]!, size, writable ? IOMMU_READ | IOMMU_WRITE : IOMMU_READ);
        model.set(slot + k, { chunk: chunk + k, writable });
      }
      what = `map ${n} page(s) at ${hex(iova)} ${writable ? "RW" : "RO"}`;
    } else if (e !== undefined && rnd() < 0.5) {
      const got = iommuUnmap(domain, iova, size);
      check(got === size, `${where(step, `unmap ${hex(iova)}`)}: unmapped ${got} bytes, want ${size}`, seed);
      model.delete(slot);
      what = `unmap ${hex(iova)}`;
    } else {
      what = `DMA at ${hex(iova)}`;
    }
    // Three views of two sampled slots (the one touched and a random one).
    for (const s of new Set([slot, pick(SLOTS)])) {
      const off = Math.min(size - 8, 8 * pick(size / 8));
      const at = base + s * size + off;
      const m = model.get(s);
      const wantPa = m ? pool[m.chunk]! + off : 0;
      const drv = iommuIovaToPhys(domain, at);
      check(drv === wantPa, `${where(step, what)}: iova_to_phys(${hex(at)}) = ${hex(drv)}, want ${hex(wantPa)}`, seed);
      const r = rig.read(devName, at, 8);
      if (!m) {
        check(r === "fault", `${where(step, what)}: DMA read at unmapped ${hex(at)} did not fault`, seed);
        check(
          !rig.write(devName, at, new Uint8Array(8)),
          `${where(step, what)}: DMA write at unmapped ${hex(at)}`,
          seed,
        );
        continue;
      }
      check(r !== "fault", `${where(step, what)}: DMA read at mapped ${hex(at)} faulted`, seed);
      const expect = mem.readBytes(wantPa, 8);
      check(
        r.every((b, i) => b === expect[i]),
        `${where(step, what)}: DMA read at ${hex(at)} disagrees with memory at ${hex(wantPa)}`,
        seed,
      );
      const bytes = new Uint8Array(8).fill(stamp++ & 0xff);
      const wrote = rig.write(devName, at, bytes);
      if (m.writable) {
        check(wrote, `${where(step, what)}: DMA write at RW ${hex(at)} faulted`, seed);
        const landed = mem.readBytes(wantPa, 8);
        check(
          landed.every((b, i) => b === bytes[i]),
          `${where(step, what)}: write did not land at ${hex(wantPa)}`,
          seed,
        );
      } else {
        check(!wrote, `${where(step, what)}: DMA write through a read-only mapping at ${hex(at)} completed`, seed);
      }
    }
  }
  return model;
}

function unmapAll(domain: IommuDomain, model: Map<number, Entry>, base: number, size: number): void {
  for (const s of model.keys()) iommuUnmap(domain, base + s * size, size);
  model.clear();
}

function sizesFits(t: ConformanceTarget, size: number): string | undefined {
  if (!t.caps.pageSizes.includes(size)) return `page size ${hex(size)} not claimed`;
  if (t.caps.iova.size < (SLOTS + 1) * size)
    return `the IOVA window is smaller than ${SLOTS + 1} pages of ${hex(size)}`;
  if (size > 4096 << 10) return `page size ${hex(size)} above the page allocator's largest block`;
  return undefined;
}

async function ownedPaging(rig: Rig, dev: Device, flags = 0): Promise<IommuDomain> {
  const d = await iommuPagingDomainAllocFlags(dev, flags);
  await iommuGroupReplaceDomain(rig.group(dev), d);
  return d;
}

function threeWay(size: number): ConformanceCheck {
  return {
    id: `mapping/three-way-${hex(size)}`,
    title: `random map/unmap at page size ${hex(size)}: iova_to_phys, device DMA and a reference model agree`,
    applies: (t) => sizesFits(t, size),
    async run(ctx: CheckContext) {
      const { target } = ctx;
      const runs = ctx.runs(4, 40);
      for (let r = 0; r < runs; r++) {
        await withRig(target, { seed: ctx.seed + r }, async (rig) => {
          const devName = target.devices.primary;
          const dev = rig.dev(devName);
          await iommuDeviceClaimDmaOwner(dev, "testkit");
          const domain = await ownedPaging(rig, dev);
          const pool = chunkPool(rig, size);
          const model = await randomMapSequence(rig, { seed: ctx.seed + r, steps: 60, size, devName, domain, pool });
          unmapAll(domain, model, Math.ceil(target.caps.iova.base / size) * size, size);
          await iommuDeviceReleaseDmaOwner(dev);
          iommuDomainFree(domain);
        });
      }
    },
  };
}

/**
 * The mapping checks for the page sizes the target claims (a check per claimed size, plus the common sizes
 * reported n/a when not claimed).
 */
export function mappingChecks(target: ConformanceTarget | undefined): ConformanceCheck[] {
  const sizes = new Set<number>([4096, 2 * 1024 * 1024, ...(target?.caps.pageSizes ?? [])]);
  return [...sizes].sort((a, b) => a - b).map(threeWay);
}

/** Strict-mode campaign: random map/unmap/replace/realloc with DMA on tiny caches; no stale hit may be reported. */
export const strictCheck: ConformanceCheck = {
  id: "invalidation/strict-random",
  title: "random map/unmap/replace/free sequences in the model's strict mode report no stale cache hit",
  applies: (t) => (t.caps.strict ? undefined : "no strict mode in the hardware model"),
  async run(ctx) {
    const { target } = ctx;
    const size = target.caps.pageSizes[0]!;
    const runs = ctx.runs(6, 60);
    for (let r = 0; r < runs; r++) {
      const seed = ctx.seed + r;
      await withRig(target, { seed, strict: true }, async (rig) => {
        const devName = target.devices.primary;
        const dev = rig.dev(devName);
        const rnd = mulberry32(seed);
        await iommuDeviceClaimDmaOwner(dev, "testkit");
        const base = Math.ceil(target.caps.iova.base / size) * size;
        const pool = chunkPool(rig, size);
        const domains = [await ownedPaging(rig, dev), await iommuPagingDomainAllocFlags(dev, 0)];
        let cur = 0;
        const models: Map<number, Entry>[] = [new Map(), new Map()];
        for (let round = 0; round < 6; round++) {
          const model = await randomMapSequence(rig, {
            seed: seed * 31 + round,
            steps: 12,
            size,
            devName,
            domain: domains[cur]!,
            pool,
          });
          for (const [k, v] of model) models[cur]!.set(k, v);
          unmapAll(domains[cur]!, models[cur]!, base, size);
          const other = 1 - cur;
          if (rnd() < 0.5) {
            // Free the idle domain and allocate a new one: its tag (ASID/DID/VMID) may be reused at once.
            iommuDomainFree(domains[other]!);
            domains[other] = await iommuPagingDomainAllocFlags(dev, 0);
          }
          await iommuGroupReplaceDomain(rig.group(dev), domains[other]!);
          cur = other;
          const stale = rig.m.diag.unexpected().filter((d) => /stale/i.test(d.message));
          check(stale.length === 0, () => `strict mode found a stale cache hit: ${stale[0]!.message}`, seed);
        }
        await iommuDeviceReleaseDmaOwner(dev);
        for (const d of domains) iommuDomainFree(d);
      });
    }
  },
};
