/**
 * @iommu-sim/testkit — one conformance suite run against any simulated IOMMU driver: declare a
 * {@link ConformanceTarget} (platform, driver module, claimed capabilities) and call `defineConformanceSuite` in a
 * vitest file, or `runConformance` from a program. Also the helpers a driver or VMM test needs.
 */
export * from "./checks/index.js";
export { pageTableOf } from "./checks/invalidation.js";
export { openVmmSession, type VmmSession } from "./checks/iommufd.js";
export { addDeviceBehind } from "./checks/probe.js";
export * from "./errors.js";
export * from "./fixture.js";
export * from "./iommufd-helpers.js";
export * from "./mutants.js";
export * from "./rig.js";
export * from "./run-check.js";
export * from "./runner.js";
export * from "./scaffold.js";
export * from "./suite.js";
export * from "./target.js";
export * from "./targets/amd.js";
export * from "./targets/mock.js";
export * from "./targets/smmuv3.js";
export * from "./targets/vtd.js";
