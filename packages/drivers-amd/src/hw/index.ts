/**
 * The AMD-Vi hardware model: its architecture (registers, structures), walks, caches and the unit model, and the
 * hardware kind that adds it to a platform. Nothing here imports the driver or core's page-table engine.
 */
import type { HardwareKind, KernelModule } from "@iommu-sim/core";
import { AmdHw } from "./amd.js";

export * from "./amd.js";
export * from "./caches.js";
export * from "./decode.js";
export * from "./options.js";
export * from "./registers.js";
export * from "./structures.js";
export * from "./walk.js";

/**
 * The "amd" hardware kind: one {@link AmdHw} per IOMMU of kind "amd" in the platform description.
 * @linux an IVHD block of the ACPI IVRS table
 */
export const amdHardwareKind: HardwareKind = {
  kind: "amd",
  factory: (ctx) => new AmdHw(ctx),
};

/**
 * A kernel module that only adds the AMD-Vi hardware (no driver): for tests of the hardware model itself.
 * @linux none: the simulation's platform-device registration without a driver
 */
export const amdHardwareModule: KernelModule = {
  name: "amd-iommu-hw",
  hardware: [amdHardwareKind],
};
