/** @iommu-sim/drivers-amd — AMD-Vi hardware model and driver. */

// Hardware model (src/hw): the hardware kind, a hardware-only module for tests, the model class, and the whole
// hardware architecture (register/structure fields) under one namespace so its names never clash with the driver's.
export * as amdHw from "./hw/index.js";
export { AmdHw, amdHardwareKind, amdHardwareModule } from "./hw/index.js";
