/**
 * Probing through the real mock driver: deferred probe resolved by a later registration, failure at every
 * allocation of a device probe and of an IOMMU probe unwinding cleanly, and module unload refused while in use.
 */
import {
  createMachine,
  type Device,
  devIommu,
  iommuGroupGet,
  iommuGroupPut,
  type Machine,
  probeHolder,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import { type MockIommu, mockIommuDriver } from "../src/index.js";

const machines: Machine[] = [];
async function boot(): Promise<Machine> {
  const m = await createMachine({ modules: [mockIommuDriver] });
  machines.push(m);
  await m.boot();
  return m;
}
afterEach(async () => {
  for (const m of machines.splice(0)) await m.teardown();
});

function pdevOf(m: Machine, name: string): Device {
  return m.driverCore.deviceFor(name)!;
}

/** A new platform device behind `iommu` with stream ID `sid`. */
async function addDevice(m: Machine, name: string, iommu: string, sid: number, platformData = {}): Promise<Device> {
  const fwnode = pdevOf(m, iommu).fwnode!;
  return m.driverCore.deviceRegister({
    name,
    bus: m.driverCore.busFor("platform")!,
    iommus: [{ fwnode, args: [sid] }],
    platformData,
  });
}

function instance(m: Machine, name: string): MockIommu {
  return mockIommuDriver.instanceFor(m, name) as MockIommu;
}

describe("mock driver probing", () => {
  it("probes the DT devices of both mock IOMMUs, each with its stream IDs", async () => {
    const m = await boot();
    const mock0 = instance(m, "mock0");
    expect(mock0.masters.get(1)?.dev.name).toBe("mock-dev0");
    expect(mock0.masters.get(2)?.dev.name).toBe("mock-dev1");
    expect(instance(m, "mock1").masters.get(1)?.dev.name).toBe("mock1-dev0");
    expect(devIommu(pdevOf(m, "mock-dev0"))?.fwspec?.ids).toEqual([1]);
    expect(devIommu(pdevOf(m, "uart0"))).toBeUndefined();
  });

  it("defers a device whose IOMMU is not registered and probes it when the IOMMU registers", async () => {
    const m = await boot();
    const mock1 = pdevOf(m, "mock1");
    // Unbind mock1's driver: its instance unregisters and releases its devices.
    await m.driverCore.deviceReleaseDriver(mock1);
    expect(devIommu(pdevOf(m, "mock1-dev0"))).toBeUndefined();
    const late = await addDevice(m, "late-dev", "mock1", 7);
    expect(devIommu(late)).toBeUndefined();
    expect(late.iommuGroup).toBeUndefined();
    // Binding it again registers a new instance, whose bus walk probes the waiting devices.
    await m.driverCore.deviceAttach(mock1);
    const inst = instance(m, "mock1");
    expect(devIommu(late)?.iommuDev).toBe(inst);
    expect(inst.masters.get(7)?.dev).toBe(late);
    expect(devIommu(pdevOf(m, "mock1-dev0"))?.iommuDev).toBe(inst);
    // DMA of the late device goes through its (translating, empty) default domain: a fault.
    expect(() => m.device("late-dev").dmaRead(0x100_0000, 4)).toThrow(/translation fault/);
    await m.driverCore.deviceUnregister(late);
  });

  it("unwinds a device probe failing at every allocation", async () => {
    const sites = new Set<string>();
    let n = 1;
    for (; n < 200; n++) {
      const m = await boot();
      const before = m.pages.allocatedPages;
      m.faults.failNth(n);
      const dev = await addDevice(m, "fi-dev", "mock0", 9);
      const consumed = m.faults.nthConsumed;
      for (const s of m.faults.failedSites) sites.add(s);
      m.faults.reset();
      if (!consumed) {
        expect(devIommu(dev)?.iommuDev).toBeDefined();
        await m.driverCore.deviceUnregister(dev);
        break;
      }
      // Either the probe failed and left nothing behind, or it survived the failure (an optional allocation).
      if (devIommu(dev) === undefined) {
        expect(dev.iommuGroup).toBeUndefined();
        expect(instance(m, "mock0").masters.has(9)).toBe(false);
        expect(m.pages.allocatedPages).toBe(before);
        expect(m.moduleOwner("mock-iommu")!.holders().get(probeHolder(dev)) ?? 0).toBe(0);
      }
      await m.driverCore.deviceUnregister(dev);
      expect(m.pages.allocatedPages).toBe(before);
    }
    expect(n).toBeGreaterThan(3);
    expect(n).toBeLessThan(200);
    for (const s of ["dev_iommu_get", "iommu_fwspec_init", "mock_probe_device", "mock_domain_alloc", "mock_pgtable"]) {
      expect(sites).toContain(s);
    }
  });

  it("unwinds an IOMMU probe failing at every allocation", async () => {
    const sites = new Set<string>();
    let n = 1;
    for (; n < 300; n++) {
      const m = await boot();
      const mock1 = pdevOf(m, "mock1");
      await m.driverCore.deviceReleaseDriver(mock1);
      const before = m.pages.allocatedPages;
      m.faults.failNth(n);
      await m.driverCore.deviceAttach(mock1);
      const consumed = m.faults.nthConsumed;
      for (const s of m.faults.failedSites) sites.add(s);
      m.faults.reset();
      const inst = instance(m, "mock1");
      if (!consumed) {
        expect(inst).toBeDefined();
        break;
      }
      if (inst === undefined) {
        expect(m.pages.allocatedPages).toBe(before);
        expect(devIommu(pdevOf(m, "mock1-dev0"))).toBeUndefined();
      }
    }
    expect(n).toBeGreaterThan(3);
    expect(n).toBeLessThan(300);
    for (const s of ["mock_iommu_dt", "mock_iommu_fq", "iopf_queue_alloc", "mock_probe_device"])
      expect(sites).toContain(s);
  });

  it("refuses to unload the driver module while devices are probed", async () => {
    const m = await boot();
    await expect(m.modules.unload("mock-iommu")).rejects.toMatchObject({ code: "EBUSY" });
    const owner = m.moduleOwner("mock-iommu")!;
    expect(owner.holders().get(probeHolder(pdevOf(m, "mock-dev0")))).toBe(1);
    // Unbinding every mock IOMMU releases the devices and their module references; then it unloads.
    await m.driverCore.deviceReleaseDriver(pdevOf(m, "mock0"));
    await m.driverCore.deviceReleaseDriver(pdevOf(m, "mock1"));
    expect(owner.refcnt).toBe(0);
    await m.modules.unload("mock-iommu");
    expect(m.driverCore.deviceFor("mock-dev0")!.iommu).toBeUndefined();
  });

  it("puts each mock device in its own group", async () => {
    const m = await boot();
    const g0 = iommuGroupGet(pdevOf(m, "mock-dev0"))!;
    const g1 = iommuGroupGet(pdevOf(m, "mock-dev1"))!;
    expect(g0).not.toBe(g1);
    iommuGroupPut(g0);
    iommuGroupPut(g1);
  });
});
