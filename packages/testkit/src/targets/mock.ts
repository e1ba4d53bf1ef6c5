/**
 * The conformance target of the mock IOMMU (drivers-mock): what it claims and how its devices page-request.
 */
import { IOMMU_HWPT_ALLOC, type IommuGroup, iommuDomainAllocNested } from "@iommu-sim/core";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_EVENT_SELFTEST_SIZE,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_PAGE_SIZE,
  type MockIommu,
  MockNestedDomain,
  mockIommuDriver,
  mockViommuReportVevent,
} from "@iommu-sim/drivers-mock";
import type { ConformanceTarget } from "../target.js";

/** Little-endian 32-bit words as bytes. */
function u32s(...w: number[]): Uint8Array {
  const b = new Uint8Array(4 * w.length);
  const dv = new DataView(b.buffer);
  w.forEach((x, i) => {
    dv.setUint32(4 * i, x >>> 0, true);
  });
  return b;
}

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
        // struct iommu_viommu_invalidate_selftest { flags; vdev_id; cache_id }: cache_id beyond the max is EINVAL.
        invalidate: {
          dataType: IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
          entryLen: 12,
          entry: (virtId) => u32s(0, virtId, 0),
          bad: (virtId) => u32s(0, virtId, MOCK_DEV_CACHE_ID_MAX + 1),
          badCode: "EINVAL",
        },
        // What IOMMU_TEST_OP_TRIGGER_VEVENT does: the driver reports for the vDEVICE of the attached nested domain.
        vevent: {
          type: IOMMU_VEVENTQ_TYPE_SELFTEST,
          payloadLen: IOMMU_VIOMMU_EVENT_SELFTEST_SIZE,
          trigger: async (_m, dev) => {
            const domain = (dev.iommuGroup as IommuGroup | undefined)?.domain;
            const viommu = domain instanceof MockNestedDomain ? domain.viommu : undefined;
            if (!viommu) throw new Error(`${dev.name} is not attached to a nested domain of a vIOMMU`);
            await mockViommuReportVevent(viommu, viommu.getVdevId(dev));
          },
          virtId: (p) => new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(0, true),
        },
      },
      reportsFaults: true,
      dirty: true,
      cachesTranslations: true,
      iommufd: true,
    },
  };
}
