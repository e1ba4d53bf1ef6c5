/**
 * The SMMUv3 hardware model: its architecture (registers, structures), walker, caches and model, and the hardware
 * kind that adds it to a platform. Nothing here imports the driver or core's page-table engine.
 */
import type { HardwareKind, KernelModule } from "@iommu-sim/core";
import { Smmuv3Hw } from "./smmuv3.js";

export * from "./caches.js";
export * from "./decode.js";
export * from "./lpae-walk.js";
export * from "./options.js";
export * from "./registers.js";
export * from "./smmuv3.js";
export * from "./structures.js";

/**
 * The "smmuv3" hardware kind: one {@link Smmuv3Hw} per IOMMU of kind "smmuv3" in the platform description.
 * @linux the arm,smmu-v3 device (DT compatible "arm,smmu-v3" / IORT SMMUv3 node) the driver binds to
 */
export const smmuv3HardwareKind: HardwareKind = {
  kind: "smmuv3",
  factory: (ctx) => new Smmuv3Hw(ctx),
};

/**
 * A kernel module that only adds the SMMUv3 hardware (no driver): for tests of the hardware model itself.
 * @linux none: the simulation's platform-device registration without a driver
 */
export const smmuv3HardwareModule: KernelModule = {
  name: "arm-smmu-v3-hw",
  hardware: [smmuv3HardwareKind],
};
