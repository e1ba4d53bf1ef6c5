/**
 * The SMMUv3 driver: `createArmSmmuV3Driver(options)` builds the driver module; the package index ships it with
 * the hardware model.
 * @linux drivers/iommu/arm/arm-smmu-v3/
 */
import { type DriverModule, defineIommuDriver, type HardwareKind, type IommuPlatformRules } from "@iommu-sim/core";
import { createArmSmmuDriver } from "./driver.js";
import type { ArmSmmuV3Options } from "./smmu.js";

export * from "./domain.js";
export * from "./driver.js";
export * from "./entry-writer.js";
export * from "./io-pgtable-arm.js";
export * from "./iommufd.js";
export * from "./master.js";
export * from "./queue.js";
export * from "./regs.js";
export * from "./smmu.js";
export * from "./ste.js";
export * from "./viommu.js";

/** What {@link createArmSmmuV3Driver} takes: driver options plus the hardware models to ship. */
export interface ArmSmmuV3ModuleOptions extends ArmSmmuV3Options {
  /** Hardware kinds the module registers (the package index passes the SMMUv3 model). */
  hardware?: readonly HardwareKind[];
  /** What the driver requires of the SMMUv3s of a platform (the package index passes `smmuv3PlatformRules()`). */
  platformRules?: readonly IommuPlatformRules[];
}

/**
 * The SMMUv3 driver as a module for `createMachine`, binding every "smmuv3" IOMMU of the platform.
 * @linux module_platform_driver(arm_smmu_driver) with arm_smmu_ops
 */
export function createArmSmmuV3Driver(opts: ArmSmmuV3ModuleOptions = {}): DriverModule {
  const { hardware, platformRules, ...options } = opts;
  return defineIommuDriver({
    name: "arm-smmu-v3",
    compatible: ["smmuv3", "arm,smmu-v3"],
    ...(hardware ? { hardware } : {}),
    ...(platformRules ? { platformRules } : {}),
    createDriver: (ctx, core) => createArmSmmuDriver(ctx, core, options),
  });
}
