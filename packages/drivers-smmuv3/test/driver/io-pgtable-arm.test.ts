/**
 * The ARM LPAE formats bit by bit (io-pgtable-arm.c's arm_lpae_prot_to_pte and the VMSAv8-64 descriptor layout):
 * leaf encodings per stage and protection, stage-2 concatenation and SL0, TCR/VTCR values, 52-bit PA packing,
 * page-size restriction by PAGE_SIZE, and map/unmap/iova_to_phys through core's engine for every granule.
 */
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  IoPageTable,
  IotlbGather,
  PageAllocator,
  PhysicalMemory,
} from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import { armLpaeFormat, armLpaeRestrictPgsizes, armLpaeS1Cfg, armLpaeS2Cfg } from "../../src/index.js";

const enc = (stage: 1 | 2, level: number, prot: number, hd = false) => {
  const out = new Uint32Array(2);
  armLpaeFormat(stage, 12, { hd }).encodeLeaf(level, prot, out);
  return (BigInt(out[1]!) << 32n) | BigInt(out[0]!);
};

describe("leaf encodings", () => {
  it("stage 1: nG, AF, AP, AttrIndx, SH, XN, DBM", () => {
    // RW, unprivileged, non-cacheable page: type 3 | AP[1] | SH OS | AF | nG.
    expect(enc(1, 0, IOMMU_READ | IOMMU_WRITE)).toBe(0x3n | 0x40n | 0x200n | 0x400n | 0x800n);
    // Read-only cacheable block: type 1 | AttrIndx 1 | AP[1] | AP[2] | SH IS | AF | nG.
    expect(enc(1, 1, IOMMU_READ | IOMMU_CACHE)).toBe(0x1n | 0x4n | 0x40n | 0x80n | 0x300n | 0x400n | 0x800n);
    // Privileged MMIO, no-exec: AttrIndx 2, no AP[1], XN (54:53).
    expect(enc(1, 0, IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO | IOMMU_PRIV | IOMMU_NOEXEC)).toBe(
      0x3n | 0x8n | 0x200n | 0x400n | 0x800n | (3n << 53n),
    );
    // With HD: writable leaves get DBM and stay AP[2]=0 (writable-dirty).
    expect(enc(1, 0, IOMMU_READ | IOMMU_WRITE, true)).toBe(0x3n | 0x40n | 0x200n | 0x400n | 0x800n | (1n << 51n));
  });

  it("stage 2: S2AP, MemAttr, SH, AF, XN; no nG", () => {
    expect(enc(2, 0, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE)).toBe(0x3n | (0xfn << 2n) | 0xc0n | 0x300n | 0x400n);
    expect(enc(2, 0, IOMMU_READ)).toBe(0x3n | (0x5n << 2n) | 0x40n | 0x200n | 0x400n);
    expect(enc(2, 1, IOMMU_WRITE | IOMMU_MMIO | IOMMU_NOEXEC)).toBe(
      0x1n | (0x1n << 2n) | 0x80n | 0x200n | 0x400n | (3n << 53n),
    );
  });

  it("decodes what it encodes", () => {
    for (const stage of [1, 2] as const) {
      const f = armLpaeFormat(stage, 12);
      for (const prot of [IOMMU_READ, IOMMU_READ | IOMMU_WRITE, IOMMU_READ | IOMMU_CACHE | IOMMU_NOEXEC]) {
        const o = new Uint32Array(2);
        f.encodeLeaf(0, prot, o);
        expect(f.decodeProt(o[0]!, o[1]!, 0) & (IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE | IOMMU_NOEXEC)).toBe(prot);
      }
    }
  });

  it("packs PA[51:48] into bits 15:12 for the 64K granule with a 52-bit OAS", () => {
    const f = armLpaeFormat(1, 16, { oas52: true });
    const o = new Uint32Array(2);
    const pa = 0xa_1234_5678_0000;
    f.packOa!(pa, o);
    expect(o[0]! & 0xf000).toBe(0xa000);
    expect(o[1]!).toBe(0x1234);
    expect(f.unpackOa!(o[0]!, o[1]!)).toBe(pa);
  });
});

describe("geometry and configuration registers", () => {
  const mem = new PhysicalMemory({ size: 2 ** 32 });
  const pages = new PageAllocator(mem);
  const mk = (stage: 1 | 2, g: number, ias: number, oas = 48) =>
    new IoPageTable(armLpaeFormat(stage, g), mem, pages, { ias, oas });

  it.each([
    // [granule, ias, levels, root entries, SL0]
    [12, 48, 4, 512, 2],
    [12, 40, 3, 1024, 1], // concatenated: start level 1 with 2 tables
    [12, 32, 3, 4, 1],
    [14, 48, 3, 4096, 2], // concatenated level-1 tables
    [16, 48, 3, 64, 2],
    [16, 42, 2, 8192, 1],
  ])("stage 2, granule 2^%i, IAS %i: %i levels, %i root entries, SL0 %i", (g, ias, levels, entries, sl0) => {
    const pt = mk(2, g, ias);
    expect(pt.levels).toBe(levels);
    expect(armLpaeS2Cfg(pt, true).vtcr).toMatchObject({
      sl: sl0,
      tsz: 64 - ias,
      tg: g === 12 ? 0 : g === 14 ? 2 : 1,
      ps: 5,
    });
    // The root: `entries` descriptors of 8 bytes (concatenated tables are one allocation).
    expect(pt.tablePages).toBe(Math.max(1, (entries * 8) / 4096));
    pt.free();
  });

  it("stage 1 TCR: T0SZ, TG0, IPS, walk attributes; MAIR", () => {
    const pt = mk(1, 14, 48, 44);
    const c = armLpaeS1Cfg(pt, false);
    expect(c.tcr).toEqual({ tsz: 16, tg: 2, irgn: 0, orgn: 0, sh: 2, ips: 4 });
    expect(c.mair).toBe(0xf404ff44n);
    expect(armLpaeS1Cfg(pt, true).tcr).toMatchObject({ irgn: 1, orgn: 1, sh: 3 });
    pt.free();
  });

  it("restricts page sizes to the PAGE_SIZE granule", () => {
    const all = 2 ** 12 + 2 ** 21 + 2 ** 30 + 2 ** 14 + 2 ** 25 + 2 ** 16 + 2 ** 29;
    expect(armLpaeRestrictPgsizes(all, 4096, 48)).toEqual({
      granuleLg2: 12,
      pgsizeBitmap: 2 ** 12 + 2 ** 21 + 2 ** 30,
    });
    expect(armLpaeRestrictPgsizes(all, 16384, 48)).toEqual({ granuleLg2: 14, pgsizeBitmap: 2 ** 14 + 2 ** 25 });
    expect(armLpaeRestrictPgsizes(2 ** 16 + 2 ** 29, 4096, 48)).toEqual({
      granuleLg2: 16,
      pgsizeBitmap: 2 ** 16 + 2 ** 29,
    });
  });

  it.each([12, 14, 16])("granule 2^%i: map, iova_to_phys, unmap at every leaf size (both stages)", (g) => {
    for (const stage of [1, 2] as const) {
      const pt = mk(stage, g, 48);
      const sizes = [g, g + (g - 3)];
      let iova = 2 ** 36;
      for (const lg2 of sizes) {
        const pa = 2 ** 31 + 2 ** lg2 * 3;
        expect(pt.map(iova, pa, 2 ** lg2, 2, IOMMU_READ | IOMMU_WRITE)).toBe(2 ** (lg2 + 1));
        expect(pt.iovaToPhys(iova + 2 ** lg2 + 0x88)).toBe(pa + 2 ** lg2 + 0x88);
        const gather = new IotlbGather();
        expect(pt.unmap(iova, 2 ** lg2, 2, gather)).toBe(2 ** (lg2 + 1));
        gather.freePages(pages);
        expect(pt.iovaToPhys(iova)).toBe(0);
        iova += 2 ** 36;
      }
      pt.free();
    }
  });
});
