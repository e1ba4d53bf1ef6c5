/**
 * How endpoint DMA reaches memory: which IOMMU instance a device's transactions go through and with which
 * stream/requester ID (as firmware wires it), and the endpoint's DMA engine that issues reads and writes through
 * that IOMMU's hardware model.
 */
import { KernelError } from "../kernel/errno.js";
import { dmarFindMatchedUnit, ivrsLookup } from "./driver-core/acpi.js";
import type { DriverCore } from "./driver-core/core.js";
import type { Device } from "./driver-core/device.js";
import type { FwNode } from "./driver-core/fwnode.js";
import { ofMapId } from "./driver-core/of.js";
import {
  DmaFault,
  type DmaRequest,
  type DmaTranslation,
  type IommuHwModel,
  newDmaRequest,
  newDmaTranslation,
  type PageResponseRecord,
} from "./iommu-hw.js";
import type { PhysicalMemory } from "./memory.js";

/**
 * Which firmware mechanism ties a device to its IOMMU.
 * - `dt-iommus`: the device node's `iommus` property (ID = args[0]).
 * - `iommu-map`: the PCI host bridge's `iommu-map` (ID = sidBase + RID - ridBase).
 * - `dmar`: a VT-d DRHD's device scope or INCLUDE_PCI_ALL (ID = RID).
 * - `ivrs`: an AMD IVHD device entry (ID = RID, or the entry's alias).
 * - `none`: no IOMMU; DMA reaches memory untranslated.
 * @linux of_iommu_configure / dmar_find_matched_drhd_unit / amd_iommu_rlookup_table
 */
export type DmaMechanism = "dt-iommus" | "iommu-map" | "dmar" | "ivrs" | "none";

/**
 * A device's DMA route.
 * @linux struct iommu_fwspec (iommu_fwnode + ids) for DT; the DRHD / IVHD match for ACPI
 */
export interface DmaRoute {
  device: string;
  mechanism: DmaMechanism;
  /** The IOMMU instance name; undefined for `none`. */
  iommu: string | undefined;
  /** The IOMMU's firmware node. @linux fwspec->iommu_fwnode */
  fwnode: FwNode | undefined;
  /** The stream ID / requester ID the device's transactions carry (its RID, or -1, for `none`). */
  requesterId: number;
  /** Every ID firmware gives the device on that IOMMU (DT devices may have several). @linux fwspec->ids */
  ids: readonly number[];
}

/** The hardware models by IOMMU instance name (a `Map` fits). @linux the IOMMU hardware instances of the machine */
export interface IommuModelLookup {
  get(name: string): IommuHwModel | undefined;
}

/** Attributes of one DMA transfer. @linux the PASID TLP prefix and the privileged/execute request attributes */
export interface DmaOptions {
  /** PASID/SSID carried by the transaction; absent = none. */
  pasid?: number;
  privileged?: boolean;
  exec?: boolean;
}

/**
 * Resolves DMA routes from firmware data and hands out endpoint DMA engines.
 * @linux the platform's DMA topology, as of_dma_configure / acpi_dma_configure discover it
 */
export class DmaRouter {
  private readonly endpoints = new Map<Device, EndpointDevice>();

  constructor(
    readonly core: DriverCore,
    readonly memory: PhysicalMemory,
    private readonly models: IommuModelLookup = new Map(),
  ) {}

  /**
   * The hardware model of an IOMMU instance, if its kind has one.
   * @linux the IOMMU hardware behind an iommu_device
   */
  modelFor(iommu: string): IommuHwModel | undefined {
    return this.models.get(iommu);
  }

  /**
   * The route of `dev` (a device or a device name). Throws ENODEV for an unknown name.
   * @linux of_iommu_configure (of_iommu_configure_dev / of_pci_iommu_init + of_map_id), dmar_find_matched_drhd_unit,
   * rlookup_amd_iommu
   */
  routeFor(dev: Device | string): DmaRoute {
    const d = typeof dev === "string" ? this.core.deviceFor(dev) : dev;
    if (!d) throw new RangeError(`no device named ${String(dev)}`);
    const fw = this.core.firmware;
    const byNode = (node: FwNode) => [...fw.iommus.values()].find((i) => i.fwnode === node)?.name;
    const route = (mechanism: DmaMechanism, fwnode: FwNode, ids: number[]): DmaRoute => ({
      device: d.name,
      mechanism,
      iommu: byNode(fwnode),
      fwnode,
      requesterId: ids[0] ?? 0,
      ids,
    });
    if (!d.pci) {
      const first = d.of.iommus[0];
      if (first) {
        const ids = d.of.iommus.filter((s) => s.fwnode === first.fwnode).map((s) => s.args[0] ?? 0);
        return route("dt-iommus", first.fwnode, ids);
      }
      return { device: d.name, mechanism: "none", iommu: undefined, fwnode: undefined, requesterId: -1, ids: [] };
    }
    const { segment, rid } = d.pci;
    if (d.bus.iommuMap.length > 0) {
      const m = ofMapId(d.bus.iommuMap, rid);
      if (m) return route("iommu-map", m.fwnode, [m.id]);
    }
    const drhd = dmarFindMatchedUnit(fw.dmar, segment, rid);
    if (drhd) return route("dmar", drhd.fwnode, [rid]);
    const ivhd = ivrsLookup(fw.ivrs, segment, rid);
    if (ivhd) return route("ivrs", ivhd.unit.fwnode, [ivhd.requesterId]);
    return { device: d.name, mechanism: "none", iommu: undefined, fwnode: undefined, requesterId: rid, ids: [] };
  }

  /**
   * The DMA engine of endpoint `name` (one object per device). Throws RangeError for an unknown name.
   * @linux the device's bus-master interface
   */
  endpoint(name: string): EndpointDevice {
    const dev = this.core.deviceFor(name);
    if (!dev) throw new RangeError(`no device named ${name}`);
    let ep = this.endpoints.get(dev);
    if (!ep) {
      ep = new EndpointDevice(dev, this.routeFor(dev), this.memory, this.models);
      this.endpoints.set(dev, ep);
    }
    return ep;
  }
}

function checkRange(what: string, iova: number, length: number): void {
  if (!Number.isSafeInteger(iova) || iova < 0) throw new RangeError(`${what}: bad iova ${iova}`);
  if (!Number.isSafeInteger(length) || length < 0 || !Number.isSafeInteger(iova + length)) {
    throw new RangeError(`${what}: bad length ${length}`);
  }
}

/**
 * An endpoint's DMA engine: reads and writes IOVAs through its IOMMU's hardware model, chunk by chunk as the model
 * reports contiguous lengths, or straight to physical memory when it has no IOMMU or its IOMMU has no model.
 * A refused chunk throws {@link DmaFault}; chunks before it have already been transferred, as on real hardware.
 * @linux a PCIe/AXI bus master issuing memory reads and writes
 */
export class EndpointDevice {
  /** The device's name. */
  readonly name: string;
  // One request and one result per endpoint, reused for every chunk (translate is synchronous).
  private readonly req: DmaRequest = newDmaRequest();
  private readonly tr: DmaTranslation = newDmaTranslation();

  constructor(
    readonly device: Device,
    readonly route: DmaRoute,
    private readonly memory: PhysicalMemory,
    private readonly models: IommuModelLookup,
  ) {
    this.name = device.name;
  }

  /** The hardware model its DMA goes through now, if any. */
  get model(): IommuHwModel | undefined {
    return this.route.iommu === undefined ? undefined : this.models.get(this.route.iommu);
  }

  /**
   * Read `length` bytes at `iova`.
   * @linux a DMA read (memory read request) by the device
   */
  dmaRead(iova: number, length: number, opts?: DmaOptions): Uint8Array {
    checkRange(`${this.name} dmaRead`, iova, length);
    const model = this.model;
    if (!model) return this.memory.readBytes(iova, length);
    const out = new Uint8Array(length);
    this.prepare(false, opts);
    let done = 0;
    while (done < length) {
      const n = this.translate(model, iova + done, length - done);
      out.set(this.memory.readBytes(this.tr.pa, n), done);
      done += n;
    }
    return out;
  }

  /**
   * Write `bytes` at `iova`.
   * @linux a DMA write (memory write request) by the device
   */
  dmaWrite(iova: number, bytes: Uint8Array, opts?: DmaOptions): void {
    checkRange(`${this.name} dmaWrite`, iova, bytes.length);
    const model = this.model;
    if (!model) {
      this.memory.writeBytes(iova, bytes);
      return;
    }
    this.prepare(true, opts);
    const length = bytes.length;
    let done = 0;
    while (done < length) {
      const n = this.translate(model, iova + done, length - done);
      this.memory.writeBytes(this.tr.pa, bytes.subarray(done, done + n));
      done += n;
    }
  }

  /**
   * Send a page request for the page at `addr` (PCIe PRI): the device's act, routed to its IOMMU's model with the
   * device's requester ID. Returns whether the IOMMU queued it for the driver (otherwise it answered the request
   * itself). EOPNOTSUPP when the device's IOMMU has no model or its model no PRI.
   * @linux the endpoint's ATS/PRI unit sending a Page Request Message
   */
  pageRequest(req: {
    addr: number;
    pasid?: number;
    read?: boolean;
    write?: boolean;
    exec?: boolean;
    privileged?: boolean;
    grpid: number;
    last?: boolean;
  }): boolean {
    const model = this.model;
    if (!model?.acceptPageRequest)
      throw new KernelError("EOPNOTSUPP", `${this.name}: its IOMMU takes no page requests`);
    return model.acceptPageRequest({
      requesterId: this.route.requesterId,
      pasid: req.pasid ?? -1,
      addr: req.addr,
      read: req.read ?? !req.write,
      write: req.write ?? false,
      exec: req.exec ?? false,
      privileged: req.privileged ?? false,
      grpid: req.grpid,
      last: req.last ?? true,
    });
  }

  /** Page responses this device received, oldest first (IOMMU_PAGE_RESP_* codes). @linux PRG Response Messages */
  pageResponses(): PageResponseRecord[] {
    const all = this.model?.devicePageResponses?.() ?? [];
    return all.filter((r) => r.requesterId === this.route.requesterId);
  }

  private prepare(write: boolean, opts: DmaOptions | undefined): void {
    const r = this.req;
    r.requesterId = this.route.requesterId;
    r.pasid = opts?.pasid ?? -1;
    r.write = write;
    r.exec = opts?.exec ?? false;
    r.privileged = opts?.privileged ?? false;
  }

  /** Translate one chunk at `iova`; returns how many bytes of the remaining `left` it covers. */
  private translate(model: IommuHwModel, iova: number, left: number): number {
    const r = this.req;
    const t = this.tr;
    r.iova = iova;
    t.pa = 0;
    t.length = 0;
    t.faultCode = 0;
    t.faultReason = "";
    model.translate(r, t);
    if (t.faultCode !== 0) {
      throw new DmaFault({
        iova,
        device: this.name,
        iommu: model.name,
        requesterId: r.requesterId,
        pasid: r.pasid,
        write: r.write,
        faultCode: t.faultCode,
        faultReason: t.faultReason,
      });
    }
    if (!(t.length > 0)) {
      throw new Error(`${model.name}: translation of iova 0x${iova.toString(16)} returned no length (model bug)`);
    }
    return Math.min(t.length, left);
  }
}
