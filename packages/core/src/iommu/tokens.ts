/**
 * DI tokens of the iommu core's per-machine services.
 */
import { createToken } from "../machine/di.js";
import type { IommuCore } from "./iommu-core.js";

/**
 * Tokens of the iommu core in a machine's container. `core` is registered by {@link getIommuCore} the first time it
 * is asked for, so a machine without IOMMU drivers never builds one.
 * @linux the file-scope state of drivers/iommu/iommu.c (iommu_device_list, iommu_probe_device_lock, ...)
 */
export const IommuTokens = {
  core: createToken<IommuCore>("iommu-core"),
} as const;
