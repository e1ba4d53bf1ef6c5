import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PAGE_SIZE, PhysicalMemory } from "../../src/platform/memory.js";

const GiB = 2 ** 30;

describe("PhysicalMemory", () => {
  it("stores 32-bit words little-endian", () => {
    const m = new PhysicalMemory();
    m.write32(0x1000, 0x11223344);
    expect([m.read8(0x1000), m.read8(0x1001), m.read8(0x1002), m.read8(0x1003)]).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(m.read16(0x1000)).toBe(0x3344);
    expect(m.read16(0x1002)).toBe(0x1122);
    expect(m.read16(0x1001)).toBe(0x2233);
  });

  it("returns unsigned values and truncates written values to the access width", () => {
    const m = new PhysicalMemory();
    m.write32(0, -1);
    expect(m.read32(0)).toBe(0xffffffff);
    m.write8(8, 0x1ff);
    expect(m.read8(8)).toBe(0xff);
    expect(m.read8(9)).toBe(0);
    m.write16(12, 0x12345);
    expect(m.read32(12)).toBe(0x2345);
  });

  it("64-bit helpers agree with each other and with the 32-bit halves", () => {
    const m = new PhysicalMemory();
    m.write64(0x2000, 0x8877665544332211n);
    expect(m.read32(0x2000)).toBe(0x44332211);
    expect(m.read32(0x2004)).toBe(0x88776655);
    expect(m.read64(0x2000)).toBe(0x8877665544332211n);
    expect(m.read64Lo(0x2000)).toBe(0x44332211);
    expect(m.read64Hi(0x2000)).toBe(0x88776655);
    const out = new Uint32Array(2);
    m.read64Parts(0x2000, out);
    expect([...out]).toEqual([0x44332211, 0x88776655]);
    m.write64Parts(0x2008, 0xdeadbeef, 0xcafef00d);
    expect(m.read64(0x2008)).toBe(0xcafef00ddeadbeefn);
    // Values are taken modulo 2^64.
    m.write64(0x2010, -1n);
    expect(m.read64(0x2010)).toBe(0xffffffffffffffffn);
  });

  it("unaligned 16/32/64-bit accesses across words and frames", () => {
    const m = new PhysicalMemory();
    m.write32(0x1ffe, 0xa1b2c3d4); // bytes 0x1ffe..0x2001: crosses the frame boundary
    expect(m.read8(0x1ffe)).toBe(0xd4);
    expect(m.read8(0x1fff)).toBe(0xc3);
    expect(m.read8(0x2000)).toBe(0xb2);
    expect(m.read8(0x2001)).toBe(0xa1);
    expect(m.read32(0x1ffe)).toBe(0xa1b2c3d4);
    expect(m.read16(0x1fff)).toBe(0xb2c3);
    m.write16(0x2fff, 0xbeef);
    expect(m.read8(0x2fff)).toBe(0xef);
    expect(m.read8(0x3000)).toBe(0xbe);
    m.write64(0x3ffd, 0x0102030405060708n);
    expect(m.read64(0x3ffd)).toBe(0x0102030405060708n);
    expect(m.read32(0x4000)).toBe(0x02030405); // bytes 3..6 of the quadword
    const out = new Uint32Array(2);
    m.read64Parts(0x3ffd, out);
    expect([...out]).toEqual([0x05060708, 0x01020304]);
  });

  it("is sparse: only writes create frames, reads of untouched memory return 0", () => {
    const m = new PhysicalMemory();
    expect(m.touchedFrames).toBe(0);
    expect(m.read32(0x12345000)).toBe(0);
    expect(m.read64(0x80000000)).toBe(0n);
    expect([...m.readBytes(0x5000, 16)]).toEqual(new Array(16).fill(0));
    m.fill(0x7000, PAGE_SIZE, 0); // zero-filling untouched memory allocates nothing
    expect(m.touchedFrames).toBe(0);
    expect(m.isTouched(0x12345000)).toBe(false);
    m.write32(0x12345000, 1);
    m.write8(0x12345fff, 1);
    expect(m.touchedFrames).toBe(1);
    m.write32(0xfffffffc, 2);
    expect(m.touchedFrames).toBe(2);
    expect(m.isTouched(0x12345000)).toBe(true);
  });

  it("frame32 returns the frame's words, created on touch and aliasing memory", () => {
    const m = new PhysicalMemory();
    const f = m.frame32(0x9abc);
    expect(f.length).toBe(1024);
    expect(m.touchedFrames).toBe(1);
    f[3] = 0x55667788;
    expect(m.read32(0x900c)).toBe(0x55667788);
    m.write32(0x9010, 7);
    expect(f[4]).toBe(7);
    expect(m.frame32(0x9000)).toBe(f);
  });

  it("wordIndexR finds fast-tier words below 4 GiB for walkers, creates nothing, and declines everything else", () => {
    const m = new PhysicalMemory({ size: 8 * GiB, firstTierBytes: 4 * PAGE_SIZE });
    m.write32(0x1234_5678, 0xdead_beef);
    const i = m.wordIndexR(0x1234_5678);
    expect(i).toBeGreaterThanOrEqual(0);
    expect(m.words32[i]).toBe(0xdead_beef);
    // The next word of the same frame is the next index; an untouched frame reads as zeros and stays untouched.
    expect(m.wordIndexR(0x1234_567c)).toBe(i + 1);
    const z = m.wordIndexR(0x7000_0000);
    expect(m.words32[z]).toBe(0);
    expect(m.isTouched(0x7000_0000)).toBe(false);
    // Unaligned, above 4 GiB, or a frame in the pooled tier: -1, and read32 is the way.
    expect(m.wordIndexR(0x1234_5679)).toBe(-1);
    m.write32(5 * GiB, 1);
    expect(m.wordIndexR(5 * GiB)).toBe(-1);
    for (let f = 0; f < 8; f++) m.write32(0x2000_0000 + f * PAGE_SIZE, f + 1); // past the 4-slot first tier
    expect(m.wordIndexR(0x2000_0000 + 7 * PAGE_SIZE)).toBe(-1);
    expect(m.read32(0x2000_0000 + 7 * PAGE_SIZE)).toBe(8);
  });

  it("releaseFrame drops a frame's storage; it reads as zeros and is re-created on write", () => {
    const m = new PhysicalMemory();
    m.write32(0x4000, 0x1234);
    m.write32(0x5000, 0x5678);
    expect(m.touchedFrames).toBe(2);
    m.releaseFrame(4);
    expect(m.touchedFrames).toBe(1);
    expect(m.read32(0x4000)).toBe(0);
    expect(m.read32(0x5000)).toBe(0x5678);
    m.releaseFrame(4); // releasing an untouched frame is a no-op
    expect(m.touchedFrames).toBe(1);
    m.write32(0x6000, 1); // reuses the released storage, zeroed
    expect(m.read32(0x6000)).toBe(1);
    expect(m.read32(0x6004)).toBe(0);
    expect(m.touchedFrames).toBe(2);
  });

  it("out-of-range, negative and non-integer addresses throw a RangeError naming the address and size", () => {
    const m = new PhysicalMemory({ size: 16 * 2 ** 20 });
    expect(() => m.read32(0x1000000)).toThrow(RangeError);
    expect(() => m.read32(0x1000000)).toThrow(/0x1000000.*size 0x1000000/);
    expect(() => m.write32(0xfffffe, 1)).toThrow(/0xfffffe/);
    expect(() => m.read8(-4)).toThrow(/-0x4/);
    expect(() => m.read32(1.5)).toThrow(/not an integer/);
    expect(() => m.read32(Number.NaN)).toThrow(RangeError);
    expect(() => m.write64(0xfffffc, 1n)).toThrow(/0xfffffc/);
    expect(() => m.readBytes(0xfff000, 0x2000)).toThrow(/0xfff000/);
    expect(() => m.frame32(2 ** 40)).toThrow(/0x10000000000/);
    expect(() => m.releaseFrame(0x1000)).toThrow(RangeError);
    expect(m.read32(0xfffffc)).toBe(0); // the last word is fine
  });

  it("rejects bad sizes", () => {
    expect(() => new PhysicalMemory({ size: 1000 })).toThrow(RangeError);
    expect(() => new PhysicalMemory({ size: 2 ** 53 })).toThrow(RangeError);
  });

  it("supports memories larger than 4 GiB up to 2^52, at high addresses", () => {
    const m = new PhysicalMemory({ size: 2 ** 52 });
    const top = 2 ** 52 - 8;
    m.write64(top, 0x1122334455667788n);
    expect(m.read64(top)).toBe(0x1122334455667788n);
    expect(m.read32(top + 4)).toBe(0x11223344);
    // Addresses that alias modulo 2^32 stay distinct.
    const a = 5 * 2 ** 32 + 0x1000;
    m.write32(a, 0xaaaa);
    expect(m.read32(0x1000)).toBe(0);
    m.write32(0x1000, 0xbbbb);
    expect(m.read32(a)).toBe(0xaaaa);
    // Cross-frame at a high address, and across the 4 GiB boundary.
    m.write32(a + 0xffe, 0x01020304);
    expect(m.read32(a + 0xffe)).toBe(0x01020304);
    m.write32(2 ** 32 - 2, 0xf00dface);
    expect(m.read16(2 ** 32)).toBe(0xf00d);
    expect(m.read32(2 ** 32 - 2)).toBe(0xf00dface);
    m.frame32(2 ** 40)[0] = 9;
    expect(m.read32(2 ** 40)).toBe(9);
    expect(m.touchedFrames).toBe(7);
    m.releaseFrame(2 ** 40 / PAGE_SIZE);
    expect(m.read32(2 ** 40)).toBe(0);
    expect(m.touchedFrames).toBe(6);
    expect(() => m.read32(2 ** 52)).toThrow(/0x10000000000000/);
  });

  it("readBytes/writeBytes/fill across frames", () => {
    const m = new PhysicalMemory({ size: 8 * GiB });
    const data = Uint8Array.from({ length: 10000 }, (_, i) => (i * 7) & 0xff);
    const base = 2 ** 32 - 5000; // spans the 4 GiB boundary
    m.writeBytes(base, data);
    expect(m.readBytes(base, data.length)).toEqual(data);
    m.fill(base + 10, 5000, 0xab);
    const back = m.readBytes(base, data.length);
    expect(back[9]).toBe(data[9]);
    expect(back[10]).toBe(0xab);
    expect(back[5009]).toBe(0xab);
    expect(back[5010]).toBe(data[5010]);
    expect(() => m.fill(0, 4, 256)).toThrow(RangeError);
  });

  it("copy behaves like memmove for overlapping ranges in both directions", () => {
    const m = new PhysicalMemory();
    const data = Uint8Array.from({ length: 9000 }, (_, i) => (i * 13 + 1) & 0xff);
    m.writeBytes(0x10000, data);
    m.copy(0x10000 + 100, 0x10000, 9000); // forward overlap: dst above src
    expect(m.readBytes(0x10000 + 100, 9000)).toEqual(data);
    m.writeBytes(0x20000, data);
    m.copy(0x20000 - 3000, 0x20000, 9000); // dst below src
    expect(m.readBytes(0x20000 - 3000, 9000)).toEqual(data);
    // Copying untouched memory writes zeros over the destination.
    m.copy(0x10000, 0x80000, 8);
    expect(m.read64(0x10000)).toBe(0n);
  });

  it("matches a byte-map model under random 8/16/32/64-bit writes and reads", () => {
    const size = 64 * 1024;
    const widths = [1, 2, 4, 8] as const;
    const op = fc.record({
      write: fc.boolean(),
      width: fc.constantFrom(...widths),
      // Cluster addresses around frame boundaries so crossings are common.
      pa: fc.oneof(
        fc.integer({ min: 0, max: size - 8 }),
        fc.integer({ min: 1, max: 15 }).chain((p) => fc.integer({ min: p * PAGE_SIZE - 8, max: p * PAGE_SIZE + 7 })),
      ),
      value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const m = new PhysicalMemory({ size });
        const model = new Map<number, number>();
        const readModel = (pa: number, w: number): bigint => {
          let v = 0n;
          for (let i = w - 1; i >= 0; i--) v = (v << 8n) | BigInt(model.get(pa + i) ?? 0);
          return v;
        };
        for (const { write, width, pa, value } of ops) {
          const v = BigInt.asUintN(width * 8, value);
          if (write) {
            for (let i = 0; i < width; i++) model.set(pa + i, Number((v >> BigInt(8 * i)) & 0xffn));
            if (width === 1) m.write8(pa, Number(v));
            else if (width === 2) m.write16(pa, Number(v));
            else if (width === 4) m.write32(pa, Number(v));
            else m.write64(pa, v);
          } else {
            const got =
              width === 1
                ? BigInt(m.read8(pa))
                : width === 2
                  ? BigInt(m.read16(pa))
                  : width === 4
                    ? BigInt(m.read32(pa))
                    : m.read64(pa);
            expect(got).toBe(readModel(pa, width));
          }
        }
        for (const [pa, b] of model) expect(m.read8(pa)).toBe(b);
      }),
      { numRuns: 200 },
    );
  });

  it("grows tier 1 step by step; frame32 views and data survive growth", () => {
    // 600 frames cross the 64 KiB, doubling and 64 MiB-capped growth steps of the stepped (fallback) mode.
    const m = new PhysicalMemory({ size: 64 * 2 ** 20, firstTierEager: false });
    const first = m.frame32(0);
    first[5] = 0xabcdef01;
    for (let f = 0; f < 600; f++) m.write32(f * PAGE_SIZE + 8, f * 3 + 1);
    expect(m.touchedFrames).toBe(600);
    for (let f = 0; f < 600; f++) expect(m.read32(f * PAGE_SIZE + 8)).toBe(f * 3 + 1);
    expect(first[5]).toBe(0xabcdef01); // a view taken before the buffer grew still aliases the frame
    first[6] = 77;
    expect(m.read32(24)).toBe(77);
    expect(m.frame32(0)).toBe(first);
    expect(m.read32(601 * PAGE_SIZE)).toBe(0);
  });

  for (const eager of [true, false]) {
    it(`spills frames beyond the first tier into pooled chunks (eager ${eager})`, () => {
      // Tier 1 of 8 slots: the zero frame and 7 frames; the other 13 of 20 frames go to tier 2.
      const m = new PhysicalMemory({ size: 2 ** 40, firstTierBytes: 8 * PAGE_SIZE, firstTierEager: eager });
      const base = 2 ** 33; // above 4 GiB as well as below it
      const pas: number[] = [];
      for (let f = 0; f < 10; f++) pas.push(f * PAGE_SIZE, base + f * PAGE_SIZE);
      pas.forEach((pa, i) => {
        m.write32(pa + 4, 0x1000 + i);
        m.write8(pa + 9, i);
        m.write16(pa + 14, 0xbeef);
        m.write64Parts(pa + 16, i, ~i >>> 0);
      });
      expect(m.touchedFrames).toBe(20);
      // The test is about the tier boundary: make sure frames really went to tier 2.
      expect((m as unknown as { t2Next: number }).t2Next).toBe(13);
      const out = new Uint32Array(2);
      pas.forEach((pa, i) => {
        expect(m.read32(pa + 4)).toBe(0x1000 + i);
        expect(m.read8(pa + 9)).toBe(i);
        expect(m.read16(pa + 14)).toBe(0xbeef);
        m.read64Parts(pa + 16, out);
        expect([...out]).toEqual([i, ~i >>> 0]);
        expect(m.frame32(pa)[1]).toBe(0x1000 + i);
      });
      // Unaligned accesses across a tier-1 / tier-2 frame boundary (frames 7 and 8 below 4 GiB).
      m.write32(8 * PAGE_SIZE - 2, 0xa1b2c3d4);
      expect(m.read32(8 * PAGE_SIZE - 2)).toBe(0xa1b2c3d4);
      // frame32 of a tier-2 frame aliases memory.
      const f = m.frame32(base + 9 * PAGE_SIZE);
      f[100] = 0x5a5a5a5a;
      expect(m.read32(base + 9 * PAGE_SIZE + 400)).toBe(0x5a5a5a5a);
      // Bulk ops and copy across tiers.
      const data = Uint8Array.from({ length: 3 * PAGE_SIZE }, (_, i) => (i * 31 + 7) & 0xff);
      m.writeBytes(5 * PAGE_SIZE + 100, data);
      expect(m.readBytes(5 * PAGE_SIZE + 100, data.length)).toEqual(data);
      m.copy(base + 2 * PAGE_SIZE + 3, 5 * PAGE_SIZE + 100, data.length);
      expect(m.readBytes(base + 2 * PAGE_SIZE + 3, data.length)).toEqual(data);
      m.fill(base + 2 * PAGE_SIZE + 10, 5000, 0xab);
      expect(m.read8(base + 2 * PAGE_SIZE + 9)).toBe(data[6]);
      expect(m.read8(base + 2 * PAGE_SIZE + 5009)).toBe(0xab);
      // Release and recycle in both tiers: recycled storage reads as zero.
      const before = m.touchedFrames;
      m.releaseFrame(1); // tier 1
      m.releaseFrame(base / PAGE_SIZE + 9); // tier 2
      expect(m.touchedFrames).toBe(before - 2);
      expect(m.read32(PAGE_SIZE + 4)).toBe(0);
      expect(m.read32(base + 9 * PAGE_SIZE + 400)).toBe(0);
      m.write32(0x7000_0000, 1);
      m.write32(0x7000_1000, 2);
      expect(m.read32(0x7000_0004)).toBe(0);
      expect(m.read32(0x7000_1004)).toBe(0);
      expect(m.read32(0x7000_1000)).toBe(2);
      expect([...m.readBytes(0x7000_0000, 8)]).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
      expect(m.touchedFrames).toBe(before);
      // Untouched memory still reads as zero and allocates nothing.
      expect(m.read32(0x6000_0000)).toBe(0);
      expect(m.touchedFrames).toBe(before);
    });
  }

  it("rejects bad firstTierBytes", () => {
    expect(() => new PhysicalMemory({ firstTierBytes: 0 })).toThrow(RangeError);
    expect(() => new PhysicalMemory({ firstTierBytes: 1000 })).toThrow(RangeError);
    expect(() => new PhysicalMemory({ firstTierBytes: 8 * GiB })).toThrow(RangeError);
  });

  it("many machines' memories coexist in one process", () => {
    // Each reserves up to 4 GiB of address space for tier 1; only touched frames become resident.
    const mems: PhysicalMemory[] = [];
    for (let i = 0; i < 300; i++) {
      const m = new PhysicalMemory();
      m.write32(i * PAGE_SIZE, i + 1);
      m.write32(0xfffff000, i);
      mems.push(m);
    }
    mems.forEach((m, i) => {
      expect(m.read32(i * PAGE_SIZE)).toBe(i + 1);
      expect(m.read32(0xfffff000)).toBe(i);
      expect(m.touchedFrames).toBe(2);
    });
  });

  it("matches a byte-map model with a tiny first tier (frames spill into pooled chunks)", () => {
    const size = 64 * 1024;
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            write: fc.boolean(),
            pa: fc.integer({ min: 0, max: size - 4 }),
            value: fc.integer({ min: 0, max: 0xffffffff }),
            release: fc.integer({ min: 0, max: 40 }),
          }),
          { maxLength: 200 },
        ),
        fc.boolean(),
        (ops, eager) => {
          const m = new PhysicalMemory({ size, firstTierBytes: 4 * PAGE_SIZE, firstTierEager: eager });
          const model = new Map<number, number>();
          for (const { write, pa, value, release } of ops) {
            if (release < 16) {
              m.releaseFrame(release);
              for (let i = 0; i < PAGE_SIZE; i++) model.delete(release * PAGE_SIZE + i);
            }
            if (write) {
              m.write32(pa, value);
              for (let i = 0; i < 4; i++) model.set(pa + i, (value >>> (8 * i)) & 0xff);
            } else {
              let v = 0;
              for (let i = 3; i >= 0; i--) v = v * 256 + (model.get(pa + i) ?? 0);
              expect(m.read32(pa)).toBe(v);
            }
          }
          for (const [pa, b] of model) expect(m.read8(pa)).toBe(b);
        },
      ),
      { numRuns: 200 },
    );
  });
});
