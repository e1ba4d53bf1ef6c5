/**
 * IOMMU drivers as loadable modules: a driver package exports one `DriverModule`; loading it into a machine builds
 * the driver's ops for that machine and registers a platform driver that binds to the IOMMU platform devices of
 * its kind, whose probe registers an IOMMU instance.
 */
import type { DependencyContainer } from "tsyringe";
import { kerr } from "../kernel/errno.js";
import type { Module } from "../kernel/module.js";
import type { HardwareKind, KernelModule, ModuleContext } from "../machine/kernel-module.js";
import type { Machine } from "../machine/machine.js";
import type { IommuPlatformRules } from "../platform/description.js";
import type { Device } from "../platform/driver-core/device.js";
import type { DeviceDriver } from "../platform/driver-core/driver.js";
import { getIommuCore, type IommuCore } from "./iommu-core.js";
import { type IommuDevice, iommuDeviceUnregister } from "./iommu-device.js";
import type { IommuOps } from "./types.js";

/**
 * One machine's instance of an IOMMU driver, built by {@link IommuDriverSpec.createDriver} when the module loads.
 * @linux the driver's static iommu_ops + its struct platform_driver
 */
export interface IommuDriver {
  /** The driver's ops on this machine; `owner` must be the module's `ctx.owner`. @linux struct iommu_ops */
  readonly ops: IommuOps;
  /**
   * Probe one IOMMU platform device: map its registers, build and initialise the instance, and register it with
   * `iommuDeviceRegister(core, iommu, ops, pdev)` (or without `pdev` for drivers that find their instance per
   * device, like the x86 ones); resolve to the registered instance. Throwing fails the bind (EPROBE_DEFER defers it).
   * @linux platform_driver.probe (arm_smmu_device_probe, ...)
   */
  probe(pdev: Device): Promise<IommuDevice>;
  /**
   * Undo `probe`: `iommuDeviceUnregister` (which releases the instance's devices first), then free the instance.
   * @linux platform_driver.remove
   */
  remove(pdev: Device, iommu: IommuDevice): Promise<void>;
}

/** What {@link defineIommuDriver} takes. */
export interface IommuDriverSpec {
  /** Module name (and platform driver name). @linux KBUILD_MODNAME */
  readonly name: string;
  /** Platform kinds (DT compatible strings) the driver binds to. @linux of_match_table */
  readonly compatible: string | readonly string[];
  /** Hardware models the package ships. */
  readonly hardware?: readonly HardwareKind[];
  /** What the driver requires of the IOMMUs it drives (StreamID range, #iommu-cells), checked at parse time. */
  readonly platformRules?: readonly IommuPlatformRules[];
  /** DI registrations made when a machine is built (e.g. iommufd selftest ioctls). */
  register?(container: DependencyContainer): void;
  /** Build the driver for one machine; called at module init. `ctx.owner` is the owner to put in `ops.owner`. */
  createDriver(ctx: ModuleContext, core: IommuCore): IommuDriver;
}

/**
 * An IOMMU driver as a kernel module: its init builds the driver for the machine and registers a platform driver
 * for its `compatible` kinds (binding every such IOMMU present); its exit unregisters it (unbinding them).
 * @linux module_platform_driver(...) of an IOMMU driver, with its iommu_ops
 */
export interface DriverModule extends KernelModule {
  readonly compatible: readonly string[];
  readonly createDriver: IommuDriverSpec["createDriver"];
  /** The driver built for `machine`, while the module is loaded there. */
  driverFor(machine: Machine): IommuDriver | undefined;
  /** The instance the driver registered for the IOMMU platform device named `name` on `machine`. */
  instanceFor(machine: Machine, name: string): IommuDevice | undefined;
}

interface Loaded {
  driver: IommuDriver;
  platformDriver: DeviceDriver;
  instances: Map<Device, IommuDevice>;
}

/**
 * Define an IOMMU driver module. The returned value holds no machine state (it may be loaded into many machines);
 * each machine gets its own driver, ops and instances, keyed by the module's per-machine owner.
 * @linux module_platform_driver + IOMMU_OF_DECLARE-style binding
 */
export function defineIommuDriver(spec: IommuDriverSpec): DriverModule {
  const compatible = typeof spec.compatible === "string" ? [spec.compatible] : [...spec.compatible];
  const loaded = new WeakMap<Module, Loaded>();
  const ownerOf = (machine: Machine) => machine.moduleOwner(spec.name);

  const mod: DriverModule = {
    name: spec.name,
    compatible,
    createDriver: spec.createDriver,
    ...(spec.hardware ? { hardware: spec.hardware } : {}),
    ...(spec.platformRules ? { platformRules: spec.platformRules } : {}),
    ...(spec.register ? { register: (c: DependencyContainer) => spec.register!(c) } : {}),

    async init(ctx: ModuleContext): Promise<void> {
      const core = getIommuCore(ctx.machine);
      const driver = spec.createDriver(ctx, core);
      if (core.diag.warnOn(driver.ops.owner !== ctx.owner, `${spec.name}: iommu_ops.owner is not THIS_MODULE`)) {
        throw kerr("EINVAL", `${spec.name}: ops.owner must be the module's owner`);
      }
      const instances = new Map<Device, IommuDevice>();
      const platformDriver: DeviceDriver = {
        name: spec.name,
        busType: "platform",
        compatible,
        owner: ctx.owner,
        async probe(pdev) {
          const iommu = await driver.probe(pdev);
          instances.set(pdev, iommu);
          pdev.driverData = iommu;
        },
        async remove(pdev) {
          const iommu = instances.get(pdev);
          instances.delete(pdev);
          if (!iommu) return;
          await driver.remove(pdev, iommu);
          if (core.diag.warnOn(core.iommuDevices.includes(iommu), `${spec.name}: remove left ${iommu} registered`)) {
            await iommuDeviceUnregister(core, iommu);
          }
        },
      };
      loaded.set(ctx.owner, { driver, platformDriver, instances });
      try {
        await ctx.machine.driverCore.registerDriver(platformDriver);
      } catch (e) {
        loaded.delete(ctx.owner);
        throw e;
      }
    },

    async exit(ctx: ModuleContext): Promise<void> {
      const l = loaded.get(ctx.owner);
      if (!l) return;
      await ctx.machine.driverCore.unregisterDriver(l.platformDriver);
      loaded.delete(ctx.owner);
    },

    driverFor(machine: Machine): IommuDriver | undefined {
      const owner = ownerOf(machine);
      return owner ? loaded.get(owner)?.driver : undefined;
    },

    instanceFor(machine: Machine, name: string): IommuDevice | undefined {
      const owner = ownerOf(machine);
      const l = owner ? loaded.get(owner) : undefined;
      if (!l) return undefined;
      for (const [pdev, iommu] of l.instances) if (pdev.name === name) return iommu;
      return undefined;
    },
  };
  return mod;
}
