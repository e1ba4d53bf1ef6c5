/**
 * The per-machine iommufd state: the object-type and command tables built from the DI registrations, and what the
 * teardown checks look at (live objects and contexts, pinned pages).
 * @linux the file-scope tables of drivers/iommu/iommufd/main.c (iommufd_object_ops[], iommufd_ioctl_ops[])
 */
import {
  type Diagnostics,
  type FaultInjector,
  kerr,
  type Machine,
  provide,
  resolveAll,
  type Scheduler,
} from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import type { IommufdObject } from "./object.js";
import { type IommufdIoctlOp, type IommufdObjectTypeOps, IommufdTokens } from "./tokens.js";

/**
 * One machine's iommufd.
 * @linux the iommufd module's global state
 */
/**
 * Emptied PFN-store nodes an iommufd instance keeps for reuse (1 GiB of 4 KiB pages' worth).
 * @linux the slab cache of xarray nodes (radix_tree_node_cachep), which keeps freed nodes too
 */
export const PFN_CHUNK_CACHE_MAX = 512;

export class IommufdCore {
  readonly diag: Diagnostics;
  readonly faults: FaultInjector;
  readonly sched: Scheduler;
  /** Object types by name. @linux iommufd_object_ops[] */
  readonly objectTypes = new Map<string, IommufdObjectTypeOps>();
  /** Commands by `_IOC_NR`. @linux iommufd_ioctl_ops[] */
  readonly ioctlOps = new Map<number, IommufdIoctlOp>();
  /** Objects allocated and not yet freed (leak check). */
  readonly liveObjects = new Set<IommufdObject>();
  /** Open contexts (leak check). */
  readonly liveCtxs = new Set<IommufdCtx>();
  /** Pages pinned by iommufd and not yet unpinned (leak check). */
  pinnedPages = 0;
  /**
   * Emptied PFN-store nodes kept for reuse (their arrays are clean when they empty), at most
   * {@link PFN_CHUNK_CACHE_MAX}. @linux the slab cache of xarray nodes (radix_tree_node_cachep)
   */
  readonly pfnChunkCache: unknown[] = [];

  constructor(readonly machine: Machine) {
    this.diag = machine.diag;
    this.faults = machine.faults;
    this.sched = machine.scheduler;
    for (const t of resolveAll(machine.container, IommufdTokens.objectType)) {
      if (this.objectTypes.has(t.type)) throw kerr("EEXIST", `iommufd object type ${t.type} registered twice`);
      this.objectTypes.set(t.type, t);
    }
    for (const op of resolveAll(machine.container, IommufdTokens.ioctlOp)) {
      if (this.ioctlOps.has(op.nr)) throw kerr("EEXIST", `iommufd ioctl 0x${op.nr.toString(16)} registered twice`);
      this.ioctlOps.set(op.nr, op);
    }
    this.diag.addTeardownCheck("iommufd", () => this.leaks());
  }

  /** The ops of an object type (a missing type is a bug). */
  objectOps(type: string): IommufdObjectTypeOps {
    const ops = this.objectTypes.get(type);
    if (!ops) throw new Error(`iommufd: no object type ${type} registered`);
    return ops;
  }

  /** What is still alive at teardown. */
  leaks(): string[] {
    const out: string[] = [];
    for (const c of this.liveCtxs) out.push(`iommufd context ${c.name} was never released`);
    for (const o of this.liveObjects) out.push(`iommufd object ${o} leaked (users ${o.users.read()})`);
    if (this.pinnedPages) out.push(`iommufd left ${this.pinnedPages} pages pinned`);
    return out;
  }
}

/**
 * The machine's iommufd (created by the module's init; EINVAL-free lookup for tests that load the module).
 * ENODEV when iommufd is not loaded.
 */
export function getIommufdCore(machine: Machine): IommufdCore {
  const c = machine.container;
  if (!c.isRegistered(IommufdTokens.core, true)) throw kerr("ENODEV", "iommufd is not loaded on this machine");
  return c.resolve(IommufdTokens.core);
}

/** Create and register the machine's iommufd state (module init). */
export function createIommufdCore(machine: Machine): IommufdCore {
  const core = new IommufdCore(machine);
  provide(machine.container, IommufdTokens.core, core);
  return core;
}
