import type { KernelModule } from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import { armSmmuV3Driver } from "@iommu-sim/drivers-smmuv3";
import { intelIommuDriver } from "@iommu-sim/drivers-vtd";

/** The IOMMU driver modules the CLI loads, by the platform kind they drive. */
export const DRIVERS: readonly { kind: string; module: KernelModule }[] = [
  { kind: "mock", module: mockIommuDriver },
  { kind: "smmuv3", module: armSmmuV3Driver },
  { kind: "vtd", module: intelIommuDriver },
];

/** The driver modules to load: every known driver, or none with `--no-drivers`. */
export function driverModules(noDrivers: boolean): KernelModule[] {
  return noDrivers ? [] : DRIVERS.map((d) => d.module);
}
