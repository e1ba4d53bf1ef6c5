/**
 * The Intel VT-d driver: `createIntelIommuDriver(options)` builds the driver module; the package index ships it
 * with the hardware model.
 * @linux drivers/iommu/intel/
 */
import { type DriverModule, defineIommuDriver, type HardwareKind, type IommuOps, type Machine } from "@iommu-sim/core";
import { IntelIommuDriver, type IntelIommuDriverOptions } from "./driver.js";
import { IntelIommu } from "./iommu.js";

export * from "./cache.js";
export * from "./context.js";
export * from "./domain.js";
export * from "./driver.js";
export * from "./iommu.js";
export * from "./iommufd.js";
export * from "./pasid.js";
export * from "./pgtable.js";
export * from "./qi-batch.js";
export * from "./regs.js";

/** What {@link createIntelIommuDriver} takes: driver options plus the hardware models to ship. @linux the intel_iommu= command-line options modelled */
export interface IntelIommuModuleOptions extends IntelIommuDriverOptions {
  /** Hardware kinds the module registers (the package index passes the VT-d model). */
  hardware?: readonly HardwareKind[];
}

/** The driver state behind each machine's ops (for tests and tools, instead of casts into private state). */
const drivers = new WeakMap<IommuOps, IntelIommuDriver>();

/**
 * The VT-d driver state of `mod` on `machine`: its units, domains and device infos (undefined when not loaded).
 * @linux none: the file-scope state of intel/iommu.c, made reachable for tests
 */
export function intelIommuDriverState(mod: DriverModule, machine: Machine): IntelIommuDriver | undefined {
  const ops = mod.driverFor(machine)?.ops;
  return ops ? drivers.get(ops) : undefined;
}

/**
 * The VT-d driver as a module for `createMachine`, binding every "vtd" IOMMU of the platform (one DRHD unit each).
 * @linux intel_iommu_init (IOMMU_INIT_POST(detect_intel_iommu)) with intel_iommu_ops
 */
export function createIntelIommuDriver(opts: IntelIommuModuleOptions = {}): DriverModule {
  const { hardware, ...options } = opts;
  return defineIommuDriver({
    name: "intel-iommu",
    compatible: ["vtd", "intel,vtd"],
    ...(hardware ? { hardware } : {}),
    createDriver: (ctx, core) => {
      const d = new IntelIommuDriver(ctx, core, options);
      drivers.set(d.ops, d);
      return {
        ops: d.ops,
        probe: (pdev) => d.unitProbe(pdev),
        remove: async (_pdev, iommu) => {
          if (iommu instanceof IntelIommu) await d.unitRemove(iommu);
        },
      };
    },
  });
}
