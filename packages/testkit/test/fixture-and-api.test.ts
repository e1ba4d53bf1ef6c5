/**
 * The machine fixture, loading a driver after boot (insmod/rmmod), typed device IOMMU slots and the short forms
 * kernel objects print as (a failing expect on one must not walk the whole machine).
 */
import { inspect } from "node:util";
import {
  createMachine,
  devIommu,
  getIommuCore,
  IOMMU_DOMAIN,
  IOMMU_HWPT_ALLOC,
  IommuDomain,
  iommuDomainAllocNested,
  iommuDomainFree,
  iommuPagingDomainAllocFlags,
} from "@iommu-sim/core";
import { IOMMU_HWPT_DATA_SELFTEST, mockIommuDriver } from "@iommu-sim/drivers-mock";
import { describe, expect } from "vitest";
import { machineTest } from "../src/index.js";

const it = machineTest({ modules: [mockIommuDriver] });

describe("machine fixture and the API around it", () => {
  it("gives each test a booted machine with typed IOMMU slots on devices", ({ machine }) => {
    const dev = machine.driverCore.deviceFor("mock-dev0")!;
    // Typed: no casts needed to reach the group and dev_iommu.
    expect(dev.iommuGroup?.defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    expect(dev.iommu).toBe(devIommu(dev));
  });

  it("prints kernel objects in a short form", ({ machine }) => {
    const dev = machine.driverCore.deviceFor("mock-dev0")!;
    const group = dev.iommuGroup!;
    expect(JSON.stringify({ dev, group, domain: group.domain, machine })).toBe(
      `{"dev":"Device(mock-dev0)","group":"IommuGroup(${group.id})","domain":"IommuDomain(${group.domain!.toString()})","machine":"Machine(seed 1, booted)"}`,
    );
    expect(inspect(dev)).toBe("Device(mock-dev0)");
    expect(inspect(mockIommuDriver.instanceFor(machine, "mock0"))).toBe("IommuDevice(mock0)");
  });
});

describe("nested domains through the core", () => {
  it("allocates a nested domain through the driver's ops, refusing foreign parents and drivers without it", async ({
    machine,
  }) => {
    const dev = machine.driverCore.deviceFor("mock-dev0")!;
    const parent = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT);
    const data = { type: IOMMU_HWPT_DATA_SELFTEST, data: new Uint8Array(4) };
    const nested = await iommuDomainAllocNested(dev, parent, 0, data);
    expect(nested.type).toBe(IOMMU_DOMAIN.NESTED);
    const foreign = new IommuDomain({ name: "foreign" });
    await expect(iommuDomainAllocNested(dev, foreign, 0, data)).rejects.toMatchObject({ code: "EINVAL" });
    iommuDomainFree(nested);
    iommuDomainFree(parent);
  });
});

describe("page requests from the device side", () => {
  it("routes a page request to the device's IOMMU model and reads its responses back", ({ machine }) => {
    // No IOPF handler attached: the driver (or the model, when PRI is off) answers INVALID.
    const ep = machine.device("mock-dev0");
    ep.pageRequest({ addr: 1 << 24, grpid: 3 });
    expect(ep.pageResponses().at(-1)).toMatchObject({ grpid: 3, code: 1 });
    expect(machine.device("mock-dev1").pageResponses()).toEqual([]);
    expect(() => machine.device("uart0").pageRequest({ addr: 0, grpid: 1 })).toThrow(/no page requests/);
  });
});

describe("insmod and rmmod", () => {
  it("loads a driver after boot, probes its devices, and unloads it once unbound", { timeout: 60_000 }, async () => {
    const m = await createMachine({});
    getIommuCore(m);
    await m.boot();
    expect(m.hw.has("mock0")).toBe(false);
    await m.insmod(mockIommuDriver);
    expect(m.hw.has("mock0")).toBe(true);
    const dev = m.driverCore.deviceFor("mock-dev0")!;
    expect(dev.iommu?.iommuDev).toBe(mockIommuDriver.instanceFor(m, "mock0"));
    await expect(m.insmod(mockIommuDriver)).rejects.toMatchObject({ code: "EEXIST" });
    await expect(m.rmmod("mock-iommu")).rejects.toMatchObject({ code: "EBUSY" });
    for (const name of ["mock0", "mock1"]) await m.driverCore.deviceReleaseDriver(m.driverCore.deviceFor(name)!);
    await m.rmmod("mock-iommu");
    expect(mockIommuDriver.driverFor(m)).toBeUndefined();
    expect(dev.iommu).toBeUndefined();
    // Loaded again: the same hardware model, a new driver instance, the devices probed again.
    await m.insmod(mockIommuDriver);
    expect(dev.iommu?.iommuDev).toBe(mockIommuDriver.instanceFor(m, "mock0"));
    expect(() => m.device("mock-dev0").dmaRead(1 << 24, 4)).toThrow(/fault/);
    await m.teardown();
  });
});
