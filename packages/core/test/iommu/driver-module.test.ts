import { describe, expect, it } from "vitest";
import { defineIommuDriver } from "../../src/iommu/driver-module.js";
import { getIommuCore } from "../../src/iommu/iommu-core.js";
import { IommuDevice, iommuDeviceRegister, iommuDeviceUnregister } from "../../src/iommu/iommu-device.js";
import { createMachine } from "../../src/machine/machine.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import { parsePlatform } from "../../src/platform/description.js";
import { fakeIommuDriver } from "../support/fake-iommu.js";

const iommusOnly = () =>
  parsePlatform({
    iommus: [
      { name: "mock0", kind: "mock", mmio: { base: "0x09000000", size: "4KiB" } },
      { name: "mock1", kind: "mock", mmio: { base: "0x09010000", size: "4KiB" } },
    ],
    buses: [{ name: "platform", type: "platform" }],
    devices: [],
  });

describe("DriverModule", () => {
  it("binds the platform devices of its kind and registers an instance for each", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: defaultPlatform(), modules: [fake] });
    await m.boot();
    expect(fake.compatible).toEqual(["mock"]);
    const core = getIommuCore(m);
    expect(core.iommuDevices.map(String)).toEqual(["mock0", "mock1"]);
    const mock0 = m.driverCore.deviceFor("mock0")!;
    expect(mock0.driver?.name).toBe("fake-iommu");
    expect(mock0.driverData).toBe(fake.instanceFor(m, "mock0"));
    expect(fake.driverFor(m)?.ops.owner).toBe(m.moduleOwner("fake-iommu"));
    expect(m.driverCore.deviceFor("smmu0")!.driver).toBeUndefined();
    await m.teardown();
  });

  it("gives each machine its own ops and instances", async () => {
    const fake = fakeIommuDriver();
    const a = await createMachine({ platform: iommusOnly(), modules: [fake] });
    const b = await createMachine({ platform: iommusOnly(), modules: [fake] });
    await a.boot();
    await b.boot();
    expect(fake.driverFor(a)?.ops).not.toBe(fake.driverFor(b)?.ops);
    expect(fake.instanceFor(a, "mock0")).not.toBe(fake.instanceFor(b, "mock0"));
    expect(getIommuCore(a)).not.toBe(getIommuCore(b));
    await a.teardown();
    await b.teardown();
  });

  it("unloading unbinds the IOMMUs and unregisters their instances", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: iommusOnly(), modules: [fake] });
    await m.boot();
    await m.modules.unload("fake-iommu");
    expect(getIommuCore(m).iommuDevices).toEqual([]);
    expect(m.driverCore.deviceFor("mock0")!.driver).toBeUndefined();
    expect(fake.driverFor(m)).toBeUndefined();
    expect(fake.state(m).log).toEqual([
      "registered mock0",
      "registered mock1",
      "unregistered mock1",
      "unregistered mock0",
    ]);
    await m.teardown();
  });

  it("teardown unbinds IOMMU drivers before unloading modules pinned by probed devices", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: defaultPlatform(), modules: [fake] });
    await m.boot();
    expect(m.moduleOwner("fake-iommu")!.refcnt).toBeGreaterThan(0);
    await m.teardown();
    expect(m.moduleOwner("fake-iommu")!.state).toBe("gone");
  });

  it("refuses ops whose owner is not the module (iommu_ops.owner = THIS_MODULE)", async () => {
    const bad = defineIommuDriver({
      name: "bad-iommu",
      compatible: "mock",
      createDriver(_ctx, core) {
        return {
          ops: {},
          async probe(pdev) {
            const iommu = new IommuDevice({ dev: pdev });
            await iommuDeviceRegister(core, iommu, {}, pdev);
            return iommu;
          },
          async remove(_pdev, iommu) {
            await iommuDeviceUnregister(core, iommu);
          },
        };
      },
    });
    const m = await createMachine({ platform: iommusOnly(), modules: [bad] });
    await m.diag.expectWarning(/THIS_MODULE/, async () => {
      await expect(m.boot()).rejects.toMatchObject({ code: "EINVAL" });
    });
    expect(m.driverCore.deviceFor("mock0")!.driver).toBeUndefined();
    await m.teardown();
  });
});
