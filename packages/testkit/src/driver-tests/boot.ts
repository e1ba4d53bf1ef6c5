/**
 * Booting a driver package's own test machines: the default platform with hardware options merged into one IOMMU's
 * description, the driver module built for the test, and every machine a file booted torn down together. The
 * VT-d and AMD packages' test helpers were copies of this; they now call it.
 */
import {
  createMachine,
  type Device,
  defaultPlatformInput,
  type IommuDomain,
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuPagingDomainAllocFlags,
  type KernelModule,
  type Machine,
  parsePlatform,
} from "@iommu-sim/core";

/** The platform description in its JSON input form (what `edit` changes). */
export type PlatformDescription = ReturnType<typeof defaultPlatformInput>;

/** What {@link MachineTracker.boot} needs. */
export interface DriverBootOptions {
  /** The IOMMU instance (platform description name) `hw` is merged into, e.g. "vtd0". */
  iommu: string;
  /** The modules to load, in order (the driver built with the test's options). */
  modules: readonly KernelModule[];
  /** Hardware-model options merged into the IOMMU's platform options. */
  hw?: Record<string, unknown>;
  /** Edit the platform description before `hw` is merged. */
  edit?(input: PlatformDescription): void;
  seed?: number;
}

/**
 * The machines one test file booted, torn down together (from `afterEach`).
 * @linux a kselftest fixture's setup/teardown pair
 */
export class MachineTracker {
  private readonly live: Machine[] = [];

  /** Boot the default platform with `opts.hw` merged into `opts.iommu`'s options. */
  async boot(opts: DriverBootOptions): Promise<Machine> {
    const input = defaultPlatformInput();
    opts.edit?.(input);
    const desc = input.iommus?.find((i) => i.name === opts.iommu);
    if (!desc) throw new Error(`the platform has no IOMMU named ${opts.iommu}`);
    desc.options = { ...(desc.options ?? {}), ...(opts.hw ?? {}) };
    const m = await createMachine({ platform: parsePlatform(input), modules: [...opts.modules], seed: opts.seed ?? 1 });
    this.live.push(m);
    await m.boot();
    return m;
  }

  /** Tear down every machine booted so far (each teardown throws its leak/warning report). */
  async teardownAll(): Promise<void> {
    for (const m of this.live.splice(0)) await m.teardown();
  }
}

/**
 * Claim `name` for DMA ownership, attach a fresh paging domain allocated with `flags`, run `fn`, undo it all.
 * @linux iommu_device_claim_dma_owner + iommu_paging_domain_alloc_flags + iommu_attach_device, and their undo
 */
export async function withPagingDomain<D extends IommuDomain>(
  m: Machine,
  name: string,
  flags: number,
  fn: (d: D, dev: Device) => Promise<void>,
): Promise<void> {
  const dev = m.driverCore.deviceFor(name);
  if (!dev) throw new Error(`no device named ${name}`);
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, flags)) as D;
  try {
    await iommuAttachDevice(d, dev);
    try {
      await fn(d, dev);
    } finally {
      await iommuDetachDevice(d, dev);
    }
  } finally {
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
  }
}
