/**
 * One machine booted for a check: the target's platform and driver (plus iommufd when asked), a few helpers the
 * checks share (devices, DMA outcomes, scratch pages), and a teardown that also frees the check's pages.
 */
import {
  createMachine,
  type Device,
  DmaFault,
  defaultPlatformInput,
  type EndpointDevice,
  type IommuGroup,
  type KernelModule,
  type Machine,
  type SchedulerChoice,
} from "@iommu-sim/core";
import { iommufdModule } from "@iommu-sim/iommufd";
import { ConformanceError } from "./errors.js";
import type { ConformanceTarget } from "./target.js";

/** Options of {@link bootTarget}. */
export interface RigOptions {
  seed?: number;
  scheduler?: SchedulerChoice;
  /** Load iommufd after the driver. */
  iommufd?: boolean;
  /** Merge the target's strict-mode options into its IOMMU's platform options. */
  strict?: boolean;
  /** Edit the platform description before parsing. */
  edit?(input: ReturnType<typeof defaultPlatformInput>): void;
}

/** The outcome of one DMA: the bytes read, or "fault". */
export type DmaOutcome = Uint8Array | "fault";

/**
 * A booted machine for one check.
 * @linux a test machine running the driver under test
 */
export class Rig {
  private readonly scratch: number[] = [];
  private torn = false;

  constructor(
    readonly m: Machine,
    readonly target: ConformanceTarget,
  ) {}

  /** The device named `name` (ENODEV-style error naming the target when absent). */
  dev(name: string): Device {
    const d = this.m.driverCore.deviceFor(name);
    if (!d) throw new ConformanceError(`${this.target.name}: the platform has no device "${name}"`);
    return d;
  }

  /** The endpoint `name` (for DMA). */
  ep(name: string): EndpointDevice {
    return this.m.device(name);
  }

  /** The IOMMU group of `dev`, which must have been probed. */
  group(dev: Device): IommuGroup {
    const g = dev.iommuGroup as IommuGroup | undefined;
    if (!g)
      throw new ConformanceError(`${dev.name} has no IOMMU group after probe: probe_device failed or was skipped`);
    return g;
  }

  /** Let the driver consume its queues. */
  async settle(): Promise<void> {
    if (this.target.settle) await this.target.settle(this.m);
    await this.m.scheduler.runUntilIdle();
  }

  /** A zeroed scratch page of `order` (freed at teardown), filled with `fill`. */
  page(fill = 0, order = 0): number {
    const pa = this.m.pages.allocPages(order, "testkit");
    this.scratch.push(pa, order);
    this.m.memory.fill(pa, 4096 << order, fill);
    return pa;
  }

  /** Read `len` bytes at `iova` from `dev`, returning "fault" for a DmaFault. */
  read(dev: string, iova: number, len: number, pasid?: number): DmaOutcome {
    try {
      return this.ep(dev).dmaRead(iova, len, pasid === undefined ? undefined : { pasid });
    } catch (e) {
      if (e instanceof DmaFault) return "fault";
      throw e;
    }
  }

  /** Write `bytes` at `iova` from `dev`: true when it completed, false on a DmaFault. */
  write(dev: string, iova: number, bytes: Uint8Array, pasid?: number): boolean {
    try {
      this.ep(dev).dmaWrite(iova, bytes, pasid === undefined ? undefined : { pasid });
      return true;
    } catch (e) {
      if (e instanceof DmaFault) return false;
      throw e;
    }
  }

  /** Free scratch pages, then tear the machine down (throws its leak/warning report). */
  async teardown(): Promise<void> {
    if (this.torn) return;
    this.torn = true;
    for (let i = 0; i < this.scratch.length; i += 2) this.m.pages.freePages(this.scratch[i]!, this.scratch[i + 1]!);
    await this.m.teardown();
  }
}

/**
 * Boot the target's platform with its driver (and iommufd if asked).
 * @linux booting a kernel with the driver built in
 */
export async function bootTarget(target: ConformanceTarget, opts: RigOptions = {}): Promise<Rig> {
  const input = target.platform ? target.platform() : defaultPlatformInput();
  if (opts.strict && target.caps.strict) {
    const iommu = input.iommus?.find((i) => i.name === target.iommu);
    if (iommu) iommu.options = { ...(iommu.options ?? {}), ...target.caps.strict.options };
  }
  opts.edit?.(input);
  const modules: KernelModule[] = [...(target.modules ?? []), target.driver];
  if (opts.iommufd) modules.push(iommufdModule);
  // The raw description: the machine validates it knowing the hardware kinds its modules ship (a new driver's kind).
  const m = await createMachine({
    platform: input,
    modules,
    seed: opts.seed ?? 1,
    ...(opts.scheduler ? { scheduler: opts.scheduler } : {}),
    ...(target.enabledMutants ? { mutants: target.enabledMutants } : {}),
  });
  await m.boot();
  const rig = new Rig(m, target);
  if (target.setup) {
    try {
      await target.setup(m);
    } catch (e) {
      await rig.teardown().catch(() => {});
      throw e;
    }
  }
  return rig;
}

/** Boot, run `fn`, and always tear down (a teardown failure is reported after `fn`'s own failure). */
export async function withRig<T>(
  target: ConformanceTarget,
  opts: RigOptions,
  fn: (rig: Rig) => Promise<T>,
): Promise<T> {
  const rig = await bootTarget(target, opts);
  let result: T;
  try {
    result = await fn(rig);
  } catch (e) {
    try {
      await rig.teardown();
    } catch {
      // The check's own failure is the one to report.
    }
    throw e;
  }
  await rig.teardown();
  return result;
}
