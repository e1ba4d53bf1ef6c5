/**
 * The independent decoder of hw/decode.ts against the model: for random mappings (2 KiB pages and 1 MiB blocks) the
 * decoded output address is where the device's DMA landed and what the driver's iova_to_phys says; the levels are
 * the device entry then one entry per table level; holes, the blocked domain and bad requester IDs decode as the
 * faults the model reports.
 */
import {
  createMachine,
  type Device,
  DmaFault,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuIovaToPhys,
  iommuMap,
  iommuPagingDomainAllocFlags,
  type Machine,
} from "@iommu-sim/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeMockTranslation,
  MOCK_APERTURE_START,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_PAGE_SIZE,
  mockIommuDriver,
} from "../src/index.js";

const RID = 1; // mock-dev0's ID on mock0 in the default platform

function decode(m: Machine, iova: number, requesterId = RID) {
  const base = m.platform.iommus.find((i) => i.name === "mock0")!.mmio.base;
  return decodeMockTranslation({
    memory: m.memory,
    readReg: (off) => m.mmio.read32(base + off),
    requesterId,
    pasid: -1,
    iova,
  });
}

async function setup(): Promise<{ m: Machine; d: Device; domain: IommuDomain }> {
  const m = await createMachine({ modules: [mockIommuDriver] });
  await m.boot();
  const d = m.driverCore.deviceFor("mock-dev0")!;
  await iommuDeviceClaimDmaOwner(d, "test");
  const domain = await iommuPagingDomainAllocFlags(d, 0);
  await iommuAttachDevice(domain, d);
  return { m, d, domain };
}

async function finish(m: Machine, d: Device, domain: IommuDomain): Promise<void> {
  await iommuDetachDevice(domain, d);
  iommuDomainFree(domain);
  await iommuDeviceReleaseDmaOwner(d);
  await m.teardown();
}

describe("decodeMockTranslation", () => {
  it("agrees with device DMA and iova_to_phys on random pages and blocks", async () => {
    const { m, d, domain } = await setup();
    const pageArb = fc.record({
      huge: fc.boolean(),
      slot: fc.integer({ min: 0, max: 255 }),
      off: fc.integer({ min: 0, max: MOCK_PAGE_SIZE - 8 }),
    });
    const used = new Set<number>();
    let n = 0;
    fc.assert(
      fc.property(pageArb, ({ huge, slot, off }) => {
        const size = huge ? MOCK_HUGE_PAGE_SIZE : MOCK_PAGE_SIZE;
        const iova = MOCK_APERTURE_START + slot * MOCK_HUGE_PAGE_SIZE + (huge ? 0 : 7 * MOCK_PAGE_SIZE);
        if (used.has(slot)) return;
        used.add(slot);
        const pa = 0x4000_0000 + slot * MOCK_HUGE_PAGE_SIZE;
        iommuMap(domain, iova, pa, size, IOMMU_READ | IOMMU_WRITE);
        const bytes = new Uint8Array([n & 0xff, 0x5a, slot & 0xff, 0xa5]);
        n++;
        m.device("mock-dev0").dmaWrite(iova + off, bytes);
        const r = decode(m, iova + off);
        expect(r.result.fault).toBeUndefined();
        expect(r.result.pa).toBe(iommuIovaToPhys(domain, iova + off));
        expect(r.result.size).toBe(size);
        expect([...m.memory.readBytes(r.result.pa!, 4)]).toEqual([...bytes]);
        expect(r.levels[0]!.name).toBe("device entry");
        expect(r.levels.at(-1)!.name).toBe(huge ? "L1 leaf" : "L0 leaf");
        expect(r.levels.at(-1)!.fields).toMatchObject({ V: true, R: true, W: true });
      }),
      { numRuns: 40, seed: 7 },
    );
    await finish(m, d, domain);
  });

  it("decodes holes, a blocked device and an unknown requester ID as the faults the model reports", async () => {
    const { m, d, domain } = await setup();
    const hole = MOCK_APERTURE_START + 3 * MOCK_HUGE_PAGE_SIZE;
    expect(decode(m, hole).result.fault).toBe("translation fault");
    expect(() => m.device("mock-dev0").dmaRead(hole, 4)).toThrow(DmaFault);
    expect(decode(m, hole, 0xfffff).result.fault).toMatch(/bad device/);
    await iommuDetachDevice(domain, d);
    iommuDomainFree(domain);
    // Back on the blocking domain while user space still owns the device: abort.
    expect(decode(m, hole).result.fault).toMatch(/abort/);
    await iommuDeviceReleaseDmaOwner(d);
    await m.teardown();
  });
});
