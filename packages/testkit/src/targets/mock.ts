/**
 * The conformance target of the mock IOMMU (drivers-mock): what it claims and how its devices page-request.
 */
import { IOMMU_HWPT_ALLOC, iommuDomainAllocNested } from "@iommu-sim/core";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_PAGE_SIZE,
  type MockIommu,
  mockIommuDriver,
} from "@iommu-sim/drivers-mock";
import type { ConformanceTarget } from "../target.js";

/** The mock's PASID-capable device the target adds after boot. */
export const MOCK_PASID_DEVICE = "mock-pasid0";

/**
 * The mock driver as a conformance target: mock0 with mock-dev0/mock-dev1, a PASID device added at boot.
 * @linux drivers/iommu/iommufd/selftest.c's mock driver, as the suite sees it
 */
export function mockTarget(): ConformanceTarget {
  return {
    name: "mock",
    driver: mockIommuDriver,
    iommu: "mock0",
    devices: { primary: "mock-dev0", secondary: "mock-dev1" },
    spareIds: [40, 41],
    async setup(m) {
      const iommu = m.driverCore.deviceFor("mock0")!;
      await m.driverCore.deviceRegister({
        name: MOCK_PASID_DEVICE,
        bus: m.driverCore.busFor("platform")!,
        iommus: [{ fwnode: iommu.fwnode!, args: [30] }],
        platformData: { "mock-dev-flags": MOCK_FLAGS_DEVICE_PASID, "pasid-num-bits": 20 },
      });
    },
    settle: (m) => (mockIommuDriver.instanceFor(m, "mock0") as MockIommu).drainFaultQueue(),
    mutants: ["mock:skip-invalidation", "mock:leaked-device-ref", "mock:wrong-permission", "mock:half-written-entry"],
    caps: {
      pageSizes: [MOCK_PAGE_SIZE, MOCK_HUGE_PAGE_SIZE],
      iova: { base: MOCK_APERTURE_START, size: MOCK_APERTURE_LAST + 1 - MOCK_APERTURE_START },
      identity: true,
      blocked: true,
      pasid: { device: MOCK_PASID_DEVICE, pasids: [1000, 1001] },
      nested: {
        parentFlags: IOMMU_HWPT_ALLOC.NEST_PARENT,
        alloc: (_m, dev, parent) =>
          iommuDomainAllocNested(dev, parent, 0, { type: IOMMU_HWPT_DATA_SELFTEST, data: new Uint8Array(4) }),
      },
      // Page requests go through mock-dev0's endpoint (the model's acceptPageRequest).
      iopf: { device: "mock-dev0" },
      viommu: {
        type: IOMMU_VIOMMU_TYPE_SELFTEST,
        nestedData: () => ({ type: IOMMU_HWPT_DATA_SELFTEST, data: new Uint8Array(4) }),
      },
      reportsFaults: true,
      dirty: true,
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
