/**
 * @iommu-sim/core — the simulated kernel's primitives, the simulated platform, the machine, and the generic
 * page-table engine. See the package README for the Linux files each folder mirrors.
 */
import "reflect-metadata";

export * from "./iommu/index.js";
export * from "./kernel/diagnostics.js";
export * from "./kernel/errno.js";
export * from "./kernel/fault-inject.js";
export * from "./kernel/kref.js";
export * from "./kernel/module.js";
export * from "./kernel/rcu.js";
export * from "./kernel/ref-tracker.js";
export * from "./kernel/refcount.js";
export * from "./kernel/sched/index.js";
export * from "./kernel/slab.js";
export * from "./kernel/trace.js";
export * from "./kernel/xarray.js";
export * from "./machine/copies.js";
export * from "./machine/di.js";
export * from "./machine/kernel-module.js";
export * from "./machine/machine.js";
export * from "./machine/tokens.js";
export * from "./pgtable/index.js";
export * from "./platform/bitfield.js";
export * from "./platform/default-platform.js";
export * from "./platform/description.js";
export * from "./platform/dma.js";
export * from "./platform/driver-core/index.js";
export * from "./platform/hw-kind.js";
export * from "./platform/hw-options.js";
export * from "./platform/hw-ring.js";
export * from "./platform/hwcache.js";
export * from "./platform/iommu-hw.js";
export * from "./platform/memory.js";
export * from "./platform/mmio.js";
export * from "./platform/page-alloc.js";
export * from "./platform/topology.js";
export * from "./platform/translation-path.js";
export * from "./user/index.js";
