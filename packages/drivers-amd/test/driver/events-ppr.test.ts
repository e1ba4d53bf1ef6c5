/**
 * The driver's event-log and PPR-log handling, and the identity and blocked domains: a DMA fault is read from the
 * event log and printed as Linux prints it; a page request goes to core's IOPF and, with no fault handler
 * attached, is answered INVALID with COMPLETE_PPR_REQUEST; identity passes DMA through, blocked stops it.
 */
import {
  DmaFault,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
} from "@iommu-sim/core";
import { afterEach, expect, it } from "vitest";
import { boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

it("a DMA fault is read from the event log, zeroed, and printed", async () => {
  const b = await boot();
  expect(() => b.m.device("amd-nic0").dmaRead(0x7777_0000, 4)).toThrow(DmaFault);
  expect(b.iommu.events).toEqual([expect.objectContaining({ type: 2, devid: 0x0008, address: 0x7777_0000 })]);
  expect(b.m.memory.read32(b.iommu.evtBufPa + 4)).toBe(0); // consumed entries are zeroed
  expect(
    b.m.diag.kernelLog.some((l) => /Event logged \[IO_PAGE_FAULT device=00:01\.0 .*address=0x77770000/.test(l.message)),
  ).toBe(true);
});

it("a page request without a fault handler is answered INVALID through COMPLETE_PPR_REQUEST", async () => {
  // A v2 default domain can carry PASIDs, so amd-gpu0 (PRI, ATS) joins the IOPF queue and its DTE enables PPR.
  const b = await boot({}, { pgtable: "v2" });
  expect((b.iommu.readDte(0x0100)[1]! >>> 20) & 1).toBe(1);
  b.hw.pageRequest(0x0100, 3, 0x1234_5000, 1, 0x2a);
  await b.iommu.drainPpr();
  expect(b.iommu.pprs).toEqual([expect.objectContaining({ devid: 0x0100, pasid: 3, tag: 0x2a, address: 0x1234_5000 })]);
  expect(b.hw.pprResponses).toEqual([{ devid: 0x0100, pasid: 3, tag: 0x2a, status: 1, auto: false }]);
});

it("identity passes DMA through; blocked faults", async () => {
  const b = await boot();
  const dev = b.m.driverCore.deviceFor("amd-nic0")!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  b.m.memory.write32(0x9000, 0x5a);
  // While owned and unattached: the blocked domain.
  expect(() => b.m.device("amd-nic0").dmaRead(0x9000, 1)).toThrow(DmaFault);
  expect(b.iommu.readDte(0x0008)[0]! & 3).toBe(1); // V only
  await iommuAttachDevice(b.drv.identity, dev);
  expect(b.m.device("amd-nic0").dmaRead(0x9000, 1)).toEqual(new Uint8Array([0x5a]));
  expect((b.iommu.readDte(0x0008)[0]! >>> 9) & 7).toBe(0); // Mode 0
  await iommuDetachDevice(b.drv.identity, dev);
  await iommuDeviceReleaseDmaOwner(dev);
});
