/**
 * Property test: random map / copy / unmap / attach / detach sequences; after every step each attached domain
 * translates exactly what a simple model of the IOAS says (iommuIovaToPhys against the user pages), and closing
 * leaves nothing pinned or leaked.
 */
import { iommuIovaToPhys } from "@iommu-sim/core";
import { MOCK_APERTURE_START } from "@iommu-sim/drivers-mock";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
} from "../src/index.js";
import { finish, ioasAlloc, ioasMapFixed, mockDomain, PAGE_SIZE, setup, vaPhys } from "./helpers.js";

const SLOTS = 32;
const SOAK = process.env.IOMMU_SIM_SOAK === "1";

type Op =
  | { k: "map"; slot: number; len: number; src: number }
  | { k: "copy"; from: number; len: number; to: number }
  | { k: "unmap"; pick: number }
  | { k: "unmapAll" }
  | { k: "attach" }
  | { k: "detach"; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("map" as const),
      slot: fc.nat(SLOTS - 1),
      len: fc.integer({ min: 1, max: 6 }),
      src: fc.nat(24),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("copy" as const),
      from: fc.nat(SLOTS - 1),
      len: fc.integer({ min: 1, max: 4 }),
      to: fc.nat(SLOTS - 1),
    }),
  },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("unmap" as const), pick: fc.nat(100) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("unmapAll" as const) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("attach" as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("detach" as const), pick: fc.nat(10) }) },
);

// Many machines per property run: allow for a loaded (shared, 2-core) machine.
describe("io_pagetable model", { timeout: 60_000 }, () => {
  it("every attached domain matches the model of the IOAS", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: SOAK ? 60 : 25 }), async (ops) => {
        const env = await setup({ devices: 4 });
        const ioas = await ioasAlloc(env);
        const buf = env.p.mmap(32 * PAGE_SIZE);
        // Model: IOVA page -> user VA page, and the areas (first slot, pages).
        const model = new Map<number, number>();
        const areas: { slot: number; len: number }[] = [];
        const doms: { stdevId: number; domain: () => import("@iommu-sim/core").IommuDomain }[] = [];
        let devs = 0;
        const iovaOf = (slot: number) => MOCK_APERTURE_START + slot * PAGE_SIZE;
        const free = (slot: number, len: number) => areas.every((a) => slot + len <= a.slot || slot >= a.slot + a.len);
        for (const op of ops) {
          switch (op.k) {
            case "map": {
              const ok = free(op.slot, op.len);
              const p = ioasMapFixed(env, ioas, buf + BigInt(op.src * PAGE_SIZE), op.len * PAGE_SIZE, iovaOf(op.slot));
              if (!ok) {
                await expect(p).rejects.toBeDefined();
                break;
              }
              await p;
              areas.push({ slot: op.slot, len: op.len });
              for (let i = 0; i < op.len; i++) model.set(op.slot + i, Number(buf) + (op.src + i) * PAGE_SIZE);
              break;
            }
            case "copy": {
              const covered = [...Array(op.len).keys()].every((i) => model.has(op.from + i));
              const ok = covered && free(op.to, op.len);
              const p = env.ioctl(IOMMU_IOAS_COPY, {
                size: 0,
                flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                dst_ioas_id: ioas,
                src_ioas_id: ioas,
                length: BigInt(op.len * PAGE_SIZE),
                dst_iova: BigInt(iovaOf(op.to)),
                src_iova: BigInt(iovaOf(op.from)),
              });
              if (!ok) {
                await expect(p).rejects.toBeDefined();
                break;
              }
              await p;
              const src = [...Array(op.len).keys()].map((i) => model.get(op.from + i)!);
              // A copy spanning several source areas makes one area per piece; unmap them together is fine.
              let s = op.to;
              let i = 0;
              while (i < op.len) {
                const a = areas.find((x) => op.from + i >= x.slot && op.from + i < x.slot + x.len)!;
                const n = Math.min(op.len - i, a.slot + a.len - (op.from + i));
                areas.push({ slot: s, len: n });
                s += n;
                i += n;
              }
              for (const [j, va] of src.entries()) model.set(op.to + j, va);
              break;
            }
            case "unmap": {
              if (!areas.length) break;
              const a = areas.splice(op.pick % areas.length, 1)[0]!;
              const cmd = { size: 0, ioas_id: ioas, iova: BigInt(iovaOf(a.slot)), length: BigInt(a.len * PAGE_SIZE) };
              await env.ioctl(IOMMU_IOAS_UNMAP, cmd);
              expect(cmd.length).toBe(BigInt(a.len * PAGE_SIZE));
              for (let i = 0; i < a.len; i++) model.delete(a.slot + i);
              break;
            }
            case "unmapAll":
              await env.ioctl(IOMMU_IOAS_UNMAP, { size: 0, ioas_id: ioas, iova: 0n, length: 0xffff_ffff_ffff_ffffn });
              areas.length = 0;
              model.clear();
              break;
            case "attach": {
              if (devs >= 4) break;
              const d = await mockDomain(env, ioas, `mock-t${devs++}`);
              doms.push({ stdevId: d.stdevId, domain: () => d.idev.igroup.group.domain! });
              break;
            }
            case "detach": {
              if (!doms.length) break;
              const d = doms.splice(op.pick % doms.length, 1)[0]!;
              await env.ioctl(IOMMU_DESTROY, { size: 0, id: d.stdevId });
              break;
            }
          }
          for (const d of doms) {
            for (let slot = 0; slot < SLOTS + 8; slot++) {
              const va = model.get(slot);
              const want = va === undefined ? 0 : vaPhys(env, va);
              expect(iommuIovaToPhys(d.domain(), iovaOf(slot))).toBe(want);
            }
          }
        }
        await finish(env);
      }),
      { numRuns: SOAK ? 300 : 60, seed: 42 },
    );
  });
});
