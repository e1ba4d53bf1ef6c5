/**
 * PASID attachment (set_dev_pasid): a stage-1 domain at a SubstreamID of nic0 writes its CD into the 2-level CD
 * table (64 KiB leaves, L1 descriptor written on first use), DMA tagged with that PASID lands through it, and
 * detaching clears the CD; a stage-2 domain cannot be attached at a PASID.
 */
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { afterEach, expect, it } from "vitest";
import { type ArmSmmuDomain, CMDQ_OP, STE_VAL } from "../../src/index.js";
import { boot, captureCmds, teardownAll } from "./helpers.js";

afterEach(teardownAll);

it("attaches a stage-1 domain at a PASID through a 2-level CD table", async () => {
  const b = await boot();
  const dev = b.m.driverCore.deviceFor("nic0")!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID)) as ArmSmmuDomain;
  const master = b.smmu.streams.get(0x108)!;
  const pasid = 1500; // L1 index 1
  const cmds = await captureCmds(b.smmu, () => iommuAttachDevicePasid(d, dev, pasid));
  const t = master.cdTable!;
  expect(t.s1fmt).toBe(STE_VAL.S1FMT_64K_L2);
  expect(t.s1cdmax).toBe(20);
  expect(t.usedSsids).toBe(1);
  const l1 = b.m.memory.read64(t.pa + 8);
  expect(l1 & 1n).toBe(1n);
  expect(Number(l1 & 0xffffffffff000n)).toBe(t.l2[1]);
  expect(master.readCd(pasid)[0]! >> 48n).toBe(BigInt(d.asid));
  // CFGI_CD for SSID 1500 on SID 0x108: non-leaf once (new L1 descriptor), then leaf for the CD itself, twice
  // (qwords 1 and 3 while V=0, then qword 0 with V).
  const cfgi = cmds.filter((c) => c.op === CMDQ_OP.CFGI_CD);
  expect(cfgi.every((c) => c.w[1] === 0x108 && c.w[0] >>> 12 === pasid)).toBe(true);
  expect(cfgi.map((c) => c.w[2] & 1)).toEqual([0, 1, 1]);
  // The STE keeps pointing at the CD table with S1CDMax 20.
  const ste = b.smmu.readSte(0x108);
  expect(Number(ste[0]! >> 59n)).toBe(20);

  const pa = b.m.pages.allocPages(0, "t");
  iommuMap(d, 0x5000_0000, pa, 4096, IOMMU_READ | IOMMU_WRITE);
  b.m.device("nic0").dmaWrite(0x5000_0008, new Uint8Array([7, 8]), { pasid });
  expect(b.m.memory.readBytes(pa + 8, 2)).toEqual(new Uint8Array([7, 8]));

  await iommuDetachDevicePasid(d, dev, pasid);
  expect(master.readCd(pasid)[0]).toBe(0n);
  expect(t.usedSsids).toBe(0);
  iommuUnmap(d, 0x5000_0000, 4096);
  iommuDomainFree(d);
  await iommuDeviceReleaseDmaOwner(dev);
  b.m.pages.freePages(pa, 0);
  await b.smmu.drainQueues();
});

it("refuses a stage-2 domain at a PASID (EINVAL)", async () => {
  const b = await boot();
  const dev = b.m.driverCore.deviceFor("nic0")!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.NEST_PARENT);
  await expect(iommuAttachDevicePasid(d, dev, 5)).rejects.toMatchObject({ code: "EINVAL" });
  iommuDomainFree(d);
  await iommuDeviceReleaseDmaOwner(dev);
});

it("without 2-level CD tables caps a 20-bit PASID device at a 64 KiB linear CD table (arm_smmu_probe_device)", async () => {
  const b = await boot({ cd2l: false });
  expect(b.smmu.feat.twoLvlCdtab).toBe(false);
  const dev = b.m.driverCore.deviceFor("nic0")!;
  const master = b.smmu.streams.get(0x108)!;
  expect(master.ssidBits).toBe(10); // min(20, CTXDESC_LINEAR_CDMAX)
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID)) as ArmSmmuDomain;
  const pasid = 1023;
  await iommuAttachDevicePasid(d, dev, pasid);
  const t = master.cdTable!;
  expect(t.s1fmt).toBe(STE_VAL.S1FMT_LINEAR);
  expect(t.s1cdmax).toBe(10);
  expect(t.order).toBe(4); // 1024 CDs x 64 bytes = 64 KiB
  expect(Number(b.smmu.readSte(0x108)[0]! >> 59n)).toBe(10);
  const pa = b.m.pages.allocPages(0, "t");
  iommuMap(d, 0x5000_0000, pa, 4096, IOMMU_READ | IOMMU_WRITE);
  b.m.device("nic0").dmaWrite(0x5000_0010, new Uint8Array([3, 4]), { pasid });
  expect(b.m.memory.readBytes(pa + 0x10, 2)).toEqual(new Uint8Array([3, 4]));
  await expect(iommuAttachDevicePasid(d, dev, 1024)).rejects.toMatchObject({ code: "EINVAL" });
  await iommuDetachDevicePasid(d, dev, pasid);
  iommuUnmap(d, 0x5000_0000, 4096);
  iommuDomainFree(d);
  await iommuDeviceReleaseDmaOwner(dev);
  b.m.pages.freePages(pa, 0);
  await b.smmu.drainQueues();
});
