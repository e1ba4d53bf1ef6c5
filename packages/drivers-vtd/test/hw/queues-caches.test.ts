/**
 * VT-d caches and queues on their own: tiny caches (2 entries) so replacement and invalidation are exercised,
 * invalidation by queued descriptors (128- and 256-bit) and by registers, the error state of a bad descriptor,
 * the page request queue, and the strict stale-hit diagnostic.
 */
import { DmaFault, type Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { VTD_PR_PERM, type VtdHw } from "../../src/hw/index.js";
import {
  bootVtd,
  desc,
  fs,
  HandTable,
  legacyCtx,
  NVME,
  PasidDir,
  pasidEntry,
  Queue,
  Setup,
  smCtx,
  ss,
  type Tables,
  XHCI,
} from "./helpers/encoder.js";

let m: Machine;
let t: Tables;
let hw: VtdHw;
const TINY = { tlbEntries: 2, tlbWays: 2, contextEntries: 2, pasidEntries: 2, cacheWays: 2, pagingCacheEntries: 2 };

afterEach(async () => {
  await m.teardown();
});

async function legacy(opts: Record<string, unknown> = {}) {
  ({ m, t, hw } = await bootVtd({ scalableMode: false, ...TINY, ...opts }));
  const s = new Setup(t, false);
  const pt = new HandTable(t, 4, ss.table);
  s.writeCtx(XHCI, legacyCtx({ slptptr: pt.root, did: 5 }));
  s.enable();
  return { s, pt };
}

async function scalable(opts: Record<string, unknown> = {}) {
  ({ m, t, hw } = await bootVtd({ scalableMode: true, ...TINY, ...opts }));
  const s = new Setup(t, true);
  const pd = new PasidDir(t);
  s.writeCtx(NVME, smCtx({ pasidDir: pd.dir, pasidE: true, pre: true, dte: true, pdts: 7 }));
  s.enable();
  return { s, pd };
}

describe("IOTLB and invalidation descriptors", () => {
  it("keeps a translation until a covering invalidation, page-selective with AM and domain-selective", async () => {
    const { pt } = await legacy();
    const q = new Queue(t, false);
    const leaf = pt.map(0x4000, 0x10_0000, 1, ss.RW);
    pt.map(0x5000, 0x10_1000, 1, ss.RW);
    m.memory.write32(0x10_0000, 0xaaaa);
    m.memory.write32(0x20_0000, 0xbbbb);
    const read = (iova: number) => new DataView(m.device("xhci0").dmaRead(iova, 4).buffer).getUint32(0, true);
    expect(read(0x4000)).toBe(0xaaaa);
    t.q(leaf, BigInt(0x20_0000) | ss.RW);
    expect(read(0x4000)).toBe(0xaaaa); // cached
    q.submit(desc.iotlbPage(5, 0x6000, 0)); // another page: no effect
    expect(read(0x4000)).toBe(0xaaaa);
    q.submit(desc.iotlbPage(9, 0x4000, 0)); // another domain: no effect
    expect(read(0x4000)).toBe(0xaaaa);
    q.submit(desc.iotlbPage(5, 0x4000, 1)); // AM = 1 covers 0x4000-0x5fff
    expect(read(0x4000)).toBe(0xbbbb);
    t.q(leaf, BigInt(0x10_0000) | ss.RW);
    q.submit(desc.iotlbDomain(5));
    expect(read(0x4000)).toBe(0xaaaa);
    // A misaligned address for its mask is an invalid descriptor.
    q.submit(desc.iotlbPage(5, 0x5000, 1));
    expect(t.r32(0x34) & 0x10).toBe(0x10); // IQE
  });

  it("replaces within a 2-entry IOTLB and counts misses", async () => {
    const { pt } = await legacy();
    for (let i = 0; i < 4; i++) pt.map(i * 4096, 0x10_0000 + i * 4096, 1, ss.RW);
    const dev = m.device("xhci0");
    for (let i = 0; i < 4; i++) dev.dmaRead(i * 4096, 4);
    expect(hw.iotlb.used).toBe(2);
    const misses = hw.stats.iotlbMisses;
    dev.dmaRead(0, 4);
    expect(hw.stats.iotlbMisses).toBe(misses + 1);
  });

  it("fills an entry an invalidation freed before replacing a valid one (IOTLB and paging-structure cache)", async () => {
    const { pt } = await legacy();
    const q = new Queue(t, false);
    // Three 2 MiB regions; both 2-entry caches are one set of 2 ways.
    const R = [0, 0x20_0000, 0x40_0000];
    for (const r of R) for (let p = 0; p < 2; p++) pt.map(r + p * 4096, 0x10_0000 + r / 64 + p * 4096, 1, ss.RW);
    const dev = m.device("xhci0");
    dev.dmaRead(R[0]!, 4); // IOTLB way 0, PSC way 0
    dev.dmaRead(R[1]!, 4); // IOTLB way 1, PSC way 1: both full
    q.submit(desc.iotlbPage(5, R[1]!, 0)); // IH = 0: drops the IOTLB entry and the region's PSC entry
    expect(hw.iotlb.used).toBe(1);
    expect(hw.pagingCache.used).toBe(1);
    dev.dmaRead(R[2]!, 4); // takes the freed entries: region 0's stay
    const s0 = hw.stats;
    dev.dmaRead(R[0]!, 4);
    expect(hw.stats.iotlbMisses).toBe(s0.iotlbMisses); // still cached
    dev.dmaRead(R[0]! + 4096, 4); // an IOTLB miss in region 0: its last-level table is still cached
    expect(hw.stats.pagingCacheHits).toBe(s0.pagingCacheHits + 1);
  });

  it("context-cache entries stay until a context-cache invalidation; a wait descriptor writes its status", async () => {
    const { s, pt } = await legacy();
    const q = new Queue(t, false);
    pt.map(0, 0x10_0000, 1, ss.RW);
    const dev = m.device("xhci0");
    dev.dmaRead(0, 4);
    s.writeCtx(XHCI, [0n, 0n]); // cleared in memory
    dev.dmaRead(0, 4); // still cached
    const status = t.alloc(64);
    q.submit(desc.ccDevice(5, XHCI), desc.iotlbDomain(5), desc.wait(status, 1));
    expect(m.memory.read32(status)).toBe(1);
    expect(() => dev.dmaRead(0, 4)).toThrow(DmaFault);
  });

  it("256-bit descriptors when IQA.DW is set; IQH counts in 32-byte units", async () => {
    const { pd } = await scalable();
    const q = new Queue(t, true);
    const pt = new HandTable(t, 4, fs.table);
    pd.write(0, pasidEntry({ pgtt: 1, did: 3, fsptptr: pt.root }));
    const leaf = pt.map(0x1000, 0x10_0000, 1, fs.P | fs.RW | fs.US);
    const dev = m.device("nvme0");
    dev.dmaRead(0x1000, 4);
    t.q(leaf, 0n);
    dev.dmaRead(0x1000, 4); // cached
    q.submit(desc.iotlbDomain(3)); // a second-stage invalidation does not touch first-stage entries
    dev.dmaRead(0x1000, 4);
    q.submit(desc.piotlbPage(3, 0, 0x1000, 0));
    expect(() => dev.dmaRead(0x1000, 4)).toThrow(DmaFault);
    expect(t.r32(0x80)).toBe(2 << 5);
    // PASID cache: a changed PASID entry is used only after a PASID-cache invalidation.
    pd.write(0, pasidEntry({ pgtt: 4, did: 3 }));
    expect(() => dev.dmaRead(0x1000, 4)).toThrow(DmaFault);
    q.submit(desc.pcPasid(3, 0));
    expect(dev.dmaRead(0x1000, 4)).toHaveLength(4);
  });

  it("an invalid descriptor sets IQE and stops at it; the driver's fix lets the queue resume", async () => {
    await legacy();
    const q = new Queue(t, false);
    const status = t.alloc(64);
    q.submit([0xfn, 0n], desc.wait(status, 7));
    expect(t.r32(0x34) & 0x10).toBe(0x10);
    expect(t.r32(0x80)).toBe(0); // IQH at the bad descriptor
    expect(t.r32(0xb0) & 0xf).toBe(1); // IQEI: invalid type
    expect(m.memory.read32(status)).toBe(0);
    // Overwrite the bad descriptor with a wait (as qi_check_fault does), clear IQE.
    t.q(q.base, desc.wait(status, 3)[0]);
    t.q(q.base + 8, desc.wait(status, 3)[1]);
    t.w32(0x34, 0x10);
    q.submit();
    expect(m.memory.read32(status)).toBe(7);
  });

  it("register-based invalidation (CCMD, IOTLB) when the queue is off", async () => {
    const { pt } = await legacy();
    const leaf = pt.map(0, 0x10_0000, 1, ss.RW);
    const dev = m.device("xhci0");
    dev.dmaRead(0, 4);
    t.q(leaf, 0n);
    dev.dmaRead(0, 4);
    const iro = Number((t.r64(0x10) >> 8n) & 0x3ffn) * 16;
    t.w64(iro + 8, (1n << 63n) | (2n << 60n) | (5n << 32n)); // IVT, domain-selective, DID 5
    expect(t.r64(iro + 8) >> 63n).toBe(0n); // completed
    expect(Number((t.r64(iro + 8) >> 57n) & 3n)).toBe(2); // IAIG
    expect(() => dev.dmaRead(0, 4)).toThrow(DmaFault);
    t.w64(0x28, (1n << 63n) | (1n << 61n)); // ICC, global
    expect(t.r64(0x28) >> 63n).toBe(0n);
  });

  it("a stopped unit (qiBatch 0) makes progress only when stepped", async () => {
    await legacy({ qiBatch: 0 });
    const q = new Queue(t, false);
    const status = t.alloc(64);
    q.submit(desc.wait(status, 1));
    expect(m.memory.read32(status)).toBe(0);
    hw.step();
    expect(m.memory.read32(status)).toBe(1);
  });
});

describe("page request queue", () => {
  it("writes page request descriptors, overflows with PRO, and records page group responses", async () => {
    await scalable();
    const pq = t.alloc(4096);
    t.w64(0xc0, 0n);
    t.w64(0xc8, 0n);
    t.w64(0xd0, BigInt(pq)); // PQS = 0: 4 KiB, 128 descriptors
    hw.pageRequest(NVME, 3, 0x1234_5000, VTD_PR_PERM.READ | VTD_PR_PERM.WRITE, 7, true);
    expect(t.r32(0xc8)).toBe(32);
    expect(t.r32(0xdc) & 1).toBe(1); // PPR
    const q0 = t.rq(pq);
    const q1 = t.rq(pq + 8);
    expect(Number(q0 & 0xffn)).toBe(1);
    expect((q0 >> 8n) & 1n).toBe(1n);
    expect(Number((q0 >> 16n) & 0xffffn)).toBe(NVME);
    expect(Number((q0 >> 32n) & 0xfffffn)).toBe(3);
    expect(q1 & 7n).toBe(7n); // R, W, LPIG
    expect(Number((q1 >> 3n) & 0x1ffn)).toBe(7);
    expect(Number(q1 & ~0xfffn)).toBe(0x1234_5000);
    // Fill the ring: one slot stays empty, then PRO and an automatic response to the last request of the group.
    for (let i = 1; i < 127; i++) hw.pageRequest(NVME, -1, i * 4096, VTD_PR_PERM.READ, i & 0x1ff, false);
    expect(t.r32(0xdc) & 2).toBe(0);
    hw.pageRequest(NVME, -1, 0, VTD_PR_PERM.READ, 9, true);
    expect(t.r32(0xdc) & 2).toBe(2);
    expect(hw.pageResponses.at(-1)).toMatchObject({ rid: NVME, prgIndex: 9, auto: true });
    const q = new Queue(t, true);
    q.submit(desc.pgrpResp(NVME, 3, 7, 0));
    expect(hw.pageResponses.at(-1)).toEqual({ rid: NVME, pasid: 3, prgIndex: 7, code: 0, auto: false });
  });

  it("a device whose context entry lacks PRE gets an automatic invalid-request response", async () => {
    const { s, pd } = await scalable();
    s.writeCtx(XHCI, smCtx({ pasidDir: pd.dir }));
    hw.pageRequest(XHCI, -1, 0, VTD_PR_PERM.READ, 1, true);
    expect(hw.pageResponses).toEqual([{ rid: XHCI, pasid: -1, prgIndex: 1, code: 1, auto: true }]);
  });
});

describe("strict mode", () => {
  it("reports a stale IOTLB hit and a stale context-cache hit, once each", async () => {
    const { s, pt } = await legacy({ strict: true });
    const leaf = pt.map(0, 0x10_0000, 1, ss.RW);
    const dev = m.device("xhci0");
    dev.dmaRead(0, 4);
    t.q(leaf, BigInt(0x20_0000) | ss.RW);
    dev.dmaRead(0, 4);
    dev.dmaRead(0, 4);
    expect(m.diag.acknowledge({ kind: "warning", message: /stale IOTLB entry/ })).toHaveLength(1);
    s.writeCtx(XHCI, legacyCtx({ slptptr: pt.root, did: 6 }));
    dev.dmaRead(0, 4);
    expect(m.diag.acknowledge({ kind: "warning", message: /stale context-cache entry/ })).toHaveLength(1);
    expect(hw.stats.staleReports).toBe(2);
  });
});
