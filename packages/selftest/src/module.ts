/**
 * The selftest kernel module: CONFIG_IOMMUFD_TEST as a module loaded after the mock driver and iommufd. It adds the
 * SELFTEST object type and the IOMMU_TEST_CMD ioctl to iommufd's tables through DI and creates its per-machine state.
 * @linux CONFIG_IOMMUFD_TEST (iommufd_test_init / iommufd_test_exit of drivers/iommu/iommufd/selftest.c)
 */
import type { KernelModule } from "@iommu-sim/core";
import { createSelftestState, registerSelftestTables } from "./selftest.js";

/**
 * The module to pass to `createMachine` after `mockIommuDriver` and `iommufdModule`.
 * @linux CONFIG_IOMMUFD_TEST
 */
export const iommufdSelftestModule: KernelModule = {
  name: "iommufd-selftest",
  register(container) {
    registerSelftestTables(container);
  },
  async init({ machine, owner }) {
    createSelftestState(machine, owner);
  },
};
