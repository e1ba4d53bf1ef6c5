import { describe, expect, it } from "vitest";
import { MmioBus, MmioBusError, type MmioHandler } from "../../src/platform/mmio.js";

/** A register file of 32-bit registers that logs every access. */
function regs(words: number) {
  const r = new Uint32Array(words);
  const log: string[] = [];
  const handler: MmioHandler = {
    read32: (off) => {
      log.push(`r32 ${off}`);
      return r[off >>> 2]!;
    },
    write32: (off, v) => {
      log.push(`w32 ${off} ${v.toString(16)}`);
      r[off >>> 2] = v;
    },
  };
  return { r, log, handler };
}

describe("MmioBus", () => {
  it("routes accesses to the window's handler with window-relative offsets", () => {
    const bus = new MmioBus();
    const a = regs(1024);
    const b = regs(16);
    bus.map(0x09050000, 0x1000, a.handler, "smmu0");
    bus.map(0x10000000, 0x40, b.handler, "uart");
    bus.write32(0x09050010, 0xdeadbeef);
    bus.write32(0x10000004, 5);
    expect(a.r[4]).toBe(0xdeadbeef);
    expect(b.r[1]).toBe(5);
    expect(bus.read32(0x09050010)).toBe(0xdeadbeef);
    expect(a.log).toEqual(["w32 16 deadbeef", "r32 16"]);
    expect(bus.find(0x09050fff)?.name).toBe("smmu0");
    expect(bus.find(0x09051000)).toBeUndefined();
    expect(bus.windows().map((w) => w.name)).toEqual(["smmu0", "uart"]);
  });

  it("splits 64-bit accesses into two 32-bit ones, low word first, without 64-bit handlers", () => {
    const bus = new MmioBus();
    const a = regs(16);
    bus.map(0x1000, 0x40, a.handler, "dev");
    bus.write64(0x1008, 0x1122334455667788n);
    expect(a.log).toEqual(["w32 8 55667788", "w32 12 11223344"]);
    a.log.length = 0;
    expect(bus.read64(0x1008)).toBe(0x1122334455667788n);
    expect(a.log).toEqual(["r32 8", "r32 12"]);
  });

  it("uses the handler's 64-bit accessors when present", () => {
    const bus = new MmioBus();
    const seen: [number, bigint][] = [];
    bus.map(
      0x2000,
      0x100,
      {
        read32: () => 0,
        write32: () => {
          throw new Error("must not be used");
        },
        read64: (off) => BigInt(off) + 0xffffffff00000000n,
        write64: (off, v) => {
          seen.push([off, v]);
        },
      },
      "q",
    );
    bus.write64(0x2010, -1n);
    expect(seen).toEqual([[0x10, 0xffffffffffffffffn]]);
    expect(bus.read64(0x2008)).toBe(0xffffffff00000008n);
  });

  it("rejects overlapping windows with EBUSY naming both", () => {
    const bus = new MmioBus();
    bus.map(0x1000, 0x1000, regs(1).handler, "first");
    bus.map(0x3000, 0x1000, regs(1).handler, "third");
    expect(() => bus.map(0x1800, 0x100, regs(1).handler, "inside")).toThrow(
      expect.objectContaining({ code: "EBUSY", message: expect.stringMatching(/"inside".*overlaps "first"/) }),
    );
    expect(() => bus.map(0x1f00, 0x1200, regs(1).handler, "straddle")).toThrow(/"straddle".*overlaps "(first|third)"/);
    expect(() => bus.map(0x0, 0x10000, regs(1).handler, "cover")).toThrow(/overlaps/);
    // Adjacent windows are fine.
    bus.map(0x2000, 0x1000, regs(1).handler, "second");
    expect(bus.windows().map((w) => w.name)).toEqual(["first", "second", "third"]);
    expect(() => bus.map(0x5000, 0, regs(1).handler, "empty")).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });

  it("throws a bus error naming the address for unmapped accesses and accesses past a window", () => {
    const bus = new MmioBus();
    bus.map(0x1000, 0x10, regs(4).handler, "small");
    expect(() => bus.read32(0x8000)).toThrow(MmioBusError);
    expect(() => bus.read32(0x8000)).toThrow(/0x8000/);
    expect(() => bus.write32(0x0, 1)).toThrow(/write32 at 0x0/);
    expect(() => bus.read64(0x100c)).toThrow(/0x100c runs past the end of "small"/);
    try {
      bus.read32(0x2000);
    } catch (e) {
      expect((e as MmioBusError).address).toBe(0x2000);
    }
  });

  it("unmap removes the window; a second unmap is EINVAL", () => {
    const bus = new MmioBus();
    const a = regs(4);
    bus.map(0x1000, 0x10, a.handler, "dev");
    expect(bus.read32(0x1000)).toBe(0); // primes the last-window cache
    bus.unmap(0x1000);
    expect(() => bus.read32(0x1000)).toThrow(/no device mapped/);
    expect(() => bus.unmap(0x1000)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    bus.map(0x1000, 0x10, regs(4).handler, "again");
    expect(bus.find(0x1004)?.name).toBe("again");
  });
});
