import { describe, expect, it } from "vitest";
import {
  iommuAttachDevice,
  iommuAttachGroup,
  iommuDeferredAttach,
  iommuDetachDevice,
  iommuDetachGroup,
  iommuDriverGetDomainForDev,
  iommuGetDmaDomain,
  iommuGetDomainForDev,
  iommuGroupReplaceDomain,
} from "../../src/iommu/attach.js";
import { devIommu } from "../../src/iommu/dev-iommu.js";
import { iommuDomainFree, iommuPagingDomainAlloc, iommuPagingDomainAllocFlags } from "../../src/iommu/domain.js";
import { IOMMU_DOMAIN, IOMMU_RESV } from "../../src/iommu/types.js";
import { StubDriver, stubMachine } from "./group-fixture.js";

describe("attach and detach", () => {
  it("attaches an unmanaged domain to a single-device group and detaches back to the default domain", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    const def = g.defaultDomain!;
    const d = await iommuPagingDomainAlloc(nic);
    expect(d.type).toBe(IOMMU_DOMAIN.UNMANAGED);
    await iommuAttachDevice(d, nic);
    expect(iommuGetDomainForDev(nic)).toBe(d);
    expect(iommuGetDmaDomain(nic)).toBe(def);
    expect(t.drv.attached.get(nic)).toBe(d);
    expect(t.drv.callsOf("attach").at(-1)).toMatchObject({ dev: "nic0", domain: d.name, old: def.name });
    // A second domain while one is attached: EBUSY.
    const d2 = await iommuPagingDomainAlloc(nic);
    await expect(iommuAttachDevice(d2, nic)).rejects.toMatchObject({ code: "EBUSY" });
    await iommuDetachDevice(d, nic);
    expect(g.domain).toBe(def);
    expect(t.drv.attached.get(nic)).toBe(def);
    iommuDomainFree(d);
    iommuDomainFree(d2);
    await t.teardown();
  });

  it("refuses attach_device on a multi-device group (EINVAL), a device without group (ENODEV), a foreign domain", async () => {
    const t = await stubMachine();
    await t.probe("gpu0");
    await t.probe("gpu0-audio");
    const gpu = t.dev("gpu0");
    const d = await iommuPagingDomainAlloc(gpu);
    await expect(iommuAttachDevice(d, gpu)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(iommuAttachDevice(d, t.dev("uart0"))).rejects.toMatchObject({ code: "ENODEV" });
    const other = new StubDriver(t.m, t.core);
    other.initDevice(t.dev("xhci0"));
    const foreign = await iommuPagingDomainAlloc(t.dev("xhci0"));
    await expect(iommuAttachGroup(foreign, gpu.iommuGroup as never)).rejects.toMatchObject({ code: "EINVAL" });
    // Whole-group attach works for the group's own domain.
    await iommuAttachGroup(d, gpu.iommuGroup as never);
    expect(t.drv.attached.get(t.dev("gpu0-audio"))).toBe(d);
    await iommuDetachGroup(d, gpu.iommuGroup as never);
    iommuDomainFree(d);
    iommuDomainFree(foreign);
    devIommu(t.dev("xhci0"))!.iommuDev = undefined;
    t.dev("xhci0").iommu = undefined;
    await t.teardown();
  });

  it("warns on detach of a domain that is not attached", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0");
    const d = await iommuPagingDomainAlloc(nic);
    await t.m.diag.expectWarning(/not attached/, () => iommuDetachDevice(d, nic));
    iommuDomainFree(d);
    await t.teardown();
  });

  it("allocates with flags through domain_alloc_paging_flags, EOPNOTSUPP for flags it lacks", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0");
    const d = await iommuPagingDomainAllocFlags(nic, 1);
    expect(d.owner).toBe(t.drv.ops);
    await expect(iommuPagingDomainAllocFlags(nic, 2)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(iommuPagingDomainAlloc(t.dev("uart0"))).rejects.toMatchObject({ code: "ENODEV" });
    iommuDomainFree(d);
    await t.teardown();
  });
});

describe("replace", () => {
  it("moves between two unmanaged domains without passing through blocking", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    const a = await iommuPagingDomainAlloc(nic);
    const b = await iommuPagingDomainAlloc(nic);
    await iommuAttachDevice(a, nic);
    await iommuGroupReplaceDomain(g, b);
    expect(g.domain).toBe(b);
    expect(t.drv.callsOf("attach").at(-1)).toMatchObject({ domain: b.name, old: a.name });
    await expect(iommuGroupReplaceDomain(g, undefined)).rejects.toMatchObject({ code: "EINVAL" });
    await iommuDetachDevice(b, nic);
    iommuDomainFree(a);
    iommuDomainFree(b);
    await t.teardown();
  });

  it("keeps the old domain when attach fails, reverting devices already switched", async () => {
    const t = await stubMachine();
    const gpu = t.dev("gpu0");
    const audio = t.dev("gpu0-audio");
    await t.probe("gpu0");
    const g = await t.probe("gpu0-audio");
    const a = await iommuPagingDomainAlloc(gpu);
    const b = await iommuPagingDomainAlloc(gpu);
    await iommuAttachGroup(a, g);
    t.drv.calls.length = 0;
    // The second device refuses b.
    t.drv.failAttach = (dom, dev) => dom === b && dev === audio;
    await expect(iommuGroupReplaceDomain(g, b)).rejects.toMatchObject({ code: "EIO" });
    expect(g.domain).toBe(a);
    expect(t.drv.attached.get(gpu)).toBe(a);
    expect(t.drv.attached.get(audio)).toBe(a);
    expect(t.drv.callsOf("attach").map((c) => [c.dev, c.domain, c.old])).toEqual([
      ["gpu0", b.name, a.name],
      ["gpu0-audio", b.name, a.name],
      // revert: both devices (the failing one included) back to a
      ["gpu0", a.name, b.name],
      ["gpu0-audio", a.name, b.name],
    ]);
    t.drv.failAttach = () => false;
    await iommuDetachGroup(a, g);
    expect(g.domain).toBe(g.defaultDomain);
    iommuDomainFree(a);
    iommuDomainFree(b);
    await t.teardown();
  });

  it("refuses to block a device that needs direct mappings, and skips the default domain while attach is deferred", async () => {
    const t = await stubMachine({
      resv: (dev) =>
        dev.name === "nic0" ? [{ start: 0x2000000, length: 0x2000, prot: 3, type: IOMMU_RESV.DIRECT }] : [],
    });
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    expect(devIommu(nic)!.requireDirect).toBe(true);
    await expect(iommuGroupReplaceDomain(g, t.drv.ops.blockedDomain)).rejects.toMatchObject({ code: "EINVAL" });
    expect(g.domain).toBe(g.defaultDomain);

    // Deferred attach: probing attaches nothing until the first DMA use.
    t.drv.initDevice(t.dev("xhci0"));
    devIommu(t.dev("xhci0"))!.attachDeferred = true;
    const { iommuGroupAddDevice } = await import("../../src/iommu/group.js");
    const gx = await iommuGroupAddDevice(t.core, t.dev("xhci0"), t.drv.hooks());
    expect(t.drv.attached.has(t.dev("xhci0"))).toBe(false);
    expect(gx.domain).toBe(gx.defaultDomain);
    await iommuDeferredAttach(t.dev("xhci0"), gx.defaultDomain!);
    expect(t.drv.attached.get(t.dev("xhci0"))).toBe(gx.defaultDomain);
    expect(devIommu(t.dev("xhci0"))!.attachDeferred).toBe(false);
    await t.drv.release(t.dev("xhci0"));
    await t.teardown();
  });

  it("lets drivers read the domain only under the group mutex", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    await g.mutex.withLock(() => expect(iommuDriverGetDomainForDev(nic)).toBe(g.defaultDomain));
    await t.m.diag.expectWarning({ kind: "lock-assert" }, () => {
      expect(() => iommuDriverGetDomainForDev(nic)).toThrow();
    });
    await t.teardown();
  });
});
