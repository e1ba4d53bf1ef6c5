/** Every conformance check, in report order. */
import { concurrencyChecks } from "./concurrency.js";
import { domainChecks } from "./domains.js";
import { faultChecks } from "./faults.js";
import { staleCacheCheck } from "./invalidation.js";
import { iommufdChecks } from "./iommufd.js";
import { isolationCheck } from "./isolation.js";
import { mappingChecks, strictCheck } from "./mapping.js";
import { probeChecks } from "./probe.js";
import type { ConformanceCheck } from "./types.js";

export type { CheckContext, ConformanceCheck } from "./types.js";

/**
 * The checks for `target` (the mapping checks depend on its claimed page sizes), applicable or not.
 * @linux the kselftest/KUnit suites of drivers/iommu, as one list
 */
export function conformanceChecks(target?: Parameters<typeof mappingChecks>[0]): ConformanceCheck[] {
  return [
    ...probeChecks,
    ...domainChecks,
    ...mappingChecks(target),
    strictCheck,
    staleCacheCheck,
    ...faultChecks,
    ...iommufdChecks,
    ...concurrencyChecks,
    isolationCheck,
  ];
}
