import type { DependencyContainer } from "tsyringe";
import type { Module } from "../kernel/module.js";
import type { IommuPlatformRules } from "../platform/description.js";
import type { HwModelFactory } from "../platform/iommu-hw.js";
import type { Machine } from "./machine.js";

/** What a loaded module's hooks receive: the machine and the module's own per-machine `Module` owner. */
export interface ModuleContext {
  machine: Machine;
  /** This module's owner on this machine: drivers put it in `IommuOps.owner`. @linux THIS_MODULE */
  owner: Module;
}

/** A hardware kind a package adds to the platform: the model built for every IOMMU of that kind. */
export interface HardwareKind {
  kind: string;
  factory: HwModelFactory;
}

/**
 * A kernel module as a plain value passed to `createMachine`. The value is shared by every machine that uses it,
 * so it holds no state: each machine makes its own `Module` owner when it loads it.
 * @linux struct module with its module_init / module_exit
 */
export interface KernelModule {
  readonly name: string;
  /** Hardware models this package ships, registered with the platform before the machine is built. */
  readonly hardware?: readonly HardwareKind[];
  /** What this module's drivers require of the IOMMUs they drive, checked when the platform is parsed. */
  readonly platformRules?: readonly IommuPlatformRules[];
  /** DI extension points (iommufd object types, ioctls) registered in the machine's container before boot. */
  register?(container: DependencyContainer): void;
  /** @linux module_init */
  init?(ctx: ModuleContext): Promise<void>;
  /** @linux module_exit */
  exit?(ctx: ModuleContext): Promise<void>;
}
