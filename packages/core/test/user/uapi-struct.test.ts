import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UapiStruct } from "../../src/index.js";

const s = new UapiStruct("struct t", [
  { name: "size", type: "u32" },
  { name: "flags", type: "u16" },
  { name: "b", type: "u8" },
  { name: "neg", type: "s32" },
  { name: "addr", type: "u64" },
  { name: "off", type: "s64" },
  { name: "__reserved", type: "u32", count: 3 },
]);

/** Any value a caller may put in a field, fitting or not. */
const anyValue = fc.oneof(
  fc.integer({ min: -(2 ** 33), max: 2 ** 33 }),
  fc.constantFrom(0, -0, 0.5, Number.NaN, 2 ** 53),
  fc.bigInt({ min: -(2n ** 65n), max: 2n ** 65n }),
  fc.constantFrom(0n, 0xffff_ffff_ffff_ffffn, -1n),
);
const field = fc.option(fc.oneof(anyValue, fc.array(anyValue, { maxLength: 4 })), { nil: undefined });

function viaBytes(obj: Record<string, unknown>): unknown {
  try {
    return s.decode(s.encode(obj as never));
  } catch (e) {
    return (e as Error).constructor.name;
  }
}

function direct(obj: Record<string, unknown>): unknown {
  try {
    return s.normalize(obj as never);
  } catch (e) {
    return (e as Error).constructor.name;
  }
}

describe("UapiStruct.normalize", () => {
  it("reads every object as its encoded bytes decode, errors included", () => {
    fc.assert(
      fc.property(
        fc.record({ size: field, flags: field, b: field, neg: field, addr: field, off: field, __reserved: field }),
        (o) => {
          const obj = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
          expect(direct(obj)).toEqual(viaBytes(obj));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("does not alias the caller's arrays", () => {
    const r = [1, 2, 3];
    const n = s.normalize({ __reserved: r } as never) as { __reserved: number[] };
    expect(n.__reserved).toEqual([1, 2, 3]);
    expect(n.__reserved).not.toBe(r);
    expect(s.zero()).toEqual(s.decode(new Uint8Array(s.size)));
  });
});
