import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FaultInjector } from "../../src/kernel/fault-inject.js";
import {
  XA_FLAGS_ALLOC,
  XA_LIMIT,
  XA_ZERO_ENTRY,
  XArray,
  type XaLimit,
  type XaZeroEntry,
  xaLimit31b,
  xaLimit32b,
} from "../../src/kernel/xarray.js";

interface Obj {
  n: number;
}

function visible(xa: XArray<Obj>): [number, Obj][] {
  const out: [number, Obj][] = [];
  xa.forEach((id, e) => {
    out.push([id, e]);
  });
  return out;
}

describe("XArray", () => {
  it("exports the kernel's limits", () => {
    expect(xaLimit31b).toEqual({ min: 0, max: 0x7fffffff });
    expect(xaLimit32b).toEqual({ min: 0, max: 0xffffffff });
    expect(() => XA_LIMIT(-1, 3)).toThrow(RangeError);
  });

  it("allocates from 1, lowest free first, and reuses erased IDs", () => {
    const xa = new XArray<Obj>();
    const a = { n: 1 };
    const b = { n: 2 };
    const c = { n: 3 };
    expect(xa.alloc(a)).toBe(1);
    expect(xa.alloc(b)).toBe(2);
    expect(xa.alloc(c)).toBe(3);
    expect(xa.erase(2)).toBe(b);
    expect(xa.alloc(b)).toBe(2);
    expect(xa.load(3)).toBe(c);
    expect(xa.alloc(a, XA_LIMIT(10, 20))).toBe(10);
    expect(xa.size).toBe(4);
  });

  it("XA_FLAGS_ALLOC allocates from 0", () => {
    const xa = new XArray<string>(undefined, "xa_alloc", XA_FLAGS_ALLOC);
    expect(xa.alloc("zero")).toBe(0);
    expect(xa.alloc("one")).toBe(1);
  });

  it("a plain array refuses alloc and erases on store(undefined)", () => {
    const xa = new XArray<string>(undefined, "xa_alloc", 0);
    expect(() => xa.alloc("x")).toThrow(expect.objectContaining({ code: "EINVAL" }));
    xa.store(5, "x");
    expect(xa.store(5, undefined)).toBe("x");
    expect(xa.empty).toBe(true);
  });

  it("is EBUSY when the range is full, and for an empty range", () => {
    const xa = new XArray<number>();
    const lim = XA_LIMIT(1, 3);
    expect([xa.alloc(10, lim), xa.alloc(20, lim), xa.alloc(30, lim)]).toEqual([1, 2, 3]);
    expect(() => xa.alloc(40, lim)).toThrow(expect.objectContaining({ code: "EBUSY", errno: 16 }));
    expect(() => xa.alloc(40, XA_LIMIT(0, 0))).toThrow(expect.objectContaining({ code: "EBUSY" }));
    expect(xa.size).toBe(3);
  });

  it("allocates the top of the 32-bit range and then is EBUSY", () => {
    const xa = new XArray<number>();
    const lim = XA_LIMIT(0xfffffffe, 0xffffffff);
    expect(xa.alloc(1, lim)).toBe(0xfffffffe);
    expect(xa.alloc(2, lim)).toBe(0xffffffff);
    expect(() => xa.alloc(3, lim)).toThrow(expect.objectContaining({ code: "EBUSY" }));
  });

  it("zero entries reserve: invisible to load and forEach, keep the array non-empty, block alloc", () => {
    const xa = new XArray<Obj>();
    const id = xa.alloc(XA_ZERO_ENTRY);
    expect(id).toBe(1);
    expect(xa.load(id)).toBeUndefined();
    expect(visible(xa)).toEqual([]);
    expect(xa.empty).toBe(false);
    expect(xa.alloc({ n: 2 })).toBe(2);
    // alloc(undefined) reserves too, like xa_alloc(NULL)
    expect(xa.alloc(undefined)).toBe(3);
    expect(xa.load(3)).toBeUndefined();
    expect(xa.alloc({ n: 4 })).toBe(4);
  });

  it("store returns the old entry, undefined for a reservation; store(undefined) reserves", () => {
    const xa = new XArray<Obj>();
    const a = { n: 1 };
    const b = { n: 2 };
    const id = xa.alloc(XA_ZERO_ENTRY);
    expect(xa.store(id, a)).toBeUndefined(); // finalize: the kernel WARNs if this is not NULL
    expect(xa.store(id, b)).toBe(a);
    expect(xa.store(id, undefined)).toBe(b);
    expect(xa.load(id)).toBeUndefined();
    expect(xa.empty).toBe(false);
    expect(xa.alloc(a)).toBe(2);
    expect(xa.erase(id)).toBeUndefined();
    expect(xa.alloc(a)).toBe(1);
  });

  it("cmpxchg compares against reservations and emptiness, and erases with undefined", () => {
    const xa = new XArray<Obj>();
    const a = { n: 1 };
    const b = { n: 2 };
    const id = xa.alloc(XA_ZERO_ENTRY);
    // mismatch: nothing changes; a reservation reads back as undefined, as in the kernel
    expect(xa.cmpxchg(id, a, b)).toBeUndefined();
    expect(xa.cmpxchgRaw(id, a, b)).toBe(XA_ZERO_ENTRY);
    expect(xa.load(id)).toBeUndefined();
    // reservation -> object
    expect(xa.cmpxchgRaw(id, XA_ZERO_ENTRY, a)).toBe(XA_ZERO_ENTRY);
    expect(xa.load(id)).toBe(a);
    // object -> tombstone: stays reserved, not reused
    expect(xa.cmpxchg(id, a, XA_ZERO_ENTRY)).toBe(a);
    expect(xa.load(id)).toBeUndefined();
    expect(xa.alloc(b)).toBe(2);
    // tombstone -> empty frees the slot
    expect(xa.cmpxchg(id, XA_ZERO_ENTRY, undefined)).toBeUndefined();
    expect(xa.alloc(b)).toBe(1);
    // undefined matches an empty slot only
    expect(xa.cmpxchg(7, undefined, a)).toBeUndefined();
    expect(xa.load(7)).toBe(a);
    expect(xa.cmpxchg(7, undefined, b)).toBe(a);
    expect(xa.load(7)).toBe(a);
  });

  it("insert is EBUSY on a used or reserved slot; reserve/release", () => {
    const xa = new XArray<string>();
    xa.insert(4, "x");
    expect(() => xa.insert(4, "y")).toThrow(expect.objectContaining({ code: "EBUSY" }));
    xa.reserve(5);
    expect(() => xa.insert(5, "y")).toThrow(expect.objectContaining({ code: "EBUSY" }));
    xa.reserve(4); // used: no effect
    expect(xa.load(4)).toBe("x");
    xa.release(5);
    xa.release(4); // holds an entry: no effect
    expect(xa.load(4)).toBe("x");
    xa.insert(5, "y");
    expect(xa.load(5)).toBe("y");
  });

  it("forEach walks in index order, skips reservations, stops on false, survives erasure", () => {
    const xa = new XArray<number>();
    for (const id of [900, 3, 0x7fffffff, 64, 2 ** 40, 31, 32]) xa.store(id, id);
    xa.store(50, XA_ZERO_ENTRY);
    const seen: number[] = [];
    xa.forEach((id, e) => {
      expect(e).toBe(id);
      seen.push(id);
    });
    expect(seen).toEqual([3, 31, 32, 64, 900, 0x7fffffff, 2 ** 40]);
    const firstTwo: number[] = [];
    // biome-ignore lint/suspicious/useIterableCallbackReturn: XArray.forEach stops the walk when the callback returns false
    xa.forEach((id) => {
      firstTwo.push(id);
      if (firstTwo.length === 2) return false;
    });
    expect(firstTwo).toEqual([3, 31]);
    const erasing: number[] = [];
    xa.forEach((id) => {
      erasing.push(id);
      xa.erase(id);
      xa.erase(64);
    });
    expect(erasing).toEqual([3, 31, 32, 900, 0x7fffffff, 2 ** 40]);
    expect(xa.empty).toBe(false); // the reservation at 50 remains
    expect(xa.find()).toBeUndefined();
    xa.destroy();
    expect(xa.empty).toBe(true);
    expect(xa.size).toBe(0);
  });

  it("find returns the first entry at or after start", () => {
    const xa = new XArray<string>();
    xa.store(10, "a");
    xa.store(11, XA_ZERO_ENTRY);
    xa.store(12, "b");
    xa.store(2 ** 33, "c");
    expect(xa.find()).toEqual([10, "a"]);
    expect(xa.find(11)).toEqual([12, "b"]);
    expect(xa.find(13)).toEqual([2 ** 33, "c"]);
    expect(xa.find(2 ** 33 + 1)).toBeUndefined();
  });

  it("rejects indices that are not unsigned integers", () => {
    const xa = new XArray<string>();
    expect(() => xa.store(-1, "x")).toThrow(RangeError);
    expect(() => xa.store(1.5, "x")).toThrow(RangeError);
    expect(xa.load(-1)).toBeUndefined();
  });

  it("stays correct across many IDs (fills whole subtrees, frees holes deep inside)", () => {
    const xa = new XArray<number>();
    const n = 40_000;
    for (let i = 1; i <= n; i++) expect(xa.alloc(i)).toBe(i);
    for (const hole of [33_000, 1025, 7, 32_768]) xa.erase(hole);
    expect([xa.alloc(0), xa.alloc(0), xa.alloc(0), xa.alloc(0), xa.alloc(0)]).toEqual([7, 1025, 32_768, 33_000, n + 1]);
    expect(() => xa.alloc(0, XA_LIMIT(1, n + 1))).toThrow(expect.objectContaining({ code: "EBUSY" }));
    xa.erase(40_000);
    expect(xa.alloc(0, XA_LIMIT(1, n + 1))).toBe(40_000);
  });

  describe("fault injection", () => {
    it("fails the nth xa_alloc with ENOMEM and stores nothing", () => {
      const faults = new FaultInjector();
      const xa = new XArray<string>(faults, "iommufd_object_alloc");
      faults.failNth(2);
      expect(xa.alloc("a")).toBe(1);
      expect(() => xa.alloc("b")).toThrow(expect.objectContaining({ code: "ENOMEM" }));
      expect(faults.nthConsumed).toBe(true);
      expect(faults.failedSites).toEqual(["iommufd_object_alloc"]);
      expect(xa.size).toBe(1);
      expect(xa.alloc("c")).toBe(2);
    });

    it("failSite hits only the named array's site", () => {
      const faults = new FaultInjector();
      const objects = new XArray<string>(faults, "objects");
      const groups = new XArray<string>(faults, "groups");
      faults.failSite("groups", 1);
      expect(objects.alloc("o")).toBe(1);
      expect(() => groups.alloc("g")).toThrow(expect.objectContaining({ code: "ENOMEM" }));
      expect(groups.alloc("g")).toBe(1);
      expect(groups.empty).toBe(false);
    });

    it("failProbability is reproducible from its seed", () => {
      const run = (seed: number) => {
        const faults = new FaultInjector();
        const xa = new XArray<number>(faults);
        faults.failProbability(0.3, seed);
        const out: (number | string)[] = [];
        for (let i = 0; i < 60; i++) {
          try {
            out.push(xa.alloc(i));
          } catch (e) {
            out.push((e as { code: string }).code);
          }
        }
        return out;
      };
      const a = run(42);
      expect(run(42)).toEqual(a);
      expect(a).toContain("ENOMEM");
      expect(a.filter((x) => typeof x === "number").length).toBeGreaterThan(0);
      expect(run(43)).not.toEqual(a);
    });

    it("EBUSY wins over an injected failure (the kernel only allocates once a slot is found)", () => {
      const faults = new FaultInjector();
      const xa = new XArray<number>(faults);
      xa.alloc(1, XA_LIMIT(1, 1));
      faults.failNth(1);
      const before = faults.calls;
      expect(() => xa.alloc(2, XA_LIMIT(1, 1))).toThrow(expect.objectContaining({ code: "EBUSY" }));
      expect(faults.calls).toBe(before);
      expect(faults.nthConsumed).toBe(false);
    });
  });
});

type Op =
  | { op: "alloc"; v: number; zero: boolean; limit: XaLimit }
  | { op: "store"; id: number; v: number | "zero" | "undef" }
  | { op: "erase"; id: number }
  | { op: "cmpxchg"; id: number; old: number | "zero" | "undef" | "current"; v: number | "zero" | "undef" }
  | { op: "load"; id: number };

describe("XArray against a Map model (property)", () => {
  const ids = fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0, max: 80 }) },
    { weight: 1, arbitrary: fc.constantFrom(1023, 1024, 0xffffffff, 2 ** 36) },
  );
  const val = fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constantFrom<"zero" | "undef">("zero", "undef"));
  const limit = fc.oneof(
    fc.constant(xaLimit31b),
    fc.constant(XA_LIMIT(0, 40)),
    fc.tuple(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 70 })).map(([a, b]) => XA_LIMIT(a, b)),
  );
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant("alloc" as const), v: fc.nat(5), zero: fc.boolean(), limit }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("store" as const), id: ids, v: val }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant("erase" as const), id: ids }) },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant("cmpxchg" as const),
        id: ids,
        old: fc.oneof(val, fc.constant<"current">("current")),
        v: val,
      }),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("load" as const), id: ids }) },
  );

  it("matches the model: lowest free id >= 1, reservations invisible but busy", () => {
    const objs = Array.from({ length: 6 }, (_, n) => ({ n }));
    const ent = (v: number | "zero" | "undef"): Obj | XaZeroEntry | undefined =>
      v === "zero" ? XA_ZERO_ENTRY : v === "undef" ? undefined : objs[v];
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
        const xa = new XArray<Obj>();
        const model = new Map<number, Obj | XaZeroEntry>();
        const vis = (e: Obj | XaZeroEntry | undefined) => (e === XA_ZERO_ENTRY ? undefined : e);
        for (const o of ops) {
          switch (o.op) {
            case "alloc": {
              let want = -1;
              for (let i = Math.max(1, o.limit.min); i <= Math.min(o.limit.max, 200); i++) {
                if (!model.has(i)) {
                  want = i;
                  break;
                }
              }
              const e = o.zero ? XA_ZERO_ENTRY : objs[o.v]!;
              if (want < 0) {
                expect(() => xa.alloc(e, o.limit)).toThrow(expect.objectContaining({ code: "EBUSY" }));
              } else {
                expect(xa.alloc(e, o.limit)).toBe(want);
                model.set(want, e);
              }
              break;
            }
            case "store": {
              const e = ent(o.v);
              expect(xa.store(o.id, e)).toBe(vis(model.get(o.id)));
              model.set(o.id, e ?? XA_ZERO_ENTRY);
              break;
            }
            case "erase":
              expect(xa.erase(o.id)).toBe(vis(model.get(o.id)));
              model.delete(o.id);
              break;
            case "cmpxchg": {
              const cur = model.get(o.id);
              const old = o.old === "current" ? cur : ent(o.old);
              const e = ent(o.v);
              expect(xa.cmpxchg(o.id, old, e)).toBe(vis(cur));
              if (cur === old) {
                if (e === undefined) model.delete(o.id);
                else model.set(o.id, e);
              }
              break;
            }
            case "load":
              expect(xa.load(o.id)).toBe(vis(model.get(o.id)));
              break;
          }
          expect(xa.empty).toBe(model.size === 0);
          expect(xa.size).toBe(model.size);
        }
        const want = [...model.entries()]
          .filter((kv): kv is [number, Obj] => kv[1] !== XA_ZERO_ENTRY)
          .sort((a, b) => a[0] - b[0]);
        expect(visible(xa)).toEqual(want);
      }),
      { numRuns: 200 },
    );
  });
});

describe("XArray: emptied and refilled low IDs", () => {
  it("hands out the lowest free ID and finds the used ones after any alloc/erase churn", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1000, max: 1100 })), {
          maxLength: 80,
        }),
        (ops) => {
          const xa = new XArray<Obj>();
          const model = new Set<number>();
          for (const op of ops) {
            if (op === -1) {
              let want = 1;
              while (model.has(want)) want++;
              expect(xa.alloc({ n: want })).toBe(want);
              model.add(want);
            } else if (model.has(op)) {
              xa.erase(op);
              model.delete(op);
            } else if (op >= 1000) {
              xa.store(op, { n: op });
              model.add(op);
            }
          }
          expect(visible(xa).map(([id]) => id)).toEqual([...model].sort((a, b) => a - b));
          expect(xa.find(0)?.[0]).toBe(model.size ? Math.min(...model) : undefined);
        },
      ),
    );
  });
});
