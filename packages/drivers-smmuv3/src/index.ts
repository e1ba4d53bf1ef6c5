/** @iommu-sim/drivers-smmuv3 — ARM SMMUv3 hardware model and driver. */

import { createArmSmmuV3Driver } from "./driver/index.js";
import { smmuv3HardwareKind } from "./hw/index.js";
import { smmuv3PlatformRules } from "./platform-rules.js";

// Driver (src/driver): mirrors drivers/iommu/arm/arm-smmu-v3; reaches the hardware only through MMIO and memory.
export * from "./driver/index.js";
// Hardware model (src/hw): the hardware kind, a hardware-only module for tests, the model class, and the whole
// hardware architecture (register/structure fields) under one namespace so its names never clash with the driver's.
export * as smmuv3Hw from "./hw/index.js";
export { SMMU_ABORT, Smmuv3Hw, smmuv3HardwareKind, smmuv3HardwareModule } from "./hw/index.js";
export { smmuv3PlatformRules } from "./platform-rules.js";

/** The SMMUv3 driver module with the SMMUv3 hardware model. @linux module_platform_driver(arm_smmu_driver) */
export const armSmmuV3Driver = createArmSmmuV3Driver({
  hardware: [smmuv3HardwareKind],
  platformRules: [smmuv3PlatformRules()],
});
