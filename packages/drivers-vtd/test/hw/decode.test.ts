/**
 * The independent decoder (`decodeVtdTranslation`, what `iommu-sim inspect` prints) against the hardware model on
 * hand-built tables: for every probe the decoder's output address is where the device's DMA lands, and its fault
 * carries the reason code the model recorded. Legacy and scalable mode, first stage (4 and 5 levels), second stage
 * (3-5 levels), nested over a 5-level second stage, every large-page size, pass-through, and the entry faults.
 * Decoding changes nothing in memory (no accessed bits).
 */
import { DmaFault, type Machine, type TranslationPath } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { decodeVtdTranslation, FR } from "../../src/hw/index.js";
import {
  bootVtd,
  fs,
  HandTable,
  legacyCtx,
  NVME,
  PasidDir,
  pasidEntry,
  SATA,
  Setup,
  smCtx,
  ss,
  type Tables,
  VTD_BASE,
  XHCI,
} from "./helpers/encoder.js";

const MIB2 = 2 ** 21;
const GIB = 2 ** 30;
let m: Machine;
let t: Tables;

afterEach(async () => {
  await m.teardown();
});

const DEV: Record<number, string> = { [XHCI]: "xhci0", [SATA]: "sata0", [NVME]: "nvme0" };

function decode(
  sid: number,
  iova: number,
  pasid = -1,
): Omit<TranslationPath, "iommu" | "kind" | "requesterId" | "pasid" | "iova"> {
  return decodeVtdTranslation({
    memory: m.memory,
    readReg: (off) => m.mmio.read32(VTD_BASE + off),
    requesterId: sid,
    pasid,
    iova,
  });
}

let marker = 0x11;
/**
 * Decode (sid, pasid, iova), then DMA-read one byte there: a decoded PA must hold the byte the DMA reads (a fresh
 * marker is written at it first), a decoded fault must name the reason code the DMA faulted with.
 */
function agree(sid: number, iova: number, pasid = -1): ReturnType<typeof decode> {
  const d = decode(sid, iova, pasid);
  const opts = pasid >= 0 ? { pasid } : {};
  let got: number | DmaFault;
  if (d.result.fault === undefined) {
    marker = (marker * 5 + 3) & 0xff;
    m.memory.writeBytes(d.result.pa!, Uint8Array.of(marker));
  }
  try {
    got = m.device(DEV[sid]!).dmaRead(iova, 1, opts)[0]!;
  } catch (e) {
    if (!(e instanceof DmaFault)) throw e;
    got = e;
  }
  if (got instanceof DmaFault) {
    expect(d.result.fault, `decoder gave PA for a DMA that faulted with ${got.faultReason}`).toBeDefined();
    // Legacy second-stage "not present" is reported with the access's reason (0x6 for this read).
    expect(d.result.fault).toContain(`0x${got.faultCode.toString(16)}`);
  } else {
    expect(d.result.fault, `decoder faulted (${d.result.fault}) where the DMA read ${got}`).toBeUndefined();
    expect(got).toBe(marker);
  }
  return d;
}

describe("legacy mode", () => {
  it("root -> context -> second stage (4 and 3 levels), 4 KiB / 2 MiB / 1 GiB leaves, and the entry faults", async () => {
    ({ m, t } = await bootVtd({ scalableMode: false, sagaw: [3, 4] }));
    const s = new Setup(t, false);
    const pt = new HandTable(t, 4, ss.table);
    s.writeCtx(XHCI, legacyCtx({ slptptr: pt.root, aw: 2, did: 5 }));
    const pt3 = new HandTable(t, 3, ss.table);
    s.writeCtx(SATA, legacyCtx({ slptptr: pt3.root, aw: 1, did: 6 }));
    s.enable();
    const leaf = pt.map(0x10_0000, 0x1234_5000, 1, ss.RW);
    pt.map(0x4000_0000 + MIB2, 0x6000_0000, 2, ss.RW | ss.PS);
    pt.map(2 * GIB, GIB, 3, ss.R | ss.PS);
    pt3.map(0x7f_ffff_f000, 0x2000, 1, ss.RW);
    const first = decode(XHCI, 0x10_0010);
    expect(first.levels.map((l) => l.name)).toEqual([
      "root entry",
      "context entry",
      "L4 table",
      "L3 table",
      "L2 table",
      "L1 4K page",
    ]);
    expect(first.levels[1]!.fields).toMatchObject({ P: true, TT: "multi-level", DID: 5 });
    expect(first.result).toEqual({ pa: 0x1234_5010, size: 4096, perm: "rwx" });
    // Side-effect-free: the leaf's accessed bit is still clear after decoding.
    expect(t.rq(leaf) & ss.A).toBe(0n);
    agree(XHCI, 0x10_0010);
    expect(agree(XHCI, 0x4000_0000 + MIB2 + 0x1_2340).result.size).toBe(MIB2);
    const big = agree(XHCI, 2 * GIB + 0x3000_0000);
    expect(big.result).toMatchObject({ size: GIB, perm: "r-x" });
    expect(big.levels.at(-1)!.name).toBe("L3 1G page");
    agree(XHCI, 0x9000); // not present
    agree(XHCI, 2 ** 48); // beyond the address width
    agree(SATA, 0x7f_ffff_f000); // 3-level
    agree(SATA, 2 ** 39);
    agree(NVME, 0); // bus 1 has no root entry
    // Entry changes reach the unit after a global context-cache invalidation (CCMD: ICC, CIRG = global).
    const ccGlobal = () => {
      t.w32(0x28, 0);
      t.w32(0x2c, 0xa000_0000);
    };
    s.writeCtx(SATA, [0n, 0n]);
    ccGlobal();
    agree(SATA, 0); // context not present
    s.writeCtx(SATA, legacyCtx({ tt: 2 }));
    ccGlobal();
    expect(agree(SATA, 0x5000).result).toEqual({ pa: 0x5000, perm: "rwx" }); // pass-through
    expect(decode(XHCI, 0, 1).result.fault).toContain(`0x${FR.SM_PASID_IN_LEGACY.toString(16)}`);
  });
});

describe("scalable mode", () => {
  async function scalable() {
    ({ m, t } = await bootVtd({ scalableMode: true, sagaw: [3, 4, 5], fl5lp: true }));
    const s = new Setup(t, true);
    const pd = new PasidDir(t);
    s.writeCtx(NVME, smCtx({ pasidDir: pd.dir, pasidE: true, pre: true, dte: true, pdts: 7 }));
    s.writeCtx(XHCI, smCtx({ pasidDir: pd.dir }));
    s.enable();
    return { s, pd };
  }

  it("first stage, 4- and 5-level, every leaf size; pass-through; PASID entry faults", async () => {
    const { pd } = await scalable();
    for (const levels of [4, 5]) {
      const pt = new HandTable(t, levels, fs.table);
      const pasid = levels === 4 ? 0 : 7;
      pd.write(pasid, pasidEntry({ pgtt: 1, did: 10 + levels, fsptptr: pt.root, fspm: levels - 4 }));
      const leaf = pt.map(0x1000, 0x30_0000, 1, fs.P | fs.RW | fs.US);
      pt.map(0x4000_0000, 0x5000_0000, 2, fs.P | fs.RW | fs.US | fs.PS);
      pt.map(4 * GIB, GIB, 3, fs.P | fs.US | fs.PS | fs.XD);
      const p = levels === 4 ? -1 : pasid;
      const d = decode(NVME, 0x1008, p);
      expect(d.levels.map((l) => l.name).slice(0, 4)).toEqual([
        "SM root entry",
        "SM context",
        "PASID dir",
        "PASID entry",
      ]);
      expect(d.levels[3]!.fields).toMatchObject({ PGTT: "first-stage", FSPM: `${levels - 4} (${levels}-level)` });
      expect(d.levels).toHaveLength(4 + levels);
      expect(t.rq(leaf) & fs.A).toBe(0n);
      agree(NVME, 0x1008, p);
      expect(agree(NVME, 0x4000_0000 + 0x1_0000, p).result.size).toBe(MIB2);
      expect(agree(NVME, 4 * GIB + 0x100, p).result).toMatchObject({ size: GIB, perm: "r--" });
      agree(NVME, 0x9000, p);
    }
    agree(NVME, 2 ** 47); // beyond the 4-level canonical lower half
    expect(agree(NVME, 2 ** 47, 7).result.fault).toContain("(reason 0x71)"); // 5 levels: in range, not mapped
    pd.write(3, pasidEntry({ pgtt: 4, did: 1 }));
    expect(agree(NVME, 0x7000, 3).result).toEqual({ pa: 0x7000, perm: "rwx" });
    agree(NVME, 0, 5); // PASID entry not present
    agree(NVME, 0, 64 * 5); // PASID directory entry not present
    pd.write(6, pasidEntry({ pgtt: 7 }));
    agree(NVME, 0, 6); // reserved PGTT
    agree(XHCI, 0, 1); // PASIDE clear
    agree(SATA, 0); // scalable context not present
  });

  it("second stage 5-level (2 MiB / 1 GiB leaves) and nested over it, the first stage's tables at GPAs", async () => {
    const { pd } = await scalable();
    const s2 = new HandTable(t, 5, ss.table);
    // Guest RAM: GPA [0, 64 MiB) at PA 0x9000_0000 in 2 MiB leaves; GPA 1 GiB.. as one 1 GiB leaf.
    for (let g = 0; g < 64 * 2 ** 20; g += MIB2) s2.map(g, 0x9000_0000 + g, 2, ss.RW | ss.PS);
    s2.map(GIB, 2 * GIB, 3, ss.R | ss.PS);
    pd.write(1, pasidEntry({ pgtt: 2, did: 6, aw: 3, ssptptr: s2.root }));
    expect(agree(NVME, 0x12_3456, 1).result).toMatchObject({ pa: 0x9012_3456, size: MIB2 });
    expect(agree(NVME, GIB + 0x1234_5678, 1).result).toMatchObject({ pa: 2 * GIB + 0x1234_5678, size: GIB });
    agree(NVME, 0x1000_0000, 1); // not present
    // The guest's 4-level first stage, in guest RAM.
    let next = 0x9000_0000 + 0x10_0000;
    const galloc = () => {
      const at = next;
      next += 4096;
      for (let i = 0; i < 4096; i += 4) m.memory.write32(at + i, 0);
      return at;
    };
    const gpaOf = (pa: number) => pa - 0x9000_0000;
    const rootPa = galloc();
    let table = rootPa;
    for (let l = 4; l > 2; l--) {
      const n = galloc();
      t.q(table, BigInt(gpaOf(n)) | fs.table);
      table = n;
    }
    const pt = galloc();
    t.q(table, BigInt(gpaOf(pt)) | fs.table); // L2[0] -> L1
    t.q(table + 8, BigInt(0x40_0000) | fs.P | fs.RW | fs.US | fs.PS); // IOVA 2 MiB -> GPA 4 MiB (2 MiB leaf)
    t.q(pt + 5 * 8, BigInt(0x20_0000) | fs.P | fs.RW | fs.US); // IOVA 0x5000 -> GPA 2 MiB
    t.q(pt + 6 * 8, BigInt(0x1000_0000) | fs.P | fs.RW | fs.US); // GPA outside guest RAM
    t.q(pt + 7 * 8, BigInt(GIB + 0x8000) | fs.P | fs.RW | fs.US); // GPA in the read-only 1 GiB leaf
    pd.write(2, pasidEntry({ pgtt: 3, did: 9, aw: 3, ssptptr: s2.root, fsptptr: gpaOf(rootPa) }));
    const d = agree(NVME, 0x5010, 2);
    expect(d.result).toMatchObject({ pa: 0x9020_0010, size: 4096 });
    const names = d.levels.map((l) => l.name);
    expect(names[4]).toMatch(/^FS L4 table \(GPA 0x/);
    expect(names).toContain("SS L5 table");
    expect(names.at(-1)).toBe("SS L2 2M page");
    expect(agree(NVME, MIB2 + 0x1234, 2).result).toMatchObject({ pa: 0x9040_1234, size: MIB2 });
    expect(agree(NVME, 0x6000, 2).result.fault).toMatch(/second-stage fault on the output GPA 0x10000000/);
    expect(agree(NVME, 0x7000, 2).result).toMatchObject({ pa: 2 * GIB + 0x8000, perm: "r-x" });
  });
});
