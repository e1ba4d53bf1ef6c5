/** @iommu-sim/drivers-amd — AMD-Vi hardware model and driver. */

import { createAmdIommuDriver } from "./driver/index.js";
import { amdHardwareKind } from "./hw/index.js";

// Driver (src/driver): mirrors drivers/iommu/amd; reaches the hardware only through MMIO and memory.
export * from "./driver/index.js";
// Hardware model (src/hw): the hardware kind, a hardware-only module for tests, the model class, and the whole
// hardware architecture (register/structure fields) under one namespace so its names never clash with the driver's.
export * as amdHw from "./hw/index.js";
export { AmdHw, amdHardwareKind, amdHardwareModule } from "./hw/index.js";

/** The AMD IOMMU driver module with the AMD-Vi hardware model. @linux amd_iommu_init */
export const amdIommuDriver = createAmdIommuDriver({ hardware: [amdHardwareKind] });
