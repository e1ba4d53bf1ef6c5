/**
 * AMD-Vi driver: the commands one `iommuUnmap` of a whole 1 GiB range (mapped in 4 KiB pages on a v1 domain) sends
 * through the command buffer, counted by the hardware model (target: O(1), at most 4: Linux's amd_iommu_iotlb_sync
 * sends one size-encoded INVALIDATE_IOMMU_PAGES per IOMMU however large the range, then COMPLETION_WAIT).
 *
 *   npx tsx --conditions=iommu-sim:source packages/drivers-amd/bench/driver.bench.ts
 */
import { fileURLToPath } from "node:url";
import { iommuMap, iommuUnmap } from "@iommu-sim/core";
import { benchPagingDomain, GIB_MAP_WORKLOAD } from "@iommu-sim/testkit/bench";
import { recordCount } from "../../core/bench/harness.js";
import { type AmdHw, amdIommuDriver } from "../src/index.js";

const { GiB, PAGE, PAGES, IOVA0, PA0, RW } = GIB_MAP_WORKLOAD;
const RESULTS = fileURLToPath(new URL("./results.json", import.meta.url));

const { m, domain } = await benchPagingDomain(amdIommuDriver, "amd-nic0");
const hw = m.dma.modelFor("amd0") as AmdHw;

for (let i = 0; i < PAGES; i++) iommuMap(domain, IOVA0 + i * PAGE, PA0 + i * PAGE, PAGE, RW);
const c0 = hw.stats.commands;
iommuUnmap(domain, IOVA0, GiB);
recordCount({
  name: "amd-driver/commands per 1GiB unmap",
  count: hw.stats.commands - c0,
  max: 4,
  unit: "commands",
  resultsFile: RESULTS,
});
