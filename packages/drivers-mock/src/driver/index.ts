/** The mock IOMMU driver: ops, domains, instances, vIOMMU. It reaches the hardware only through MMIO and memory. */
export * from "./consts.js";
export * from "./domains.js";
export {
  createMockDriver,
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  MOCK_SITES,
  MockDriverState,
} from "./driver.js";
export * from "./events.js";
export * from "./mock-iommu.js";
export * from "./viommu.js";
