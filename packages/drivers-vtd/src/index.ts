/** @iommu-sim/drivers-vtd — Intel VT-d hardware model and driver. */

import { createIntelIommuDriver } from "./driver/index.js";
import { vtdHardwareKind } from "./hw/index.js";

// Driver (src/driver): mirrors drivers/iommu/intel; reaches the hardware only through MMIO and memory.
export * from "./driver/index.js";
// Hardware model (src/hw): the hardware kind, a hardware-only module for tests, the model class, and the whole
// hardware architecture (register/structure fields) under one namespace so its names never clash with the driver's.
export * as vtdHw from "./hw/index.js";
export { VtdHw, vtdHardwareKind, vtdHardwareModule } from "./hw/index.js";

/** The VT-d driver module with the VT-d hardware model. @linux intel_iommu_init */
export const intelIommuDriver = createIntelIommuDriver({ hardware: [vtdHardwareKind] });
