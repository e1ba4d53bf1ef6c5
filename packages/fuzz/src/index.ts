/**
 * @iommu-sim/fuzz — a syzkaller-style fuzzer of the simulated uAPI: seeded, replayable call programs over every
 * iommufd ioctl, IOMMU_TEST_CMD op, VFIO cdev and type1-compat ioctl and the file calls, with real-ID-aware
 * arguments, fail-nth, per-call checks, shrinking to vitest reproducers, and a multi-process load case.
 */
export * from "./allowlist.js";
export * from "./campaign.js";
export * from "./cli.js";
export * from "./executor.js";
export * from "./generator.js";
export * from "./load.js";
export * from "./machine.js";
export * from "./program.js";
export * from "./reproducer.js";
export * from "./rng.js";
export * from "./seeds.js";
export * from "./shrink.js";
export * from "./spec.js";
