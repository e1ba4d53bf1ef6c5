/**
 * The inspect decoder (src/hw/decode.ts) reads the same raw tables the model walks and agrees with it: level
 * skipping, next-level-7 large pages, the GCR3 + x86-64 path, faults; and it changes nothing (no cache fill, no
 * event).
 */
import type { Machine, TranslationPath } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { type AmdHw, decodeAmdTranslation } from "../../src/hw/index.js";
import { AMD_BASE, bootAmd, GPU, NIC, Setup, type Tables, v1, v1Sized, x86 } from "./helpers/encoder.js";

let m: Machine;
let t: Tables;
let hw: AmdHw;

afterEach(async () => {
  await m.teardown();
});

function decode(
  devid: number,
  iova: number,
  pasid = -1,
): Omit<TranslationPath, "iommu" | "kind" | "requesterId" | "pasid" | "iova"> {
  return decodeAmdTranslation({
    memory: m.memory,
    readReg: (off) => m.mmio.read32(AMD_BASE + off),
    requesterId: devid,
    pasid,
    iova,
  });
}

describe("AMD-Vi inspect decoder", () => {
  it("a mode-4 table skipping from L4 to L2 with a 4 MiB next-level-7 page, as the model translates it", async () => {
    ({ m, t, hw } = await bootAmd());
    const s = new Setup(t);
    const root = t.alloc(4096);
    const l2 = t.alloc(4096);
    const big = 0x4000_0000;
    t.q(root, v1(l2, 2)); // L4 index 0 → L2 (skips L3: IOVA bits 38:30 must be zero)
    t.q(l2 + 8 * 2, v1Sized(big, 22, true, false)); // NL=7 at L2 index 2: a 4 MiB page (read-only)
    s.setDte(NIC, { mode: 4, root, did: 5 });
    const iova = 2 * 2 ** 21 + 0x1234;
    const d = decode(NIC, iova);
    expect(d.levels.map((l) => l.name)).toEqual(["DTE", "L4 PDE", "L2 large page"]);
    expect(d.levels[1]!.fields).toMatchObject({ NextLevel: 2, skips: 1 });
    expect(d.levels[2]!.fields).toMatchObject({ NextLevel: 7, PageSize: "0x400000", IW: false });
    expect(d.result).toEqual({ pa: big + 0x1234, size: 2 ** 22, perm: "r-" });
    const misses = hw.stats.dteMisses;
    // Nothing was cached or logged by the decoder: the model's first access misses its DTE cache.
    expect(hw.pdc.used + hw.iotlb.used).toBe(0);
    m.memory.write32(big + 0x1234, 0x5a5a);
    expect(m.device("amd-nic0").dmaRead(iova, 2)).toEqual(new Uint8Array([0x5a, 0x5a]));
    expect(hw.stats.dteMisses).toBe(misses + 1);
    // An address whose skipped bits are not zero faults in both.
    expect(decode(NIC, 2 ** 30 + iova).result.fault).toMatch(/skipped levels not zero/);
    expect(() => m.device("amd-nic0").dmaRead(2 ** 30 + iova, 2)).toThrow(/IO_PAGE_FAULT/);
  });

  it("a 1 GiB page by next level 0 in an L3 table", async () => {
    ({ m, t, hw } = await bootAmd());
    const s = new Setup(t);
    const root = t.alloc(4096);
    const l3 = t.alloc(4096);
    t.q(root, v1(l3, 3));
    t.q(l3 + 8 * 2, v1(2 ** 32, 0)); // a 1 GiB page (NL=0 at L3)
    s.setDte(NIC, { mode: 4, root, did: 6 });
    const d = decode(NIC, 2 * 2 ** 30 + 0x55_0000);
    expect(d.levels.map((l) => l.name)).toEqual(["DTE", "L4 PDE", "L3 page"]);
    expect(d.result).toEqual({ pa: 2 ** 32 + 0x55_0000, size: 2 ** 30, perm: "rw" });
  });

  it("GV: the GCR3 entry of the PASID, each x86-64 level, and a fault without GV", async () => {
    ({ m, t, hw } = await bootAmd());
    const s = new Setup(t);
    const gcr3 = t.alloc(4096);
    const cr3 = t.alloc(4096);
    const buf = t.alloc(4096);
    const iova = 0x12_3456_7000;
    let table = cr3;
    for (let level = 4; level > 1; level--) {
      const next = t.alloc(4096);
      t.q(table + 8 * (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512), x86(next));
      table = next;
    }
    t.q(table + 8 * (Math.floor(iova / 4096) % 512), x86(buf, false));
    t.q(gcr3 + 8 * 5, BigInt(cr3) | 1n);
    s.setDte(GPU, { gv: true, glx: 0, gcr3, did: 9 });
    const d = decode(GPU, iova + 0x40, 5);
    expect(d.levels.map((l) => l.name)).toEqual([
      "DTE",
      "GCR3 entry (PASID 5)",
      "guest L4 table",
      "guest L3 table",
      "guest L2 table",
      "guest L1 page",
    ]);
    expect(d.levels[0]!.fields).toMatchObject({ GV: true, GLX: 0, GCR3TRP: `0x${gcr3.toString(16)}` });
    expect(d.result).toEqual({ pa: buf + 0x40, size: 4096, perm: "r-" });
    expect(decode(GPU, iova, 6).result.fault).toMatch(/GCR3 entry not valid/);
    expect(decode(GPU, iova, 1 << 16).result.fault).toMatch(/beyond EFR.PASmax/);
    s.setDte(NIC, { mode: 0 });
    expect(decode(NIC, iova, 1).result.fault).toMatch(/INVALID_DEVICE_REQUEST/);
  });
});
