/**
 * The driver core: buses, devices and drivers, device add/remove with bus notifications, driver binding with
 * deferred probing, and the construction of the machine's devices from its platform description.
 */
import type { Diagnostics } from "../../kernel/diagnostics.js";
import { KernelError, kerr } from "../../kernel/errno.js";
import type { RefTracker } from "../../kernel/ref-tracker.js";
import { type IommuDesc, isPciBus, type PlatformDescription, parseBdf } from "../description.js";
import { bdfsToRids, type DmarRmrr, type DmarUnit, type IvrsUnit } from "./acpi.js";
import { Bus, BusNotify } from "./bus.js";
import { Device, type DeviceInit, type PciInfo } from "./device.js";
import { type DeviceDriver, driverMatchDevice } from "./driver.js";
import { type FwNode, FwNodeTable } from "./fwnode.js";

/** The bus holding IOMMU platform devices; created when a description does not declare it. @linux platform_bus_type */
export const PLATFORM_BUS = "platform";

/**
 * An IOMMU instance as firmware describes it.
 * @linux the IOMMU's DT node / DRHD / IVHD, before any driver looks at it
 */
export interface FirmwareIommu {
  name: string;
  kind: string;
  fwnode: FwNode;
  mmio: { base: number; size: number };
  options: Record<string, unknown>;
}

/**
 * What firmware says about IOMMUs beyond the device tree links: the IOMMU instances, and the ACPI DMAR/IVRS units.
 * @linux the parsed DMAR (dmar_drhd_units) and IVRS (amd_iommu_list + rlookup) tables
 */
export interface FirmwareTables {
  iommus: Map<string, FirmwareIommu>;
  dmar: DmarUnit[];
  /** @linux dmar_rmrr_units */
  rmrr: DmarRmrr[];
  ivrs: IvrsUnit[];
}

/** What {@link DriverCore} is built with. @linux driver_init */
export interface DriverCoreDeps {
  diag: Diagnostics;
  /** The machine's reference tracker; devices are tracked in it. */
  refs?: RefTracker;
}

/**
 * The machine's driver core. Owns buses, devices, drivers and the firmware node table.
 * @linux drivers/base (core.c, bus.c, dd.c, platform.c)
 */
export class DriverCore {
  readonly diag: Diagnostics;
  readonly refs: RefTracker | undefined;
  /** Buses by name. */
  readonly buses = new Map<string, Bus>();
  /** Firmware nodes (DT paths). */
  readonly fwnodes = new FwNodeTable();
  /** IOMMU instances and ACPI units from the platform description. */
  readonly firmware: FirmwareTables = { iommus: new Map(), dmar: [], rmrr: [], ivrs: [] };
  /** Registered drivers in registration order. */
  readonly drivers: DeviceDriver[] = [];
  private readonly byName = new Map<string, Device>();
  private readonly order: Device[] = [];
  private readonly deferredList: Device[] = [];
  private readonly probing = new Set<Device>();
  private deferredPending = false;
  private deferredRunning = false;
  private populated = false;

  constructor(deps: DriverCoreDeps) {
    this.diag = deps.diag;
    this.refs = deps.refs;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Buses and devices

  /**
   * Register a bus. Throws EEXIST when the name is taken.
   * @linux bus_register
   */
  busRegister(bus: Bus): Bus {
    if (this.buses.has(bus.name)) throw kerr("EEXIST", `bus ${bus.name} already registered`);
    this.buses.set(bus.name, bus);
    return bus;
  }

  /** The bus named `name`. @linux bus_find_by_name-like lookup (subsys_find_device_by_id) */
  busFor(name: string): Bus | undefined {
    return this.buses.get(name);
  }

  /**
   * Create a device object (not yet added). Its creator holds the reference tagged `"device_register"`.
   * @linux device_initialize
   */
  createDevice(init: DeviceInit): Device {
    return new Device(this.diag, init, this.refs);
  }

  /**
   * Add `dev` to its bus: list it, send BUS_NOTIFY_ADD_DEVICE, then try to bind a driver. The bus list holds a
   * reference (tag `"bus_add_device"`) until `deviceDel`. Throws EEXIST for a duplicate name, EINVAL when the device
   * was already added.
   * @linux device_add (bus_add_device, bus_notify, bus_probe_device)
   */
  async deviceAdd(dev: Device): Promise<void> {
    if (dev.state !== "initialized") throw kerr("EINVAL", `device ${dev.name} was already added`);
    if (this.byName.has(dev.name)) throw kerr("EEXIST", `a device named ${dev.name} already exists`);
    if (this.buses.get(dev.bus.name) !== dev.bus) throw kerr("EINVAL", `bus ${dev.bus.name} is not registered`);
    dev.get("bus_add_device");
    dev.bus.devices.push(dev);
    this.byName.set(dev.name, dev);
    this.order.push(dev);
    dev.state = "added";
    await dev.bus.notify(dev, BusNotify.ADD_DEVICE);
    await this.deviceAttach(dev);
  }

  /**
   * Create and add a device.
   * @linux device_register
   */
  async deviceRegister(init: DeviceInit): Promise<Device> {
    const dev = this.createDevice(init);
    try {
      await this.deviceAdd(dev);
    } catch (e) {
      if (dev.state === "initialized") dev.put("device_register");
      throw e;
    }
    return dev;
  }

  /**
   * Remove `dev`: BUS_NOTIFY_DEL_DEVICE, unlist it, unbind its driver, drop it from the deferred list,
   * BUS_NOTIFY_REMOVED_DEVICE, and drop the bus list's reference. The creator's reference stays.
   * @linux device_del (bus_remove_device, device_release_driver)
   */
  async deviceDel(dev: Device): Promise<void> {
    if (dev.state !== "added") throw kerr("EINVAL", `device ${dev.name} is not registered`);
    await dev.bus.notify(dev, BusNotify.DEL_DEVICE);
    remove(dev.bus.devices, dev);
    this.byName.delete(dev.name);
    remove(this.order, dev);
    await this.deviceReleaseDriver(dev);
    remove(this.deferredList, dev);
    dev.state = "deleted";
    await dev.bus.notify(dev, BusNotify.REMOVED_DEVICE);
    dev.put("bus_add_device");
  }

  /**
   * Delete `dev` and drop the creator's reference.
   * @linux device_unregister
   */
  async deviceUnregister(dev: Device): Promise<void> {
    await this.deviceDel(dev);
    dev.put("device_register");
  }

  /** The registered device named `name` (not referenced). @linux bus_find_device_by_name over all buses */
  deviceFor(name: string): Device | undefined {
    return this.byName.get(name);
  }

  /** Every registered device, in add order. */
  devices(): Device[] {
    return [...this.order];
  }

  /**
   * Registered PCI devices of `segment`, in add order.
   * @linux for_each_pci_dev filtered by pci_domain_nr
   */
  pciDevices(segment: number): Device[] {
    return this.order.filter((d) => d.pci?.segment === segment);
  }

  /** Registered IOMMU platform devices (those firmware describes as IOMMU instances), in add order. */
  iommuDevices(): Device[] {
    return this.order.filter((d) => this.firmware.iommus.has(d.name) && d.bus.name === PLATFORM_BUS);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Drivers

  /**
   * Register a driver and bind it to every matching unbound device. Throws EBUSY when a driver of that name exists.
   * @linux driver_register (bus_add_driver, driver_attach)
   */
  async registerDriver(drv: DeviceDriver): Promise<void> {
    if (this.drivers.some((d) => d.name === drv.name)) throw kerr("EBUSY", `driver ${drv.name} already registered`);
    this.drivers.push(drv);
    for (const dev of [...this.order]) {
      if (dev.driver || !dev.registered || !driverMatchDevice(drv, dev)) continue;
      await this.driverProbeDevice(drv, dev);
    }
  }

  /**
   * Unbind a driver from its devices (last bound first) and unregister it.
   * @linux driver_unregister (bus_remove_driver, driver_detach)
   */
  async unregisterDriver(drv: DeviceDriver): Promise<void> {
    const i = this.drivers.indexOf(drv);
    if (i < 0) throw kerr("ENOENT", `driver ${drv.name} is not registered`);
    for (const dev of [...this.order].reverse()) {
      if (dev.driver === drv) await this.deviceReleaseDriver(dev);
    }
    this.drivers.splice(this.drivers.indexOf(drv), 1);
  }

  /**
   * Try the registered drivers on `dev` until one binds or defers. Returns whether a driver is bound.
   * @linux device_attach / bus_probe_device
   */
  async deviceAttach(dev: Device): Promise<boolean> {
    if (dev.driver) return true;
    for (const drv of [...this.drivers]) {
      if (!dev.registered || dev.driver) break;
      if (!driverMatchDevice(drv, dev)) continue;
      const r = await this.driverProbeDevice(drv, dev);
      if (r === "bound") return true;
      if (r === "deferred") return false;
    }
    return dev.driver !== undefined;
  }

  /**
   * Bind `drv` to `dev`: BUS_NOTIFY_BIND_DRIVER, the bus's dma_configure hook, `probe`; then BUS_NOTIFY_BOUND_DRIVER
   * and a deferred-probe retry, or on failure BUS_NOTIFY_DRIVER_NOT_BOUND and, for EPROBE_DEFER, the deferred list.
   * Errors other than KernelError are bugs and are rethrown after the cleanup.
   * @linux driver_probe_device / really_probe / driver_bound
   */
  async driverProbeDevice(drv: DeviceDriver, dev: Device): Promise<"bound" | "deferred" | "failed"> {
    if (dev.driver || this.probing.has(dev)) return dev.driver === drv ? "bound" : "failed";
    this.probing.add(dev);
    try {
      dev.driver = drv;
      await dev.bus.notify(dev, BusNotify.BIND_DRIVER);
      let configured = false;
      try {
        if (dev.bus.dmaConfigure) await dev.bus.dmaConfigure(dev);
        configured = true;
        await drv.probe(dev);
      } catch (e) {
        if (configured && dev.bus.dmaCleanup) await dev.bus.dmaCleanup(dev);
        dev.driver = undefined;
        dev.driverData = undefined;
        await dev.bus.notify(dev, BusNotify.DRIVER_NOT_BOUND);
        if (!(e instanceof KernelError)) throw e;
        dev.probeError = e.errno;
        if (e.code === "EPROBE_DEFER") {
          if (!this.deferredList.includes(dev)) this.deferredList.push(dev);
          return "deferred";
        }
        return "failed";
      }
      dev.probeError = 0;
      remove(this.deferredList, dev);
      await dev.bus.notify(dev, BusNotify.BOUND_DRIVER);
    } finally {
      this.probing.delete(dev);
    }
    await this.triggerDeferred();
    return "bound";
  }

  /**
   * Unbind `dev`'s driver: BUS_NOTIFY_UNBIND_DRIVER, `remove`, the bus's dma_cleanup hook,
   * BUS_NOTIFY_UNBOUND_DRIVER.
   * @linux device_release_driver
   */
  async deviceReleaseDriver(dev: Device): Promise<void> {
    const drv = dev.driver;
    if (!drv) return;
    await dev.bus.notify(dev, BusNotify.UNBIND_DRIVER);
    if (drv.remove) await drv.remove(dev);
    if (dev.bus.dmaCleanup) await dev.bus.dmaCleanup(dev);
    dev.driver = undefined;
    dev.driverData = undefined;
    await dev.bus.notify(dev, BusNotify.UNBOUND_DRIVER);
  }

  /** Devices whose probe returned EPROBE_DEFER and that wait for a retry. @linux deferred_probe_pending_list */
  get deferred(): readonly Device[] {
    return this.deferredList;
  }

  /**
   * Retry every deferred device now, and again as long as a driver bound during the pass (a bind may satisfy
   * another deferred device's dependency).
   * @linux driver_deferred_probe_trigger + deferred_probe_work_func
   */
  async retryDeferred(): Promise<void> {
    this.deferredPending = true;
    if (this.deferredRunning) return;
    this.deferredRunning = true;
    try {
      while (this.deferredPending) {
        this.deferredPending = false;
        for (const dev of [...this.deferredList]) {
          if (!this.deferredList.includes(dev) || !dev.registered) continue;
          remove(this.deferredList, dev);
          await this.deviceAttach(dev);
        }
      }
    } finally {
      this.deferredRunning = false;
    }
  }

  private async triggerDeferred(): Promise<void> {
    if (this.deferredList.length === 0 && !this.deferredRunning) return;
    await this.retryDeferred();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Platform description

  /**
   * Build the machine's buses and devices from `desc`: the buses (and a `platform` bus if none is declared), one
   * platform device per IOMMU instance (compatible = kind, its fwnode, its MMIO window as a resource, its options
   * as platform data), and the endpoint devices with their DT `iommus` or PCI identity. Records the IOMMU instances
   * and DMAR/IVRS units in {@link firmware}. With `add` (default) every device is then added, IOMMUs first, in
   * description order. Returns the devices created. Throws EBUSY when called twice.
   * @linux of_platform_populate + acpi_bus_scan + pci_scan_root_bus, reduced to what the IOMMU subsystem sees
   */
  async fromDescription(desc: PlatformDescription, opts: { add?: boolean } = {}): Promise<Device[]> {
    if (this.populated) throw kerr("EBUSY", "the driver core was already populated from a description");
    this.populated = true;
    const fw = this.firmware;
    for (const io of desc.iommus) fw.iommus.set(io.name, this.firmwareIommu(io));
    const iommuNode = (name: string) => fw.iommus.get(name)!.fwnode;

    if (!desc.buses.some((b) => b.name === PLATFORM_BUS)) {
      this.busRegister(new Bus({ name: PLATFORM_BUS, type: "platform" }));
    }
    for (const b of desc.buses) {
      if (!isPciBus(b)) {
        this.busRegister(new Bus({ name: b.name, type: "platform" }));
        continue;
      }
      const iommuMap = (b.iommuMap ?? []).map((e) => ({
        ridBase: e.ridBase,
        fwnode: iommuNode(e.iommu),
        sidBase: e.sidBase,
        length: e.length,
        ...(e.ridMask !== undefined ? { ridMask: e.ridMask } : {}),
      }));
      this.busRegister(new Bus({ name: b.name, type: "pci", segment: b.segment, acs: b.acs, iommuMap }));
    }
    for (const u of desc.acpi?.dmar ?? []) {
      fw.dmar.push({
        iommu: u.iommu,
        fwnode: iommuNode(u.iommu),
        segment: u.segment,
        includePciAll: u.includePciAll,
        scope: bdfsToRids(u.scope),
      });
    }
    for (const r of desc.acpi?.rmrr ?? []) {
      fw.rmrr.push({ segment: r.segment, base: r.base, end: r.base + r.size - 1, scope: bdfsToRids(r.scope) });
    }
    for (const u of desc.acpi?.ivrs ?? []) {
      fw.ivrs.push({ iommu: u.iommu, fwnode: iommuNode(u.iommu), segment: u.segment, entries: u.entries });
    }

    const created: Device[] = [];
    const platformBus = this.buses.get(PLATFORM_BUS)!;
    for (const io of desc.iommus) {
      const f = fw.iommus.get(io.name)!;
      created.push(
        this.createDevice({
          name: io.name,
          bus: platformBus,
          fwnode: f.fwnode,
          compatible: io.kind,
          resources: [{ name: "mmio", start: io.mmio.base, size: io.mmio.size }],
          platformData: { ...io.options },
        }),
      );
    }
    for (const d of desc.devices) {
      const bus = this.buses.get(d.bus)!;
      if (bus.type === "platform") {
        created.push(
          this.createDevice({
            name: d.name,
            bus,
            fwnode: this.fwnodes.node(`/${d.name}`),
            iommus: (d.iommus ?? []).map((s) => ({ fwnode: iommuNode(s.iommu), args: [...s.args] })),
            // DT properties a driver reads with device_property_read_bool / _u32.
            platformData: d.dmaCanStall ? { "dma-can-stall": true } : {},
          }),
        );
        continue;
      }
      const bdf = parseBdf(d.bdf!)!;
      const sameSlot = desc.devices.some((o) => {
        if (o === d || o.bus !== d.bus || o.bdf === undefined) return false;
        const p = parseBdf(o.bdf)!;
        return p.bus === bdf.bus && p.dev === bdf.dev;
      });
      const pci: PciInfo = {
        segment: bus.segment,
        busNr: bdf.bus,
        devfn: bdf.devfn,
        rid: bdf.rid,
        bdf: d.bdf!,
        aliases: bdfsToRids(d.aliases ?? []),
        ats: d.ats ?? false,
        pri: d.pri ?? false,
        pasidBits: d.pasid ?? 0,
        acs: d.acs ?? false,
        multifunction: d.multifunction ?? sameSlot,
      };
      created.push(this.createDevice({ name: d.name, bus, pci }));
    }
    if (opts.add ?? true) for (const dev of created) await this.deviceAdd(dev);
    return created;
  }

  private firmwareIommu(io: IommuDesc): FirmwareIommu {
    return {
      name: io.name,
      kind: io.kind,
      fwnode: this.fwnodes.node(io.fwnode),
      mmio: { base: io.mmio.base, size: io.mmio.size },
      options: io.options,
    };
  }

  /**
   * Unregister every driver (last first) and every device (last added first). References held by others keep their
   * devices alive; the reference tracker reports them at teardown.
   * @linux device_shutdown + driver_unregister, run to completion for a clean leak check
   */
  async teardown(): Promise<void> {
    for (const drv of [...this.drivers].reverse()) await this.unregisterDriver(drv);
    for (const dev of [...this.order].reverse()) await this.deviceUnregister(dev);
  }
}

function remove<T>(list: T[], x: T): void {
  const i = list.indexOf(x);
  if (i >= 0) list.splice(i, 1);
}
