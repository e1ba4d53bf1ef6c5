/**
 * The mock IOMMU driver module: registers the "mock" hardware kind and binds every mock IOMMU of the platform.
 */
import { type DriverModule, defineIommuDriver } from "@iommu-sim/core";
import { mockHardwareKind } from "../hw/index.js";
import { createMockDriver } from "./driver.js";

export * from "./consts.js";
export * from "./domains.js";
export {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  MOCK_SITES,
  MockDriverState,
} from "./driver.js";
export * from "./events.js";
export * from "./mock-iommu.js";
export * from "./viommu.js";

/**
 * The mock IOMMU driver, as a module to pass to `createMachine`. It ships the "mock" hardware model too.
 * @linux drivers/iommu/iommufd/selftest.c mock_ops (the mock IOMMU driver behind CONFIG_IOMMUFD_TEST)
 */
export const mockIommuDriver: DriverModule = defineIommuDriver({
  name: "mock-iommu",
  compatible: "mock",
  hardware: [mockHardwareKind],
  createDriver: createMockDriver,
});
