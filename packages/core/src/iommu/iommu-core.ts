/**
 * The per-machine iommu core: the state drivers/iommu/iommu.c keeps at file scope (the IOMMU instance list, the
 * probe-device lock, the default-domain policy), the bus notifiers that probe devices added later, and the slots
 * the group/domain and IOPF parts hang their state on.
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import type { FaultInjector } from "../kernel/fault-inject.js";
import type { Rcu } from "../kernel/rcu.js";
import { Mutex } from "../kernel/sched/mutex.js";
import type { Scheduler } from "../kernel/sched/scheduler.js";
import type { ServiceToken } from "../machine/di.js";
import { provide, resolve } from "../machine/di.js";
import type { Machine } from "../machine/machine.js";
import type { Bus } from "../platform/driver-core/bus.js";
import type { DriverCore } from "../platform/driver-core/core.js";
import type { Device } from "../platform/driver-core/device.js";
import type { NotifierBlock } from "../platform/driver-core/notifier.js";
import { devIommu } from "./dev-iommu.js";
import {
  type IommuGroup,
  IommuGroups,
  iommuGroupAddDevice,
  iommuGroupPut,
  iommuGroupRemoveDevice,
  iommuGroupSetupDefaultDomain,
} from "./group.js";
import type { IommuDevice } from "./iommu-device.js";
import { iommuBusNotifier, iommuDeinitDevice, iommuDeinitHooks, iommuDmaConfigure } from "./probe.js";
import { IommuTokens } from "./tokens.js";

/**
 * Groups whose default-domain setup `bus_iommu_probe` deferred until every device of the bus was probed.
 * @linux the group_list of bus_iommu_probe
 */
export type IommuGroupList = IommuGroup[];

/**
 * How probing reaches the group code. The core calls `addDevice` where `iommu_init_device` calls
 * `ops->device_group` and `__iommu_probe_device` adds the device to its group and sets up the default domain, and
 * `removeDevice` where `iommu_release_device` removes it from its group. Replaceable for tests of the probe path in
 * isolation; the default is the group code of `group.ts`.
 * @linux the group steps of __iommu_probe_device / iommu_release_device
 */
export interface IommuGroupHooks {
  /**
   * Find or allocate `dev`'s group, set `dev.iommuGroup`, add the device and attach the group's domain (or set up
   * the default domain; with `groupList`, defer that by adding the group to it). Called with the probe-device lock
   * held. On failure it undoes its own work and throws; if it ran {@link iommuDeinitHooks} (as Linux runs
   * iommu_deinit_device under the group mutex) `dev.iommu` is gone, otherwise the core unwinds the device.
   * @linux iommu_init_device (device_group step) + __iommu_probe_device (iommu_group_alloc_device, setup)
   */
  addDevice(core: IommuCore, dev: Device, groupList: IommuGroupList | undefined): Promise<void>;
  /**
   * Remove `dev` from its group, running {@link iommuDeinitHooks} under the group mutex, and drop the group
   * reference taken by `addDevice`.
   * @linux __iommu_group_remove_device
   */
  removeDevice(core: IommuCore, dev: Device): Promise<void>;
  /**
   * Set up the default domains of the groups `bus_iommu_probe` collected (then the core calls `probeFinalize`).
   * @linux the second loop of bus_iommu_probe
   */
  setupGroupList?(core: IommuCore, groupList: IommuGroupList): Promise<void>;
  /**
   * Drop what the group code keeps per IOMMU instance (its singleton group), when the instance is unregistered.
   * @linux iommu_device_unregister's iommu_group_put(iommu->singleton_group)
   */
  unregisterIommu?(core: IommuCore, iommu: IommuDevice): void;
}

/**
 * The group hooks of `group.ts`: iommu_group_add_device-style membership with default domains.
 * @linux __iommu_probe_device / __iommu_group_remove_device / bus_iommu_probe / iommu_device_unregister
 */
export const groupHooks: IommuGroupHooks = {
  async addDevice(core, dev, groupList) {
    await iommuGroupAddDevice(core, dev, { ...iommuDeinitHooks(core), ...(groupList ? { groupList } : {}) });
  },
  async removeDevice(core, dev) {
    await iommuGroupRemoveDevice(core, dev, iommuDeinitHooks(core));
  },
  async setupGroupList(_core, groupList) {
    for (const group of groupList) await iommuGroupSetupDefaultDomain(group);
  },
  unregisterIommu(_core, iommu) {
    const group = iommu.singletonGroup;
    iommu.singletonGroup = undefined;
    if (group) iommuGroupPut(group, "singleton_group");
  },
};

/**
 * Group hooks that call the driver's `deviceGroup` (so its failures unwind as in Linux) and keep the result in
 * `dev.iommuGroup`, without group membership or default domains: for testing probing alone.
 */
export const minimalGroupHooks: IommuGroupHooks = {
  async addDevice(_core, dev) {
    const ops = devIommu(dev)?.iommuDev?.ops;
    const group: unknown = ops?.deviceGroup ? await ops.deviceGroup(dev) : undefined;
    dev.iommuGroup = (group ?? { device: dev.name }) as IommuGroup;
  },
  async removeDevice(core, dev) {
    if (devIommu(dev)?.iommuDev) await iommuDeinitDevice(core, dev);
    dev.iommuGroup = undefined;
  },
};

/** Options of {@link getIommuCore}, fixed when the core is created. @linux iommu.passthrough= / iommu.strict= */
export interface IommuCoreOptions {
  /** Default domains are identity rather than translating. @linux iommu.passthrough=1 */
  passthrough?: boolean;
  /** Unmaps invalidate the IOTLB synchronously (DMA rather than DMA_FQ default domains). Default true. @linux iommu.strict */
  strict?: boolean;
}

/**
 * The iommu core of one machine. Get it with {@link getIommuCore}.
 * @linux drivers/iommu/iommu.c file-scope state and iommu_subsys_init
 */
export class IommuCore {
  readonly machine: Machine;
  readonly diag: Diagnostics;
  readonly faults: FaultInjector;
  readonly scheduler: Scheduler;
  readonly rcu: Rcu;
  readonly driverCore: DriverCore;
  /**
   * Serialises probing: `ofXlate`, `probeDevice`/`probeDeviceFwspec`, `deviceGroup` and fwspec/dev_iommu setup run
   * with it held. Drivers call `core.probeLock.assertHeld()` where Linux has `lockdep_assert_held`.
   * @linux iommu_probe_device_lock
   */
  readonly probeLock: Mutex;
  /**
   * Registered IOMMU instances in registration order. Linux guards the list with a spinlock; here every access is
   * a synchronous section, which the cooperative scheduler cannot interleave, so no lock object is needed.
   * @linux iommu_device_list (under iommu_device_lock)
   */
  readonly iommuDevices: IommuDevice[] = [];
  /** Groups, the group ID allocator and the default-domain policy. @linux iommu_group_kset, iommu_def_domain_type */
  readonly groups: IommuGroups;
  /** How probing reaches the group code; see {@link IommuGroupHooks}. */
  groupHooks: IommuGroupHooks = groupHooks;
  private readonly buses = new Set<Bus>();
  private readonly nb: NotifierBlock<Device>;
  private readonly slots = new Map<symbol, unknown>();

  /** Use {@link getIommuCore}. @linux iommu_subsys_init */
  constructor(machine: Machine, opts: IommuCoreOptions = {}) {
    this.machine = machine;
    this.diag = machine.diag;
    this.faults = machine.faults;
    this.scheduler = machine.scheduler;
    this.rcu = machine.rcu;
    this.driverCore = machine.driverCore;
    this.probeLock = new Mutex(machine.scheduler, "iommu_probe_device_lock");
    this.groups = new IommuGroups({
      diag: machine.diag,
      faults: machine.faults,
      scheduler: machine.scheduler,
      refs: machine.refs,
      ...(opts.passthrough !== undefined ? { passthrough: opts.passthrough } : {}),
      ...(opts.strict !== undefined ? { strict: opts.strict } : {}),
    });
    this.nb = { notifierCall: (action, dev) => iommuBusNotifier(this, action, dev) };
    this.attachBuses();
    this.diag.addTeardownCheck("iommu core", () => this.check());
  }

  /**
   * The buses the core watches, registering its notifier and `dma_configure` hook on buses it has not seen yet
   * (buses appear when the machine boots, possibly after the core was created).
   * @linux iommu_buses[] with bus_register_notifier in iommu_subsys_init
   */
  attachBuses(): Bus[] {
    for (const bus of this.driverCore.buses.values()) {
      if (this.buses.has(bus)) continue;
      this.buses.add(bus);
      bus.notifier.register(this.nb);
      if (bus.dmaConfigure === undefined) bus.dmaConfigure = (dev) => iommuDmaConfigure(this, dev);
    }
    return [...this.buses];
  }

  /**
   * Per-machine state of another part of the iommu core (groups, IOPF queues), created on first use.
   * @linux the other file-scope state of drivers/iommu (iommu_group_ida, iopf queues, ...)
   */
  slot<T>(key: ServiceToken<T>, create: () => T): T {
    if (this.slots.has(key)) return this.slots.get(key) as T;
    const v = create();
    this.slots.set(key, v);
    return v;
  }

  /**
   * Unbind the platform drivers of every registered IOMMU, last registered first, so each driver's remove
   * unregisters its instance and releases the devices it translates. The machine runs this before unloading
   * modules, as an administrator unbinds an IOMMU driver before `rmmod` (its module is pinned while devices are
   * probed).
   * @linux echo <iommu> > /sys/bus/platform/drivers/<drv>/unbind, for each IOMMU
   */
  async shutdown(): Promise<void> {
    for (const iommu of [...this.iommuDevices].reverse()) {
      const pdev = iommu.dev;
      if (pdev?.driver && this.iommuDevices.includes(iommu)) await this.driverCore.deviceReleaseDriver(pdev);
    }
  }

  private check(): string[] {
    const out: string[] = [];
    for (const iommu of this.iommuDevices) {
      out.push(`iommu_device ${iommu.name} is still registered at teardown (${iommu.devices.size} device(s))`);
    }
    for (const dev of this.driverCore.devices()) {
      if (dev.iommu !== undefined) out.push(`device ${dev.name} still has dev_iommu at teardown`);
    }
    return out;
  }
}

/**
 * The machine's iommu core, created and registered in its container on first use (`opts` apply then). Creating it
 * registers the bus notifiers and arranges for IOMMU drivers to be unbound before the machine unloads modules at
 * teardown.
 * @linux iommu_subsys_init (subsys_initcall)
 */
export function getIommuCore(machine: Machine, opts: IommuCoreOptions = {}): IommuCore {
  const c = machine.container;
  if (c.isRegistered(IommuTokens.core)) return resolve(c, IommuTokens.core);
  const core = new IommuCore(machine, opts);
  provide(c, IommuTokens.core, core);
  installShutdown(machine, core);
  return core;
}

/** At machine teardown, unbind the IOMMU drivers (releasing their devices) before modules are unloaded. */
function installShutdown(machine: Machine, core: IommuCore): void {
  machine.addShutdownHook(() => core.shutdown());
}
