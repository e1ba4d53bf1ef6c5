/**
 * Probe of the default platform's vtd0: the unit comes up (QI, root table, translation on), its DMAR devices
 * (INCLUDE_PCI_ALL on segment 1) are probed without a fwspec into groups with default domains, and the context and
 * PASID entries in memory (read with literal bit positions, formats.md §3.3-3.7) say what the driver programmed.
 * RMRRs become direct-mapped reserved regions.
 */
import { describeIommuTopology, IOMMU_RESV, iommuGetResvRegions, type Machine } from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const q = (m: Machine, pa: number) => BigInt(m.memory.read32(pa)) | (BigInt(m.memory.read32(pa + 4)) << 32n);

describe("probe", () => {
  it("brings vtd0 up and probes xhci0, sata0 and nvme0 into groups with DMA default domains", async () => {
    const b = await boot();
    expect(b.iommu.sm).toBe(true);
    const gsts = b.m.mmio.read32(0xfed90000 + 0x1c) >>> 0;
    expect((gsts & 0xc4000000) >>> 0).toBe(0xc4000000); // TES | RTPS | QIES
    const devs = describeIommuTopology(b.m).devices.filter((d) => d.bus === "pci1");
    expect(devs.map((d) => [d.name, d.iommu, d.mechanism, d.domain])).toEqual([
      ["xhci0", "vtd0", "dmar", "DMA"],
      ["sata0", "vtd0", "dmar", "DMA"],
      ["nvme0", "vtd0", "dmar", "DMA"],
    ]);
    expect(new Set(devs.map((d) => d.group)).size).toBe(3);
    expect([...b.iommu.deviceRbtree.keys()].sort((x, y) => x - y)).toEqual([0xa0, 0xb8, 0x100]);
  });

  it("scalable mode: nvme0's context entry points at its PASID directory with DTE/PASIDE/PRE; PASID 0 is first-stage", async () => {
    const b = await boot();
    const m = b.m;
    const rt = Number(m.mmio.read64(0xfed90000 + 0x20) & ~0xfffn);
    expect(Number(m.mmio.read64(0xfed90000 + 0x20) >> 10n) & 3).toBe(1); // TTM scalable
    const re = q(m, rt + 1 * 16); // bus 1, lower half
    expect(re & 1n).toBe(1n);
    const ctx = Number(re & ~0xfffn) + 0 * 32;
    const c0 = q(m, ctx);
    expect(c0 & 0x1dn).toBe(0x1dn); // P | DTE | PASIDE | PRE
    const dir = Number(c0 & ~0xfffn);
    const de = q(m, dir);
    expect(de & 1n).toBe(1n);
    const pe = Number(de & ~0xfffn);
    const p0 = q(m, pe);
    expect(p0 & 1n).toBe(1n);
    expect(Number((p0 >> 6n) & 7n)).toBe(1); // PGTT first-stage
    expect(Number(q(m, pe + 8) & 0xffffn)).toBeGreaterThanOrEqual(2); // DID, 0 and 1 reserved
    // sata0 (devfn 0xb8: the upper context table of bus 0; no PASID capability) has PASIDE clear.
    const sataCtx = Number(q(m, rt + 8) & ~0xfffn) + (0xb8 & 0x7f) * 32;
    expect(q(m, sataCtx) & 0x8n).toBe(0n);
    expect(q(m, sataCtx) & 1n).toBe(1n);
  });

  it("legacy mode: context entries with TT, AW and DID, second-stage default domains", async () => {
    const b = await boot({ scalableMode: false });
    expect(b.iommu.sm).toBe(false);
    const m = b.m;
    const rt = Number(m.mmio.read64(0xfed90000 + 0x20) & ~0xfffn);
    const ctx = Number(q(m, rt + 16) & ~0xfffn); // bus 1, devfn 0: nvme0
    const lo = q(m, ctx);
    const hi = q(m, ctx + 8);
    expect(lo & 1n).toBe(1n);
    expect(Number((lo >> 2n) & 3n)).toBe(1); // device-TLB allowed (ATS)
    expect(Number(hi & 7n)).toBe(2); // 48-bit, 4 levels
    expect(Number((hi >> 8n) & 0xffffn)).toBeGreaterThanOrEqual(2);
    // sata0's DMA alias 00:17.1 gets the same context entry.
    const bus0 = Number(q(m, rt) & ~0xfffn);
    expect(q(m, bus0 + 0xb9 * 16)).toBe(q(m, bus0 + 0xb8 * 16));
  });

  it("an RMRR in the DMAR becomes a direct region of the devices in its scope", async () => {
    const b = await boot({}, {}, (input) => {
      input.acpi!.rmrr = [{ segment: 1, base: "0x7f000000", size: "0x10000", scope: ["00:14.0"] }];
    });
    const dev = b.m.driverCore.deviceFor("xhci0")!;
    const direct = iommuGetResvRegions(dev).filter((r) => r.type === IOMMU_RESV.DIRECT);
    expect(direct).toEqual([{ start: 0x7f000000, length: 0x10000, prot: 3, type: IOMMU_RESV.DIRECT }]);
    const nvme = b.m.driverCore.deviceFor("nvme0")!;
    expect(iommuGetResvRegions(nvme).filter((r) => r.type === IOMMU_RESV.DIRECT)).toEqual([]);
  });
});
