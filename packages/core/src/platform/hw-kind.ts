/**
 * The machine's registry of IOMMU hardware kinds: which model factory builds an IOMMU instance of a given kind. A
 * vendor package registers its kind; the machine instantiates one model per IOMMU in the platform description.
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { KernelError } from "../kernel/errno.js";
import type { PlatformDescription } from "./description.js";
import type { HwModelFactory, IommuHwModel } from "./iommu-hw.js";
import type { PhysicalMemory } from "./memory.js";
import type { MmioBus } from "./mmio.js";

/**
 * Hardware-model factories by kind, one registry per machine.
 * @linux the QEMU type registry (type_register_static), for IOMMU device types
 */
export class HwKindRegistry {
  private readonly factories = new Map<string, HwModelFactory>();

  /**
   * Register `factory` for `kind`. Throws EEXIST when the kind already has one.
   * @linux type_register_static
   */
  register(kind: string, factory: HwModelFactory): void {
    if (this.factories.has(kind)) throw new KernelError("EEXIST", `hardware kind "${kind}" is already registered`);
    this.factories.set(kind, factory);
  }

  /**
   * Remove a kind's factory (models already built keep working).
   * @linux type_unregister
   */
  unregister(kind: string): boolean {
    return this.factories.delete(kind);
  }

  /**
   * The factory for `kind`, if registered.
   * @linux type_get_by_name
   */
  get(kind: string): HwModelFactory | undefined {
    return this.factories.get(kind);
  }

  /** Whether `kind` has a factory. @linux object_class_by_name */
  has(kind: string): boolean {
    return this.factories.has(kind);
  }

  /** The registered kinds, in registration order. */
  kinds(): string[] {
    return [...this.factories.keys()];
  }

  /**
   * Build a model for every IOMMU of `desc` whose kind is registered, and map each model's register file on `mmio`
   * at the description's MMIO base (size: the model's `mmioSize`). IOMMUs of unregistered kinds get no model; their
   * devices' DMA then reaches memory untranslated. Returns the models by IOMMU name.
   * @linux qdev_new + sysbus_mmio_map for each IOMMU in the machine description
   */
  instantiate(
    desc: PlatformDescription,
    deps: { memory: PhysicalMemory; diag: Diagnostics; mmio?: MmioBus },
  ): Map<string, IommuHwModel> {
    const models = new Map<string, IommuHwModel>();
    for (const io of desc.iommus) {
      const factory = this.factories.get(io.kind);
      if (!factory) continue;
      const model = factory({ name: io.name, memory: deps.memory, diag: deps.diag, options: { ...io.options } });
      deps.mmio?.map(io.mmio.base, model.mmioSize, model.mmio, io.name);
      models.set(io.name, model);
    }
    return models;
  }
}
