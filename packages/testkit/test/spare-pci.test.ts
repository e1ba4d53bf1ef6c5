/**
 * ACPI targets (VT-d, AMD-Vi) declare spare PCI functions: the checks that add a device behind the IOMMU hot-add one
 * there, the driver finds its unit from the DMAR/IVRS by requester ID, and those checks run instead of being n/a.
 */
import { devIommu } from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import {
  addDeviceBehind,
  amdTarget,
  bootTarget,
  type ConformanceTarget,
  mockTarget,
  runConformance,
  vtdTarget,
} from "../src/index.js";

const ADDING = ["probe/deferred", "probe/fail-nth", "probe/lock", "concurrency/probe-vs-iommu-unregister"];

describe("spare PCI functions of ACPI targets", () => {
  for (const [make, iommu, other, bus] of [
    [vtdTarget, "vtd0", "amd0", "pci1"],
    [amdTarget, "amd0", "vtd0", "pci2"],
  ] as const) {
    it(`${make().name}: a hot-added function at the spare BDF is probed by ${iommu}, and the adding checks pass`, async () => {
      const target = make();
      const rig = await bootTarget(target);
      const d = await addDeviceBehind(rig, "testkit-hot");
      expect(d.bus.name).toBe(bus);
      expect(d.pci?.bdf).toBe(target.sparePci![0]!.bdf);
      const inst = target.driver.instanceFor(rig.m, iommu);
      expect(inst).toBeDefined();
      expect(devIommu(d)?.iommuDev).toBe(inst);
      expect(devIommu(d)?.iommuDev?.name).not.toBe(other);
      expect(d.iommuGroup).toBeDefined();
      await rig.m.driverCore.deviceUnregister(d);
      await rig.teardown();

      const r = await runConformance({ drivers: [target], only: ADDING });
      expect(r.results.map((x) => [x.check, x.status])).toEqual(ADDING.map((id) => [id, "pass"]));
    });
  }

  it("the adding checks fail when the spare BDF is outside the IOMMU's IVRS entries", async () => {
    // 03:00.0 on segment 2 matches no select, range or alias entry of amd0's IVHD.
    const t: ConformanceTarget = { ...amdTarget(), sparePci: [{ bus: "pci2", bdf: "03:00.0" }] };
    const r = await runConformance({ drivers: [t], only: ["probe/deferred"] });
    expect(r.results[0]!.status).toBe("fail");
    expect(r.results[0]!.detail).toMatch(/not probed when its IOMMU registered/);
  });

  it("a spare BDF already taken by a boot device is refused with the device named", async () => {
    const t: ConformanceTarget = { ...vtdTarget(), sparePci: [{ bus: "pci1", bdf: "00:14.0" }] };
    const rig = await bootTarget(t);
    await expect(addDeviceBehind(rig, "testkit-dup")).rejects.toThrow(/pci1 00:14.0 is xhci0/);
    await rig.teardown();
  });

  it("with neither spare IDs nor spare PCI functions the adding checks are n/a with the reason", async () => {
    const t: ConformanceTarget = { ...mockTarget(), spareIds: [] };
    const r = await runConformance({ drivers: [t], only: ADDING });
    for (const x of r.results) {
      expect(x.status).toBe("n/a");
      expect(x.detail).toMatch(/no spare IDs \(DT\) or spare PCI functions \(ACPI\) declared/);
    }
  });
});
