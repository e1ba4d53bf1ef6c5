/** @iommu-sim/drivers-vtd — Intel VT-d hardware model and driver. */

// Hardware model (src/hw): the hardware kind, a hardware-only module for tests, the model class, and the whole
// hardware architecture (register/structure fields) under one namespace so its names never clash with the driver's.
export * as vtdHw from "./hw/index.js";
export { VtdHw, vtdHardwareKind, vtdHardwareModule } from "./hw/index.js";
