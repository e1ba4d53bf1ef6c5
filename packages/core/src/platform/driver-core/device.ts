/**
 * Devices as the driver core sees them: name, bus, firmware node, firmware-described IOMMU linkage, PCI identity,
 * driver binding state, and the slots the IOMMU core fills in.
 */
import type { DevIommu } from "../../iommu/dev-iommu.js";
import type { IommuGroup } from "../../iommu/group.js";
import type { Diagnostics } from "../../kernel/diagnostics.js";
import { Kref } from "../../kernel/kref.js";
import type { RefTracker } from "../../kernel/ref-tracker.js";
import { assertLive, kfree } from "../../kernel/slab.js";
import type { Bus } from "./bus.js";
import type { DeviceDriver } from "./driver.js";
import type { FwNode } from "./fwnode.js";

/**
 * A phandle plus specifier cells, one entry of a DT `iommus` property.
 * @linux struct of_phandle_args
 */
export interface OfPhandleArgs {
  /** The IOMMU's node. */
  fwnode: FwNode;
  /** Specifier cells; for most IOMMUs args[0] is the stream/master ID. */
  args: readonly number[];
}

/**
 * A memory-mapped register window of a platform device.
 * @linux struct resource (IORESOURCE_MEM)
 */
export interface Resource {
  name: string;
  start: number;
  size: number;
}

/**
 * The PCI identity and capabilities of a PCI function.
 * @linux struct pci_dev (the fields the IOMMU subsystem reads)
 */
export interface PciInfo {
  /** PCI segment (domain). @linux pci_domain_nr */
  segment: number;
  /** Bus number. @linux pdev->bus->number */
  busNr: number;
  /** dev << 3 | fn. @linux pdev->devfn */
  devfn: number;
  /** The 16-bit requester ID, busNr << 8 | devfn. @linux pci_dev_id */
  rid: number;
  /** `"BB:DD.F"`. */
  bdf: string;
  /** Extra requester IDs its DMA may carry, as RIDs on the same segment. @linux pdev->dma_alias_mask */
  aliases: readonly number[];
  /** ATS capability. @linux pdev->ats_cap */
  ats: boolean;
  /** PRI capability. @linux pdev->pri_cap */
  pri: boolean;
  /** PASID width in bits, 0 without a PASID capability. @linux pci_max_pasids */
  pasidBits: number;
  /** ACS capability with the requested controls on this function. @linux pdev->acs_cap */
  acs: boolean;
  /** Multi-function device. @linux pdev->multifunction */
  multifunction: boolean;
}

/** Where a device is in its life. @linux device_is_registered / kobj state */
export type DeviceState = "initialized" | "added" | "deleted";

/** What {@link Device}'s constructor takes. @linux device_initialize + the fields set before device_add */
export interface DeviceInit {
  name: string;
  bus: Bus;
  parent?: Device;
  fwnode?: FwNode;
  /** DT compatible string (for IOMMU platform devices: the IOMMU kind). */
  compatible?: string;
  resources?: Resource[];
  /** DT `iommus` of a platform device. */
  iommus?: OfPhandleArgs[];
  pci?: PciInfo;
  /** Free-form platform data (an IOMMU's feature options). */
  platformData?: Record<string, unknown>;
  /** Holder tag of the creator's reference (default `"device_register"`). */
  initialHolder?: string;
}

/**
 * A device. Reference counted with holder tags: `get(holder)` / `put(holder)`; the creator holds the first
 * reference (tag `"device_register"`), dropped by `DriverCore.deviceUnregister`.
 * @linux struct device
 */
export class Device {
  readonly name: string;
  readonly bus: Bus;
  readonly parent: Device | undefined;
  /** @linux dev->fwnode / dev->of_node */
  readonly fwnode: FwNode | undefined;
  /** @linux of_device_is_compatible */
  readonly compatible: string | undefined;
  readonly resources: readonly Resource[];
  /** Firmware-described IOMMU linkage of a DT platform device. @linux the node's `iommus` property */
  readonly of: { readonly iommus: readonly OfPhandleArgs[] };
  /** PCI identity; undefined for platform devices. @linux to_pci_dev */
  readonly pci: PciInfo | undefined;
  readonly platformData: Record<string, unknown>;
  /** Per-device IOMMU state, owned by the IOMMU core. @linux dev->iommu (struct dev_iommu) */
  iommu: DevIommu | undefined = undefined;
  /** The device's IOMMU group, owned by the IOMMU core. @linux dev->iommu_group */
  iommuGroup: IommuGroup | undefined = undefined;
  /** The bound driver. @linux dev->driver */
  driver: DeviceDriver | undefined = undefined;
  /** The bound driver's private data. @linux dev_get_drvdata */
  driverData: unknown = undefined;
  /** The errno of the last failed probe (0 when none). */
  probeError = 0;
  state: DeviceState = "initialized";
  /** @linux dev->kobj.kref */
  readonly kref: Kref;
  private readonly releaseHooks: (() => void)[] = [];
  private readonly diag: Diagnostics;

  /** @linux device_initialize */
  constructor(diag: Diagnostics, init: DeviceInit, tracker?: RefTracker) {
    this.diag = diag;
    this.name = init.name;
    this.bus = init.bus;
    this.parent = init.parent;
    this.fwnode = init.fwnode;
    this.compatible = init.compatible;
    this.resources = init.resources ?? [];
    this.of = { iommus: init.iommus ?? [] };
    this.pci = init.pci;
    this.platformData = init.platformData ?? {};
    this.kref = new Kref(diag, `device ${init.name}`, () => this.release(), tracker, {
      initialHolder: init.initialHolder ?? "device_register",
    });
  }

  /**
   * Take a reference for `holder`; returns the device for chaining.
   * @linux get_device
   */
  get(holder = "anon"): this {
    assertLive(this.diag, this, `device ${this.name}`);
    this.kref.get(holder);
    return this;
  }

  /**
   * Drop `holder`'s reference; returns true when it was the last one and the device was released.
   * @linux put_device
   */
  put(holder = "anon"): boolean {
    return this.kref.put(holder);
  }

  /** Run `fn` when the last reference goes. @linux dev->release / devres on release */
  onRelease(fn: () => void): void {
    this.releaseHooks.push(fn);
  }

  /** Whether `device_add` completed and `device_del` has not run. @linux device_is_registered */
  get registered(): boolean {
    return this.state === "added";
  }

  /** Whether it is a PCI function. @linux dev_is_pci */
  get isPci(): boolean {
    return this.pci !== undefined;
  }

  /** @linux dev_name */
  toString(): string {
    return this.name;
  }

  /** A short form for test-runner diffs and JSON (the object graph reaches the whole machine). @linux dev_name */
  toJSON(): string {
    return `Device(${this.name})`;
  }

  /** A short form for `util.inspect` / console.log. @linux dev_name */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toJSON();
  }

  private release(): void {
    for (const fn of this.releaseHooks.splice(0)) fn();
    kfree(this.diag, this, `device ${this.name}`);
  }
}
