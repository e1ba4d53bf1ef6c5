/**
 * The VT-d hardware model on its own: root, context and PASID entries and page tables written by hand
 * (test/hw/helpers), registers programmed over MMIO, DMA from the default platform's vtd0 devices (xhci0 =
 * 00:14.0, sata0 = 00:17.0, nvme0 = 01:00.0 on segment 1). No driver is loaded.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { FR, type VtdHw } from "../../src/hw/index.js";
import {
  bootVtd,
  clearFrcd,
  frcd,
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
  XHCI,
} from "./helpers/encoder.js";

const MIB2 = 2 ** 21;
const GIB = 2 ** 30;
let m: Machine;
let t: Tables;
let hw: VtdHw;

async function boot(options: Record<string, unknown> = {}): Promise<void> {
  ({ m, t, hw } = await bootVtd(options));
}

afterEach(async () => {
  await m.teardown();
});

function dmaFault(fn: () => unknown): DmaFault {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFault) return e;
    throw e;
  }
  throw new Error("expected a DmaFault");
}

function pattern(n: number, seed = 1): Uint8Array {
  const x = new Uint8Array(n);
  for (let i = 0; i < n; i++) x[i] = (i * 7 + seed) & 0xff;
  return x;
}

describe("registers", () => {
  it("advertises the platform's features in CAP and ECAP", async () => {
    await boot({ scalableMode: true, sagaw: [4, 5], pasidBits: 20, domainIdBits: 16, faultRecords: 4 });
    const cap = t.r64(0x08);
    const ecap = t.r64(0x10);
    expect(Number((cap >> 8n) & 0x1fn)).toBe(0b1100); // SAGAW: 48 and 57 bits
    expect(Number(cap & 7n)).toBe(6); // ND: 16 bits of domain ID
    expect(Number((cap >> 40n) & 0xffn)).toBe(3); // NFR = records - 1
    expect((cap >> 39n) & 1n).toBe(1n); // PSI
    expect((ecap >> 43n) & 1n).toBe(1n); // SMTS
    expect((ecap >> 47n) & 1n).toBe(1n); // FLTS
    expect((ecap >> 46n) & 1n).toBe(1n); // SLTS
    expect((ecap >> 26n) & 1n).toBe(1n); // NEST
    expect((ecap >> 40n) & 1n).toBe(1n); // PASID
    expect(Number((ecap >> 35n) & 0x1fn)).toBe(19); // PSS = bits - 1
    expect((ecap >> 29n) & 1n).toBe(1n); // PRS
    expect((ecap >> 45n) & 1n).toBe(1n); // SLADS
  });

  it("legacy-only units clear the scalable-mode capabilities", async () => {
    await boot({ scalableMode: false });
    const ecap = t.r64(0x10);
    expect((ecap >> 43n) & 1n).toBe(0n);
    expect((ecap >> 47n) & 1n).toBe(0n);
    expect((ecap >> 40n) & 1n).toBe(0n);
  });

  it("GCMD takes one command per write and reports a write with two", async () => {
    await boot();
    const s = new Setup(t, false);
    t.w64(0x20, BigInt(s.root));
    t.w32(0x18, 0x40000000); // SRTP
    expect(t.r32(0x1c) & 0x40000000).not.toBe(0); // RTPS
    t.w32(0x18, 0x80000000 | 0x04000000); // TE and QIE at once
    expect(t.r32(0x1c) & 0x84000000).toBe(0);
    expect(m.diag.acknowledge({ kind: "warning", message: /more than one command/ })).toHaveLength(1);
    t.w32(0x18, 0x80000000);
    expect(t.r32(0x1c) & 0x80000000).not.toBe(0);
  });
});

describe("legacy mode: root -> context -> second stage", () => {
  async function legacy(levels = 4) {
    await boot({ scalableMode: false, sagaw: [3, 4] });
    const s = new Setup(t, false);
    const pt = new HandTable(t, levels, ss.table);
    s.writeCtx(XHCI, legacyCtx({ slptptr: pt.root, aw: levels - 2, did: 5 }));
    s.enable();
    return { s, pt };
  }

  it("translates 4 KiB, 2 MiB and 1 GiB second-stage leaves (R|W, no present bit)", async () => {
    const { pt } = await legacy();
    const pa4k = 0x1234_5000;
    pt.map(0x10_0000, pa4k, 1, ss.RW);
    pt.map(0x4000_0000 + MIB2, 0x6000_0000, 2, ss.RW | ss.PS);
    pt.map(2 * GIB, GIB, 3, ss.R | ss.PS);
    const dev = m.device("xhci0");
    dev.dmaWrite(0x10_0010, pattern(16));
    expect(m.memory.readBytes(pa4k + 0x10, 16)).toEqual(pattern(16));
    dev.dmaWrite(0x4000_0000 + MIB2 + 0x1_2340, pattern(8, 3));
    expect(m.memory.readBytes(0x6000_0000 + 0x1_2340, 8)).toEqual(pattern(8, 3));
    m.memory.writeBytes(GIB + 0x3000_0000, pattern(8, 9));
    expect(dev.dmaRead(2 * GIB + 0x3000_0000, 8)).toEqual(pattern(8, 9));
    // A read-only 1 GiB leaf refuses writes with reason 5 (no write permission).
    const f = dmaFault(() => dev.dmaWrite(2 * GIB + 8, pattern(4)));
    expect(f.faultCode).toBe(FR.WRITE);
    expect(frcd(t, 0)).toMatchObject({ f: true, fr: 0x05, sid: XHCI, addr: 2 * GIB, read: false, pp: false });
  });

  it("3-level tables (39-bit AW) and an input beyond the width (reason 4)", async () => {
    const { pt } = await legacy(3);
    pt.map(0x7f_ffff_f000, 0x2000, 1, ss.RW);
    expect(m.device("xhci0").dmaRead(0x7f_ffff_f000, 4)).toHaveLength(4);
    const f = dmaFault(() => m.device("xhci0").dmaRead(2 ** 39, 4));
    expect(f.faultCode).toBe(FR.ADDR_BEYOND_MGAW);
  });

  it("records root/context faults with their reasons", async () => {
    await legacy();
    // sata0's bus has a root entry (bus 0 shared with xhci0), but no context entry.
    expect(dmaFault(() => m.device("sata0").dmaRead(0, 4)).faultCode).toBe(FR.CTX_NOT_PRESENT);
    // nvme0 is on bus 1: no root entry.
    expect(dmaFault(() => m.device("nvme0").dmaRead(0, 4)).faultCode).toBe(FR.ROOT_NOT_PRESENT);
    expect(frcd(t, 0)).toMatchObject({ f: true, fr: 0x02, sid: SATA, read: true });
    expect(frcd(t, 1)).toMatchObject({ f: true, fr: 0x01, sid: NVME });
    expect(t.r32(0x34) & 2).toBe(2); // PPF
    expect((t.r32(0x34) >> 8) & 0xff).toBe(0); // FRI: the first pending record
    // A request with a PASID in legacy mode.
    expect(dmaFault(() => m.device("xhci0").dmaRead(0, 4, { pasid: 1 })).faultCode).toBe(FR.SM_PASID_IN_LEGACY);
  });

  it("sets PFO when the next fault record is still in use, and FPD suppresses recording", async () => {
    await boot({ scalableMode: false, faultRecords: 2 });
    const s = new Setup(t, false);
    s.enable();
    for (let i = 0; i < 3; i++) dmaFault(() => m.device("xhci0").dmaRead(i * 4096, 4));
    expect(frcd(t, 0).f && frcd(t, 1).f).toBe(true);
    expect(t.r32(0x34) & 1).toBe(1); // PFO
    expect(hw.stats.faultsLost).toBe(1);
    clearFrcd(t, 0);
    clearFrcd(t, 1);
    t.w32(0x34, 1); // clear PFO (RW1C)
    expect(t.r32(0x34) & 3).toBe(0);
    s.writeCtx(SATA, legacyCtx({ tt: 0, slptptr: t.alloc(4096), did: 2, fpd: true }));
    dmaFault(() => m.device("sata0").dmaRead(0, 4));
    expect(t.r32(0x34) & 2).toBe(0);
  });

  it("pass-through context entries (TT=2) and TE off reach memory untranslated", async () => {
    await boot({ scalableMode: false });
    m.memory.writeBytes(0x5000, pattern(4));
    expect(m.device("xhci0").dmaRead(0x5000, 4)).toEqual(pattern(4)); // TE off
    const s = new Setup(t, false);
    s.writeCtx(XHCI, legacyCtx({ tt: 2 }));
    s.enable();
    expect(m.device("xhci0").dmaRead(0x5000, 4)).toEqual(pattern(4));
  });
});

describe("scalable mode: root -> context -> PASID entry -> walks", () => {
  async function scalable(opts: Record<string, unknown> = {}) {
    await boot({ scalableMode: true, sagaw: [3, 4, 5], fl5lp: true, ...opts });
    const s = new Setup(t, true);
    const pd = new PasidDir(t);
    s.writeCtx(NVME, smCtx({ pasidDir: pd.dir, pasidE: true, pre: true, dte: true, pdts: 7 }));
    s.enable();
    return { s, pd };
  }

  it("first stage: 4- and 5-level x86-64 tables, 4 KiB / 2 MiB / 1 GiB leaves, A and D set by hardware", async () => {
    const { pd } = await scalable();
    for (const levels of [4, 5]) {
      const pt = new HandTable(t, levels, fs.table);
      const pasid = levels === 4 ? 0 : 7;
      pd.write(pasid, pasidEntry({ pgtt: 1, did: 10 + levels, fsptptr: pt.root, fspm: levels - 4 }));
      const leaf = pt.map(0x1000, 0x30_0000, 1, fs.P | fs.RW | fs.US);
      pt.map(0x4000_0000, 0x5000_0000, 2, fs.P | fs.RW | fs.US | fs.PS);
      pt.map(4 * GIB, GIB, 3, fs.P | fs.US | fs.PS);
      const opt = pasid === 0 ? {} : { pasid };
      const dev = m.device("nvme0");
      dev.dmaWrite(0x1008, pattern(8), opt);
      expect(m.memory.readBytes(0x30_0008, 8)).toEqual(pattern(8));
      expect(t.rq(leaf) & (fs.A | fs.D)).toBe(fs.A | fs.D);
      dev.dmaWrite(0x4000_0000 + 0x1_0000, pattern(4), opt);
      expect(m.memory.readBytes(0x5001_0000, 4)).toEqual(pattern(4));
      expect(dev.dmaRead(4 * GIB + 0x100, 4, opt)).toHaveLength(4);
      expect(dmaFault(() => dev.dmaWrite(4 * GIB, pattern(4), opt)).faultCode).toBe(FR.SM_WRITE);
      expect(dmaFault(() => dev.dmaRead(0x9000, 4, opt)).faultCode).toBe(FR.SM_FS_NOT_PRESENT);
    }
    // 4-level input beyond the canonical lower half.
    expect(dmaFault(() => m.device("nvme0").dmaRead(2 ** 47, 4)).faultCode).toBe(FR.SM_NON_CANONICAL);
  });

  it("first stage: U/S, supervisor requests need SRE, XD refuses execute", async () => {
    const { pd } = await scalable();
    const pt = new HandTable(t, 4, fs.table);
    pd.write(0, pasidEntry({ pgtt: 1, did: 3, fsptptr: pt.root }));
    pt.map(0x1000, 0x10_0000, 1, fs.P | fs.RW); // supervisor-only
    pt.map(0x2000, 0x10_1000, 1, fs.P | fs.US | fs.XD);
    const dev = m.device("nvme0");
    expect(dmaFault(() => dev.dmaRead(0x1000, 4)).faultCode).toBe(FR.SM_US);
    expect(dmaFault(() => dev.dmaRead(0x1000, 4, { privileged: true })).faultCode).toBe(FR.SM_SRE_CLEAR);
    expect(dmaFault(() => dev.dmaRead(0x2000, 4, { exec: true })).faultCode).toBe(FR.SM_EXEC);
    pd.write(1, pasidEntry({ pgtt: 1, did: 4, fsptptr: pt.root, sre: true }));
    expect(dev.dmaRead(0x1000, 4, { pasid: 1, privileged: true })).toHaveLength(4);
    // Supervisor writes to read-only pages pass without WPE and fault with it.
    dev.dmaWrite(0x2000, pattern(4), { pasid: 1, privileged: true });
    pd.write(2, pasidEntry({ pgtt: 1, did: 5, fsptptr: pt.root, sre: true, wpe: true }));
    expect(dmaFault(() => dev.dmaWrite(0x2000, pattern(4), { pasid: 2, privileged: true })).faultCode).toBe(
      FR.SM_WRITE,
    );
  });

  it("second stage by PASID entry, with A/D when SSADE is set", async () => {
    const { pd } = await scalable();
    const pt = new HandTable(t, 4, ss.table);
    pd.write(0, pasidEntry({ pgtt: 2, did: 6, aw: 2, ssptptr: pt.root, ssade: true }));
    const leaf = pt.map(0x8000, 0x20_0000, 1, ss.RW);
    const dev = m.device("nvme0");
    dev.dmaRead(0x8000, 4);
    expect(t.rq(leaf) & (ss.A | ss.D)).toBe(ss.A);
    dev.dmaWrite(0x8000, pattern(4));
    expect(t.rq(leaf) & (ss.A | ss.D)).toBe(ss.A | ss.D);
    expect(dmaFault(() => dev.dmaRead(0x9000, 4)).faultCode).toBe(FR.SM_SS_NOT_PRESENT);
  });

  it("nested: first-stage tables at guest-physical addresses, every access through the second stage", async () => {
    const { pd } = await scalable();
    const s2 = new HandTable(t, 4, ss.table);
    // Guest RAM: GPA [0, 64 MiB) at PA 0x9000_0000 with 2 MiB second-stage leaves.
    for (let g = 0; g < 64 * 2 ** 20; g += MIB2) s2.map(g, 0x9000_0000 + g, 2, ss.RW | ss.PS);
    // The guest's first-stage tables, built at GPAs inside guest RAM (written through their PAs).
    const gpaOf = (pa: number) => pa - 0x9000_0000;
    const g = new Map<number, number>();
    const galloc = (() => {
      let next = 0x9000_0000 + 0x10_0000;
      return () => {
        const at = next;
        next += 4096;
        for (let i = 0; i < 4096; i += 4) m.memory.write32(at + i, 0);
        return at;
      };
    })();
    const rootPa = galloc();
    let table = rootPa;
    for (let l = 4; l > 1; l--) {
      const next = galloc();
      t.q(table, BigInt(gpaOf(next)) | fs.table);
      table = next;
      g.set(l, next);
    }
    t.q(table + 5 * 8, BigInt(0x20_0000) | fs.P | fs.RW | fs.US); // IOVA 0x5000 -> GPA 0x20_0000
    pd.write(0, pasidEntry({ pgtt: 3, did: 9, aw: 2, ssptptr: s2.root, fsptptr: gpaOf(rootPa) }));
    m.device("nvme0").dmaWrite(0x5010, pattern(8));
    expect(m.memory.readBytes(0x9020_0010, 8)).toEqual(pattern(8));
    // A GPA outside guest RAM: the second stage faults on the output.
    t.q(table + 6 * 8, BigInt(0x1000_0000) | fs.P | fs.RW | fs.US);
    expect(dmaFault(() => m.device("nvme0").dmaRead(0x6000, 4)).faultCode).toBe(FR.SM_SS_NOT_PRESENT);
  });

  it("pass-through PASID entries, PASID checks and entry faults", async () => {
    const { s, pd } = await scalable();
    pd.write(0, pasidEntry({ pgtt: 4, did: 1 }));
    m.memory.writeBytes(0x7000, pattern(4));
    expect(m.device("nvme0").dmaRead(0x7000, 4)).toEqual(pattern(4));
    expect(dmaFault(() => m.device("nvme0").dmaRead(0, 4, { pasid: 5 })).faultCode).toBe(FR.SM_PTE_NOT_PRESENT);
    expect(dmaFault(() => m.device("nvme0").dmaRead(0, 4, { pasid: 64 * 5 })).faultCode).toBe(FR.SM_PDIR_NOT_PRESENT);
    pd.write(6, pasidEntry({ pgtt: 7 }));
    expect(dmaFault(() => m.device("nvme0").dmaRead(0, 4, { pasid: 6 })).faultCode).toBe(FR.SM_PTE_INVALID);
    // A context entry without PASIDE refuses requests with a PASID.
    s.writeCtx(XHCI, smCtx({ pasidDir: pd.dir }));
    expect(dmaFault(() => m.device("xhci0").dmaRead(0, 4, { pasid: 1 })).faultCode).toBe(FR.SM_PASIDE_CLEAR);
    // PASID beyond the directory size.
    s.writeCtx(SATA, smCtx({ pasidDir: pd.dir, pasidE: true, pdts: 0 }));
    expect(dmaFault(() => m.device("sata0").dmaRead(0, 4, { pasid: 64 * 128 })).faultCode).toBe(FR.SM_PASID_TOO_LARGE);
    const rec = frcd(t, 1);
    expect(rec).toMatchObject({ fr: FR.SM_PDIR_NOT_PRESENT, pp: true, pv: 320 });
  });
});
