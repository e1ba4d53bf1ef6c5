/**
 * @iommu-sim/drivers-mock — the mock IOMMU: its spec (`spec/`), a hardware model (`hw/`) and its driver
 * (`driver/`). The smallest complete driver, and the template to copy for a new simulated IOMMU (see the README).
 * This file wires the two halves: the driver module ships the hardware kind it drives.
 */
import { type DriverModule, defineIommuDriver } from "@iommu-sim/core";
import { createMockDriver } from "./driver/driver.js";
import { mockHardwareKind } from "./hw/index.js";
import { mockPlatformRules } from "./platform-rules.js";

export * from "./driver/index.js";
export * from "./hw/index.js";
export * from "./platform-rules.js";
export * from "./spec/fields.js";

/**
 * The mock IOMMU driver, as a module to pass to `createMachine`. It ships the "mock" hardware model too.
 * @linux drivers/iommu/iommufd/selftest.c mock_ops (the mock IOMMU driver behind CONFIG_IOMMUFD_TEST)
 */
export const mockIommuDriver: DriverModule = defineIommuDriver({
  name: "mock-iommu",
  compatible: "mock",
  hardware: [mockHardwareKind],
  platformRules: [mockPlatformRules],
  createDriver: createMockDriver,
});
