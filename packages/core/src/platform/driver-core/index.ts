/** The driver core: devices, buses, drivers, firmware nodes and tables. @linux drivers/base */
export * from "./acpi.js";
export * from "./bus.js";
export * from "./core.js";
export * from "./device.js";
export * from "./driver.js";
export * from "./fwnode.js";
export * from "./notifier.js";
export * from "./of.js";
export * from "./pci.js";
