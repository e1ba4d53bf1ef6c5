/**
 * AMD-Vi driver: the commands one `iommuUnmap` of a whole 1 GiB range (mapped in 4 KiB pages on a v1 domain) sends
 * through the command buffer, counted by the hardware model (target: O(1), at most 4: Linux's amd_iommu_iotlb_sync
 * sends one size-encoded INVALIDATE_IOMMU_PAGES per IOMMU however large the range, then COMPLETION_WAIT).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-amd/bench/driver.bench.ts
 */
import { fileURLToPath } from "node:url";
import {
  createMachine,
  defaultPlatform,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAttachDevice,
  iommuDeviceClaimDmaOwner,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
} from "@iommu-sim/core";
import { recordCount } from "../../core/bench/harness.js";
import { type AmdHw, amdIommuDriver } from "../src/index.js";

const GiB = 2 ** 30;
const PAGE = 4096;
const IOVA0 = 4 * GiB;
const PA0 = GiB;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));

const m = await createMachine({ platform: defaultPlatform(), modules: [amdIommuDriver], seed: 1 });
await m.boot();
const dev = m.driverCore.deviceFor("amd-nic0")!;
await iommuDeviceClaimDmaOwner(dev, "bench");
const domain = await iommuPagingDomainAllocFlags(dev, 0);
await iommuAttachDevice(domain, dev);
const hw = m.dma.modelFor("amd0") as AmdHw;

for (let i = 0; i < GiB / PAGE; i++) iommuMap(domain, IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, IOMMU_READ | IOMMU_WRITE);
const c0 = hw.stats.commands;
iommuUnmap(domain, IOVA0, GiB);
recordCount({
  name: "amd-driver/commands per 1GiB unmap",
  count: hw.stats.commands - c0,
  max: 4,
  unit: "commands",
  resultsFile: RESULTS,
});
