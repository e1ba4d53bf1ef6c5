/**
 * Domains through the real mock driver: default-domain selection, attach and replace (the old domain stays on
 * failure), page-size splitting, identity/blocked domains, dirty tracking, PASID attach and nested domains — each
 * checked both through the core's view (iommuIovaToPhys, group state) and through the hardware (device DMA).
 */
import {
  createMachine,
  type Device,
  DmaFault,
  getIommuCore,
  IOMMU_DOMAIN,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupGet,
  iommuGroupPut,
  iommuGroupReplaceDomain,
  iommuIovaToPhys,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
  iommuReadAndClearDirty,
  iommuSetDirtyTracking,
  iommuUnmap,
  type Machine,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it } from "vitest";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_PAGE_SIZE,
  type MockIommu,
  MockNestedDomain,
  type MockPagingDomain,
  mockIommuDriver,
} from "../src/index.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const machines: Machine[] = [];
async function boot(opts: { passthrough?: boolean } = {}): Promise<Machine> {
  const m = await createMachine({ modules: [mockIommuDriver] });
  machines.push(m);
  if (opts.passthrough) getIommuCore(m, { passthrough: true });
  await m.boot();
  return m;
}
afterEach(async () => {
  for (const m of machines.splice(0)) await m.teardown();
});

const dev = (m: Machine, name: string): Device => m.driverCore.deviceFor(name)!;

function groupOf(d: Device): IommuGroup {
  const g = iommuGroupGet(d)!;
  iommuGroupPut(g);
  return g;
}

async function addDevice(
  m: Machine,
  name: string,
  sid: number,
  platformData: Record<string, unknown>,
): Promise<Device> {
  return m.driverCore.deviceRegister({
    name,
    bus: m.driverCore.busFor("platform")!,
    iommus: [{ fwnode: dev(m, "mock0").fwnode!, args: [sid] }],
    platformData,
  });
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

/** Own `d` and attach a fresh unmanaged domain to it. */
async function ownedDomain(d: Device, flags = 0): Promise<IommuDomain> {
  await iommuDeviceClaimDmaOwner(d, "test");
  const domain = await iommuPagingDomainAllocFlags(d, flags);
  await iommuAttachDevice(domain, d);
  return domain;
}

async function release(domain: IommuDomain, d: Device): Promise<void> {
  await iommuDetachDevice(domain, d);
  iommuDomainFree(domain);
  await iommuDeviceReleaseDmaOwner(d);
}

describe("mock driver domains", () => {
  it("gives each device a translating default domain with the mock geometry, identity with passthrough", async () => {
    const m = await boot();
    const g = groupOf(dev(m, "mock-dev0"));
    expect(g.defaultDomain?.type).toBe(IOMMU_DOMAIN.DMA);
    expect(g.domain).toBe(g.defaultDomain);
    expect(g.defaultDomain?.pgsizeBitmap).toBe(MOCK_PAGE_SIZE | MOCK_HUGE_PAGE_SIZE);
    expect(g.defaultDomain?.geometry).toEqual({
      apertureStart: 1 << 24,
      apertureEnd: 2 ** 31 - 1,
      forceAperture: true,
    });

    const p = await boot({ passthrough: true });
    const gp = groupOf(dev(p, "mock-dev0"));
    expect(gp.defaultDomain?.type).toBe(IOMMU_DOMAIN.IDENTITY);
    p.device("mock-dev0").dmaWrite(0x7700_0000, bytes(8, 1));
    expect(p.memory.readBytes(0x7700_0000, 8)).toEqual(bytes(8, 1));
  });

  it("maps through the default domain: the hardware and iova_to_phys agree", async () => {
    const m = await boot();
    const domain = groupOf(dev(m, "mock-dev0")).defaultDomain!;
    iommuMap(domain, MOCK_APERTURE_START, 0x6000_0000, 4 * MOCK_PAGE_SIZE, RW);
    expect(iommuIovaToPhys(domain, MOCK_APERTURE_START + 0x1234)).toBe(0x6000_1234);
    m.device("mock-dev0").dmaWrite(MOCK_APERTURE_START + 0x7f0, bytes(100, 2));
    expect(m.memory.readBytes(0x6000_07f0, 100)).toEqual(bytes(100, 2));
    expect(iommuUnmap(domain, MOCK_APERTURE_START, 4 * MOCK_PAGE_SIZE)).toBe(4 * MOCK_PAGE_SIZE);
    // The driver invalidated the IOTLB: the device faults at once.
    expect(() => m.device("mock-dev0").dmaRead(MOCK_APERTURE_START, 4)).toThrow(DmaFault);
  });

  it("splits a range into the largest aligned pages, and rejects misaligned or out-of-aperture ranges", async () => {
    const m = await boot();
    const d = dev(m, "mock-dev0");
    const domain = (await ownedDomain(d)) as MockPagingDomain;
    const iova = 2 * MOCK_HUGE_PAGE_SIZE - MOCK_PAGE_SIZE + MOCK_APERTURE_START;
    const size = 2 * MOCK_HUGE_PAGE_SIZE + 2 * MOCK_PAGE_SIZE;
    const pa = 0x4000_0000 + (iova - MOCK_APERTURE_START);
    iommuMap(domain, iova, pa, size, RW);
    const leaves: number[] = [];
    domain.pt.dump((_iova, _pa, sz) => leaves.push(sz));
    expect(leaves).toEqual([MOCK_PAGE_SIZE, MOCK_HUGE_PAGE_SIZE, MOCK_HUGE_PAGE_SIZE, MOCK_PAGE_SIZE]);
    // One DMA spanning all four leaves.
    m.device("mock-dev0").dmaWrite(iova + 16, bytes(size - 32, 3));
    expect(Buffer.from(m.memory.readBytes(pa + 16, size - 32)).equals(bytes(size - 32, 3))).toBe(true);
    expect(() => iommuMap(domain, MOCK_APERTURE_START + 1024, 0x5000_0000, MOCK_PAGE_SIZE, RW)).toThrow(
      expect.objectContaining({ code: "EINVAL" }),
    );
    expect(() => iommuMap(domain, 0, 0x5000_0000, MOCK_PAGE_SIZE, RW)).toThrow(
      expect.objectContaining({ code: "ERANGE" }),
    );
    expect(iommuUnmap(domain, iova, size)).toBe(size);
    await release(domain, d);
  });

  it("keeps the old domain attached when a replace fails", async () => {
    const m = await boot();
    const d0 = dev(m, "mock-dev0");
    const dirtyDomain = await iommuPagingDomainAllocFlags(d0, IOMMU_HWPT_ALLOC.DIRTY_TRACKING);
    const nd = await addDevice(m, "nodirty-dev", 9, { "mock-dev-flags": MOCK_FLAGS_DEVICE_NO_DIRTY });
    await expect(iommuPagingDomainAllocFlags(nd, IOMMU_HWPT_ALLOC.DIRTY_TRACKING)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await iommuDeviceClaimDmaOwner(nd, "test");
    const good = await iommuPagingDomainAlloc(nd);
    iommuMap(good, MOCK_APERTURE_START, 0x6100_0000, MOCK_PAGE_SIZE, RW);
    const g = groupOf(nd);
    await iommuGroupReplaceDomain(g, good);
    expect(g.domain).toBe(good);
    await expect(iommuGroupReplaceDomain(g, dirtyDomain)).rejects.toMatchObject({ code: "EINVAL" });
    expect(g.domain).toBe(good);
    // The hardware still translates through the old domain.
    m.device("nodirty-dev").dmaWrite(MOCK_APERTURE_START, bytes(8, 4));
    expect(m.memory.readBytes(0x6100_0000, 8)).toEqual(bytes(8, 4));
    await iommuDeviceReleaseDmaOwner(nd);
    iommuDomainFree(good);
    iommuDomainFree(dirtyDomain);
    await m.driverCore.deviceUnregister(nd);
  });

  it("blocks DMA on the blocked domain and passes it on the identity domain", async () => {
    const m = await boot();
    const d = dev(m, "mock-dev0");
    await iommuDeviceClaimDmaOwner(d, "test");
    const g = groupOf(d);
    expect(g.domain?.type).toBe(IOMMU_DOMAIN.BLOCKED);
    expect(() => m.device("mock-dev0").dmaRead(0, 4)).toThrow(/abort/);
    const ops = (mockIommuDriver.instanceFor(m, "mock0") as MockIommu).ops;
    await iommuGroupReplaceDomain(g, ops.identityDomain!);
    m.device("mock-dev0").dmaWrite(0x7800_0000, bytes(8, 5));
    expect(m.memory.readBytes(0x7800_0000, 8)).toEqual(bytes(8, 5));
    await iommuDeviceReleaseDmaOwner(d);
    expect(g.domain).toBe(g.defaultDomain);
  });

  it("tracks dirty pages written by the device and clears them", async () => {
    const m = await boot();
    const d = dev(m, "mock-dev0");
    const domain = await ownedDomain(d, IOMMU_HWPT_ALLOC.DIRTY_TRACKING);
    iommuMap(domain, MOCK_APERTURE_START, 0x6200_0000, 8 * MOCK_PAGE_SIZE, RW);
    await iommuSetDirtyTracking(domain, true);
    const ep = m.device("mock-dev0");
    ep.dmaRead(MOCK_APERTURE_START, 4);
    ep.dmaWrite(MOCK_APERTURE_START + 3 * MOCK_PAGE_SIZE, bytes(4, 6));
    ep.dmaWrite(MOCK_APERTURE_START + 5 * MOCK_PAGE_SIZE + 100, bytes(4, 6));
    const seen: number[] = [];
    iommuReadAndClearDirty(domain, MOCK_APERTURE_START, 8 * MOCK_PAGE_SIZE, 0, (iova, len) => {
      for (let a = iova; a < iova + len; a += MOCK_PAGE_SIZE) seen.push((a - MOCK_APERTURE_START) / MOCK_PAGE_SIZE);
    });
    expect(seen).toEqual([3, 5]);
    // Cleared, and the IOTLB was invalidated: a new write marks the page again.
    const again: number[] = [];
    ep.dmaWrite(MOCK_APERTURE_START + 3 * MOCK_PAGE_SIZE, bytes(4, 7));
    iommuReadAndClearDirty(domain, MOCK_APERTURE_START, 8 * MOCK_PAGE_SIZE, 0, (iova) => {
      again.push((iova - MOCK_APERTURE_START) / MOCK_PAGE_SIZE);
    });
    expect(again).toEqual([3]);
    await iommuSetDirtyTracking(domain, false);
    iommuUnmap(domain, MOCK_APERTURE_START, 8 * MOCK_PAGE_SIZE);
    await release(domain, d);
  });

  it("attaches domains at PASIDs of a PASID-capable device", async () => {
    const m = await boot();
    const pd = await addDevice(m, "pasid-dev", 10, { "mock-dev-flags": MOCK_FLAGS_DEVICE_PASID, "pasid-num-bits": 20 });
    const rid = await ownedDomain(pd);
    const atPasid = await iommuPagingDomainAlloc(pd);
    iommuMap(rid, MOCK_APERTURE_START, 0x6300_0000, MOCK_PAGE_SIZE, RW);
    iommuMap(atPasid, MOCK_APERTURE_START, 0x6400_0000, MOCK_PAGE_SIZE, RW);
    await iommuAttachDevicePasid(atPasid, pd, 1000);
    const ep = m.device("pasid-dev");
    ep.dmaWrite(MOCK_APERTURE_START, bytes(8, 8));
    ep.dmaWrite(MOCK_APERTURE_START, bytes(8, 9), { pasid: 1000 });
    expect(m.memory.readBytes(0x6300_0000, 8)).toEqual(bytes(8, 8));
    expect(m.memory.readBytes(0x6400_0000, 8)).toEqual(bytes(8, 9));
    expect(() => ep.dmaRead(MOCK_APERTURE_START, 4, { pasid: 1001 })).toThrow(/bad PASID/);
    await iommuDetachDevicePasid(atPasid, pd, 1000);
    expect(() => ep.dmaRead(MOCK_APERTURE_START, 4, { pasid: 1000 })).toThrow(/bad PASID/);
    iommuDomainFree(atPasid);
    iommuUnmap(rid, MOCK_APERTURE_START, MOCK_PAGE_SIZE);
    await release(rid, pd);
    await m.driverCore.deviceUnregister(pd);
  });

  it("translates a nested stage-1 through its nesting parent and invalidates it by cache ID", async () => {
    const m = await boot();
    const d = dev(m, "mock-dev0");
    const parent = (await iommuPagingDomainAllocFlags(d, IOMMU_HWPT_ALLOC.NEST_PARENT)) as MockPagingDomain;
    // The "guest" builds its stage-1 in IPA space: IPA 0x0100_0000.. is backed by PA 0x6500_0000..
    const IPA = MOCK_APERTURE_START;
    iommuMap(parent, IPA, 0x6500_0000, 64 * MOCK_PAGE_SIZE, RW);
    const ipaToPa = (ipa: number) => 0x6500_0000 + (ipa - IPA);
    const w64 = (ipa: number, lo: number, hi = 0) => {
      m.memory.write32(ipaToPa(ipa), lo >>> 0);
      m.memory.write32(ipaToPa(ipa) + 4, hi);
    };
    // Three 4 KiB stage-1 tables at IPA, IPA+4K, IPA+8K (V|T|R|W = 0xf); a leaf IOVA 0x4000_0800 -> IPA+0x10000.
    const iova = 0x4000_0800;
    const idx = (l: number) => Math.floor(iova / 2 ** (11 + 9 * l)) % 512;
    w64(IPA + idx(2) * 8, 0xf | (IPA + 0x1000));
    w64(IPA + 0x1000 + idx(1) * 8, 0xf | (IPA + 0x2000));
    w64(IPA + 0x2000 + idx(0) * 8, 0xd | (IPA + 0x10000)); // V|R|W
    const data = new Uint8Array(24);
    const v = new DataView(data.buffer);
    v.setUint32(0, 0x1234, true);
    v.setUint32(8, IPA, true);
    v.setUint32(16, 3, true);
    const ops = (mockIommuDriver.instanceFor(m, "mock0") as MockIommu).ops;
    const nested = (await ops.domainAllocNested!(d, parent, 0, {
      type: IOMMU_HWPT_DATA_SELFTEST,
      data,
    })) as MockNestedDomain;
    expect(nested).toBeInstanceOf(MockNestedDomain);
    expect([...nested.iotlb]).toEqual([0x1234, 0x1234, 0x1234, 0x1234]);
    await iommuDeviceClaimDmaOwner(d, "test");
    const g = groupOf(d);
    await iommuGroupReplaceDomain(g, nested);
    const ep = m.device("mock-dev0");
    ep.dmaWrite(iova + 8, bytes(16, 10));
    expect(m.memory.readBytes(ipaToPa(IPA + 0x10000) + 8, 16)).toEqual(bytes(16, 10));
    // Cache invalidation by ID from user entries; a bad ID stops the array with EINVAL.
    const entries = [new Uint8Array([0, 0, 0, 0, 2, 0, 0, 0]), new Uint8Array([0, 0, 0, 0, 9, 0, 0, 0])];
    const array = { type: 0xdeadbeef, entryLen: 8, entryNum: 2, entry: (i: number) => entries[i]! };
    await expect(nested.ops.cacheInvalidateUser!(nested, array)).rejects.toMatchObject({ code: "EINVAL" });
    expect(array.entryNum).toBe(1);
    expect([...nested.iotlb]).toEqual([0x1234, 0x1234, 0, 0x1234]);
    // The guest repoints its leaf; after the stage-1 invalidation the device sees the new page.
    w64(IPA + 0x2000 + idx(0) * 8, 0xd | (IPA + 0x11000));
    await nested.ops.cacheInvalidateUser!(nested, { ...array, entryNum: 1 });
    ep.dmaWrite(iova + 8, bytes(16, 11));
    expect(m.memory.readBytes(ipaToPa(IPA + 0x11000) + 8, 16)).toEqual(bytes(16, 11));
    await iommuDeviceReleaseDmaOwner(d);
    iommuDomainFree(nested);
    iommuUnmap(parent, IPA, 64 * MOCK_PAGE_SIZE);
    iommuDomainFree(parent);
  });
});
