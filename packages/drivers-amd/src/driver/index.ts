/**
 * The AMD IOMMU driver: `createAmdIommuDriver(options)` builds the driver module; the package index ships it with
 * the hardware model.
 * @linux drivers/iommu/amd/
 */
import { type DriverModule, defineIommuDriver, type HardwareKind, type IommuOps, type Machine } from "@iommu-sim/core";
import { AmdIommuDriver, type AmdIommuDriverOptions } from "./driver.js";
import { AmdIommu } from "./iommu.js";

export * from "./domain.js";
export * from "./driver.js";
export * from "./gcr3.js";
export * from "./io-pgtable-amd.js";
export * from "./iommu.js";
export * from "./iommufd.js";
export * from "./nested.js";
export * from "./regs.js";

/** What {@link createAmdIommuDriver} takes: driver options plus the hardware models to ship. */
export interface AmdIommuModuleOptions extends AmdIommuDriverOptions {
  /** Hardware kinds the module registers (the package index passes the AMD-Vi model). */
  hardware?: readonly HardwareKind[];
}

const drivers = new WeakMap<IommuOps, AmdIommuDriver>();

/**
 * The AMD driver state of `mod` on `machine`: its IOMMUs, domains and device data (undefined when not loaded).
 * @linux none: the file-scope state of amd/iommu.c, made reachable for tests
 */
export function amdIommuDriverState(mod: DriverModule, machine: Machine): AmdIommuDriver | undefined {
  const ops = mod.driverFor(machine)?.ops;
  return ops ? drivers.get(ops) : undefined;
}

/**
 * The AMD driver as a module for `createMachine`, binding every "amd" IOMMU of the platform (one IVHD each).
 * @linux amd_iommu_init (IOMMU_INIT_FINISH(amd_iommu_detect)) with amd_iommu_ops
 */
export function createAmdIommuDriver(opts: AmdIommuModuleOptions = {}): DriverModule {
  const { hardware, ...options } = opts;
  return defineIommuDriver({
    name: "amd-iommu",
    compatible: ["amd", "amd,iommu"],
    ...(hardware ? { hardware } : {}),
    createDriver: (ctx, core) => {
      const d = new AmdIommuDriver(ctx, core, options);
      drivers.set(d.ops, d);
      return {
        ops: d.ops,
        probe: (pdev) => d.unitProbe(pdev),
        remove: async (_pdev, iommu) => {
          if (iommu instanceof AmdIommu) await d.unitRemove(iommu);
        },
      };
    },
  });
}
