/**
 * The AMD-Vi hardware model on its own: DTEs and page tables written by hand (test/hw/helpers), registers programmed
 * over MMIO, DMA from the default platform's amd0 devices (amd-nic0 = 00:01.0, amd-gpu0 = 01:00.0, amd-legacy0 =
 * 02:00.0 aliased to 00:02.0 on segment 2). No driver is loaded.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import type { AmdHw } from "../../src/hw/index.js";
import { bootAmd, GPU, LEGACY_ALIAS, NIC, Setup, type Tables, v1, v1Sized, x86 } from "./helpers/encoder.js";

let m: Machine;
let t: Tables;
let hw: AmdHw;
const MIB2 = 2 ** 21;
const GIB = 2 ** 30;

async function boot(options: Record<string, unknown> = {}): Promise<Setup> {
  ({ m, t, hw } = await bootAmd(options));
  return new Setup(t);
}

afterEach(async () => {
  await m.teardown();
});

function fault(fn: () => unknown): DmaFault {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFault) return e;
    throw e;
  }
  throw new Error("expected a DmaFault");
}

const EV = { ILL_DEV: 1, IO_PAGE_FAULT: 2, DEV_TAB_HW: 3, PAGE_TAB_HW: 4, ILL_CMD: 5, INV_DEV_REQ: 8 };

/** A table chain for `iova` down to `leafLevel` in a `mode`-level table; returns the leaf slot's address. */
function chain(root: number, mode: number, iova: number, leafLevel: number): number {
  let table = root;
  for (let level = mode; level > leafLevel; level--) {
    const idx = Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512;
    const slot = table + 8 * idx;
    let next = Number(t.rq(slot) & 0x000f_ffff_ffff_f000n);
    if (!(t.rq(slot) & 1n)) {
      next = t.alloc(4096);
      t.q(slot, v1(next, level - 1));
    }
    table = next;
  }
  return table + 8 * (Math.floor(iova / 2 ** (12 + 9 * (leafLevel - 1))) % 512);
}

describe("registers", () => {
  it("advertises the platform's features in the EFR", async () => {
    await boot({ ppr: true, v2: true, pasidBits: 16, hostLevels: 6 });
    const efr = t.r64(0x30);
    expect((efr >> 1n) & 1n).toBe(1n); // PPRSup
    expect((efr >> 4n) & 1n).toBe(1n); // GTSup
    expect((efr >> 6n) & 1n).toBe(1n); // IASup
    expect(Number((efr >> 10n) & 3n)).toBe(2); // HATS: 6 levels
    expect(Number((efr >> 32n) & 0x1fn)).toBe(15); // PASmax
    await m.teardown();
    await boot({ ppr: false, v2: false, hostLevels: 4 });
    const e2 = t.r64(0x30);
    expect((e2 >> 1n) & 1n).toBe(0n);
    expect((e2 >> 4n) & 1n).toBe(0n);
    expect(Number((e2 >> 10n) & 3n)).toBe(0);
  });

  it("passes DMA through untranslated while the IOMMU is off, and for a DTE with V=0", async () => {
    ({ m, t, hw } = await bootAmd());
    m.memory.write32(0x5000, 0x1234);
    expect(m.device("amd-nic0").dmaRead(0x5000, 4)).toEqual(new Uint8Array([0x34, 0x12, 0, 0]));
    const s = new Setup(t);
    s.setDte(NIC, { v: false });
    expect(m.device("amd-nic0").dmaRead(0x5000, 4)).toEqual(new Uint8Array([0x34, 0x12, 0, 0]));
  });
});

describe("v1 host tables", () => {
  for (const mode of [1, 2, 3, 4, 5, 6]) {
    it(`mode ${mode}: 4 KiB pages through ${mode} levels`, async () => {
      const s = await boot();
      const root = t.alloc(4096);
      const iova = mode === 1 ? 0x1f_f000 : 0x4567_8000 % 2 ** (12 + 9 * mode);
      const buf = t.alloc(4096);
      t.q(chain(root, mode, iova, 1), v1(buf, 0));
      s.setDte(NIC, { mode, root, did: 7 });
      m.device("amd-nic0").dmaWrite(iova + 0x10, new Uint8Array([1, 2, 3, 4]));
      expect(m.memory.read32(buf + 0x10)).toBe(0x04030201);
      expect(m.device("amd-nic0").dmaRead(iova + 0x10, 4)).toEqual(new Uint8Array([1, 2, 3, 4]));
      // An address beyond the mode's reach faults (modes below 6).
      if (mode < 5) expect(fault(() => m.device("amd-nic0").dmaRead(2 ** (12 + 9 * mode), 4)).faultCode).toBe(2);
    });
  }

  it("large pages: natural 2 MiB and 1 GiB leaves (next level 0)", async () => {
    const s = await boot();
    const root = t.alloc(4096);
    t.q(chain(root, 3, 0x4000_0000 + 3 * MIB2, 2), v1(0x1_0000_0000 + 5 * MIB2, 0));
    t.q(chain(root, 3, 2 * GIB, 3), v1(3 * GIB, 0));
    s.setDte(NIC, { mode: 3, root });
    m.memory.write32(0x1_0000_0000 + 5 * MIB2 + 0x12_3450, 0xaabbccdd);
    m.memory.write32(3 * GIB + 0x2345_6780, 0x11223344);
    expect(m.device("amd-nic0").dmaRead(0x4000_0000 + 3 * MIB2 + 0x12_3450, 4)).toEqual(
      new Uint8Array([0xdd, 0xcc, 0xbb, 0xaa]),
    );
    expect(m.device("amd-nic0").dmaRead(2 * GIB + 0x2345_6780, 4)).toEqual(new Uint8Array([0x44, 0x33, 0x22, 0x11]));
  });

  for (const [lg2, level] of [
    [13, 1],
    [14, 1],
    [16, 1],
    [22, 2],
    [25, 2],
    [31, 3],
  ] as const) {
    it(`large pages: a 2^${lg2}-byte page by next level 7, replicated in a level-${level} table`, async () => {
      const s = await boot();
      const root = t.alloc(4096);
      const size = 2 ** lg2;
      const iova = 4 * size;
      const pa = 0x1_0000_0000 + 8 * size;
      const slotSize = 2 ** (12 + 9 * (level - 1));
      for (let off = 0; off < size; off += slotSize) t.q(chain(root, 4, iova + off, level), v1Sized(pa, lg2));
      s.setDte(NIC, { mode: 4, root });
      const at = size - 8;
      m.memory.write32(pa + at, 0x5a5a0001);
      expect(m.device("amd-nic0").dmaRead(iova + at, 4)).toEqual(new Uint8Array([1, 0, 0x5a, 0x5a]));
      // The whole page is one translation: a read across its end stops at the page boundary.
      expect(hw.stats.walks).toBe(1);
    });
  }

  it("level skipping: a next-level field below the next level skips tables whose IOVA bits must be zero", async () => {
    const s = await boot();
    const root = t.alloc(4096);
    const l1 = t.alloc(4096);
    const buf = t.alloc(4096);
    // Mode 4: the root (level 4) entry 0 points straight at a level-1 table.
    t.q(root, v1(l1, 1));
    t.q(l1 + 8 * 3, v1(buf, 0));
    s.setDte(NIC, { mode: 4, root, did: 3 });
    m.memory.write32(buf, 0xfeedf00d);
    expect(m.memory.read32(buf)).toBe(0xfeedf00d);
    expect(m.device("amd-nic0").dmaRead(0x3000, 4)).toEqual(new Uint8Array([0x0d, 0xf0, 0xed, 0xfe]));
    // IOVA bits of the skipped levels 3 and 2 set: a page fault.
    expect(fault(() => m.device("amd-nic0").dmaRead(MIB2 + 0x3000, 4)).faultCode).toBe(EV.IO_PAGE_FAULT);
    expect(fault(() => m.device("amd-nic0").dmaRead(GIB + 0x3000, 4)).faultCode).toBe(EV.IO_PAGE_FAULT);
  });

  it("IR/IW are ANDed over the DTE and every level; a denied write logs IO_PAGE_FAULT with RW and PE", async () => {
    const s = await boot();
    const root = t.alloc(4096);
    const buf = t.alloc(4096);
    const l1 = chain(root, 3, 0x1000, 1);
    t.q(l1, v1(buf, 0, true, false));
    t.q(l1 + 8, v1(buf, 0, true, true));
    s.setDte(NIC, { mode: 3, root, did: 0x12345 & 0xffff });
    m.device("amd-nic0").dmaRead(0x1000, 4);
    const f = fault(() => m.device("amd-nic0").dmaWrite(0x1000, new Uint8Array(4)));
    expect(f.faultCode).toBe(EV.IO_PAGE_FAULT);
    const ev = s.events().at(-1)!;
    expect(ev).toMatchObject({ code: EV.IO_PAGE_FAULT, devid: NIC, id: 0x2345, addr: 0x1000n });
    expect(ev.flags & 0x20).toBe(0x20); // RW
    expect(ev.flags & 0x40).toBe(0x40); // PE
    m.device("amd-nic0").dmaWrite(0x2000, new Uint8Array(4));
    // The DTE's IW gates translated accesses too.
    s.setDte(GPU, { mode: 3, root, iw: false });
    expect(fault(() => m.device("amd-gpu0").dmaWrite(0x2000, new Uint8Array(4))).faultCode).toBe(EV.IO_PAGE_FAULT);
  });

  it("mode 0 translates nothing and IR/IW alone gate the access", async () => {
    const s = await boot();
    s.setDte(NIC, { mode: 0, ir: true, iw: false });
    m.memory.write32(0x7000, 9);
    expect(m.device("amd-nic0").dmaRead(0x7000, 1)).toEqual(new Uint8Array([9]));
    expect(fault(() => m.device("amd-nic0").dmaWrite(0x7000, new Uint8Array(1))).faultCode).toBe(EV.IO_PAGE_FAULT);
  });

  it("an IVRS alias entry: amd-legacy0's DMA uses the DTE of its alias 00:02.0", async () => {
    const s = await boot();
    const root = t.alloc(4096);
    const buf = t.alloc(4096);
    t.q(chain(root, 3, 0x9000, 1), v1(buf, 0));
    s.setDte(LEGACY_ALIAS, { mode: 3, root });
    m.memory.write32(buf, 77);
    expect(m.device("amd-legacy0").dmaRead(0x9000, 1)).toEqual(new Uint8Array([77]));
  });
});

describe("events", () => {
  it("architected event types: not present, illegal DTE, device table and page table hardware errors, invalid request", async () => {
    const s = await boot();
    const root = t.alloc(4096);
    s.setDte(NIC, { mode: 3, root, did: 5 });
    expect(fault(() => m.device("amd-nic0").dmaRead(0x1000, 4)).faultCode).toBe(EV.IO_PAGE_FAULT);
    s.setDte(GPU, { mode: 7, root });
    expect(fault(() => m.device("amd-gpu0").dmaRead(0x1000, 4)).faultCode).toBe(EV.ILL_DEV);
    // A PASID on a DTE without GV.
    s.setDte(LEGACY_ALIAS, { mode: 3, root });
    expect(fault(() => m.device("amd-legacy0").dmaRead(0x1000, 4, { pasid: 3 })).faultCode).toBe(EV.INV_DEV_REQ);
    const ev = s.events();
    expect(ev.map((e) => e.code)).toEqual([EV.IO_PAGE_FAULT, EV.ILL_DEV, EV.INV_DEV_REQ]);
    expect(ev[0]).toMatchObject({ devid: NIC, id: 5, addr: 0x1000n });
    expect(ev[2]).toMatchObject({ devid: LEGACY_ALIAS, id: 3 });
    // A host table outside memory.
    await m.teardown();
    const s2 = await boot();
    s2.setDte(NIC, { mode: 3, root: 2 ** 40 });
    expect(fault(() => m.device("amd-nic0").dmaRead(0x1000, 4)).faultCode).toBe(EV.PAGE_TAB_HW);
    // A DeviceID beyond the device table (16 KiB = 512 entries): shrink the table to one page (128 entries).
    t.w64(0x0000, BigInt(s2.devTab));
    expect(fault(() => m.device("amd-gpu0").dmaRead(0x1000, 4)).faultCode).toBe(EV.DEV_TAB_HW);
    expect(s2.events().map((e) => e.code)).toEqual([EV.PAGE_TAB_HW, EV.DEV_TAB_HW]);
  });

  it("a DTE with page-fault logging suppressed faults without an event", async () => {
    const s = await boot();
    s.setDte(NIC, { mode: 3, root: t.alloc(4096), noPageFault: true });
    fault(() => m.device("amd-nic0").dmaRead(0x1000, 4));
    expect(s.events()).toEqual([]);
  });

  it("a full event log sets EventOverflow and drops the event", async () => {
    ({ m, t, hw } = await bootAmd());
    const s = new Setup(t, { evtLen: 3 }); // 8 entries: 7 usable
    s.setDte(NIC, { mode: 3, root: t.alloc(4096) });
    for (let i = 0; i < 9; i++) fault(() => m.device("amd-nic0").dmaRead(0x1000 * i, 4));
    expect(s.events()).toHaveLength(7);
    expect(t.r32(0x2020) & 1).toBe(1);
    expect(hw.stats.eventsLost).toBe(2);
    t.w32(0x2020, 1); // write 1 to clear
    expect(t.r32(0x2020) & 1).toBe(0);
  });
});

describe("command buffer and caches", () => {
  it("COMPLETION_WAIT stores its data once the commands before it are done", async () => {
    const s = await boot();
    const sem = t.alloc(4096);
    s.cmd(BigInt(sem) | 1n | (0x1n << 60n), 0x1234_5678_9abc_def0n);
    expect(t.rq(sem)).toBe(0x1234_5678_9abc_def0n);
    expect(t.r32(0x2000)).toBe(16);
  });

  it("COMPLETION_WAIT with I sets ComWaitInt (write 1 to clear); INVALIDATE_IOTLB_PAGES reaches the device", async () => {
    const s = await boot();
    let irqs = 0;
    hw.connectIrq("comwait", () => irqs++);
    t.w64(0x0018, t.r64(0x0018) | (1n << 4n)); // ComWaitIntEn
    s.cmd(2n | (0x1n << 60n), 0n);
    expect(t.r32(0x2020) & 4).toBe(4);
    expect(irqs).toBe(1);
    t.w32(0x2020, 4);
    expect(t.r32(0x2020) & 4).toBe(0);
    // INVALIDATE_IOTLB_PAGES for DeviceID 0x100 with S: bit 12 clear, so 8 KiB at 0x4000.
    s.cmd(BigInt(GPU) | (BigInt(GPU) << 32n) | (0x4n << 60n), 1n | 0x4000n);
    expect(hw.devTlbInvalidations).toEqual([{ devid: GPU, pasid: -1, start: 0x4000, end: 0x5fff }]);
  });

  it("a full PPR log sets PPROverflow and the unit answers the request itself", async () => {
    ({ m, t, hw } = await bootAmd());
    const s = new Setup(t, { pprLen: 3 }); // 8 entries: 7 usable
    s.setDte(GPU, { gv: true, ppr: true });
    for (let i = 0; i < 8; i++) hw.pageRequest(GPU, 1, 0x1000 * i, 1, i);
    expect(t.r32(0x2038)).toBe(7 * 16);
    expect(t.r32(0x2020) & 0x20).toBe(0x20);
    expect(hw.pprResponses).toEqual([{ devid: GPU, pasid: 1, tag: 7, status: 1, auto: true }]);
  });

  it("an illegal command is logged with its address and stops the buffer", async () => {
    const s = await boot();
    const sem = t.alloc(4096);
    s.cmd(0xfn << 60n, 0n);
    s.cmd(BigInt(sem) | 1n | (0x1n << 60n), 1n);
    expect(t.rq(sem)).toBe(0n);
    expect(t.r32(0x2000)).toBe(0); // head still at the illegal command
    expect(t.r32(0x2020) & 0x10).toBe(0); // CmdBufRun clear
    expect(s.events()).toEqual([expect.objectContaining({ code: EV.ILL_CMD, addr: BigInt(s.cmdBuf) })]);
  });

  it("a changed DTE is used only after INVALIDATE_DEVTAB_ENTRY; strict mode reports the stale hit", async () => {
    const s = await boot({ strict: true });
    const root = t.alloc(4096);
    const a = t.alloc(4096);
    t.q(chain(root, 3, 0x1000, 1), v1(a, 0));
    s.setDte(NIC, { mode: 3, root, did: 1 });
    m.device("amd-nic0").dmaRead(0x1000, 4);
    s.setDte(NIC, { mode: 0, ir: false, iw: false, did: 1 });
    // The cached DTE still translates, and strict mode says so.
    m.diag.expectWarningSync(/stale DTE cache entry/, () => m.device("amd-nic0").dmaRead(0x1000, 4));
    expect(hw.stats.staleReports).toBe(1);
    s.invDte(NIC);
    expect(fault(() => m.device("amd-nic0").dmaRead(0x1000, 4)).faultCode).toBe(EV.IO_PAGE_FAULT);
  });

  it("INVALIDATE_IOMMU_PAGES: one page, or a size-encoded aligned range, of one domain only", async () => {
    const s = await boot();
    const root = t.alloc(4096);
    const pages = [0x1000, 0x20_0000, 0x3f_f000, 0x4000_0000];
    for (const p of pages) t.q(chain(root, 3, p, 1), v1(t.alloc(4096), 0));
    s.setDte(NIC, { mode: 3, root, did: 1 });
    s.setDte(GPU, { mode: 3, root, did: 2 });
    for (const p of pages) {
      m.device("amd-nic0").dmaRead(p, 4);
      m.device("amd-gpu0").dmaRead(p, 4);
    }
    expect(hw.iotlb.used).toBe(8);
    s.invPages(1, 0x1000n, false);
    expect(hw.iotlb.used).toBe(7);
    // 0x20_0000 with S and bits 20:12 set: the first zero bit is 21, so the range is 4 MiB at 0.
    s.invPages(1, 0x20_0000n | 0x1f_f000n, true);
    expect(hw.iotlb.used).toBe(5);
    // All ones: everything of domain 2.
    s.invPages(2, 0x7fff_ffff_ffff_f000n, true);
    expect(hw.iotlb.used).toBe(1);
    s.cmd(0x8n << 60n, 0n); // INVALIDATE_IOMMU_ALL
    expect(hw.iotlb.used).toBe(0);
  });

  it("strict mode reports an IOTLB hit for a page the tables no longer map", async () => {
    const s = await boot({ strict: true });
    const root = t.alloc(4096);
    const slot = chain(root, 3, 0x5000, 1);
    t.q(slot, v1(t.alloc(4096), 0));
    s.setDte(NIC, { mode: 3, root, did: 4 });
    m.device("amd-nic0").dmaRead(0x5000, 4);
    t.q(slot, 0n);
    m.diag.expectWarningSync(/stale IOTLB entry/, () => m.device("amd-nic0").dmaRead(0x5000, 4));
    expect(hw.stats.staleReports).toBe(1);
    s.invPages(4, 0x5000n, false);
    expect(fault(() => m.device("amd-nic0").dmaRead(0x5000, 4)).faultCode).toBe(EV.IO_PAGE_FAULT);
  });
});

describe("v2 guest tables and the PPR log", () => {
  async function v2Setup(levels: 4 | 5) {
    const s = await boot();
    const gcr3 = t.alloc(4096);
    const cr3 = t.alloc(4096);
    const buf = t.alloc(4096);
    let table = cr3;
    const iova = 0x12_3456_7000;
    for (let level = levels; level > 1; level--) {
      const next = t.alloc(4096);
      t.q(table + 8 * (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512), x86(next));
      table = next;
    }
    t.q(table + 8 * (Math.floor(iova / 4096) % 512), x86(buf, false));
    return { s, gcr3, cr3, buf, iova };
  }

  for (const levels of [4, 5] as const) {
    it(`GV: PASID 5 through a one-level GCR3 table and ${levels}-level x86-64 tables`, async () => {
      const { s, gcr3, cr3, buf, iova } = await v2Setup(levels);
      t.q(gcr3 + 8 * 5, BigInt(cr3) | 1n);
      s.setDte(GPU, { gv: true, glx: 0, gcr3, gptLevel: levels === 5 ? 1 : 0, did: 9 });
      m.memory.write32(buf + 0x40, 0xc0ffee);
      expect(m.device("amd-gpu0").dmaRead(iova + 0x40, 4, { pasid: 5 })).toEqual(new Uint8Array([0xee, 0xff, 0xc0, 0]));
      // Read-only leaf; an unset PASID entry faults with GN and the PASID in the event.
      expect(fault(() => m.device("amd-gpu0").dmaWrite(iova, new Uint8Array(1), { pasid: 5 })).faultCode).toBe(2);
      expect(fault(() => m.device("amd-gpu0").dmaRead(iova, 1, { pasid: 6 })).faultCode).toBe(2);
      const ev = s.events().at(-1)!;
      expect(ev).toMatchObject({ code: 2, id: 6 });
      expect(ev.flags & 1).toBe(1);
    });
  }

  it("GIOV: requests without a PASID use GCR3[0]; a two-level GCR3 table reaches PASID 0x345", async () => {
    const { s, gcr3, cr3, iova } = await v2Setup(4);
    const l0 = t.alloc(4096);
    t.q(gcr3, BigInt(l0) | 1n); // GLX=1: level 1 index 0 → level-0 table
    t.q(l0, BigInt(cr3) | 1n);
    const l0b = t.alloc(4096);
    t.q(gcr3 + 8 * 1, BigInt(l0b) | 1n);
    t.q(l0b + 8 * 0x145, BigInt(cr3) | 1n);
    s.setDte(GPU, { gv: true, giov: true, glx: 1, gcr3, did: 9 });
    m.device("amd-gpu0").dmaRead(iova, 4);
    m.device("amd-gpu0").dmaRead(iova, 4, { pasid: 0x345 });
  });

  it("a page request becomes a PPR log entry when the DTE enables PPR, else the unit answers it", async () => {
    const s = await boot();
    s.setDte(GPU, { gv: true, ppr: true });
    s.setDte(NIC, { mode: 0 });
    hw.pageRequest(GPU, 0x1_2345, 0x7_6543_2000, 1 | 2, 0x1a5);
    const q0 = t.rq(s.pprLog);
    const q1 = t.rq(s.pprLog + 8);
    expect(Number(q0 & 0xffffn)).toBe(GPU);
    expect(Number((q0 >> 16n) & 0xffffn) | (Number((q0 >> 42n) & 0xfn) << 16)).toBe(0x1_2345);
    expect(Number((q0 >> 32n) & 0x3ffn)).toBe(0x1a5);
    expect(Number((q0 >> 48n) & 0xfffn)).toBe(0x004 | 0x020 | 0x100);
    expect(Number(q0 >> 60n)).toBe(1);
    expect(q1).toBe(0x7_6543_2000n);
    expect(t.r32(0x2038)).toBe(16);
    hw.pageRequest(NIC, -1, 0x1000, 1, 3);
    expect(hw.pprResponses).toEqual([{ devid: NIC, pasid: -1, tag: 3, status: 1, auto: true }]);
    // COMPLETE_PPR_REQUEST answers the first one.
    s.cmd(BigInt(GPU) | (0x1_2345n << 32n) | (0x7n << 60n), 4n | (0x1a5n << 32n));
    expect(hw.pprResponses.at(-1)).toEqual({ devid: GPU, pasid: 0x1_2345, tag: 0x1a5, status: 0, auto: false });
  });
});
