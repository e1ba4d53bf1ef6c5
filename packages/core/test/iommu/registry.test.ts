import { describe, expect, it } from "vitest";
import { devIommu } from "../../src/iommu/dev-iommu.js";
import { IommuDomain } from "../../src/iommu/domain.js";
import { genericDeviceGroup } from "../../src/iommu/group.js";
import { getIommuCore } from "../../src/iommu/iommu-core.js";
import {
  IommuDevice,
  iommuDeviceRegister,
  iommuDeviceUnregister,
  iommuFromFwnode,
  iommuOpsFromFwnode,
} from "../../src/iommu/iommu-device.js";
import { IOMMU_DOMAIN, type IommuOps } from "../../src/iommu/types.js";
import { kerr } from "../../src/kernel/errno.js";
import { createMachine } from "../../src/machine/machine.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import { fakeIommuDriver } from "../support/fake-iommu.js";

/** A built-in driver (no owner module) of the fwspec style, registered by hand. */
function builtinOps(core: ReturnType<typeof getIommuCore>, failFor?: string): IommuOps {
  return {
    identityDomain: new IommuDomain({ type: IOMMU_DOMAIN.IDENTITY, ops: { async attachDev() {} } }),
    defDomainType: () => IOMMU_DOMAIN.IDENTITY,
    async ofXlate(dev, args) {
      const { iommuFwspecAddIds } = await import("../../src/iommu/fwspec.js");
      iommuFwspecAddIds(core, dev, [args.args[0] ?? 0]);
    },
    async probeDeviceFwspec(dev) {
      if (dev.name === failFor) throw kerr("EIO", "broken device");
    },
    async deviceGroup(dev) {
      return genericDeviceGroup(core, dev);
    },
  };
}

describe("IOMMU registry", () => {
  it("finds instances by firmware node; instances registered without one by undefined", async () => {
    const mock = fakeIommuDriver();
    const acpi = fakeIommuDriver({ name: "fake-acpi", style: "acpi", compatible: ["vtd", "amd"] });
    const m = await createMachine({ platform: defaultPlatform(), modules: [mock, acpi] });
    await m.boot();
    const core = getIommuCore(m);
    const node = (n: string) => m.driverCore.firmware.iommus.get(n)!.fwnode;
    expect(iommuFromFwnode(core, node("mock1"))).toBe(mock.state(m).instances.get("mock1"));
    expect(iommuFromFwnode(core, node("smmu0"))).toBeUndefined();
    expect(iommuFromFwnode(core, undefined)?.name).toBe("vtd0");
    expect(iommuOpsFromFwnode(core, undefined)).toBe(acpi.state(m).ops);
    expect(mock.instanceFor(m, "mock0")?.ready).toBe(true);
    await m.teardown();
  });

  it("probes the devices naming a newly registered instance and releases them on unregister", async () => {
    const m = await createMachine({ platform: defaultPlatform() });
    await m.boot();
    const core = getIommuCore(m);
    const smmu = m.driverCore.deviceFor("smmu0")!;
    const iommu = new IommuDevice({ dev: smmu, maxPasids: 1 << 16 });
    const ops = builtinOps(core);
    await iommuDeviceRegister(core, iommu, ops, smmu);
    expect(iommu.fwnode).toBe(smmu.fwnode);
    expect([...iommu.devices].map(String).sort()).toEqual(["gpu0", "gpu0-audio", "nic0", "smmu-dma0", "smmu-dma1"]);
    expect(devIommu(m.driverCore.deviceFor("nic0")!)?.maxPasids).toBe(1 << 16);
    await m.diag.expectWarning(/already registered/, async () => {
      await expect(iommuDeviceRegister(core, iommu, ops, smmu)).rejects.toMatchObject({ code: "EEXIST" });
    });
    await iommuDeviceUnregister(core, iommu);
    expect(iommu.devices.size).toBe(0);
    expect(m.driverCore.deviceFor("nic0")!.iommu).toBeUndefined();
    expect(core.iommuDevices).toEqual([]);
    await m.teardown();
  });

  it("a registration whose bus probe fails unregisters again, releasing what it probed", async () => {
    const m = await createMachine({ platform: defaultPlatform() });
    await m.boot();
    const core = getIommuCore(m);
    const smmu = m.driverCore.deviceFor("smmu0")!;
    const iommu = new IommuDevice({ dev: smmu });
    await expect(iommuDeviceRegister(core, iommu, builtinOps(core, "nic0"), smmu)).rejects.toMatchObject({
      code: "EIO",
    });
    expect(core.iommuDevices).toEqual([]);
    expect(iommu.devices.size).toBe(0);
    for (const d of m.driverCore.devices()) expect(d.iommu).toBeUndefined();
    await m.teardown();
  });
});
