/**
 * The AMD IOMMU driver for one machine: `iommu_ops` and the domain ops, the per-IOMMU probe (device table,
 * command buffer, event and PPR logs), device probe through the ACPI IVRS (the DeviceID from the requester ID, the
 * alias sharing its DTE), v1 paging domains on core's engine, identity and blocked domains, DTE updates followed by
 * INVALIDATE_DEVTAB_ENTRY and COMPLETION_WAIT, unmap flushes with one size-encoded INVALIDATE_IOMMU_PAGES, the
 * event log, and page requests into core's IOPF answered with COMPLETE_PPR_REQUEST.
 * @linux drivers/iommu/amd/iommu.c (amd_iommu_ops, amd_iommu_probe_device, amd_iommu_attach_device,
 * set_dte_entry, amd_iommu_domain_alloc_paging_flags, amd_iommu_iotlb_sync, amd_iommu_get_resv_regions,
 * amd_iommu_page_response, iommu_print_event), init.c, ppr.c
 */
import {
  acpiIommuUnitFor,
  type Device,
  devIommuPrivGet,
  devIommuPrivSet,
  IOMMU_CAP,
  IOMMU_DOMAIN,
  IOMMU_RESV,
  IOMMU_WRITE,
  type IommuCore,
  IommuDomain,
  type IommuDomainOps,
  type IommuOps,
  type IommuPageResponse,
  type IommuResvRegion,
  type IommuUserData,
  IoPageTable,
  type IopfFault,
  type IotlbGather,
  iommuDeviceRegister,
  iommuDeviceUnregister,
  iommuPciOrGenericDeviceGroup,
  iopfFaultFromRequest,
  iopfQueueAlloc,
  iopfQueueFree,
  iopfReportFromDriver,
  kerr,
  type ModuleContext,
  X86_MSI_RANGE_END,
  X86_MSI_RANGE_START,
  XA_LIMIT,
  XArray,
} from "@iommu-sim/core";
import { IommuDevData, ProtectionDomain } from "./domain.js";
import { amdv1Format } from "./io-pgtable-amd.js";
import { AmdIommu, type AmdIommuOptions, type AmdIommuSink } from "./iommu.js";
import { amdIommuHwInfo } from "./iommufd.js";
import {
  type AmdEvent,
  type AmdPprEntry,
  buildCompletePpr,
  buildInvIommuPages,
  buildInvIotlbPages,
  DTE_BIT,
  EVENT_TYPE,
  PPR_FLAG,
} from "./regs.js";

/** Fault-injection sites. */
export const AMD_IOMMU_SITES = {
  devData: "amd_iommu_probe_device",
  domain: "amd_iommu_domain_alloc",
} as const;

/** Largest domain ID + 1. @linux MAX_DOMAIN_ID */
export const MAX_DOMAIN_ID = 65536;
/** HyperTransport reserved range. @linux HT_RANGE_START / HT_RANGE_END */
export const HT_RANGE_START = 0xfd_0000_0000;
export const HT_RANGE_END = 0xff_ffff_ffff;
/** Levels of the v1 tables the driver builds (48-bit IOVA). @linux the amdv1 default (PAGE_MODE_4_LEVEL) */
export const AMD_V1_LEVELS = 4;

/** Driver options. */
export interface AmdIommuDriverOptions extends AmdIommuOptions {}

/** The names iommu_print_event logs. @linux iommu_print_event */
const EVENT_NAMES: Record<number, string> = {
  [EVENT_TYPE.ILL_DEV]: "ILLEGAL_DEV_TABLE_ENTRY",
  [EVENT_TYPE.IO_FAULT]: "IO_PAGE_FAULT",
  [EVENT_TYPE.DEV_TAB_ERR]: "DEV_TAB_HARDWARE_ERROR",
  [EVENT_TYPE.PAGE_TAB_ERR]: "PAGE_TAB_HARDWARE_ERROR",
  [EVENT_TYPE.ILL_CMD]: "ILLEGAL_COMMAND_ERROR",
  [EVENT_TYPE.CMD_HARD_ERR]: "COMMAND_HARDWARE_ERROR",
  [EVENT_TYPE.IOTLB_INV_TO]: "IOTLB_INV_TIMEOUT",
  [EVENT_TYPE.INV_DEV_REQ]: "INVALID_DEVICE_REQUEST",
  [EVENT_TYPE.INV_PPR_REQ]: "INVALID_PPR_REQUEST",
};

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function bdf(devid: number): string {
  const h = (n: number, w: number) => n.toString(16).padStart(w, "0");
  return `${h(devid >> 8, 2)}:${h((devid >> 3) & 0x1f, 2)}.${devid & 7}`;
}

/**
 * Everything one machine's AMD IOMMU driver owns.
 * @linux the file-scope state of amd/iommu.c and init.c (amd_iommu_ops, amd_iommu_list, pdom_ids, the static
 * identity / blocked domains)
 */
export class AmdIommuDriver implements AmdIommuSink {
  readonly ops: IommuOps;
  readonly pagingOps: IommuDomainOps;
  readonly identity: IommuDomain;
  readonly blocked: IommuDomain;
  readonly units = new Map<string, AmdIommu>();
  /** Protection-domain IDs. @linux pdom_ids (IDA) */
  readonly pdomIds: XArray<object>;
  /** The identity domain's ID. @linux identity_domain.id */
  readonly identityId: number;
  private seq = 0;

  constructor(
    readonly ctx: ModuleContext,
    readonly core: IommuCore,
    readonly options: AmdIommuDriverOptions,
  ) {
    this.pdomIds = new XArray<object>(core.machine.faults, "amd_iommu_pdom_id");
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDevice(d as ProtectionDomain, dev, old),
      mapPages: (d, iova, pa, pgsize, count, prot, gather) =>
        (d as ProtectionDomain).pt.map(
          iova,
          pa,
          pgsize,
          count,
          this.machine.mutant("amd:wrong-permission") ? prot | IOMMU_WRITE : prot,
          gather,
        ),
      unmapPages: (d, iova, pgsize, count, gather) => (d as ProtectionDomain).pt.unmap(iova, pgsize, count, gather),
      iovaToPhys: (d, iova) => (d as ProtectionDomain).pt.iovaToPhys(iova),
      flushIotlbAll: (d) => this.domainFlushAll(d as ProtectionDomain),
      iotlbSync: (d, gather) => this.iotlbSync(d as ProtectionDomain, gather),
      enforceCacheCoherency: () => true,
      free: (d) => this.domainFree(d as ProtectionDomain),
    };
    const identity = {};
    this.identityId = this.pdomIds.alloc(identity, XA_LIMIT(1, MAX_DOMAIN_ID - 1));
    this.identity = new IommuDomain({
      type: IOMMU_DOMAIN.IDENTITY,
      name: "amd_identity",
      ops: { attachDev: (_d, dev, old) => this.attachStatic(dev, old, "identity") },
    });
    this.blocked = new IommuDomain({
      type: IOMMU_DOMAIN.BLOCKED,
      name: "amd_blocked",
      ops: { attachDev: (_d, dev, old) => this.attachStatic(dev, old, "blocked") },
    });
    this.ops = {
      owner: ctx.owner,
      hwInfo: (dev, type) => amdIommuHwInfo(this.devData(dev).iommu, type),
      capable: (_dev, cap) => cap === IOMMU_CAP.CACHE_COHERENCY || cap === IOMMU_CAP.DEFERRED_FLUSH,
      domainAllocPaging: (dev) => this.domainAllocPagingFlags(dev, 0, undefined),
      domainAllocPagingFlags: (dev, flags, data) => this.domainAllocPagingFlags(dev, flags, data),
      identityDomain: this.identity,
      blockedDomain: this.blocked,
      releaseDomain: this.blocked,
      probeDevice: async (dev) => this.probeDevice(dev),
      releaseDevice: (dev) => this.releaseDevice(dev),
      deviceGroup: (dev) => iommuPciOrGenericDeviceGroup(this.core, dev),
      getResvRegions: (dev) => this.getResvRegions(dev),
      pageResponse: (dev, fault, msg) => this.pageResponse(dev, fault, msg),
      defaultDomainOps: this.pagingOps,
    };
  }

  private get machine() {
    return this.ctx.machine;
  }

  /** The device data of a probed device. ENODEV otherwise. @linux dev_iommu_priv_get */
  devData(dev: Device): IommuDevData {
    const d = devIommuPrivGet<IommuDevData>(dev);
    if (!(d instanceof IommuDevData)) throw kerr("ENODEV", `${dev.name} is not behind an AMD IOMMU`);
    return d;
  }

  // --- IOMMU probe ----------------------------------------------------------------------------------------------

  /**
   * Bring one IVHD's IOMMU up and register it (which probes its devices and attaches their default domains).
   * @linux init_iommu_one + early_enable_iommu + iommu_device_register (amd_iommu_init_pci)
   */
  async unitProbe(pdev: Device): Promise<AmdIommu> {
    const unit = this.core.driverCore.firmware.ivrs.find((u) => u.iommu === pdev.name);
    if (!unit) throw kerr("ENODEV", `${pdev.name}: no IVHD in the IVRS`);
    const iommu = new AmdIommu(this.core, pdev, this.seq++, unit, this.options);
    iommu.sink = this;
    this.units.set(pdev.name, iommu);
    try {
      iommu.init();
      if (iommu.pprSup) iommu.iopfQueue = iopfQueueAlloc(this.machine, iommu.name);
      await iommuDeviceRegister(this.core, iommu, this.ops);
    } catch (e) {
      this.units.delete(pdev.name);
      await this.unitTeardown(iommu);
      throw e;
    }
    return iommu;
  }

  /** @linux the reverse of unitProbe (amd_iommu_disable + free_iommu_one) */
  async unitRemove(iommu: AmdIommu): Promise<void> {
    await iommuDeviceUnregister(this.core, iommu);
    this.units.delete(iommu.pdev.name);
    await this.unitTeardown(iommu);
  }

  private async unitTeardown(iommu: AmdIommu): Promise<void> {
    await iopfQueueFree(iommu.iopfQueue);
    iommu.iopfQueue = undefined;
    await iommu.teardown();
  }

  // --- device probe ---------------------------------------------------------------------------------------------

  /**
   * Find the device's IOMMU from the IVRS (select, range or alias entry); its DeviceID is its requester ID, and an
   * alias entry gives the DeviceID its DMA carries, whose DTE it shares.
   * @linux amd_iommu_probe_device (rlookup_amd_iommu, iommu_init_device, get_alias)
   */
  async probeDevice(dev: Device): Promise<AmdIommu> {
    this.core.probeLock.assertHeld();
    const pci = dev.pci;
    const unit = acpiIommuUnitFor(this.core, dev);
    if (!pci || unit?.table !== "ivrs") throw kerr("ENODEV", `${dev.name}: not in an IVHD`);
    const iommu = this.units.get(unit.unit.iommu);
    if (!iommu) throw kerr("ENODEV", `${dev.name}: its IOMMU ${unit.unit.iommu} is not probed`);
    if (pci.rid >= iommu.devTableEntries || unit.requesterId >= iommu.devTableEntries) {
      throw kerr("ENODEV", `${dev.name}: DeviceID beyond the device table`);
    }
    if (iommu.devDataById.has(pci.rid)) throw kerr("EBUSY", `${dev.name}: DeviceID already probed`);
    this.core.faults.check(AMD_IOMMU_SITES.devData);
    if (this.machine.mutant("amd:leaked-device-ref")) dev.get("amd_iommu_probe_device"); // test-only mutant
    const pasidBits = Math.min(pci.pasidBits, iommu.pasidBits);
    const data = new IommuDevData(dev, iommu, pci.rid, unit.requesterId, pci.ats, pci.pri && iommu.pprSup, pasidBits);
    devIommuPrivSet(this.core, dev, data);
    iommu.devDataById.set(pci.rid, data);
    return iommu;
  }

  /** @linux amd_iommu_release_device (the core attached the blocked release domain first) */
  releaseDevice(dev: Device): void {
    const data = devIommuPrivGet<IommuDevData>(dev);
    if (!(data instanceof IommuDevData)) return;
    data.iommu.devDataById.delete(data.devid);
  }

  /**
   * The MSI window and the HyperTransport range.
   * @linux amd_iommu_get_resv_regions
   */
  getResvRegions(_dev: Device): IommuResvRegion[] {
    return [
      {
        start: X86_MSI_RANGE_START,
        length: X86_MSI_RANGE_END - X86_MSI_RANGE_START + 1,
        prot: 0,
        type: IOMMU_RESV.MSI,
      },
      { start: HT_RANGE_START, length: HT_RANGE_END - HT_RANGE_START + 1, prot: 0, type: IOMMU_RESV.RESERVED },
    ];
  }

  // --- domains --------------------------------------------------------------------------------------------------

  /**
   * A v1 paging domain with a fresh domain ID. Nesting parents, dirty tracking and user data are not supported
   * here (EOPNOTSUPP).
   * @linux amd_iommu_domain_alloc_paging_flags (do_iommu_domain_alloc, pdom_setup_pgtable)
   */
  async domainAllocPagingFlags(dev: Device, flags: number, data: IommuUserData | undefined): Promise<IommuDomain> {
    this.devData(dev);
    if (flags !== 0 || data) throw kerr("EOPNOTSUPP", "amd: unsupported paging flags");
    this.core.faults.check(AMD_IOMMU_SITES.domain);
    const m = this.machine;
    const token = {};
    const id = this.pdomIds.alloc(token, XA_LIMIT(1, MAX_DOMAIN_ID - 1));
    let domain: ProtectionDomain | undefined;
    try {
      const pt = new IoPageTable(amdv1Format(AMD_V1_LEVELS), m.memory, m.pages, {
        ias: 12 + 9 * AMD_V1_LEVELS,
        oas: 52,
        site: "amd_iommu_pgtable",
        diag: this.core.diag,
        sync: (g: IotlbGather) => {
          if (domain) this.iotlbSync(domain, g);
          else g.freePages(m.pages);
        },
      });
      domain = new ProtectionDomain(this.pagingOps, pt, id);
    } catch (e) {
      this.pdomIds.erase(id);
      throw e;
    }
    domain.owner = this.ops;
    return domain;
  }

  /** @linux amd_iommu_domain_free (protection_domain_free: pdom_id_free) */
  domainFree(d: ProtectionDomain): void {
    this.core.diag.warnOn(d.devices.size > 0, `${d.name}: freed while attached`);
    d.pt.free();
    this.pdomIds.erase(d.id);
  }

  /**
   * The 256-bit DTE of a device for `d`: paging (V, TV, Mode, root, IR, IW, DomainID, PPR, I), identity (mode 0,
   * IR/IW) or blocked (V only).
   * @linux set_dte_entry / amd_iommu_make_clear_dte
   */
  private makeDte(data: IommuDevData, d: ProtectionDomain | "identity" | "blocked"): number[] {
    const w = [0, 0, 0, 0, 0, 0, 0, 0];
    const bit = (b: bigint) => {
      const n = Number(b);
      w[n >> 5] = (w[n >> 5]! | (1 << (n & 31))) >>> 0;
    };
    bit(DTE_BIT.V);
    if (d === "blocked") return w;
    bit(DTE_BIT.TV);
    bit(DTE_BIT.IR);
    bit(DTE_BIT.IW);
    let did = this.identityId;
    if (d instanceof ProtectionDomain) {
      w[0] = (w[0]! | (d.mode << Number(DTE_BIT.MODE_SHIFT)) | (d.pt.root % 2 ** 32)) >>> 0;
      w[1] = (w[1]! | Math.floor(d.pt.root / 2 ** 32)) >>> 0;
      did = d.id;
      if (data.pri) bit(DTE_BIT.PPR);
    }
    w[2] = did & 0xffff;
    if (data.atsEnabled) w[3] = (w[3]! | 1) >>> 0;
    return w;
  }

  /** Write the DTE of the device and of its alias, invalidate both and wait. @linux amd_iommu_update_dte256 + clone_aliases + device_flush_dte */
  private updateDte(data: IommuDevData, dte: number[]): void {
    const iommu = data.iommu;
    for (const id of data.devids) iommu.writeDte(id, dte);
    for (const id of data.devids) iommu.flushDte(id);
    iommu.completionWait();
  }

  /** Take the device off its previous paging domain: flush that domain's IOTLB entries. @linux detach_device / pdom_detach_iommu */
  private detachOld(data: IommuDevData): void {
    const old = data.domain;
    if (!(old instanceof ProtectionDomain)) return;
    old.devices.delete(data);
    const n = (old.iommus.get(data.iommu) ?? 1) - 1;
    if (n === 0) old.iommus.delete(data.iommu);
    else old.iommus.set(data.iommu, n);
    data.iommu.queueCommand(buildInvIommuPages(0, 2 ** 52, old.id));
    data.iommu.completionWait();
  }

  /** @linux amd_iommu_attach_device (attach_device, pdom_attach_iommu, dev_update_dte) */
  async attachDevice(d: ProtectionDomain, dev: Device, _old: IommuDomain | undefined): Promise<void> {
    const data = this.devData(dev);
    if (data.domain === d) return;
    d.iommus.set(data.iommu, (d.iommus.get(data.iommu) ?? 0) + 1);
    d.devices.add(data);
    if (data.atsSupported) data.atsEnabled = true;
    this.updateDte(data, this.makeDte(data, d));
    this.detachOld(data);
    data.domain = d;
  }

  /** @linux identity_domain_attach_dev / blocked_domain_attach_device */
  async attachStatic(dev: Device, _old: IommuDomain | undefined, kind: "identity" | "blocked"): Promise<void> {
    const data = this.devData(dev);
    if (kind === "blocked") data.atsEnabled = false;
    this.updateDte(data, this.makeDte(data, kind));
    this.detachOld(data);
    data.domain = kind === "identity" ? this.identity : this.blocked;
  }

  // --- invalidation ---------------------------------------------------------------------------------------------

  /**
   * Flush [address, address + size) of a domain on every IOMMU it is attached through: one size-encoded
   * INVALIDATE_IOMMU_PAGES per IOMMU, INVALIDATE_IOTLB_PAGES per ATS device, then COMPLETION_WAIT.
   * @linux amd_iommu_domain_flush_pages (__domain_flush_pages, domain_flush_complete)
   */
  domainFlushPages(d: ProtectionDomain, address: number, size: number): void {
    for (const iommu of d.iommus.keys()) iommu.queueCommand(buildInvIommuPages(address, size, d.id));
    for (const data of d.devices) {
      if (data.atsEnabled) data.iommu.queueCommand(buildInvIotlbPages(data.devid, 32, address, size));
    }
    for (const iommu of d.iommus.keys()) iommu.completionWait();
  }

  /** @linux amd_iommu_flush_iotlb_all / amd_iommu_domain_flush_all */
  domainFlushAll(d: ProtectionDomain): void {
    this.domainFlushPages(d, 0, 2 ** 52);
  }

  /** @linux amd_iommu_iotlb_sync */
  iotlbSync(d: ProtectionDomain, gather: IotlbGather): void {
    if (
      gather.end >= gather.start &&
      gather.end > 0 &&
      !this.options.skipIotlbFlush &&
      !this.machine.mutant("amd:skip-invalidation")
    ) {
      this.domainFlushPages(d, gather.start, gather.end - gather.start + 1);
    }
    gather.freePages(this.machine.pages);
  }

  // --- events and page requests ---------------------------------------------------------------------------------

  /** Log one event as Linux prints it. @linux iommu_print_event */
  handleEvent(iommu: AmdIommu, ev: AmdEvent): void {
    const name = EVENT_NAMES[ev.type] ?? `UNKNOWN type=${hex(ev.type)}`;
    const dev = (iommu.devDataById.get(ev.devid) as IommuDevData | undefined)?.dev.name;
    // IO_PAGE_FAULT carries the domain ID in the PASID field (amd_iommu_report_page_fault prints it so).
    const id = ev.type === EVENT_TYPE.IO_FAULT ? `domain=${hex(ev.pasid)}` : `pasid=${hex(ev.pasid)}`;
    this.machine.diag.printk(
      "err",
      `Event logged [${name} device=${bdf(ev.devid)} ${id} address=${hex(ev.address)} flags=${hex(ev.flags)}]`,
      dev ?? iommu.pdev.name,
    );
  }

  /**
   * A PPR log entry: report it to core's IOPF for the device, or answer it with a failure when no device owns it.
   * @linux amd_iommu_handle_ppr_log / iommu_call_iopf_notifier (ppr.c)
   */
  async handlePpr(iommu: AmdIommu, req: AmdPprEntry): Promise<void> {
    const data = iommu.devDataById.get(req.devid) as IommuDevData | undefined;
    const gn = (req.flags & PPR_FLAG.GN) !== 0;
    if (!data) {
      iommu.queueCommand(buildCompletePpr(req.devid, req.pasid, 1, req.tag, gn));
      iommu.completionWait();
      return;
    }
    const f = iopfFaultFromRequest({
      pasid: gn ? req.pasid : -1,
      grpid: req.tag & 0x1ff,
      addr: req.address,
      read: (req.flags & PPR_FLAG.READ) !== 0,
      write: (req.flags & PPR_FLAG.WRITE) !== 0,
      exec: (req.flags & PPR_FLAG.EXEC) !== 0,
      priv: (req.flags & PPR_FLAG.US) === 0,
      last: true,
      responseNeedsPasid: gn,
    });
    await iopfReportFromDriver(data.dev, f);
  }

  /** COMPLETE_PPR_REQUEST for a page response. @linux amd_iommu_page_response */
  pageResponse(dev: Device, fault: IopfFault, msg: IommuPageResponse): void {
    const data = this.devData(dev);
    const prm = fault.fault.prm;
    const gn = (prm.flags & 1) !== 0;
    data.iommu.queueCommand(buildCompletePpr(data.devid, prm.pasid, msg.code, msg.grpid, gn));
    data.iommu.completionWait();
  }
}
