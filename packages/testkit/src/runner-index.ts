/**
 * `@iommu-sim/testkit/runner`: the programmatic runner, the targets and the checks, without the vitest API (for
 * the CLI and other programs that do not run under vitest).
 */
export * from "./checks/index.js";
export * from "./errors.js";
export * from "./iommufd-helpers.js";
export * from "./mutants.js";
export * from "./rig.js";
export * from "./run-check.js";
export * from "./runner.js";
export * from "./scaffold.js";
export * from "./target.js";
export * from "./targets/amd.js";
export * from "./targets/mock.js";
export * from "./targets/smmuv3.js";
export * from "./targets/vtd.js";
