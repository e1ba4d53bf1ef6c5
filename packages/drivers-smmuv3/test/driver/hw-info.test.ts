/**
 * arm_smmu_hw_info and IOMMU_HW_INFO_FLAG_INPUT_TYPE: the requested type is honoured the way the mock's
 * mock_domain_hw_info honours it. DEFAULT and ARM_SMMUV3 answer `struct iommu_hw_info_arm_smmuv3`; any other type is
 * EOPNOTSUPP (Linux hands it to the implementation's hw_info, and the simulation has no implementation-specific
 * info such as TEGRA241_CMDQV).
 */
import { describe, expect, it } from "vitest";
import {
  armSmmuHwInfo,
  IOMMU_HW_INFO_ARM_SMMUV3_SIZE,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_DEFAULT,
} from "../../src/index.js";

const regs = { idr: Uint32Array.from([0x10, 0x11, 0x12, 0x13, 0x14, 0x15]), iidr: 0x43b, aidr: 0x2 };

describe("arm_smmu_hw_info", () => {
  it("answers DEFAULT and ARM_SMMUV3 with the SMMUv3 info, EOPNOTSUPP for any other requested type", () => {
    for (const type of [IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_ARM_SMMUV3]) {
      const info = armSmmuHwInfo(regs, type);
      expect(info.type).toBe(IOMMU_HW_INFO_TYPE_ARM_SMMUV3);
      expect(info.data.length).toBe(IOMMU_HW_INFO_ARM_SMMUV3_SIZE);
      const v = new DataView(info.data.buffer);
      expect([0, 1, 2, 3, 4, 5].map((i) => v.getUint32(8 + 4 * i, true))).toEqual([...regs.idr]);
      expect([v.getUint32(32, true), v.getUint32(36, true)]).toEqual([regs.iidr, regs.aidr]);
    }
    // IOMMU_HW_INFO_TYPE_INTEL_VTD (1), IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV (3), the selftest's type.
    for (const type of [1, 3, 0xfeedbeef]) {
      expect(() => armSmmuHwInfo(regs, type)).toThrow(expect.objectContaining({ code: "EOPNOTSUPP" }));
    }
  });
});
