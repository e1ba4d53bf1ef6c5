/**
 * What the SMMUv3 driver requires of the platform description of an SMMUv3 (checked when a platform is parsed, so
 * `iommu-sim validate` refuses what the probe would): one-cell `iommus` specifiers, StreamIDs inside the stream
 * table the driver builds for the SIDSIZE the model reports, and a linear stream table small enough to allocate.
 * Joins the model's option defaults (hw) with the driver's stream-table geometry, as the package index does.
 */
import { type IommuDesc, type IommuPlatformRules, MAX_PAGE_ORDER, PAGE_SHIFT } from "@iommu-sim/core";
import { STRTAB } from "./driver/regs.js";
import type { ArmSmmuV3Options } from "./driver/smmu.js";
import { resolveSmmuv3Options } from "./hw/options.js";

/** The largest linear stream table the driver allocates in one piece: 2^MAX_PAGE_ORDER pages of 64-byte STEs. */
const MAX_LINEAR_SID_BITS = MAX_PAGE_ORDER + PAGE_SHIFT - Math.log2(STRTAB.STE_BYTES);
/** The StreamID bits a 2-level stream table covers at most: a 2^L1_SZ_SHIFT-byte L1 of 8-byte descriptors. */
const MAX_2LVL_SID_BITS = STRTAB.L1_SZ_SHIFT - Math.log2(STRTAB.L1_DESC_BYTES) + STRTAB.SPLIT;

function geometry(io: IommuDesc, driver: ArmSmmuV3Options): { sidBits: number; linear: boolean } {
  const hw = resolveSmmuv3Options(io.options);
  // arm_smmu_device_hw_probe: no 2-level support, or too few SID bits to split, means a linear table.
  const linear = !hw.twoLevelStreamTable || hw.sidBits <= STRTAB.SPLIT || driver.strtab === "linear";
  return { sidBits: hw.sidBits, linear };
}

/**
 * The platform rules of the SMMUv3 driver built with `driver` options.
 * @linux arm_smmu_of_xlate (#iommu-cells = 1), arm_smmu_sid_in_range, arm_smmu_init_strtab_2lvl (the L1 cap),
 * arm_smmu_init_strtab_linear
 */
export function smmuv3PlatformRules(driver: ArmSmmuV3Options = {}): IommuPlatformRules {
  return {
    kind: "smmuv3",
    iommuCells: 1,
    streamIdBits(io) {
      const g = geometry(io, driver);
      return g.linear ? g.sidBits : Math.min(g.sidBits, MAX_2LVL_SID_BITS);
    },
    check(io) {
      const g = geometry(io, driver);
      if (!g.linear || g.sidBits <= MAX_LINEAR_SID_BITS) return [];
      return [
        {
          path: ["options", "sidBits"],
          message: `a linear stream table of 2^${g.sidBits} STEs exceeds the largest allocation (4 MiB): expected sidBits <= ${MAX_LINEAR_SID_BITS} without twoLevelStreamTable`,
          value: g.sidBits,
        },
      ];
    },
  };
}
