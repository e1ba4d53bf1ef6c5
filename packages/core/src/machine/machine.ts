import type { DependencyContainer } from "tsyringe";
import { Diagnostics } from "../kernel/diagnostics.js";
import { kerr } from "../kernel/errno.js";
import { FaultInjector } from "../kernel/fault-inject.js";
import { Module, ModuleRegistry } from "../kernel/module.js";
import { Rcu } from "../kernel/rcu.js";
import { RefTracker } from "../kernel/ref-tracker.js";
import { FifoStrategy } from "../kernel/sched/fifo.js";
import { PctStrategy } from "../kernel/sched/pct.js";
import { RandomStrategy } from "../kernel/sched/random.js";
import { ReplayStrategy } from "../kernel/sched/replay.js";
import { Scheduler } from "../kernel/sched/scheduler.js";
import type { ScheduleStrategy } from "../kernel/sched/strategy.js";
import { defaultPlatform } from "../platform/default-platform.js";
import {
  isPlatformDescription,
  type PlatformDescription,
  type PlatformInput,
  parsePlatform,
} from "../platform/description.js";
import { DmaRouter, type EndpointDevice } from "../platform/dma.js";
import { DriverCore } from "../platform/driver-core/core.js";
import { HwKindRegistry } from "../platform/hw-kind.js";
import type { IommuHwModel } from "../platform/iommu-hw.js";
import { PhysicalMemory } from "../platform/memory.js";
import { MmioBus } from "../platform/mmio.js";
import { PageAllocator } from "../platform/page-alloc.js";
import { ChrdevRegistry } from "../user/chrdev.js";
import { type Process, type SpawnOptions, UserSpace } from "../user/process.js";
import { assertSingleCoreCopy } from "./copies.js";
import { createMachineContainer, provide } from "./di.js";
import type { KernelModule, ModuleContext } from "./kernel-module.js";
import { Tokens } from "./tokens.js";

/** How the machine's scheduler picks the next task. */
export type SchedulerChoice =
  | "fifo"
  | { kind: "fifo" }
  | { kind: "random"; seed?: number }
  | { kind: "pct"; seed?: number; depth?: number; steps?: number }
  | { kind: "replay"; schedule: string };

/** Options of {@link createMachine}. */
export interface MachineOptions {
  /** The platform: a parsed description, or raw JSON to validate. Default: {@link defaultPlatform}. */
  platform?: PlatformDescription | PlatformInput | unknown;
  /** Kernel modules (drivers, iommufd, …) loaded in this order by `boot()`. */
  modules?: readonly KernelModule[];
  /** Seed for everything random in this machine (random schedulers without their own seed). Default 1. */
  seed?: number;
  /** The scheduling strategy. Default FIFO (deterministic). */
  scheduler?: SchedulerChoice;
  /**
   * Capture a stack on every page free and every `kfree`, shown by double-free and use-after-free reports. Default
   * false (a capture costs more than the free): such a report then says how to turn it on, and turns it on for the
   * frees after it. Every use-after-free and double free is detected and reported either way.
   */
  trackFreeStacks?: boolean;
  /**
   * Capture a stack at every lock acquisition, shown by lock-held and recursion reports. Default false (a capture
   * costs more than the lock operation): such a report then says how to turn it on, and turns it on after it.
   * Every lock check (lockdep order, held at exit or teardown, assertHeld) runs either way.
   */
  trackLockSites?: boolean;
}

/** Thrown by `teardown()` when the machine leaked, warned unexpectedly, or still held a lock. */
export class TeardownError extends Error {
  constructor(readonly report: string) {
    super(`machine teardown found problems:\n${report}`);
    this.name = "TeardownError";
  }
}

function strategyFor(choice: SchedulerChoice | undefined, seed: number): ScheduleStrategy {
  if (choice === undefined || choice === "fifo") return new FifoStrategy();
  switch (choice.kind) {
    case "fifo":
      return new FifoStrategy();
    case "random":
      return new RandomStrategy(choice.seed ?? seed);
    case "pct": {
      const opts: { depth?: number; steps?: number } = {};
      if (choice.depth !== undefined) opts.depth = choice.depth;
      if (choice.steps !== undefined) opts.steps = choice.steps;
      return new PctStrategy(choice.seed ?? seed, opts);
    }
    case "replay":
      return new ReplayStrategy(choice.schedule);
  }
}

/**
 * One simulated machine: its own DI container holding one of every kernel service, its hardware, and the modules
 * it loads. Nothing is shared between two machines.
 * @linux the whole system: start_kernel through device probing, and shutdown
 */
export class Machine {
  readonly container: DependencyContainer;
  readonly platform: PlatformDescription;
  readonly seed: number;
  readonly diag: Diagnostics;
  readonly faults: FaultInjector;
  readonly scheduler: Scheduler;
  readonly rcu: Rcu;
  readonly refs: RefTracker;
  readonly modules: ModuleRegistry;
  readonly memory: PhysicalMemory;
  readonly pages: PageAllocator;
  readonly mmio: MmioBus;
  readonly hwKinds: HwKindRegistry;
  readonly driverCore: DriverCore;
  readonly dma: DmaRouter;
  /** Char devices kernel modules register (`/dev/iommu`), opened by processes. @linux the misc/cdev maps */
  readonly chrdevs: ChrdevRegistry;
  /** Processes, users and user pages of this machine. */
  readonly userSpace: UserSpace;
  /** IOMMU hardware models by IOMMU name (only kinds some loaded package registered). */
  readonly hw: ReadonlyMap<string, IommuHwModel>;
  /** Modules in load order, with their per-machine owners. */
  private readonly kernelModules: { km: KernelModule; owner: Module }[];
  private state: "created" | "booting" | "booted" | "torn-down" = "created";
  private readonly shutdownHooks: (() => Promise<void>)[] = [];

  /** Use {@link createMachine}. */
  constructor(opts: MachineOptions = {}) {
    this.seed = opts.seed ?? 1;
    const kinds = (opts.modules ?? []).flatMap((km) => (km.hardware ?? []).map((h) => h.kind));
    this.platform = opts.platform === undefined ? defaultPlatform() : toDescription(opts.platform, kinds);
    this.container = createMachineContainer();
    this.diag = new Diagnostics();
    this.diag.captureFreeStacks = opts.trackFreeStacks ?? false;
    this.faults = new FaultInjector();
    this.scheduler = new Scheduler(this.diag, { strategy: strategyFor(opts.scheduler, this.seed) });
    this.scheduler.lockdep.captureSites = opts.trackLockSites ?? false;
    this.rcu = new Rcu(this.scheduler, this.diag);
    this.refs = new RefTracker(this.diag);
    this.refs.install();
    this.modules = new ModuleRegistry(this.diag);
    this.memory = new PhysicalMemory({ size: this.platform.memory.size, faults: this.faults, diag: this.diag });
    this.pages = new PageAllocator(this.memory, {
      faults: this.faults,
      diag: this.diag,
      recordFreeStacks: opts.trackFreeStacks ?? false,
    }).install();
    this.mmio = new MmioBus();
    this.hwKinds = new HwKindRegistry();
    const names = new Set<string>();
    this.kernelModules = (opts.modules ?? []).map((km) => {
      if (names.has(km.name)) throw kerr("EEXIST", `module ${km.name} is listed twice`);
      names.add(km.name);
      for (const h of km.hardware ?? []) this.hwKinds.register(h.kind, h.factory);
      return { km, owner: new Module(km.name, this.diag) };
    });
    this.hw = this.hwKinds.instantiate(this.platform, { memory: this.memory, diag: this.diag, mmio: this.mmio });
    this.driverCore = new DriverCore({ diag: this.diag, refs: this.refs });
    this.dma = new DmaRouter(this.driverCore, this.memory, this.hw);
    this.chrdevs = new ChrdevRegistry(this.diag);
    this.userSpace = new UserSpace({
      pages: this.pages,
      diag: this.diag,
      refs: this.refs,
      scheduler: this.scheduler,
      chrdevs: this.chrdevs,
    }).install();

    const c = this.container;
    provide(c, Tokens.machine, this);
    provide(c, Tokens.diagnostics, this.diag);
    provide(c, Tokens.faults, this.faults);
    provide(c, Tokens.scheduler, this.scheduler);
    provide(c, Tokens.rcu, this.rcu);
    provide(c, Tokens.refs, this.refs);
    provide(c, Tokens.modules, this.modules);
    provide(c, Tokens.memory, this.memory);
    provide(c, Tokens.pages, this.pages);
    provide(c, Tokens.mmio, this.mmio);
    provide(c, Tokens.hwKinds, this.hwKinds);
    provide(c, Tokens.driverCore, this.driverCore);
    provide(c, Tokens.dma, this.dma);
    provide(c, Tokens.chrdevs, this.chrdevs);
    provide(c, Tokens.userSpace, this.userSpace);
    for (const { km } of this.kernelModules) km.register?.(c);
  }

  /** Whether `boot()` has completed. */
  get booted(): boolean {
    return this.state === "booted";
  }

  /**
   * Populate the platform's buses and devices, then load every module in order (each module's init runs with
   * this machine and its owner). A module whose init fails is not loaded and the error is rethrown.
   * @linux start_kernel's do_initcalls with of_platform_populate
   */
  async boot(): Promise<void> {
    if (this.state !== "created") throw kerr("EBUSY", `machine cannot boot: it is ${this.state}`);
    this.state = "booting";
    await this.driverCore.fromDescription(this.platform);
    for (const { km, owner } of this.kernelModules) {
      const ctx: ModuleContext = { machine: this, owner };
      await this.modules.load(owner, {
        init: km.init ? () => km.init!(ctx) : undefined,
        exit: km.exit ? () => km.exit!(ctx) : undefined,
      } as Parameters<ModuleRegistry["load"]>[1]);
    }
    this.state = "booted";
  }

  /**
   * The endpoint device `name`, for DMA. Throws ENODEV when the platform has no such device.
   * @linux the struct device a driver issues DMA for
   */
  device(name: string): EndpointDevice {
    if (!this.driverCore.deviceFor(name)) throw kerr("ENODEV", `no device named ${name}`);
    return this.dma.endpoint(name);
  }

  /**
   * Start a user process: root with every capability unless `uid`/`capabilities` say otherwise, an empty fd table
   * and address space. Processes still running at teardown are exited first.
   * @linux fork + exec of a new program
   */
  spawnProcess(opts: SpawnOptions = {}): Process {
    if (this.state === "torn-down") throw kerr("EINVAL", "machine was torn down");
    return this.userSpace.spawn(opts);
  }

  /** The per-machine owner `Module` of a kernel module passed to `createMachine`. */
  moduleOwner(name: string): Module | undefined {
    return this.kernelModules.find((k) => k.km.name === name)?.owner;
  }

  /**
   * Run `hook` at teardown before modules are unloaded, last added first (e.g. the iommu core unbinding IOMMU
   * drivers so their modules are no longer referenced by probed devices).
   * @linux the reboot notifier chain / device_shutdown ordering
   */
  addShutdownHook(hook: () => Promise<void>): void {
    this.shutdownHooks.push(hook);
  }

  /**
   * Shut the machine down and check it: unload modules (last first), remove every device, let remaining tasks
   * finish, run pending RCU callbacks, then run every teardown check. Throws {@link TeardownError} with a readable
   * report when anything leaked, warned unexpectedly, or a lock is still held. Calling it twice is an error.
   * @linux kernel shutdown, with kmemleak/lockdep/KASAN reports
   */
  async teardown(): Promise<void> {
    if (this.state === "torn-down") throw kerr("EINVAL", "machine was already torn down");
    this.state = "torn-down";
    await this.scheduler.runUntilIdle();
    // User space goes first: closing its files releases what it holds in modules (iommufd contexts, devices).
    await this.userSpace.exitAll();
    for (const hook of [...this.shutdownHooks].reverse()) await hook();
    const stuck = await this.modules.unloadAll();
    for (const name of stuck) this.diag.report("leak", `module ${name} could not be unloaded`, { culprit: name });
    await this.driverCore.teardown();
    await this.scheduler.runUntilIdle();
    await this.rcu.rcuBarrier();
    this.diag.runTeardownChecks();
    const report = this.diag.formatReport();
    if (report !== undefined) throw new TeardownError(report);
  }

  /** Whether `teardown()` has been called. */
  get tornDown(): boolean {
    return this.state === "torn-down";
  }

  /**
   * `await using m = await createMachine(...)`: tears the machine down when the scope ends, unless the code in the
   * scope already called `teardown()`. A leak, unexpected warning or held lock rejects with the same
   * {@link TeardownError} as `teardown()` (when the scope itself threw, JavaScript reports both in a
   * `SuppressedError`).
   * @linux kernel shutdown at the end of a test run (what `teardown()` mirrors)
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.state !== "torn-down") await this.teardown();
  }
}

function toDescription(p: unknown, kinds: readonly string[]): PlatformDescription {
  return isPlatformDescription(p) ? p : parsePlatform(p, { kinds });
}

/**
 * Build a machine in its own DI container (nothing is shared with other machines), with the platform's hardware
 * and the given modules registered but not loaded. Call `boot()` next. Throws {@link DuplicateCoreError} when a
 * second copy of @iommu-sim/core is loaded in the process (drivers of one copy are invisible to the other).
 * @linux the machine a kernel boots on
 */
export async function createMachine(opts: MachineOptions = {}): Promise<Machine> {
  assertSingleCoreCopy();
  return new Machine(opts);
}
