import { describe, expect, it } from "vitest";
import { devIommu, devIommuFree, devIommuFwspecGet } from "../../src/iommu/dev-iommu.js";
import { iommuFwspecAddIds, iommuFwspecFree, iommuFwspecInit, iommuFwspecOps } from "../../src/iommu/fwspec.js";
import { getIommuCore } from "../../src/iommu/iommu-core.js";
import { LockAssertionError } from "../../src/kernel/sched/errors.js";
import { createMachine } from "../../src/machine/machine.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import { fakeIommuDriver } from "../support/fake-iommu.js";

async function setup() {
  const mock = fakeIommuDriver();
  const other = fakeIommuDriver({ name: "fake-smmu", compatible: "smmuv3" });
  const m = await createMachine({ platform: defaultPlatform(), modules: [mock, other] });
  await m.boot();
  const core = getIommuCore(m);
  const node = (n: string) => m.driverCore.firmware.iommus.get(n)!.fwnode;
  const uart = m.driverCore.deviceFor("uart0")!;
  return { m, core, node, uart, mock, other };
}

describe("iommu_fwspec", () => {
  it("init needs the probe-device lock", async () => {
    const { m, core, node, uart } = await setup();
    m.diag.expectWarningSync({ kind: "lock-assert" }, () => {
      expect(() => iommuFwspecInit(core, uart, node("mock0"))).toThrow(LockAssertionError);
    });
    expect(uart.iommu).toBeUndefined();
    await m.teardown();
  });

  it("defers while no IOMMU is registered for the node, accepts the same driver, refuses another", async () => {
    const { m, core, node, uart, mock } = await setup();
    await core.probeLock.withLock(async () => {
      expect(() => iommuFwspecInit(core, uart, node("vtd0"))).toThrow(
        expect.objectContaining({ code: "EPROBE_DEFER" }),
      );
      expect(uart.iommu).toBeUndefined();
      iommuFwspecInit(core, uart, node("mock0"));
      const fwspec = devIommuFwspecGet(uart)!;
      expect(fwspec.iommuFwnode).toBe(node("mock0"));
      expect(iommuFwspecOps(core, fwspec)).toBe(mock.state(m).ops);
      // Same driver (another instance of it): accepted, the fwspec stays on its first node.
      iommuFwspecInit(core, uart, node("mock1"));
      expect(devIommuFwspecGet(uart)).toBe(fwspec);
      // Another driver's IOMMU: EINVAL.
      expect(() => iommuFwspecInit(core, uart, node("smmu0"))).toThrow(expect.objectContaining({ code: "EINVAL" }));
      iommuFwspecFree(core, uart);
      expect(devIommu(uart)).toBeDefined();
      expect(devIommuFwspecGet(uart)).toBeUndefined();
      devIommuFree(core, uart);
    });
    expect(uart.iommu).toBeUndefined();
    await m.teardown();
  });

  it("adds IDs, failing like krealloc beyond the first", async () => {
    const { m, core, node, uart } = await setup();
    await core.probeLock.withLock(async () => {
      expect(() => iommuFwspecAddIds(core, uart, [1])).toThrow(expect.objectContaining({ code: "EINVAL" }));
      iommuFwspecInit(core, uart, node("mock0"));
      m.faults.failSite("iommu_fwspec_add_ids", 1);
      iommuFwspecAddIds(core, uart, [4]);
      expect(() => iommuFwspecAddIds(core, uart, [5])).toThrow(expect.objectContaining({ code: "ENOMEM" }));
      iommuFwspecAddIds(core, uart, [5, 0xffff_ffff]);
      expect(devIommuFwspecGet(uart)?.ids).toEqual([4, 5, 0xffff_ffff]);
      expect(devIommuFwspecGet(uart)?.numIds).toBe(3);
      devIommuFree(core, uart);
    });
    await m.teardown();
  });

  it("fails allocation at dev_iommu_get and iommu_fwspec_init with ENOMEM", async () => {
    const { m, core, node, uart } = await setup();
    await core.probeLock.withLock(async () => {
      m.faults.failSite("dev_iommu_get", 1);
      expect(() => iommuFwspecInit(core, uart, node("mock0"))).toThrow(expect.objectContaining({ code: "ENOMEM" }));
      expect(uart.iommu).toBeUndefined();
      m.faults.failSite("iommu_fwspec_init", 1);
      expect(() => iommuFwspecInit(core, uart, node("mock0"))).toThrow(expect.objectContaining({ code: "ENOMEM" }));
      // The dev_iommu allocated on the way stays: the caller (of_iommu_configure) frees it.
      expect(devIommu(uart)?.fwspec).toBeUndefined();
      devIommuFree(core, uart);
    });
    await m.teardown();
  });
});
