/**
 * The model's hot path (translate's memo + IOTLB probe and its short first-stage miss path) decides exactly as the
 * full path: a strict unit (which never takes the hot path, re-checking every cached entry) and a plain one, given
 * the same first-stage or second-stage tables (legacy or scalable mode) and the same random accesses, return the
 * same bytes or the same fault and leave the same A/D bits in the leaves.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import {
  bootVtd,
  fs,
  HandTable,
  legacyCtx,
  NVME,
  PasidDir,
  pasidEntry,
  Setup,
  smCtx,
  ss,
  XHCI,
} from "./helpers/encoder.js";

const machines: Machine[] = [];
afterEach(async () => {
  for (const m of machines.splice(0)) await m.teardown();
});

/** Per 4 KiB page: unmapped, or a leaf with random RW, US, XD and A/D already set or not (page 8: PAT set). */
const pageArb = fc.record({
  mapped: fc.boolean(),
  rw: fc.boolean(),
  us: fc.boolean(),
  xd: fc.boolean(),
  a: fc.boolean(),
  d: fc.boolean(),
});
const accessArb = fc.record({
  page: fc.nat(8),
  write: fc.boolean(),
  exec: fc.boolean(),
  privileged: fc.boolean(),
  off: fc.nat(4095),
});
type Page = { mapped: boolean; rw: boolean; us: boolean; xd: boolean; a: boolean; d: boolean };

type Access = { page: number; write: boolean; exec: boolean; privileged: boolean; off: number };

/**
 * Each access of `accesses` as a DMA of `device` at `iovaOf(page) + off` (rounded down to 4 bytes): its result, or
 * the fault code and reason it raised. `attrs: false` leaves exec/privileged out (second-stage tables ignore them).
 */
function dmaOutcomes(m: Machine, device: string, accesses: Access[], iovaOf: (page: number) => number, attrs = true) {
  const seen: string[] = [];
  for (const a of accesses) {
    const iova = iovaOf(a.page) + a.off - (a.off % 4);
    const opt = attrs ? { exec: a.exec, privileged: a.privileged } : undefined;
    try {
      if (a.write) m.device(device).dmaWrite(iova, new Uint8Array([1]), opt);
      else seen.push(String(m.device(device).dmaRead(iova, 4, opt)));
      seen.push("ok");
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      seen.push(`${e.faultCode} ${e.faultReason}`);
    }
  }
  return seen;
}

async function unit(strict: boolean, sre: boolean, wpe: boolean, pages: Page[]) {
  const { m, t } = await bootVtd({ strict, tlbEntries: 4, tlbWays: 2, pagingCacheEntries: 2 });
  machines.push(m);
  const s = new Setup(t, true);
  const pd = new PasidDir(t);
  s.writeCtx(NVME, smCtx({ pasidDir: pd.dir, pasidE: true, pre: true, dte: true, pdts: 7 }));
  s.enable();
  const pt = new HandTable(t, 4, fs.table);
  pd.write(0, pasidEntry({ pgtt: 1, did: 3, fsptptr: pt.root, sre, wpe }));
  const leaves = pages.map((p, i) => {
    const buf = t.alloc(4096);
    m.memory.write32(buf, 0x1000 + i);
    let bits = p.mapped ? fs.P : 0n;
    if (p.rw) bits |= fs.RW;
    if (p.us) bits |= fs.US;
    if (p.xd) bits |= fs.XD;
    if (p.a) bits |= fs.A;
    if (p.d) bits |= fs.D;
    if (i === 8) bits |= fs.PS; // PAT in a 4 KiB leaf
    return pt.map(0x1000 * (i + 1), buf, 1, bits);
  });
  return { m, t, leaves };
}

describe("hot path", () => {
  it("agrees with the full path on random first-stage tables and accesses", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.boolean(),
        fc.array(pageArb, { minLength: 9, maxLength: 9 }),
        fc.array(accessArb, { minLength: 1, maxLength: 30 }),
        async (sre, wpe, pages, accesses) => {
          const runs = [];
          for (const strict of [false, true]) {
            const { m, t, leaves } = await unit(strict, sre, wpe, pages);
            const seen = dmaOutcomes(m, "nvme0", accesses, (page) => 0x1000 * (page + 1));
            runs.push({ seen, leaves: leaves.map((l) => t.rq(l).toString(16)) });
            await m.teardown();
            machines.pop();
          }
          expect(runs[0]).toEqual(runs[1]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("agrees with the full path on random second-stage tables (legacy mode) and accesses", async () => {
    const ssPage = fc.record({ r: fc.boolean(), w: fc.boolean(), ps: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(
        fc.array(ssPage, { minLength: 9, maxLength: 9 }),
        fc.array(accessArb, { minLength: 1, maxLength: 30 }),
        async (pages, accesses) => {
          const runs = [];
          for (const strict of [false, true]) {
            const { m, t } = await bootVtd({
              strict,
              scalableMode: false,
              tlbEntries: 4,
              tlbWays: 2,
              pagingCacheEntries: 2,
            });
            machines.push(m);
            const s = new Setup(t, false);
            const pt = new HandTable(t, 4, ss.table);
            s.writeCtx(XHCI, legacyCtx({ slptptr: pt.root, aw: 2, did: 5 }));
            s.enable();
            pages.forEach((p, i) => {
              const buf = t.alloc(4096);
              m.memory.write32(buf, 0x2000 + i);
              let bits = 0n;
              if (p.r) bits |= ss.R;
              if (p.w) bits |= ss.W;
              if (p.ps && i === 8) bits |= ss.PS; // a 4 KiB leaf with PS: reserved
              pt.map(0x1000 * (i + 1), buf, 1, bits);
            });
            const seen = dmaOutcomes(m, "xhci0", accesses, (page) => 0x1000 * (page + 1), false);
            runs.push(seen);
            await m.teardown();
            machines.pop();
          }
          expect(runs[0]).toEqual(runs[1]);
        },
      ),
      { numRuns: 40 },
    );
  });
  it("agrees with the full path on random scalable-mode second-stage tables (SSADE or not) over two 2 MiB regions", async () => {
    // Pages 0-4 in one 2 MiB region, 5-8 in the next: with two paging-structure-cache entries and a 4-entry IOTLB
    // the short path meets PSC hits, misses and replacement.
    const ssPage = fc.record({ r: fc.boolean(), w: fc.boolean(), a: fc.boolean(), d: fc.boolean() });
    const iovaOf = (page: number) => 0x1000 * (page + 1) + (page >= 5 ? 0x200000 : 0);
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(ssPage, { minLength: 9, maxLength: 9 }),
        fc.array(accessArb, { minLength: 1, maxLength: 30 }),
        async (ssade, pages, accesses) => {
          const runs = [];
          for (const strict of [false, true]) {
            const { m, t } = await bootVtd({ strict, tlbEntries: 4, tlbWays: 2, pagingCacheEntries: 2 });
            machines.push(m);
            const s = new Setup(t, true);
            const pd = new PasidDir(t);
            s.writeCtx(NVME, smCtx({ pasidDir: pd.dir, pasidE: true, pre: true, dte: true, pdts: 7 }));
            s.enable();
            const pt = new HandTable(t, 4, ss.table);
            pd.write(0, pasidEntry({ pgtt: 2, did: 4, ssptptr: pt.root, ssade }));
            const leaves = pages.map((p, i) => {
              const buf = t.alloc(4096);
              m.memory.write32(buf, 0x3000 + i);
              let bits = 0n;
              if (p.r) bits |= ss.R;
              if (p.w) bits |= ss.W;
              if (p.a) bits |= ss.A;
              if (p.d) bits |= ss.D;
              return pt.map(iovaOf(i), buf, 1, bits);
            });
            const seen = dmaOutcomes(m, "nvme0", accesses, iovaOf);
            runs.push({ seen, leaves: leaves.map((l) => t.rq(l).toString(16)) });
            await m.teardown();
            machines.pop();
          }
          expect(runs[0]).toEqual(runs[1]);
        },
      ),
      { numRuns: 40 },
    );
  });
});
