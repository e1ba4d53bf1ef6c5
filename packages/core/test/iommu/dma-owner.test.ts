import { describe, expect, it } from "vitest";
import { iommuAttachDevice, iommuDetachDevice } from "../../src/iommu/attach.js";
import {
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDeviceUnuseDefaultDomain,
  iommuDeviceUseDefaultDomain,
  iommuGroupClaimDmaOwner,
  iommuGroupDmaOwnerClaimed,
  iommuGroupReleaseDmaOwner,
} from "../../src/iommu/dma-owner.js";
import { iommuDomainFree, iommuPagingDomainAlloc } from "../../src/iommu/domain.js";
import { iommuAttachDevicePasid, iommuDetachDevicePasid } from "../../src/iommu/pasid.js";
import { IOMMU_DOMAIN } from "../../src/iommu/types.js";
import { stubMachine } from "./group-fixture.js";

describe("DMA ownership", () => {
  it("blocks the group while user space owns it, shared between devices with the same owner", async () => {
    const t = await stubMachine();
    const gpu = t.dev("gpu0");
    const audio = t.dev("gpu0-audio");
    await t.probe("gpu0");
    const g = await t.probe("gpu0-audio");
    const vfio = { name: "vfio" };
    await iommuDeviceClaimDmaOwner(gpu, vfio);
    expect(g.domain).toBe(t.drv.ops.blockedDomain);
    expect(g.blockingDomain).toBe(t.drv.ops.blockedDomain);
    expect(t.drv.attached.get(audio)?.type).toBe(IOMMU_DOMAIN.BLOCKED);
    await iommuDeviceClaimDmaOwner(audio, vfio);
    expect(g.ownerCnt).toBe(2);
    // Another owner, or a kernel driver, cannot join.
    await expect(iommuDeviceClaimDmaOwner(audio, { name: "other" })).rejects.toMatchObject({ code: "EPERM" });
    await expect(iommuDeviceUseDefaultDomain(audio)).rejects.toMatchObject({ code: "EBUSY" });
    await expect(iommuGroupClaimDmaOwner(g, vfio)).rejects.toMatchObject({ code: "EPERM" });
    expect(await iommuGroupDmaOwnerClaimed(g)).toBe(true);
    await iommuDeviceReleaseDmaOwner(audio);
    expect(g.domain).toBe(t.drv.ops.blockedDomain);
    await iommuDeviceReleaseDmaOwner(gpu);
    expect(g.domain).toBe(g.defaultDomain);
    expect(g.owner).toBeUndefined();
    expect(await iommuGroupDmaOwnerClaimed(g)).toBe(false);
    await t.teardown();
  });

  it("refuses ownership while a kernel driver uses the group (EPERM) or it is on another domain (EBUSY)", async () => {
    const t = await stubMachine({ pasid: true });
    const nic = t.dev("nic0");
    const g = await t.probe("nic0", 1 << 20);
    await iommuDeviceUseDefaultDomain(nic);
    await expect(iommuGroupClaimDmaOwner(g, "vfio")).rejects.toMatchObject({ code: "EPERM" });
    await expect(iommuDeviceClaimDmaOwner(nic, "vfio")).rejects.toMatchObject({ code: "EPERM" });
    await iommuDeviceUnuseDefaultDomain(nic);

    const d = await iommuPagingDomainAlloc(nic);
    await iommuAttachDevice(d, nic);
    await expect(iommuDeviceClaimDmaOwner(nic, "vfio")).rejects.toMatchObject({ code: "EBUSY" });
    await iommuDetachDevice(d, nic);

    await iommuAttachDevicePasid(d, nic, 5);
    await expect(iommuGroupClaimDmaOwner(g, "vfio")).rejects.toMatchObject({ code: "EBUSY" });
    await iommuDetachDevicePasid(d, nic, 5);

    await iommuGroupClaimDmaOwner(g, "vfio");
    await iommuGroupReleaseDmaOwner(g);
    expect(g.ownerCnt).toBe(0);
    iommuDomainFree(d);
    await t.teardown();
  });

  it("uses an empty paging domain to block when the driver has no blocked domain, freed with the group", async () => {
    const t = await stubMachine({ blocked: false });
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    await iommuDeviceClaimDmaOwner(nic, "vfio");
    const blocking = g.blockingDomain!;
    expect(blocking.type).toBe(IOMMU_DOMAIN.UNMANAGED);
    expect(g.domain).toBe(blocking);
    await iommuDeviceReleaseDmaOwner(nic);
    await t.drv.release(nic);
    expect(t.drv.freedDomains).toContain(blocking);
    await t.teardown();
  });

  it("warns on a missing owner and on releasing what was never claimed", async () => {
    const t = await stubMachine();
    const nic = t.dev("nic0");
    const g = await t.probe("nic0");
    await t.m.diag.expectWarning(/without owner/, async () => {
      await expect(iommuDeviceClaimDmaOwner(nic, undefined)).rejects.toMatchObject({ code: "EINVAL" });
      await expect(iommuGroupClaimDmaOwner(g, null)).rejects.toMatchObject({ code: "EINVAL" });
    });
    await t.m.diag.expectWarning(/not owned/, () => iommuGroupReleaseDmaOwner(g));
    await t.m.diag.expectWarning(/unbalanced unuse/, () => iommuDeviceUnuseDefaultDomain(nic));
    expect(g.ownerCnt).toBe(0);
    await t.teardown();
  });
});
