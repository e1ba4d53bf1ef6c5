/**
 * @iommu-sim/selftest — CONFIG_IOMMUFD_TEST: the IOMMU_TEST_CMD ioctl and the SELFTEST object registered into
 * iommufd through DI (`iommufdSelftestModule`), the selftest uAPI, and the user-space helpers of the kernel's
 * tools/testing/selftests/iommu/iommufd_utils.h.
 */
export * from "./api.js";
export * from "./module.js";
export * from "./selftest.js";
export * from "./uapi.js";
