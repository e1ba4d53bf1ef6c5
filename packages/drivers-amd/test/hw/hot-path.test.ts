/**
 * The model's hot path (translate's inline IOTLB hit and its short miss path) decides exactly as the full path: a
 * strict unit (which always takes the full path, re-checking every hit) and a plain one, given the same tables and
 * the same random accesses, return the same bytes or the same fault and log the same events.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { bootAmd, NIC, Setup, v1, v1Sized } from "./helpers/encoder.js";

const machines: Machine[] = [];
afterEach(async () => {
  for (const m of machines.splice(0)) await m.teardown();
});

/** Per page: unmapped, or a 4 KiB leaf with IR/IW, or (page 8) part of a 2 MiB next-level-7 page. */
const pageArb = fc.record({ mapped: fc.boolean(), ir: fc.boolean(), iw: fc.boolean() });
const accessArb = fc.record({ page: fc.nat(9), write: fc.boolean(), off: fc.nat(4095) });

async function unit(
  strict: boolean,
  dte: { ir: boolean; iw: boolean },
  pages: { mapped: boolean; ir: boolean; iw: boolean }[],
) {
  const { m, t } = await bootAmd({ strict, tlbEntries: 4, tlbWays: 2, pdcEntries: 2 });
  machines.push(m);
  const s = new Setup(t);
  const root = t.alloc(4096);
  const l2 = t.alloc(4096);
  const l1 = t.alloc(4096);
  t.q(root, v1(l2, 2));
  t.q(l2, v1(l1, 1));
  pages.forEach((p, i) => {
    const buf = t.alloc(4096);
    m.memory.write32(buf, 0x1000 + i);
    if (p.mapped) t.q(l1 + 8 * i, v1(buf, 0, p.ir, p.iw));
  });
  // IOVA 4 MiB: a 4 MiB page by next level 7 in the L2 table (read-write).
  t.q(l2 + 16, v1Sized(t.alloc(4 << 20, 4 << 20), 22));
  s.setDte(NIC, { mode: 3, root, did: 7, ir: dte.ir, iw: dte.iw });
  return { m, s };
}

describe("hot path", () => {
  it("agrees with the full path on random tables and accesses", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ ir: fc.boolean(), iw: fc.boolean() }),
        fc.array(pageArb, { minLength: 8, maxLength: 8 }),
        fc.array(accessArb, { minLength: 1, maxLength: 30 }),
        async (dte, pages, accesses) => {
          const runs = [];
          for (const strict of [false, true]) {
            const { m, s } = await unit(strict, dte, pages);
            const seen: string[] = [];
            for (const a of accesses) {
              const iova =
                (a.page === 9 ? 4 << 20 : a.page * 4096) + (a.page === 9 ? a.off * 512 : a.off) - (a.off % 4);
              try {
                if (a.write) m.device("amd-nic0").dmaWrite(iova, new Uint8Array([1]));
                else seen.push(String(m.device("amd-nic0").dmaRead(iova, 4)));
                seen.push("ok");
              } catch (e) {
                if (!(e instanceof DmaFault)) throw e;
                seen.push(`${e.faultCode} ${e.faultReason}`);
              }
            }
            runs.push({ seen, events: s.events() });
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
