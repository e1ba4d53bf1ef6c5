import type { Diagnostics } from "../kernel/diagnostics.js";
import type { FaultInjector } from "../kernel/fault-inject.js";
import type { ModuleRegistry } from "../kernel/module.js";
import type { Rcu } from "../kernel/rcu.js";
import type { RefTracker } from "../kernel/ref-tracker.js";
import type { Scheduler } from "../kernel/sched/scheduler.js";
import type { DmaRouter } from "../platform/dma.js";
import type { DriverCore } from "../platform/driver-core/core.js";
import type { HwKindRegistry } from "../platform/hw-kind.js";
import type { PhysicalMemory } from "../platform/memory.js";
import type { MmioBus } from "../platform/mmio.js";
import type { PageAllocator } from "../platform/page-alloc.js";
import type { ChrdevRegistry } from "../user/chrdev.js";
import type { UserSpace } from "../user/process.js";
import { createToken } from "./di.js";
import type { Machine } from "./machine.js";

/** DI tokens of the services every machine has, registered container-scoped in its child container. */
export const Tokens = {
  machine: createToken<Machine>("machine"),
  diagnostics: createToken<Diagnostics>("diagnostics"),
  faults: createToken<FaultInjector>("faults"),
  scheduler: createToken<Scheduler>("scheduler"),
  rcu: createToken<Rcu>("rcu"),
  refs: createToken<RefTracker>("refs"),
  modules: createToken<ModuleRegistry>("modules"),
  memory: createToken<PhysicalMemory>("memory"),
  pages: createToken<PageAllocator>("pages"),
  mmio: createToken<MmioBus>("mmio"),
  hwKinds: createToken<HwKindRegistry>("hw-kinds"),
  driverCore: createToken<DriverCore>("driver-core"),
  dma: createToken<DmaRouter>("dma"),
  chrdevs: createToken<ChrdevRegistry>("chrdevs"),
  userSpace: createToken<UserSpace>("user-space"),
} as const;
