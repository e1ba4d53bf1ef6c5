/**
 * The register window of an IOMMU unit's platform device: the resource named `mmio`, else its first resource.
 * @linux platform_get_resource(pdev, IORESOURCE_MEM, 0) in arm_smmu_device_probe; the DRHD / IVHD register base
 * alloc_iommu / init_iommu_one map
 */
import { kerr } from "../kernel/errno.js";
import type { Device, Resource } from "../platform/driver-core/device.js";

/**
 * The MMIO resource of an IOMMU unit's device. ENODEV when it has none.
 * @linux platform_get_resource(pdev, IORESOURCE_MEM, 0) (and the -ENODEV of its caller when missing)
 */
export function iommuMmioResource(pdev: Device): Resource {
  const mmio = pdev.resources.find((r) => r.name === "mmio") ?? pdev.resources[0];
  if (!mmio) throw kerr("ENODEV", `${pdev.name}: no MMIO resource`);
  return mmio;
}
