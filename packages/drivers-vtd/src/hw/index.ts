/**
 * The VT-d hardware model: its architecture (registers, structures), walks, caches and the unit model, and the
 * hardware kind that adds it to a platform. Nothing here imports the driver or core's page-table engine.
 */
import type { HardwareKind, KernelModule } from "@iommu-sim/core";
import { VtdHw } from "./vtd.js";

export * from "./caches.js";
export * from "./decode.js";
export * from "./options.js";
export * from "./registers.js";
export * from "./structures.js";
export * from "./vtd.js";
export * from "./walk.js";

/**
 * The "vtd" hardware kind: one {@link VtdHw} per IOMMU of kind "vtd" in the platform description.
 * @linux a DRHD unit of the ACPI DMAR table
 */
export const vtdHardwareKind: HardwareKind = {
  kind: "vtd",
  factory: (ctx) => new VtdHw(ctx),
};

/**
 * A kernel module that only adds the VT-d hardware (no driver): for tests of the hardware model itself.
 * @linux none: the simulation's platform-device registration without a driver
 */
export const vtdHardwareModule: KernelModule = {
  name: "intel-iommu-hw",
  hardware: [vtdHardwareKind],
};
