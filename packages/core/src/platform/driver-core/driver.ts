/**
 * Drivers as the driver core binds them.
 */
import type { Module } from "../../kernel/module.js";
import type { BusType } from "./bus.js";
import type { Device } from "./device.js";

/**
 * A driver for devices of one bus type. Platform drivers match by `compatible` (the DT compatible string, which for
 * IOMMU platform devices is the IOMMU kind) or by an explicit `match`. `probe` may throw a `KernelError`;
 * EPROBE_DEFER puts the device on the deferred-probe list.
 * @linux struct device_driver / struct platform_driver
 */
export interface DeviceDriver {
  readonly name: string;
  readonly busType: BusType;
  /** @linux of_match_table */
  readonly compatible?: readonly string[];
  /** Extra match beyond `compatible` (e.g. PCI IDs). @linux bus_type.match */
  match?(dev: Device): boolean;
  /** @linux platform_driver.probe */
  probe(dev: Device): Promise<void>;
  /** @linux platform_driver.remove */
  remove?(dev: Device): Promise<void>;
  /** The module providing the driver. @linux driver.owner */
  readonly owner?: Module;
}

/**
 * Whether `drv` can drive `dev`: same bus type, and a compatible string or `match` that fits.
 * @linux platform_match / driver_match_device
 */
export function driverMatchDevice(drv: DeviceDriver, dev: Device): boolean {
  if (drv.busType !== dev.bus.type) return false;
  if (drv.compatible && dev.compatible !== undefined && drv.compatible.includes(dev.compatible)) return true;
  return drv.match ? drv.match(dev) : false;
}
