import { describe, expect, it } from "vitest";
import { iommuDomainFree, iommuPagingDomainAlloc } from "../../src/iommu/domain.js";
import {
  IOMMU_NO_PASID,
  IOMMU_PASID_INVALID,
  type IommuAttachHandle,
  iommuAllocGlobalPasid,
  iommuAttachDevicePasid,
  iommuAttachGroupHandle,
  iommuAttachHandleGet,
  iommuDetachDevicePasid,
  iommuDetachGroupHandle,
  iommuFreeGlobalPasid,
  iommuGetDomainForDevPasid,
  iommuReplaceDevicePasid,
  iommuReplaceGroupHandle,
} from "../../src/iommu/pasid.js";
import { IOMMU_DOMAIN } from "../../src/iommu/types.js";
import { StubDriver, stubMachine } from "./group-fixture.js";

const PASIDS = 1 << 20;

describe("PASID attach", () => {
  it("attaches, refuses a second attach with EBUSY, and detaches to the blocked domain", async () => {
    const t = await stubMachine({ pasid: true });
    const nic = t.dev("nic0");
    const g = await t.probe("nic0", PASIDS);
    const d = await iommuPagingDomainAlloc(nic);
    await iommuAttachDevicePasid(d, nic, 7);
    expect(iommuGetDomainForDevPasid(nic, 7)).toBe(d);
    expect(t.drv.pasids.get("nic0/7")).toBe(d);
    expect(t.drv.callsOf("setDevPasid").at(-1)).toMatchObject({ pasid: 7, domain: d.name, old: undefined });
    await expect(iommuAttachDevicePasid(d, nic, 7)).rejects.toMatchObject({ code: "EBUSY" });
    await iommuDetachDevicePasid(d, nic, 7);
    expect(t.drv.callsOf("setDevPasid").at(-1)).toMatchObject({ pasid: 7, domain: "stub-blocked", old: d.name });
    expect(t.drv.pasids.has("nic0/7")).toBe(false);
    expect(g.pasidArray.empty).toBe(true);
    iommuDomainFree(d);
    await t.teardown();
  });

  it("rejects bad requests with the kernel's errno", async () => {
    const t = await stubMachine({ pasid: true });
    const nic = t.dev("nic0");
    await t.probe("nic0", 16);
    const d = await iommuPagingDomainAlloc(nic);
    await expect(iommuAttachDevicePasid(d, nic, IOMMU_NO_PASID)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(iommuAttachDevicePasid(d, nic, 16)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(iommuAttachDevicePasid(d, t.dev("uart0"), 1)).rejects.toMatchObject({ code: "ENODEV" });
    // A domain of another driver.
    const other = new StubDriver(t.m, t.core, { pasid: true });
    other.initDevice(t.dev("xhci0"), PASIDS);
    const foreign = await iommuPagingDomainAlloc(t.dev("xhci0"));
    await expect(iommuAttachDevicePasid(foreign, nic, 1)).rejects.toMatchObject({ code: "EINVAL" });
    // Domains that cannot be attached to a PASID, and drivers without a blocked domain to detach with.
    const noPasid = await stubMachine({ pasid: false });
    await noPasid.probe("nic0", PASIDS);
    const np = await iommuPagingDomainAlloc(noPasid.dev("nic0"));
    await expect(iommuAttachDevicePasid(np, noPasid.dev("nic0"), 1)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    const noBlocked = await stubMachine({ pasid: true, blocked: false });
    await noBlocked.probe("nic0", PASIDS);
    const nb = await iommuPagingDomainAlloc(noBlocked.dev("nic0"));
    await expect(iommuAttachDevicePasid(nb, noBlocked.dev("nic0"), 1)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    for (const x of [d, foreign, np, nb]) iommuDomainFree(x);
    t.dev("xhci0").iommu = undefined;
    await noPasid.teardown();
    await noBlocked.teardown();
    await t.teardown();
  });

  it("programs only PASID-capable devices of a group and undoes the ones done when one fails", async () => {
    const t = await stubMachine({ pasid: true });
    const gpu = t.dev("gpu0");
    await t.probe("gpu0", PASIDS);
    const g = await t.probe("gpu0-audio"); // no PASID capability
    const d = await iommuPagingDomainAlloc(gpu);
    await iommuAttachDevicePasid(d, gpu, 3);
    expect(t.drv.callsOf("setDevPasid").map((c) => c.dev)).toEqual(["gpu0"]);
    await iommuDetachDevicePasid(d, gpu, 3);

    // Two PASID-capable devices: the second refuses, the first goes back to blocked.
    const t2 = await stubMachine({ pasid: true, platform: undefined });
    await t2.probe("gpu0", PASIDS);
    const g2 = await t2.probe("gpu0-audio", PASIDS);
    const d2 = await iommuPagingDomainAlloc(t2.dev("gpu0"));
    t2.drv.failPasid = (dom, dev) => dom === d2 && dev.name === "gpu0-audio";
    t2.drv.calls.length = 0;
    await expect(iommuAttachDevicePasid(d2, t2.dev("gpu0"), 9)).rejects.toMatchObject({ code: "EIO" });
    expect(t2.drv.callsOf("setDevPasid").map((c) => [c.dev, c.domain])).toEqual([
      ["gpu0", d2.name],
      ["gpu0-audio", d2.name],
      ["gpu0", "stub-blocked"],
    ]);
    expect(g2.pasidArray.empty).toBe(true);
    expect(t2.drv.pasids.size).toBe(0);
    iommuDomainFree(d);
    iommuDomainFree(d2);
    expect(g.pasidArray.empty).toBe(true);
    await t2.teardown();
    await t.teardown();
  });
});

describe("PASID replace", () => {
  it("replaces, keeps the old domain on failure, and checks its arguments", async () => {
    const t = await stubMachine({ pasid: true });
    const nic = t.dev("nic0");
    const g = await t.probe("nic0", PASIDS);
    const a = await iommuPagingDomainAlloc(nic);
    const b = await iommuPagingDomainAlloc(nic);
    const h1: IommuAttachHandle = { domain: undefined };
    const h2: IommuAttachHandle = { domain: undefined };
    await expect(iommuReplaceDevicePasid(b, nic, 4, h2)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(iommuReplaceDevicePasid(b, nic, IOMMU_NO_PASID, h2)).rejects.toMatchObject({ code: "EINVAL" });
    await iommuAttachDevicePasid(a, nic, 4, h1);
    expect(iommuAttachHandleGet(g, 4, 0)).toBe(h1);
    expect(h1.domain).toBe(a);
    await expect(iommuReplaceDevicePasid(b, nic, 4, undefined)).rejects.toMatchObject({ code: "EINVAL" });
    await t.m.diag.expectWarning(/reusing the attached handle/, async () => {
      await expect(iommuReplaceDevicePasid(b, nic, 4, h1)).rejects.toMatchObject({ code: "EINVAL" });
    });

    t.drv.failPasid = (dom) => dom === b;
    await expect(iommuReplaceDevicePasid(b, nic, 4, h2)).rejects.toMatchObject({ code: "EIO" });
    expect(iommuAttachHandleGet(g, 4, 0)).toBe(h1);
    expect(iommuGetDomainForDevPasid(nic, 4)).toBe(a);
    expect(t.drv.pasids.get("nic0/4")).toBe(a);

    t.drv.failPasid = () => false;
    await iommuReplaceDevicePasid(b, nic, 4, h2);
    expect(iommuAttachHandleGet(g, 4, 0)).toBe(h2);
    expect(t.drv.callsOf("setDevPasid").at(-1)).toMatchObject({ domain: b.name, old: a.name });
    expect(t.drv.pasids.get("nic0/4")).toBe(b);
    expect(() => iommuAttachHandleGet(g, 4, IOMMU_DOMAIN.SVA)).toThrow(expect.objectContaining({ code: "EBUSY" }));
    expect(() => iommuAttachHandleGet(g, 5, 0)).toThrow(expect.objectContaining({ code: "ENOENT" }));
    await iommuDetachDevicePasid(b, nic, 4);
    iommuDomainFree(a);
    iommuDomainFree(b);
    await t.teardown();
  });

  it("records a whole-group attach handle at IOMMU_NO_PASID, replaced atomically", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    const a = await iommuPagingDomainAlloc(nic);
    const b = await iommuPagingDomainAlloc(nic);
    const h: IommuAttachHandle = { domain: undefined };
    const h2: IommuAttachHandle = { domain: undefined };
    await expect(iommuAttachGroupHandle(a, g, undefined)).rejects.toMatchObject({ code: "EINVAL" });
    await iommuAttachGroupHandle(a, g, h);
    expect(g.domain).toBe(a);
    expect(iommuAttachHandleGet(g, IOMMU_NO_PASID, 0)).toBe(h);
    await expect(iommuAttachGroupHandle(b, g, h2)).rejects.toMatchObject({ code: "EBUSY" });
    t.drv.failAttach = (dom) => dom === b;
    await expect(iommuReplaceGroupHandle(g, b, h2)).rejects.toMatchObject({ code: "EIO" });
    expect(g.domain).toBe(a);
    expect(iommuAttachHandleGet(g, IOMMU_NO_PASID, 0)).toBe(h);
    t.drv.failAttach = () => false;
    await iommuReplaceGroupHandle(g, b, h2);
    expect(iommuAttachHandleGet(g, IOMMU_NO_PASID, 0)).toBe(h2);
    await iommuDetachGroupHandle(b, g);
    expect(g.domain).toBe(g.defaultDomain);
    expect(g.pasidArray.empty).toBe(true);
    iommuDomainFree(a);
    iommuDomainFree(b);
    await t.teardown();
  });

  it("allocates global PASIDs below the device's limit", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    await t.probe("nic0", 4);
    await t.probe("xhci0");
    expect([1, 2, 3].map(() => iommuAllocGlobalPasid(nic))).toEqual([1, 2, 3]);
    expect(iommuAllocGlobalPasid(nic)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasid(t.dev("xhci0"))).toBe(IOMMU_PASID_INVALID);
    iommuFreeGlobalPasid(t.core, 2);
    expect(iommuAllocGlobalPasid(nic)).toBe(2);
    await t.m.diag.expectWarning(/IOMMU_PASID_INVALID/, () => iommuFreeGlobalPasid(t.core, IOMMU_PASID_INVALID));
    await t.teardown();
  });
});
