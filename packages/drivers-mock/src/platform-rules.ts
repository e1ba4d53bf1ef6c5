/**
 * What the mock driver requires of the platform description of a mock IOMMU (checked when a platform is parsed,
 * so `iommu-sim validate` refuses what the probe would): one-cell `iommus` specifiers and StreamIDs inside the
 * device table the driver allocates (2^MOCK_DT_LOG2 entries).
 */
import type { IommuPlatformRules } from "@iommu-sim/core";
import { MOCK_DT_LOG2 } from "./driver/consts.js";

/**
 * The platform rules of the mock driver.
 * @linux none: the mock's of_xlate takes one cell; its probe refuses IDs beyond the device table (ERANGE) or
 * already used (EEXIST)
 */
export const mockPlatformRules: IommuPlatformRules = {
  kind: "mock",
  iommuCells: 1,
  streamIdBits: () => MOCK_DT_LOG2,
};
