/**
 * @iommu-sim/drivers-mock — the mock IOMMU: a hardware model (`hw/`) and its driver (`driver/`). The smallest
 * complete driver, and the template to copy for a new simulated IOMMU (see the README).
 */
export * from "./driver/index.js";
export * from "./hw/index.js";
