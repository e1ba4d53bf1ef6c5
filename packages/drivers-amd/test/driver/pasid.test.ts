/**
 * v2 paging domains and GCR3 tables: a v2 domain at the RID goes in GCR3[0] with GIOV, tagged with the device's
 * GCR3 domain ID; v2 domains attach, replace and detach at PASIDs through the GCR3 table (4- and 5-level guest
 * tables), each change flushed with INVALIDATE_IOMMU_PAGES carrying the PASID and GN; the errno Linux returns for
 * PASIDs it cannot serve.
 */
import {
  type Device,
  DmaFault,
  IOMMU_DOMAIN,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGetDomainForDev,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuReplaceDevicePasid,
  iommuUnmap,
} from "@iommu-sim/core";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { DTE_W, dteGet, type ProtectionDomain } from "../../src/index.js";
import { type Booted, boot, bytes, propertyCase, teardownAll } from "./helpers.js";

afterEach(teardownAll);
const RW = IOMMU_READ | IOMMU_WRITE;
const GPU = 0x0100;

async function v2Domain(b: Booted, dev: Device, fill: number, iova: number): Promise<[ProtectionDomain, number]> {
  const d = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID)) as ProtectionDomain;
  const pa = b.m.pages.allocPages(0, "test");
  b.m.memory.fill(pa, 4096, fill);
  await iommuMap(d, iova, pa, 4096, RW);
  return [d, pa];
}

function read1(b: Booted, iova: number, pasid?: number): number | "fault" {
  try {
    return b.m.device("amd-gpu0").dmaRead(iova, 1, pasid === undefined ? {} : { pasid })[0]!;
  } catch (e) {
    if (e instanceof DmaFault) return "fault";
    throw e;
  }
}

describe("v2 paging domains", () => {
  it("IOMMU_HWPT_ALLOC_PASID gives a v2 (x86-64) domain; at the RID it is GCR3[0] with GV, GIOV and the GCR3 domain ID", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("amd-gpu0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const [d, pa] = await v2Domain(b, dev, 0x5a, 0x20_0000);
    expect(d.pt.format.name).toBe("x86-64-4lvl");
    expect(d.mode).toBe(0);
    await iommuAttachDevice(d, dev);
    const data = b.drv.devData(dev);
    const w = b.iommu.readDte(GPU);
    expect(dteGet(w, DTE_W.MODE)).toBe(0);
    expect([dteGet(w, DTE_W.GV), dteGet(w, DTE_W.GIOV)]).toEqual([1, 1]);
    expect(dteGet(w, DTE_W.GLX)).toBe(1); // 65535 PASIDs: two GCR3 levels
    expect(dteGet(w, DTE_W.GPT_LEVEL)).toBe(0); // 4-level guest tables
    expect(dteGet(w, DTE_W.DOMID)).toBe(data.gcr3!.domid);
    expect(data.gcr3!.domid).not.toBe(d.id);
    const root =
      dteGet(w, DTE_W.GCR3_51_31) * 2 ** 31 +
      dteGet(w, DTE_W.GCR3_30_15) * 2 ** 15 +
      dteGet(w, DTE_W.GCR3_14_12) * 4096;
    expect(root).toBe(data.gcr3!.root);
    expect(read1(b, 0x20_0010)).toBe(0x5a);
    // Unmap flushes (GCR3 domain ID, PASID 0, GN): the cached translation goes.
    await iommuUnmap(d, 0x20_0000, 4096);
    expect(read1(b, 0x20_0010)).toBe("fault");
    await iommuDetachDevice(d, dev);
    expect(data.gcr3).toBeUndefined(); // nothing uses the table any more
    expect(dteGet(b.iommu.readDte(GPU), DTE_W.GV)).toBe(0);
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
    b.m.pages.freePages(pa, 0);
  });

  it.each([
    [4, false, 0x20_0000],
    [5, true, 2 ** 50 + 0x20_0000],
  ])("%d-level tables: PASIDs attach, replace and detach independently; DMA follows", async (levels, la57, iova) => {
    const b = await boot({ strict: true, tlbEntries: 4, tlbWays: 2 }, { la57 });
    const dev = b.m.driverCore.deviceFor("amd-gpu0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    expect(iommuGetDomainForDev(dev)?.type).toBe(IOMMU_DOMAIN.BLOCKED);
    const [a, pa] = await v2Domain(b, dev, 0xa1, iova);
    const [c, pc] = await v2Domain(b, dev, 0xc3, iova);
    expect(a.pt.levels).toBe(levels);
    const cmds = b.iommu.commandsIssued;
    await iommuAttachDevicePasid(a, dev, 1);
    expect(b.iommu.commandsIssued).toBeGreaterThan(cmds);
    const w = b.iommu.readDte(GPU);
    // GV with the GCR3 table; GIOV sends DMA without PASID to the empty GCR3[0] (the RID stays blocked).
    expect([dteGet(w, DTE_W.GV), dteGet(w, DTE_W.GIOV), dteGet(w, DTE_W.GPT_LEVEL)]).toEqual([1, 1, levels - 4]);
    expect(read1(b, iova + 5, 1)).toBe(0xa1);
    expect(read1(b, iova + 5, 2)).toBe("fault");
    expect(read1(b, iova + 5)).toBe("fault"); // the RID stays blocked
    await iommuAttachDevicePasid(c, dev, 2);
    expect(read1(b, iova + 5, 2)).toBe(0xc3);
    await iommuReplaceDevicePasid(c, dev, 1, { domain: undefined });
    expect(read1(b, iova + 5, 1)).toBe(0xc3); // the cached PASID 1 translation was flushed
    await iommuDetachDevicePasid(c, dev, 1);
    expect(read1(b, iova + 5, 1)).toBe("fault");
    expect(read1(b, iova + 5, 2)).toBe(0xc3);
    await iommuUnmap(c, iova, 4096); // flushed at PASID 2 with GN
    expect(read1(b, iova + 5, 2)).toBe("fault");
    await iommuDetachDevicePasid(c, dev, 2);
    expect(b.drv.devData(dev).gcr3).toBeUndefined();
    expect(b.hw.stats.staleReports).toBe(0);
    await iommuUnmap(a, iova, 4096);
    iommuDomainFree(a);
    iommuDomainFree(c);
    await iommuDeviceReleaseDmaOwner(dev);
    b.m.pages.freePages(pa, 0);
    b.m.pages.freePages(pc, 0);
  });

  it("refuses what Linux refuses: v1 at a PASID (EOPNOTSUPP), PASIDs under a v1 RID or beyond the device's (EINVAL)", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("amd-gpu0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const v1 = await iommuPagingDomainAllocFlags(dev, 0);
    const [v2, pa] = await v2Domain(b, dev, 1, 0x10_0000);
    await expect(iommuAttachDevicePasid(v1, dev, 1)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(iommuAttachDevicePasid(v2, dev, 65535)).rejects.toMatchObject({ code: "EINVAL" });
    await iommuAttachDevice(v1, dev);
    await expect(iommuAttachDevicePasid(v2, dev, 1)).rejects.toMatchObject({ code: "EINVAL" });
    await iommuDetachDevice(v1, dev);
    await iommuAttachDevicePasid(v2, dev, 1);
    // A v1 RID table would nest the PASID's walk: refused while a PASID is attached.
    await expect(iommuAttachDevice(v1, dev)).rejects.toMatchObject({ code: "EINVAL" });
    expect(read1(b, 0x10_0000, 1)).toBe(1);
    await iommuDetachDevicePasid(v2, dev, 1);
    await iommuUnmap(v2, 0x10_0000, 4096);
    iommuDomainFree(v1);
    iommuDomainFree(v2);
    await iommuDeviceReleaseDmaOwner(dev);
    b.m.pages.freePages(pa, 0);
  });

  it("random PASID attach/detach/map/unmap sequences agree with a model (strict mode clean)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            op: fc.constantFrom("attach", "detach", "map", "unmap"),
            pasid: fc.integer({ min: 1, max: 3 }),
            dom: fc.integer({ min: 0, max: 1 }),
          }),
          { maxLength: 25 },
        ),
        (ops) =>
          propertyCase(async () => {
            const b = await boot({ strict: true, tlbEntries: 4, tlbWays: 2 });
            const dev = b.m.driverCore.deviceFor("amd-gpu0")!;
            await iommuDeviceClaimDmaOwner(dev, "test");
            const doms = [
              (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID)) as ProtectionDomain,
              (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID)) as ProtectionDomain,
            ];
            const page = b.m.pages.allocPages(0, "test");
            b.m.memory.writeBytes(page, bytes(16, 9));
            const mapped = [false, false];
            const at = new Map<number, number>();
            const IOVA = 0x40_0000;
            for (const { op, pasid, dom } of ops) {
              const d = doms[dom]!;
              if (op === "attach") {
                if (at.has(pasid)) await iommuReplaceDevicePasid(d, dev, pasid, { domain: undefined });
                else await iommuAttachDevicePasid(d, dev, pasid, { domain: undefined });
                at.set(pasid, dom);
              } else if (op === "detach" && at.has(pasid)) {
                await iommuDetachDevicePasid(doms[at.get(pasid)!]!, dev, pasid);
                at.delete(pasid);
              } else if (op === "map" && !mapped[dom]) {
                await iommuMap(d, IOVA, page, 4096, RW);
                mapped[dom] = true;
              } else if (op === "unmap" && mapped[dom]) {
                await iommuUnmap(d, IOVA, 4096);
                mapped[dom] = false;
              }
              for (let p = 1; p <= 3; p++) {
                const want = at.has(p) && mapped[at.get(p)!] ? bytes(16, 9)[3] : "fault";
                expect(read1(b, IOVA + 3, p)).toBe(want);
              }
            }
            for (const [p, i] of at) await iommuDetachDevicePasid(doms[i]!, dev, p);
            for (let i = 0; i < 2; i++) {
              if (mapped[i]) await iommuUnmap(doms[i]!, IOVA, 4096);
              iommuDomainFree(doms[i]!);
            }
            expect(b.hw.stats.staleReports).toBe(0);
            await iommuDeviceReleaseDmaOwner(dev);
            b.m.pages.freePages(page, 0);
          }),
      ),
      { numRuns: 15, seed: 14 },
    );
  }, 60_000);
});

describe("PASID attach under allocation failures", () => {
  it("fails every allocation in turn: ENOMEM or EINVAL, nothing half set up, nothing leaked; then it attaches", async () => {
    const b = await boot();
    const dev = b.m.driverCore.deviceFor("amd-gpu0")!;
    await iommuDeviceClaimDmaOwner(dev, "test");
    const [d, pa] = await v2Domain(b, dev, 0x42, 0x30_0000);
    const data = b.drv.devData(dev);
    const dte = b.iommu.readDte(GPU);
    let n = 1;
    for (; n < 40; n++) {
      b.m.faults.reset();
      b.m.faults.failNth(n);
      try {
        await iommuAttachDevicePasid(d, dev, 7);
      } catch (e) {
        expect(["ENOMEM", "EINVAL"]).toContain((e as { code?: string }).code);
        expect(data.gcr3).toBeUndefined();
        expect(data.pasidDomains.size).toBe(0);
        expect(b.iommu.readDte(GPU)).toEqual(dte);
        expect(read1(b, 0x30_0000, 7)).toBe("fault");
        continue;
      }
      if (!b.m.faults.nthConsumed) break;
      await iommuDetachDevicePasid(d, dev, 7);
    }
    b.m.faults.reset();
    expect(n).toBeGreaterThan(2); // the GCR3 root and its lower level both failed once
    expect(read1(b, 0x30_0000, 7)).toBe(0x42);
    await iommuDetachDevicePasid(d, dev, 7);
    await iommuUnmap(d, 0x30_0000, 4096);
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
    b.m.pages.freePages(pa, 0);
  });
});
