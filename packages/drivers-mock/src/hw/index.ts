/**
 * The mock IOMMU hardware: its architecture (fields), IOTLB, walker and model, and the hardware kind that adds it
 * to a platform. Nothing here imports the driver or core's page-table engine.
 */
import type { HardwareKind, KernelModule } from "@iommu-sim/core";
import { MockIommuHw } from "./mock-iommu.js";

export * from "./decode.js";
export * from "./iotlb.js";
export * from "./mock-iommu.js";
export * from "./walk.js";

/**
 * The "mock" hardware kind: one {@link MockIommuHw} per IOMMU of kind "mock" in the platform description.
 * @linux drivers/iommu/iommufd/selftest.c mock_iommu_device (its registration, as a platform device type)
 */
export const mockHardwareKind: HardwareKind = {
  kind: "mock",
  factory: (ctx) => new MockIommuHw(ctx),
};

/**
 * A kernel module that only adds the mock hardware (no driver): for tests of the hardware model itself, and for
 * machines where another driver programs the mock hardware.
 * @linux none: the simulation's platform-device registration without a driver
 */
export const mockHardwareModule: KernelModule = {
  name: "mock-iommu-hw",
  hardware: [mockHardwareKind],
};
