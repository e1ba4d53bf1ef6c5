/**
 * Shared fixture of the group/domain/attach/map tests: a stub IOMMU driver whose paging domains sit on the generic
 * page-table engine (mock format, 2 KiB / 1 MiB pages) and which records every call, plus helpers that "probe" a
 * device the way part A does (dev_iommu with an instance) and release it again.
 */

import { DevIommu, devIommu, devIommuFree } from "../../src/iommu/dev-iommu.js";
import { IommuDomain } from "../../src/iommu/domain.js";
import {
  genericDeviceGroup,
  type IommuGroup,
  iommuGroupAddDevice,
  iommuGroupRemoveDevice,
  pciDeviceGroup,
} from "../../src/iommu/group.js";
import { getIommuCore, type IommuCore } from "../../src/iommu/iommu-core.js";
import { IommuDevice } from "../../src/iommu/iommu-device.js";
import { IOMMU_DOMAIN, type IommuDomainOps, type IommuOps, type IommuResvRegion } from "../../src/iommu/types.js";
import { KernelError } from "../../src/kernel/errno.js";
import { createMachine, type Machine } from "../../src/machine/machine.js";
import { IoPageTable } from "../../src/pgtable/engine.js";
import { mockFormat } from "../../src/pgtable/fmt/mock.js";
import type { IotlbGather } from "../../src/pgtable/gather.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import type { Device } from "../../src/platform/driver-core/device.js";

/** The mock selftest aperture. */
export const MOCK_APERTURE_START = 1 << 24;
export const MOCK_APERTURE_LAST = 2 ** 31 - 1;

/** A paging domain of the stub driver. */
export class StubDomain extends IommuDomain {
  readonly pt: IoPageTable;
  constructor(
    readonly driver: StubDriver,
    ops: IommuDomainOps,
  ) {
    const m = driver.machine;
    const pt = new IoPageTable(mockFormat, m.memory, m.pages, { ias: 32, oas: 48, diag: m.diag });
    super({
      ops,
      pgsizeBitmap: driver.opts.pgsizeBitmap ?? pt.pgsizeBitmap,
      geometry: { apertureStart: MOCK_APERTURE_START, apertureEnd: MOCK_APERTURE_LAST, forceAperture: true },
      name: `stub${driver.nextId++}`,
    });
    this.pt = pt;
  }
}

/** Knobs of the stub driver. */
export interface StubOptions {
  identity?: boolean;
  blocked?: boolean;
  /** Page sizes of the paging domains (default: the engine's, 2 KiB | 1 MiB). */
  pgsizeBitmap?: number;
  deviceGroup?: "generic" | "pci" | "none";
  defDomainType?: (dev: Device) => number;
  resv?: (dev: Device) => IommuResvRegion[];
  /** Paging domains support PASID attach. */
  pasid?: boolean;
  capable?: (dev: Device, cap: number) => boolean;
}

/** One recorded driver call. */
export type StubCall =
  | { op: "attach"; dev: string; domain: string; old: string | undefined }
  | { op: "setDevPasid"; dev: string; pasid: number; domain: string; old: string | undefined }
  | { op: "map"; iova: number; paddr: number; pgsize: number; pgcount: number }
  | { op: "unmap"; iova: number; pgsize: number; pgcount: number }
  | { op: "iotlbSync" }
  | { op: "flushAll" }
  | { op: "free"; domain: string };

/** A stub IOMMU driver. `failAttach` makes attachDev throw for the (domain, dev) pairs it returns true for. */
export class StubDriver {
  readonly ops: IommuOps;
  readonly pagingOps: IommuDomainOps;
  readonly calls: StubCall[] = [];
  /** Current translation of each device's RID, as the driver programmed it. */
  readonly attached = new Map<Device, IommuDomain>();
  /** Current translation of each (device, PASID). */
  readonly pasids = new Map<string, IommuDomain>();
  failAttach: (domain: IommuDomain, dev: Device) => boolean = () => false;
  failPasid: (domain: IommuDomain, dev: Device, pasid: number) => boolean = () => false;
  nextId = 0;
  readonly iommu: IommuDevice;
  readonly freedDomains: IommuDomain[] = [];

  constructor(
    readonly machine: Machine,
    readonly core: IommuCore,
    readonly opts: StubOptions = {},
  ) {
    const drv = this;
    const attachDev = async (domain: IommuDomain, dev: Device, old: IommuDomain | undefined) => {
      drv.calls.push({ op: "attach", dev: dev.name, domain: domain.name, old: old?.name });
      if (drv.failAttach(domain, dev)) throw new KernelError("EIO", "attach refused");
      drv.attached.set(dev, domain);
    };
    const setDevPasid = async (domain: IommuDomain, dev: Device, pasid: number, old: IommuDomain | undefined) => {
      drv.calls.push({ op: "setDevPasid", dev: dev.name, pasid, domain: domain.name, old: old?.name });
      if (drv.failPasid(domain, dev, pasid)) throw new KernelError("EIO", "pasid refused");
      if (domain.type === IOMMU_DOMAIN.BLOCKED) drv.pasids.delete(`${dev.name}/${pasid}`);
      else drv.pasids.set(`${dev.name}/${pasid}`, domain);
    };
    this.pagingOps = {
      attachDev,
      ...(opts.pasid ? { setDevPasid } : {}),
      mapPages(domain, iova, paddr, pgsize, pgcount, prot, gather: IotlbGather) {
        drv.calls.push({ op: "map", iova, paddr, pgsize, pgcount });
        return (domain as StubDomain).pt.map(iova, paddr, pgsize, pgcount, prot, gather);
      },
      unmapPages(domain, iova, pgsize, pgcount, gather) {
        drv.calls.push({ op: "unmap", iova, pgsize, pgcount });
        return (domain as StubDomain).pt.unmap(iova, pgsize, pgcount, gather);
      },
      iovaToPhys(domain, iova) {
        return (domain as StubDomain).pt.iovaToPhys(iova);
      },
      iotlbSync(_domain, gather) {
        drv.calls.push({ op: "iotlbSync" });
        gather.freePages(drv.machine.pages);
      },
      flushIotlbAll() {
        drv.calls.push({ op: "flushAll" });
      },
      free(domain) {
        drv.calls.push({ op: "free", domain: domain.name });
        drv.freedDomains.push(domain);
        (domain as StubDomain).pt.free();
      },
    };
    const staticOps: IommuDomainOps = { attachDev, setDevPasid };
    const ops: IommuOps = {
      pgsizeBitmap: 0,
      async domainAllocPaging() {
        return new StubDomain(drv, drv.pagingOps);
      },
      async domainAllocPagingFlags(_dev, flags) {
        if (flags & ~0b1) throw new KernelError("EOPNOTSUPP", "flags");
        return new StubDomain(drv, drv.pagingOps);
      },
    };
    if (opts.identity !== false) {
      ops.identityDomain = new IommuDomain({ ops: staticOps, type: IOMMU_DOMAIN.IDENTITY, name: "stub-identity" });
    }
    if (opts.blocked !== false) {
      ops.blockedDomain = new IommuDomain({ ops: staticOps, type: IOMMU_DOMAIN.BLOCKED, name: "stub-blocked" });
    }
    if (opts.defDomainType) ops.defDomainType = opts.defDomainType;
    if (opts.resv) ops.getResvRegions = opts.resv;
    if (opts.capable) ops.capable = opts.capable;
    if (opts.deviceGroup !== "none") {
      const kind = opts.deviceGroup ?? "pci";
      ops.deviceGroup = async (dev) =>
        kind === "pci" && dev.pci ? pciDeviceGroup(core, dev) : genericDeviceGroup(core, dev);
    }
    this.ops = ops;
    this.iommu = new IommuDevice({ name: "stub-iommu", maxPasids: 1 << 20 });
    this.iommu.ops = ops;
  }

  /** Calls of one kind. */
  callsOf<K extends StubCall["op"]>(op: K): Extract<StubCall, { op: K }>[] {
    return this.calls.filter((c): c is Extract<StubCall, { op: K }> => c.op === op);
  }

  /** Give `dev` a dev_iommu pointing at this driver, as part A's iommu_init_device does. */
  initDevice(dev: Device, maxPasids = 0): void {
    const p = new DevIommu(this.core, dev);
    p.iommuDev = this.iommu;
    p.maxPasids = maxPasids;
    dev.iommu = p;
  }

  /** Probe `dev`: dev_iommu, then the group step. */
  async probe(dev: Device, maxPasids = 0): Promise<IommuGroup> {
    this.initDevice(dev, maxPasids);
    try {
      return await iommuGroupAddDevice(this.core, dev, this.hooks());
    } catch (e) {
      // Only a failing deviceGroup leaves dev_iommu behind (part A unwinds it).
      if (devIommu(dev)) devIommuFree(this.core, dev);
      throw e;
    }
  }

  /** Release `dev`: out of its group, dev_iommu freed. */
  async release(dev: Device): Promise<void> {
    await iommuGroupRemoveDevice(this.core, dev, this.hooks());
  }

  /** Part A's deinit steps, reduced to what the stub needs. */
  hooks() {
    return {
      releaseDevice: (dev: Device) => {
        this.attached.delete(dev);
      },
      afterRelease: (dev: Device) => {
        const p = devIommu(dev);
        if (p) p.iommuDev = undefined;
        devIommuFree(this.core, dev);
      },
    };
  }
}

/** A booted machine (default platform unless given), its iommu core and a stub driver. */
export async function stubMachine(
  opts: StubOptions & { platform?: unknown; passthrough?: boolean; strict?: boolean } = {},
) {
  const m = await createMachine({ platform: opts.platform ?? defaultPlatform() });
  await m.boot();
  const core = getIommuCore(m);
  if (opts.passthrough !== undefined) core.groups.options.passthrough = opts.passthrough;
  if (opts.strict !== undefined) core.groups.options.strict = opts.strict;
  const drv = new StubDriver(m, core, opts);
  const dev = (name: string): Device => {
    const d = m.driverCore.deviceFor(name);
    if (!d) throw new Error(`no device ${name}`);
    return d;
  };
  const probed: Device[] = [];
  const probe = async (name: string, maxPasids = 0) => {
    const d = dev(name);
    const g = await drv.probe(d, maxPasids);
    probed.push(d);
    return g;
  };
  /** Release every probed device (last first) and tear the machine down. */
  const teardown = async () => {
    for (const d of probed.reverse()) if (d.iommuGroup) await drv.release(d);
    await m.teardown();
  };
  return { m, core, drv, dev, probe, teardown };
}
