import { describe, expect, it } from "vitest";
import { iommuGetDomainForDev } from "../../src/iommu/attach.js";
import { iommuDomainFree } from "../../src/iommu/domain.js";
import {
  genericSingleDeviceGroup,
  type IommuGroup,
  iommuGroupAddDevice,
  iommuGroupGet,
  iommuGroupPut,
  iommuGroupSetupDefaultDomain,
  iommuGroupShowType,
  iommuGroupStoreType,
} from "../../src/iommu/group.js";
import { IOMMU_CAP, IOMMU_DOMAIN } from "../../src/iommu/types.js";
import { stubMachine } from "./group-fixture.js";

const pciPlatform = (acs: boolean) => ({
  buses: [
    { name: "platform", type: "platform" },
    { name: "pcix", type: "pci", segment: 3, acs },
  ],
  devices: [
    { name: "a0", bus: "pcix", bdf: "00:01.0" },
    { name: "b0", bus: "pcix", bdf: "00:02.0" },
    { name: "alias-src", bus: "pcix", bdf: "00:18.0", aliases: ["00:19.0"] },
    { name: "alias-dst", bus: "pcix", bdf: "00:19.0" },
    { name: "p0", bus: "platform" },
  ],
});

describe("group selection", () => {
  it("puts the functions of a multi-function device without ACS in one group (default platform)", async () => {
    const t = await stubMachine();
    const g0 = await t.probe("gpu0");
    const g1 = await t.probe("gpu0-audio");
    const nic = await t.probe("nic0");
    expect(g1).toBe(g0);
    expect(g0.devices.map((d) => d.dev.name)).toEqual(["gpu0", "gpu0-audio"]);
    expect(nic).not.toBe(g0);
    // The audio function joined a group that had its default domain: it was attached to it directly.
    expect(t.drv.attached.get(t.dev("gpu0-audio"))).toBe(g0.defaultDomain);
    expect(g0.kref.read()).toBe(2);
    await t.teardown();
  });

  it("gives sata0 (whose DMA alias 00:17.1 has no device) and platform devices groups of their own", async () => {
    const t = await stubMachine();
    const sata = await t.probe("sata0");
    const nvme = await t.probe("nvme0");
    const p0 = await t.probe("mock-dev0");
    const p1 = await t.probe("mock-dev1");
    expect(new Set([sata, nvme, p0, p1]).size).toBe(4);
    expect(t.core.groups.list().map((g) => g.id)).toEqual([sata.id, nvme.id, p0.id, p1.id].sort((a, b) => a - b));
    await t.teardown();
  });

  it("groups devices that DMA-alias each other, in either probe order", async () => {
    for (const order of [
      ["alias-src", "alias-dst"],
      ["alias-dst", "alias-src"],
    ]) {
      const t = await stubMachine({ platform: pciPlatform(true) });
      const ga = await t.probe(order[0]!);
      const gb = await t.probe(order[1]!);
      const other = await t.probe("a0");
      expect(gb).toBe(ga);
      expect(other).not.toBe(ga);
      await t.teardown();
    }
  });

  it("puts every device below a port without ACS in one group, but not platform devices", async () => {
    const t = await stubMachine({ platform: pciPlatform(false) });
    const a = await t.probe("a0");
    const b = await t.probe("b0");
    const c = await t.probe("alias-src");
    const p = await t.probe("p0");
    expect(b).toBe(a);
    expect(c).toBe(a);
    expect(p).not.toBe(a);
    expect(a.devices).toHaveLength(3);
    await t.teardown();
  });

  it("shares one group per IOMMU with generic_single_device_group", async () => {
    const t = await stubMachine({ deviceGroup: "none" });
    t.drv.ops.deviceGroup = async (dev) => genericSingleDeviceGroup(t.core, dev);
    const g0 = await t.probe("mock-dev0");
    const g1 = await t.probe("nic0");
    expect(g1).toBe(g0);
    for (const name of ["nic0", "mock-dev0"]) await t.drv.release(t.dev(name));
    // The instance's own reference keeps the (now empty) group until the IOMMU is unregistered.
    expect(g0.kref.holders()).toEqual(new Map([["singleton_group", 1]]));
    expect(g0.defaultDomain).toBeUndefined();
    t.core.groupHooks.unregisterIommu?.(t.core, t.drv.iommu);
    expect(t.core.groups.list()).toEqual([]);
    await t.teardown();
  });

  it("counts references with holders and releases the group with its last device", async () => {
    const t = await stubMachine();
    const g = await t.probe("nic0");
    const id = g.id;
    const ref = iommuGroupGet(t.dev("nic0"), "test")!;
    expect(ref).toBe(g);
    expect(g.kref.holders().get("test")).toBe(1);
    iommuGroupPut(ref, "test");
    const dom = g.defaultDomain!;
    await t.drv.release(t.dev("nic0"));
    expect(t.dev("nic0").iommuGroup).toBeUndefined();
    expect(t.dev("nic0").iommu).toBeUndefined();
    expect(t.core.groups.find(id)).toBeUndefined();
    expect(t.drv.freedDomains).toContain(dom);
    // The ID is reused by the next group.
    const again = await t.probe("nic0");
    expect(again.id).toBe(id);
    await t.teardown();
  });

  it("unwinds a failing first attach: the device leaves, the domain is freed, the group released", async () => {
    const t = await stubMachine();
    t.drv.failAttach = () => true;
    await t.m.diag.expectWarning({ kind: "warning" }, async () => {
      await expect(t.probe("nic0")).rejects.toMatchObject({ code: "EIO" });
    });
    expect(t.dev("nic0").iommuGroup).toBeUndefined();
    expect(t.dev("nic0").iommu).toBeUndefined();
    expect(t.core.groups.list()).toEqual([]);
    expect(t.drv.callsOf("free")).toHaveLength(1);
    await t.teardown();
  });

  it("fails cleanly when the group device allocation fails", async () => {
    const t = await stubMachine();
    t.m.faults.failSite("iommu_group_alloc_device", 1);
    await expect(t.probe("nic0")).rejects.toMatchObject({ code: "ENOMEM" });
    expect(t.core.groups.list()).toEqual([]);
    expect(t.dev("nic0").iommu).toBeUndefined();
    await t.teardown();
  });

  it("defers the default domain to the group list of a bus walk", async () => {
    const t = await stubMachine();
    const list: IommuGroup[] = [];
    for (const name of ["gpu0", "gpu0-audio"]) {
      t.drv.initDevice(t.dev(name));
      await iommuGroupAddDevice(t.core, t.dev(name), { ...t.drv.hooks(), groupList: list });
    }
    expect(list).toHaveLength(1);
    const g = list[0]!;
    expect(g.defaultDomain).toBeUndefined();
    await iommuGroupSetupDefaultDomain(g);
    expect(g.domain).toBe(g.defaultDomain);
    expect(t.drv.callsOf("attach").map((c) => c.dev)).toEqual(["gpu0", "gpu0-audio"]);
    for (const name of ["gpu0-audio", "gpu0"]) await t.drv.release(t.dev(name));
    await t.teardown();
  });
});

describe("default domain selection", () => {
  it("is a translating DMA domain by default", async () => {
    const t = await stubMachine();
    const g = await t.probe("nic0");
    expect(g.defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    expect(g.domain).toBe(g.defaultDomain);
    expect(iommuGetDomainForDev(t.dev("nic0"))).toBe(g.defaultDomain);
    expect(await iommuGroupShowType(g)).toBe("DMA");
    await t.teardown();
  });

  it("is the driver's identity domain with passthrough", async () => {
    const t = await stubMachine({ passthrough: true });
    const g = await t.probe("nic0");
    expect(g.defaultDomain).toBe(t.drv.ops.identityDomain);
    expect(await iommuGroupShowType(g)).toBe("identity");
    await t.teardown();
  });

  it("falls back to DMA when the driver has no identity domain", async () => {
    const t = await stubMachine({ passthrough: true, identity: false });
    const g = await t.probe("nic0");
    expect(g.defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    await t.teardown();
  });

  it("follows the driver's def_domain_type, and reports conflicting requests in a group (identity wins)", async () => {
    const t = await stubMachine({
      defDomainType: (dev) => (dev.name === "gpu0" ? IOMMU_DOMAIN.DMA : IOMMU_DOMAIN.IDENTITY),
    });
    const nic = await t.probe("nic0");
    expect(nic.defaultDomain).toBe(t.drv.ops.identityDomain);
    const g = await t.probe("gpu0");
    expect(g.defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    await t.probe("gpu0-audio");
    // Re-selecting now sees DMA and IDENTITY requests in one group.
    await t.m.diag.expectWarning(/conflicting def_domain_type/, async () => {
      await g.mutex.withLock(async () => {
        const { iommuGetDefaultDomainType } = await import("../../src/iommu/group.js");
        expect(iommuGetDefaultDomainType(g, 0)).toBe(IOMMU_DOMAIN.IDENTITY);
        expect(iommuGetDefaultDomainType(g, IOMMU_DOMAIN.DMA)).toBe(-1);
      });
    });
    await t.teardown();
  });

  it("uses DMA-FQ when not strict, demoted to DMA without deferred-flush support", async () => {
    const lazy = await stubMachine({ strict: false, capable: (_d, cap) => cap === IOMMU_CAP.DEFERRED_FLUSH });
    expect((await lazy.probe("nic0")).defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA_FQ);
    await lazy.teardown();
    const noFq = await stubMachine({ strict: false });
    expect((await noFq.probe("nic0")).defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    await noFq.teardown();
  });

  it("changes type through sysfs only while no driver uses the group; the old default domain is freed", async () => {
    const t = await stubMachine();
    const g = await t.probe("nic0");
    const old = g.defaultDomain!;
    await iommuGroupStoreType(g, "identity");
    expect(g.defaultDomain).toBe(t.drv.ops.identityDomain);
    expect(g.domain).toBe(g.defaultDomain);
    expect(t.drv.freedDomains).toEqual([old]);
    await expect(iommuGroupStoreType(g, "bogus")).rejects.toMatchObject({ code: "EINVAL" });
    g.ownerCnt = 1;
    await expect(iommuGroupStoreType(g, "DMA")).rejects.toMatchObject({ code: "EPERM" });
    g.ownerCnt = 0;
    await iommuGroupStoreType(g, "auto");
    expect(g.defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    await t.teardown();
  });

  it("keeps the old default domain when the switch to a new one fails", async () => {
    const t = await stubMachine();
    const g = await t.probe("nic0");
    const old = g.defaultDomain!;
    t.drv.failAttach = (d) => d === t.drv.ops.identityDomain;
    await expect(iommuGroupStoreType(g, "identity")).rejects.toMatchObject({ code: "EIO" });
    expect(g.defaultDomain).toBe(old);
    expect(g.domain).toBe(old);
    expect(t.drv.attached.get(t.dev("nic0"))).toBe(old);
    expect(old.freed).toBe(false);
    await t.teardown();
  });

  it("reports a double free of a domain", async () => {
    const t = await stubMachine();
    const g = await t.probe("nic0");
    const d = await (await import("../../src/iommu/domain.js")).iommuPagingDomainAlloc(t.dev("nic0"));
    expect(d.owner).toBe(t.drv.ops);
    expect(d.diag).toBe(t.m.diag);
    iommuDomainFree(d);
    await t.m.diag.expectWarning({ kind: "double-free" }, () => iommuDomainFree(d));
    expect(g.domain).toBe(g.defaultDomain);
    await t.teardown();
  });
});
