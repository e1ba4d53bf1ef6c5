import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CacheSetIndex, HwRing, pollHwProgress } from "../../src/index.js";

/** A reference queue: a plain array with a capacity. */
function model(capacity: number) {
  const items: number[] = [];
  return { items, capacity };
}

describe("HwRing", () => {
  for (const wrap of [true, false]) {
    it(`${wrap ? "wrap-bit" : "one-slot-empty"} ring agrees with an array model`, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 4 }),
          fc.array(fc.integer({ min: -3, max: 3 }), { maxLength: 60 }),
          (shift, ops) => {
            const r = new HwRing(shift, wrap);
            const m = model(wrap ? r.size : r.size - 1);
            let prod = 0;
            let cons = 0;
            for (const op of ops) {
              if (op > 0) {
                const n = Math.min(op, r.freeSlots(prod, cons));
                expect(n).toBe(Math.min(op, m.capacity - m.items.length));
                const before = prod;
                prod = r.advance(prod, n);
                for (let i = 0; i < n; i++) m.items.push(r.idx(before + i));
              } else if (op < 0) {
                const n = Math.min(-op, r.used(prod, cons));
                expect(n).toBe(Math.min(-op, m.items.length));
                const first = cons;
                cons = r.advance(cons, n);
                m.items.splice(0, n);
                if (n > 0) expect(r.consumed(prod, cons, first)).toBe(true);
              }
              expect(r.isEmpty(prod, cons)).toBe(m.items.length === 0);
              expect(r.isFull(prod, cons)).toBe(m.items.length === m.capacity);
              expect(r.used(prod, cons)).toBe(m.items.length);
              if (m.items.length > 0) expect(r.consumed(prod, cons, cons)).toBe(false);
            }
          },
        ),
      );
    });
  }

  it("pollHwProgress waits for a slow unit and gives up on a stopped one", () => {
    let hw = 0;
    pollHwProgress(
      0,
      () => ++hw,
      () => hw >= 100,
      3,
      () => "stuck",
    );
    expect(hw).toBe(100);
    let polls = 0;
    expect(() =>
      pollHwProgress(
        0,
        () => {
          polls++;
          return 0;
        },
        () => false,
        5,
        () => "unit stopped",
      ),
    ).toThrow(/unit stopped/);
    expect(polls).toBe(5);
  });
});

describe("CacheSetIndex", () => {
  it("fills free ways first, then evicts round-robin or least recently used", () => {
    const keys = new Int32Array(4).fill(-1);
    const rr = new CacheSetIndex({ entries: 4, ways: 4, replacement: "round-robin" });
    for (let i = 0; i < 4; i++) keys[rr.pick(0, keys)] = i;
    expect([...keys]).toEqual([0, 1, 2, 3]);
    expect([rr.pick(0, keys), rr.pick(0, keys), rr.pick(0, keys)]).toEqual([0, 1, 2]);
    const lru = new CacheSetIndex({ entries: 4, ways: 4, replacement: "lru" });
    for (const e of [0, 1, 2, 3, 0, 2]) lru.touch(e);
    expect(lru.pick(0, keys)).toBe(1);
  });

  it("claims the entry already holding a two-part key, else a free or victim entry of its set", () => {
    const ix = new CacheSetIndex({ entries: 2, ways: 2, replacement: "round-robin" });
    const k1 = new Int32Array(2).fill(-1);
    const k2 = new Int32Array(2);
    expect(ix.claim2(0, k1, 7, k2, 1)).toBe(0);
    expect(ix.claim2(0, k1, 7, k2, 2)).toBe(1);
    expect(ix.claim2(0, k1, 7, k2, 1)).toBe(0);
    expect(ix.claim2(0, k1, 7, k2, 2)).toBe(1);
    // Full set, new key: the round-robin victim (way 0) is replaced, both keys written.
    expect(ix.claim2(0, k1, 8, k2, 3)).toBe(0);
    expect([...k1, ...k2]).toEqual([8, 7, 3, 2]);
  });

  it("counts the entries whose key is not free, one key every `stride` slots", () => {
    const ix = new CacheSetIndex({ entries: 4, ways: 2, replacement: "round-robin" });
    expect(ix.countValid(new Int32Array([-1, 7, 0, -1]))).toBe(2);
    // A packed layout: entry e's key is at e * 3; the slots in between are not keys.
    const packed = new Float64Array([5, -1, -1, -1, -1, -1, 0, 9, 9, -1, 4, 4]);
    expect(ix.countValid(packed, 3)).toBe(2);
  });
});
