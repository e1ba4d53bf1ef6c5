/**
 * Buses: a named list of devices with a notifier chain the IOMMU core listens on.
 */
import type { Device } from "./device.js";
import type { FwNode } from "./fwnode.js";
import { BlockingNotifier } from "./notifier.js";
import type { IommuMapEntry } from "./of.js";

/** Bus types the platform has. @linux struct bus_type (platform_bus_type, pci_bus_type) */
export type BusType = "platform" | "pci";

/**
 * Bus notifier events, in the kernel's enum order.
 * @linux enum bus_notifier_event
 */
export const BusNotify = {
  /** device added. @linux BUS_NOTIFY_ADD_DEVICE */
  ADD_DEVICE: 0,
  /** device about to be removed. @linux BUS_NOTIFY_DEL_DEVICE */
  DEL_DEVICE: 1,
  /** device removed. @linux BUS_NOTIFY_REMOVED_DEVICE */
  REMOVED_DEVICE: 2,
  /** driver about to be bound. @linux BUS_NOTIFY_BIND_DRIVER */
  BIND_DRIVER: 3,
  /** driver bound to device. @linux BUS_NOTIFY_BOUND_DRIVER */
  BOUND_DRIVER: 4,
  /** driver about to be unbound. @linux BUS_NOTIFY_UNBIND_DRIVER */
  UNBIND_DRIVER: 5,
  /** driver is unbound from the device. @linux BUS_NOTIFY_UNBOUND_DRIVER */
  UNBOUND_DRIVER: 6,
  /** driver fails to be bound. @linux BUS_NOTIFY_DRIVER_NOT_BOUND */
  DRIVER_NOT_BOUND: 7,
} as const;

/** One of {@link BusNotify}. @linux enum bus_notifier_event */
export type BusNotifyAction = (typeof BusNotify)[keyof typeof BusNotify];

/** Names of bus events, for logs. @linux enum bus_notifier_event */
export const BUS_NOTIFY_NAMES: readonly string[] = [
  "BUS_NOTIFY_ADD_DEVICE",
  "BUS_NOTIFY_DEL_DEVICE",
  "BUS_NOTIFY_REMOVED_DEVICE",
  "BUS_NOTIFY_BIND_DRIVER",
  "BUS_NOTIFY_BOUND_DRIVER",
  "BUS_NOTIFY_UNBIND_DRIVER",
  "BUS_NOTIFY_UNBOUND_DRIVER",
  "BUS_NOTIFY_DRIVER_NOT_BOUND",
];

/** Options of {@link Bus}. @linux bus_register / pci_create_root_bus arguments */
export interface BusInit {
  name: string;
  type: BusType;
  /** PCI: the segment (domain) of this host bridge. */
  segment?: number;
  /** PCI: whether the ports between the root and the endpoints enforce ACS isolation. */
  acs?: boolean;
  /** PCI: the host bridge's `iommu-map`. */
  iommuMap?: IommuMapEntry[];
}

/**
 * A bus instance: a platform bus or one PCI host bridge (segment). Holds its registered devices in add order and a
 * blocking notifier chain of device and driver events.
 * @linux struct bus_type + struct subsys_private (klist_devices, bus_notifier); for PCI also struct pci_host_bridge
 */
export class Bus {
  readonly name: string;
  readonly type: BusType;
  /** PCI segment; 0 for platform buses. @linux pci_domain_nr */
  readonly segment: number;
  /** PCI: ACS on the path from the root port to the endpoints. */
  readonly acs: boolean;
  /** PCI host bridge `iommu-map`, empty when absent. */
  readonly iommuMap: readonly IommuMapEntry[];
  /** Registered devices in add order. @linux klist_devices */
  readonly devices: Device[] = [];
  /** @linux bus_notifier */
  readonly notifier = new BlockingNotifier<Device>();
  /**
   * Called before a driver's probe (the IOMMU core installs its hook here).
   * @linux bus_type.dma_configure
   */
  dmaConfigure: ((dev: Device) => Promise<void>) | undefined = undefined;
  /** Called after a driver's remove. @linux bus_type.dma_cleanup */
  dmaCleanup: ((dev: Device) => Promise<void>) | undefined = undefined;

  constructor(init: BusInit) {
    this.name = init.name;
    this.type = init.type;
    this.segment = init.segment ?? 0;
    this.acs = init.acs ?? true;
    this.iommuMap = init.iommuMap ?? [];
  }

  /**
   * Call the bus notifier chain.
   * @linux bus_notify
   */
  notify(dev: Device, action: BusNotifyAction): Promise<number> {
    return this.notifier.callChain(action, dev);
  }

  /**
   * Find a registered device with `fn`, taking a reference for `holder`; the caller must put it.
   * @linux bus_find_device
   */
  findDevice(fn: (dev: Device) => boolean, holder: string): Device | undefined {
    const dev = this.devices.find((d) => d.registered && fn(d));
    return dev?.get(holder);
  }

  /**
   * Call `fn` on every registered device until it returns non-zero; returns that value.
   * @linux bus_for_each_dev
   */
  forEachDev(fn: (dev: Device) => number): number {
    for (const dev of [...this.devices]) {
      const r = fn(dev);
      if (r !== 0) return r;
    }
    return 0;
  }
}

/**
 * The registered device on `bus` whose firmware node is `fwnode`, with a reference taken for `holder` (the caller
 * must `put(holder)` it), or undefined.
 * @linux bus_find_device_by_fwnode
 */
export function busFindDeviceByNode(bus: Bus, fwnode: FwNode, holder: string): Device | undefined {
  return bus.findDevice((d) => d.fwnode === fwnode, holder);
}

/**
 * The registered device on `bus` named `name`, referenced for `holder`.
 * @linux bus_find_device_by_name
 */
export function busFindDeviceByName(bus: Bus, name: string, holder: string): Device | undefined {
  return bus.findDevice((d) => d.name === name, holder);
}
