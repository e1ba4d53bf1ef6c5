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
  IOMMU_HWPT_ALLOC,
  IOMMU_RESV,
  IOMMU_WRITE,
  type IommuCore,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IommuOps,
  type IommuPageResponse,
  type IommuResvRegion,
  type IommuUserData,
  type IommuViommu,
  IoPageTable,
  type IopfFault,
  type IotlbGather,
  iommuDeviceRegister,
  iommuDeviceUnregister,
  iommuPciOrGenericDeviceGroup,
  iopfFaultFromRequest,
  iopfQueueAddDevice,
  iopfQueueAlloc,
  iopfQueueFlushDev,
  iopfQueueFree,
  iopfQueueRemoveDevice,
  iopfReportFromDriver,
  kerr,
  type ModuleContext,
  X86_MSI_RANGE_END,
  X86_MSI_RANGE_START,
  XA_LIMIT,
  XArray,
  x86_64Format,
} from "@iommu-sim/core";
import { AmdNestedDomain, AmdViommu, IommuDevData, PD_MODE, ProtectionDomain } from "./domain.js";
import { Gcr3Table } from "./gcr3.js";
import { amdv1Format } from "./io-pgtable-amd.js";
import { AmdIommu, type AmdIommuOptions, type AmdIommuSink } from "./iommu.js";
import { amdIommuHwInfo, amdViommuSize, copyAmdGuestDte, IOMMU_HWPT_DATA_AMD_GUEST } from "./iommufd.js";
import { dteApplyGuest, gdomGet, gdomPut, gdteDomainId, validateGdteNested } from "./nested.js";
import {
  type AmdEvent,
  type AmdPprEntry,
  buildCompletePpr,
  buildInvIommuPages,
  buildInvIotlbPages,
  DTE_BIT,
  DTE_W,
  dteSet,
  dteSetGcr3Root,
  EVENT_TYPE,
  GUEST_PGTABLE,
  PPR_FLAG,
} from "./regs.js";

/** Fault-injection sites. */
export const AMD_IOMMU_SITES = {
  devData: "amd_iommu_probe_device",
  domain: "amd_iommu_domain_alloc",
  pdomDevData: "iommu_sva_set_dev_pasid",
  nested: "amd_iommu_alloc_domain_nested",
} as const;

/** Largest domain ID + 1. @linux MAX_DOMAIN_ID */
export const MAX_DOMAIN_ID = 65536;
/** HyperTransport reserved range. @linux HT_RANGE_START / HT_RANGE_END */
export const HT_RANGE_START = 0xfd_0000_0000;
export const HT_RANGE_END = 0xff_ffff_ffff;
/** Levels of the v1 tables the driver builds (48-bit IOVA). @linux the amdv1 default (PAGE_MODE_4_LEVEL) */
export const AMD_V1_LEVELS = 4;

/** Driver options. */
export interface AmdIommuDriverOptions extends AmdIommuOptions {
  /**
   * The default page table of paging domains allocated without flags: "v1" (Linux's default) or "v2", as the
   * `amd_iommu=pgtbl_v2` command line selects.
   * @linux amd_iommu_pgtable (amd_iommu=pgtbl_v1 / pgtbl_v2)
   */
  pgtable?: "v1" | "v2";
  /** The CPU runs 5-level paging (X86_FEATURE_LA57): v2 tables get 5 levels when EFR.GATS allows. */
  la57?: boolean;
}

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
  /** @linux amdv2_ops (paging domains on x86-64 tables) */
  readonly v2Ops: IommuDomainOps;
  /** @linux amd_dirty_ops */
  readonly dirtyOps: IommuDirtyOps;
  /** @linux nested_domain_ops */
  readonly nestedOps: IommuDomainOps;
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
    const paging = (d: IommuDomain) => d as ProtectionDomain;
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDevice(paging(d), dev, old),
      mapPages: (d, iova, pa, pgsize, count, prot, gather) =>
        paging(d).pt.map(
          iova,
          pa,
          pgsize,
          count,
          this.machine.mutant("amd:wrong-permission") ? prot | IOMMU_WRITE : prot,
          gather,
        ),
      unmapPages: (d, iova, pgsize, count, gather) => paging(d).pt.unmap(iova, pgsize, count, gather),
      iovaToPhys: (d, iova) => paging(d).pt.iovaToPhys(iova),
      flushIotlbAll: (d) => this.domainFlushAll(paging(d)),
      iotlbSync: (d, gather) => this.iotlbSync(paging(d), gather),
      enforceCacheCoherency: () => true,
      free: (d) => this.domainFree(paging(d)),
    };
    // v2 domains also attach at PASIDs (their table is what a GCR3 entry points at).
    this.v2Ops = {
      ...this.pagingOps,
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(paging(d), dev, pasid, old),
    };
    this.dirtyOps = {
      setDirtyTracking: async (d, enabled) => this.setDirtyTracking(paging(d), enabled),
      readAndClearDirty: (d, iova, size, flags, record) => this.readAndClearDirty(paging(d), iova, size, flags, record),
    };
    this.nestedOps = {
      attachDev: (d, dev, old) => this.nestedAttachDevice(d as AmdNestedDomain, dev, old),
      free: (d) => this.nestedDomainFree(d as AmdNestedDomain),
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
      ops: {
        attachDev: (_d, dev, old) => this.attachStatic(dev, old, "blocked"),
        setDevPasid: (_d, dev, pasid, old) => this.removeDevPasid(dev, pasid, old),
      },
    });
    this.ops = {
      owner: ctx.owner,
      hwInfo: (dev, type) => amdIommuHwInfo(this.devData(dev).iommu, type),
      capable: (dev, cap) =>
        cap === IOMMU_CAP.CACHE_COHERENCY ||
        cap === IOMMU_CAP.DEFERRED_FLUSH ||
        (cap === IOMMU_CAP.DIRTY_TRACKING && this.devData(dev).iommu.hdSup),
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
      getViommuSize: (dev, type) => (this.devData(dev) ? amdViommuSize(type) : 0),
      viommuInit: async (viommu, parent) => this.viommuInit(viommu, parent),
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
    const g = data.gcr3;
    if (g) {
      data.gcr3 = undefined;
      g.free();
      this.pdomIds.erase(g.domid);
    }
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

  /** Guest (v2) table levels: 5 when the CPU runs 5-level paging and EFR.GATS allows it, else 4. @linux amd_iommu_gpt_level */
  gptLevels(iommu: AmdIommu): number {
    return this.options.la57 && iommu.gats5 ? 5 : 4;
  }

  /** PASIDs usable: guest translation and PPR. @linux amd_iommu_pasid_supported (amd_iommu_gt_ppr_supported) */
  private pasidSupported(iommu: AmdIommu): boolean {
    return iommu.gtSup && iommu.pprSup;
  }

  /** Nest parents need GT, GIoSup and EFR2.GCR3TRPMode. @linux is_nest_parent_supported */
  private nestParentSupported(iommu: AmdIommu): boolean {
    return iommu.gtSup && iommu.gioSup && iommu.gcr3TrpMode;
  }

  /**
   * A paging domain for `flags`: v1 for dirty tracking and nest parents (each only when the IOMMU supports it),
   * v2 for IOMMU_HWPT_ALLOC_PASID (when PASIDs are supported), the default table otherwise (v1, or v2 with the
   * `pgtable: "v2"` option); EOPNOTSUPP for anything else or for user data.
   * @linux amd_iommu_domain_alloc_paging_flags (amd_iommu_domain_alloc_paging_v1 / _v2)
   */
  async domainAllocPagingFlags(dev: Device, flags: number, data: IommuUserData | undefined): Promise<IommuDomain> {
    const iommu = this.devData(dev).iommu;
    const H = IOMMU_HWPT_ALLOC;
    const supported = H.DIRTY_TRACKING | H.PASID | H.NEST_PARENT;
    if (flags & ~supported || data) throw kerr("EOPNOTSUPP", "amd: unsupported paging flags");
    switch (flags) {
      case H.DIRTY_TRACKING:
      case H.NEST_PARENT:
      case H.DIRTY_TRACKING | H.NEST_PARENT:
        if (flags & H.DIRTY_TRACKING && !iommu.hdSup) break;
        if (flags & H.NEST_PARENT && !this.nestParentSupported(iommu)) break;
        return this.domainAlloc(iommu, PD_MODE.V1, flags);
      case H.PASID:
        if (!this.pasidSupported(iommu)) break;
        return this.domainAlloc(iommu, PD_MODE.V2, flags);
      case 0:
        return this.domainAlloc(iommu, this.options.pgtable === "v2" ? PD_MODE.V2 : PD_MODE.V1, 0);
    }
    throw kerr("EOPNOTSUPP", "amd: unsupported paging flags");
  }

  /** A fresh domain ID and a v1 (4-level) or v2 (x86-64, 4/5-level) table. @linux do_iommu_domain_alloc */
  private domainAlloc(iommu: AmdIommu, pdMode: number, flags: number): ProtectionDomain {
    this.core.faults.check(AMD_IOMMU_SITES.domain);
    const m = this.machine;
    const id = this.pdomIdAlloc();
    let domain: ProtectionDomain | undefined;
    try {
      const v2 = pdMode === PD_MODE.V2;
      const levels = v2 ? this.gptLevels(iommu) : AMD_V1_LEVELS;
      // The v2 table drops the top address bit so it works both at PASID 0 (no sign extension) and at other PASIDs.
      const pt = new IoPageTable(v2 ? x86_64Format(levels, true) : amdv1Format(levels), m.memory, m.pages, {
        // Addresses are exact JS numbers below 2^53: a 5-level v2 domain's 56-bit aperture is clamped to 53 bits.
        ias: v2 ? (levels === 5 ? 53 : 47) : 12 + 9 * levels,
        oas: 52,
        site: "amd_iommu_pgtable",
        diag: this.core.diag,
        sync: (g: IotlbGather) => {
          if (domain) this.iotlbSync(domain, g);
          else g.freePages(m.pages);
        },
      });
      const dirty = flags & IOMMU_HWPT_ALLOC.DIRTY_TRACKING ? this.dirtyOps : undefined;
      const nestParent = (flags & IOMMU_HWPT_ALLOC.NEST_PARENT) !== 0;
      domain = new ProtectionDomain(v2 ? this.v2Ops : this.pagingOps, pt, id, pdMode, nestParent, dirty);
    } catch (e) {
      this.pdomIds.erase(id);
      throw e;
    }
    domain.owner = this.ops;
    return domain;
  }

  /** @linux pdom_id_alloc (ENOSPC when the IDA is full) */
  pdomIdAlloc(): number {
    return this.pdomIds.alloc({}, XA_LIMIT(1, MAX_DOMAIN_ID - 1));
  }

  /** @linux amd_iommu_domain_free (protection_domain_free: pdom_id_free) */
  domainFree(d: ProtectionDomain): void {
    this.core.diag.warnOn(d.devices.size > 0 || d.pasidDevs.size > 0, `${d.name}: freed while attached`);
    d.pt.free();
    this.pdomIds.erase(d.id);
  }

  // --- DTEs -----------------------------------------------------------------------------------------------------

  /**
   * The 256-bit DTE of a device for `d`: paging (V, TV, Mode and root for v1, IR, IW, DomainID, HAD with dirty
   * tracking, PPR, I), identity (mode 0, IR/IW) or blocked (V only); with a GCR3 table also GV, GLX, the GCR3
   * root pointer pieces and the guest paging mode (and GIOV for a v2 RID domain), tagged with the GCR3 table's
   * per-device domain ID; a blocked RID keeping PASIDs has GIOV with GCR3[0] empty.
   * @linux set_dte_entry, set_dte_gcr3_table, amd_iommu_make_clear_dte, amd_iommu_set_dte_v1
   */
  private makeDte(data: IommuDevData, d: ProtectionDomain | "identity" | "blocked", gcr3: Gcr3Table | undefined) {
    const w = [0, 0, 0, 0, 0, 0, 0, 0];
    const bit = (b: bigint) => {
      const n = Number(b);
      w[n >> 5] = (w[n >> 5]! | (1 << (n & 31))) >>> 0;
    };
    bit(DTE_BIT.V);
    if (d === "blocked" && !gcr3) return w;
    bit(DTE_BIT.TV);
    let did = this.identityId;
    bit(DTE_BIT.IR);
    bit(DTE_BIT.IW);
    if (d instanceof ProtectionDomain) {
      if (d.pdMode === PD_MODE.V1) this.dteSetV1(w, d);
      did = d.id;
    }
    if (data.ppr) bit(DTE_BIT.PPR);
    if (gcr3) {
      did = gcr3.domid;
      dteSet(w, DTE_W.GV, 1);
      dteSet(w, DTE_W.GLX, gcr3.glx);
      // A blocked RID keeping PASIDs sends DMA without PASID to the empty GCR3[0] (the DTE's IR/IW gate the
      // PASIDs' translations too, so they cannot block the RID alone).
      if ((d instanceof ProtectionDomain && d.pdMode === PD_MODE.V2) || d === "blocked") dteSet(w, DTE_W.GIOV, 1);
      dteSetGcr3Root(w, gcr3.root);
      dteSet(w, DTE_W.GPT_LEVEL, this.gptLevels(data.iommu) === 5 ? GUEST_PGTABLE.L5 : GUEST_PGTABLE.L4);
    }
    dteSet(w, DTE_W.DOMID, did);
    if (data.atsEnabled) w[3] = (w[3]! | 1) >>> 0;
    return w;
  }

  /** Mode, host root and HAD of a v1 table. @linux amd_iommu_set_dte_v1 */
  private dteSetV1(w: number[], d: ProtectionDomain): void {
    w[0] = (w[0]! | (d.mode << Number(DTE_BIT.MODE_SHIFT)) | (d.pt.root % 2 ** 32)) >>> 0;
    w[1] = (w[1]! | Math.floor(d.pt.root / 2 ** 32)) >>> 0;
    if (d.dirtyTracking) dteSet(w, DTE_W.HAD, 3);
  }

  /** Write the DTE of the device and of its alias, invalidate both and wait. @linux amd_iommu_update_dte256 + clone_aliases + device_flush_dte */
  private updateDte(data: IommuDevData, dte: number[]): void {
    const iommu = data.iommu;
    for (const id of data.devids) iommu.writeDte(id, dte);
    for (const id of data.devids) iommu.flushDte(id);
    iommu.completionWait();
  }

  /** The DTE for the device's current RID domain and GCR3 table, written and flushed. @linux dev_update_dte */
  private refreshDte(data: IommuDevData): void {
    const d = data.domain;
    if (d instanceof AmdNestedDomain) {
      this.updateDte(data, this.makeNestedDte(data, d));
      return;
    }
    const kind = d instanceof ProtectionDomain ? d : d === this.identity ? "identity" : "blocked";
    this.updateDte(data, this.makeDte(data, kind, data.gcr3));
  }

  // --- GCR3 tables and PASIDs -----------------------------------------------------------------------------------

  /** The device's GCR3 table, set up for its PASIDs on first need. @linux init_gcr3_table (setup_gcr3_table) */
  private gcr3Get(data: IommuDevData): Gcr3Table {
    if (data.gcr3) return data.gcr3;
    const iommu = data.iommu;
    const maxGlx = iommu.gtSup ? iommu.maxGlx : -1;
    data.gcr3 = Gcr3Table.setup(
      this.machine,
      Math.max(data.maxPasids, 1),
      maxGlx,
      () => this.pdomIdAlloc(),
      (id) => this.pdomIds.erase(id),
    );
    return data.gcr3;
  }

  /** Free the GCR3 table once nothing needs it: no v2 RID domain and no PASID. @linux destroy_gcr3_table */
  private gcr3PutIfUnused(data: IommuDevData): void {
    const g = data.gcr3;
    const v2Rid = data.domain instanceof ProtectionDomain && data.domain.pdMode === PD_MODE.V2;
    if (!g || v2Rid || data.pasidDomains.size > 0) return;
    data.gcr3 = undefined;
    this.refreshDte(data);
    // Nothing may stay cached under the per-device domain ID before it is reused.
    data.iommu.queueCommand(buildInvIommuPages(0, 2 ** 52, g.domid));
    data.iommu.completionWait();
    g.free();
    this.pdomIds.erase(g.domid);
  }

  /**
   * Point (or clear, `cr3` < 0) the GCR3 entry of `pasid` and flush what the IOMMU and the device cached for it.
   * @linux update_gcr3 + dev_flush_pasid_all (amd_iommu_dev_flush_pasid_pages)
   */
  private gcr3Update(data: IommuDevData, pasid: number, cr3: number): void {
    const g = data.gcr3!;
    g.write(pasid, cr3);
    this.devFlushPasidPages(data, pasid, 0, 2 ** 52);
  }

  /** INVALIDATE_IOMMU_PAGES (PASID, GN) on the per-device domain ID, the device TLB, and wait. @linux amd_iommu_dev_flush_pasid_pages */
  private devFlushPasidPages(data: IommuDevData, pasid: number, address: number, size: number): void {
    data.iommu.queueCommand(buildInvIommuPages(address, size, data.gcr3!.domid, pasid));
    if (data.atsEnabled) data.iommu.queueCommand(buildInvIotlbPages(data.devid, 32, address, size, pasid));
    data.iommu.completionWait();
  }

  /**
   * Attach a v2 domain at `pasid` (attach or replace): EINVAL for PASID 0 or one beyond the device's, or when the
   * RID holds a v1 or nested table (which would nest the PASID's walk); the GCR3 entry points at the domain's
   * table, flushed with INVALIDATE_IOMMU_PAGES carrying the PASID and GN.
   * @linux iommu_sva_set_dev_pasid (is_pasid_valid, is_pasid_enabled, amd_iommu_set_gcr3), applied to v2 paging domains
   */
  async setDevPasid(d: ProtectionDomain, dev: Device, pasid: number, _old: IommuDomain | undefined): Promise<void> {
    const data = this.devData(dev);
    if (!(pasid > 0 && pasid < data.maxPasids)) throw kerr("EINVAL", `${dev.name}: PASID ${pasid} not valid`);
    const rid = data.domain;
    if (rid instanceof AmdNestedDomain || (rid instanceof ProtectionDomain && rid.pdMode === PD_MODE.V1)) {
      throw kerr("EINVAL", `${dev.name}: PASIDs need a v2, identity or blocked RID domain`);
    }
    try {
      this.core.faults.check(AMD_IOMMU_SITES.pdomDevData);
    } catch {
      // iommu_sva_set_dev_pasid answers a failed pdom_dev_data allocation with its initial -EINVAL.
      throw kerr("EINVAL", `${dev.name}: PASID ${pasid}: no memory for the attachment`);
    }
    const fresh = !data.gcr3;
    this.gcr3Get(data);
    try {
      this.gcr3Update(data, pasid, d.pt.root);
    } catch (e) {
      // A lower GCR3 level could not be allocated: a table set up for this attach goes again.
      if (fresh) this.gcr3PutIfUnused(data);
      throw e;
    }
    if (fresh) this.refreshDte(data);
    const prev = data.pasidDomains.get(pasid);
    if (prev) {
      for (const p of prev.pasidDevs) if (p.data === data && p.pasid === pasid) prev.pasidDevs.delete(p);
    } else data.gcr3!.pasidCnt++;
    d.pasidDevs.add({ data, pasid });
    data.pasidDomains.set(pasid, d);
  }

  /**
   * The blocked domain at a PASID: clear its GCR3 entry (flushed with PASID and GN) and drop the table when nothing
   * else uses it.
   * @linux blocked_domain_set_dev_pasid → amd_iommu_remove_dev_pasid (remove_pdom_dev_pasid, amd_iommu_clear_gcr3)
   */
  async removeDevPasid(dev: Device, pasid: number, _old: IommuDomain | undefined): Promise<void> {
    const data = this.devData(dev);
    if (!(pasid > 0 && pasid < data.maxPasids)) return;
    const d = data.pasidDomains.get(pasid);
    if (!d) return;
    this.gcr3Update(data, pasid, -1);
    data.gcr3!.pasidCnt--;
    for (const p of d.pasidDevs) if (p.data === data && p.pasid === pasid) d.pasidDevs.delete(p);
    data.pasidDomains.delete(pasid);
    this.gcr3PutIfUnused(data);
  }

  // --- attach ---------------------------------------------------------------------------------------------------

  /** Leaving a v2 RID domain: GCR3[0] is cleared (and flushed) before the DTE changes. @linux destroy_gcr3_table (update_gcr3(dev_data, 0, 0, false)) */
  private clearRidGcr3(data: IommuDevData, old: IommuDomain | undefined): void {
    if (data.gcr3 && old instanceof ProtectionDomain && old.pdMode === PD_MODE.V2) this.gcr3Update(data, 0, -1);
  }

  /** Take the device's RID off its previous domain: flush what that domain left cached. @linux detach_device / pdom_detach_iommu */
  private detachOld(data: IommuDevData, old: IommuDomain | undefined): void {
    if (old instanceof AmdNestedDomain) {
      old.devices.delete(data);
      data.iommu.queueCommand(buildInvIommuPages(0, 2 ** 52, old.gdomInfo.hdomId));
      data.iommu.completionWait();
      return;
    }
    if (!(old instanceof ProtectionDomain)) return;
    old.devices.delete(data);
    const n = (old.iommus.get(data.iommu) ?? 1) - 1;
    if (n === 0) old.iommus.delete(data.iommu);
    else old.iommus.set(data.iommu, n);
    if (old.pdMode === PD_MODE.V2 && data.gcr3) this.devFlushPasidPages(data, 0, 0, 2 ** 52);
    else {
      data.iommu.queueCommand(buildInvIommuPages(0, 2 ** 52, old.id));
      data.iommu.completionWait();
    }
  }

  /**
   * Attach a paging domain at the RID. EINVAL for a dirty-tracking domain on an IOMMU without HDSup, and for a v1
   * table while PASIDs are attached (the hardware would nest their walks through it). A v2 domain goes in GCR3[0]
   * with GIOV, so DMA without PASID uses it.
   * @linux amd_iommu_attach_device (attach_device, init_gcr3_table, pdom_attach_iommu, dev_update_dte)
   */
  async attachDevice(d: ProtectionDomain, dev: Device, _old: IommuDomain | undefined): Promise<void> {
    const data = this.devData(dev);
    if (data.domain === d) return;
    const iommu = data.iommu;
    if (d.dirtyOps && !iommu.hdSup) throw kerr("EINVAL", `${iommu.name}: no host dirty tracking`);
    const v2 = d.pdMode === PD_MODE.V2;
    if (!v2 && data.pasidDomains.size > 0) throw kerr("EINVAL", `${dev.name}: PASIDs attached; v1 would nest them`);
    const old = data.domain;
    await this.iopfRemoveDevice(data);
    if (v2) await this.iopfAddDevice(data);
    if (!v2) this.clearRidGcr3(data, old);
    if (v2) {
      this.gcr3Get(data);
      this.gcr3Update(data, 0, d.pt.root);
    }
    d.iommus.set(iommu, (d.iommus.get(iommu) ?? 0) + 1);
    d.devices.add(data);
    if (data.atsSupported) data.atsEnabled = true;
    data.domain = d;
    const keep = v2 || data.pasidDomains.size > 0;
    this.updateDte(data, this.makeDte(data, d, keep ? data.gcr3 : undefined));
    this.detachOld(data, old);
    this.gcr3PutIfUnused(data);
  }

  /** @linux identity_domain_attach_dev / blocked_domain_attach_device */
  async attachStatic(dev: Device, _old: IommuDomain | undefined, kind: "identity" | "blocked"): Promise<void> {
    const data = this.devData(dev);
    const old = data.domain;
    await this.iopfRemoveDevice(data);
    if (kind === "identity") await this.iopfAddDevice(data);
    if (kind === "blocked") data.atsEnabled = false;
    this.clearRidGcr3(data, old);
    data.domain = kind === "identity" ? this.identity : this.blocked;
    const keep = data.pasidDomains.size > 0 ? data.gcr3 : undefined;
    this.updateDte(data, this.makeDte(data, kind, keep));
    this.detachOld(data, old);
    this.gcr3PutIfUnused(data);
  }

  // --- IOPF -----------------------------------------------------------------------------------------------------

  /**
   * Entering a domain that can carry PASIDs (v2 or identity): a PRI-capable device with ATS goes on its IOMMU's
   * IOPF queue and its DTE gets PPR. Failure (no queue: EINVAL; already queued: EBUSY) is not the attach's: the
   * device goes on without page requests, which the unit then answers itself.
   * @linux the pdom_is_sva_capable branch of attach_device: pdev_enable_caps, amd_iommu_iopf_add_device
   * (ppr.c; failure → pdev_disable_cap_pri)
   */
  private async iopfAddDevice(data: IommuDevData): Promise<void> {
    if (!data.pri || !data.atsSupported || data.ppr) return;
    const queue = data.iommu.iopfQueue;
    if (!queue) return; // amd_iommu_iopf_add_device's -EINVAL, ignored by its caller
    try {
      await iopfQueueAddDevice(queue, data.dev);
    } catch {
      return;
    }
    data.ppr = true;
  }

  /**
   * Leaving the domain: a device on the IOPF queue has its pending work flushed and is taken off, which answers
   * its outstanding groups INVALID; the next DTE write clears PPR.
   * @linux the dev_data->ppr branch of detach_device: iopf_queue_flush_dev, amd_iommu_iopf_remove_device
   */
  private async iopfRemoveDevice(data: IommuDevData): Promise<void> {
    if (!data.ppr) return;
    await iopfQueueFlushDev(data.dev);
    const queue = data.iommu.iopfQueue;
    if (queue) await iopfQueueRemoveDevice(queue, data.dev);
    data.ppr = false;
  }

  // --- dirty tracking -------------------------------------------------------------------------------------------

  /**
   * Turn host dirty updates on or off: every DTE using the domain (directly or as a nest parent) gets HAD set or
   * cleared and is flushed, then the domain's IOTLB, so the next write marks its PTE dirty.
   * @linux amd_iommu_set_dirty_tracking
   */
  async setDirtyTracking(d: ProtectionDomain, enabled: boolean): Promise<void> {
    if (d.dirtyTracking === enabled) return;
    d.dirtyTracking = enabled;
    let flush = false;
    const users = [...d.devices];
    for (const v of d.viommus) for (const n of this.nestedOf(v)) users.push(...n.devices);
    for (const data of users) {
      this.refreshDte(data);
      flush = true;
    }
    if (flush) this.domainFlushAll(d);
  }

  /**
   * Report and (unless IOMMU_DIRTY_NO_CLEAR) clear the D bits in [iova, iova + size); EINVAL while dirty tracking is
   * off. The caller flushes the IOTLB for the reported ranges.
   * @linux amd_iommu_read_and_clear_dirty (iommupt read_and_clear_dirty)
   */
  readAndClearDirty(
    d: ProtectionDomain,
    iova: number,
    size: number,
    flags: number,
    record: (iova: number, len: number) => void,
  ): void {
    if (!d.dirtyTracking) throw kerr("EINVAL", `${d.name}: dirty tracking is off`);
    // The caller (iommu_read_and_clear_dirty) flushes the IOTLB for what `record` reported.
    d.pt.readAndClearDirty(iova, size, record, flags);
  }

  // --- vIOMMU and nested domains --------------------------------------------------------------------------------

  private readonly nestedDomains = new Set<AmdNestedDomain>();

  private nestedOf(v: AmdViommu): AmdNestedDomain[] {
    return [...this.nestedDomains].filter((n) => n.viommu === v);
  }

  /**
   * Set up an AMD vIOMMU on a nest parent: its guest domain ID map, and its place on the parent's vIOMMU list.
   * @linux amd_iommufd_viommu_init
   */
  async viommuInit(viommu: IommuViommu, parent: IommuDomain): Promise<void> {
    if (!(parent instanceof ProtectionDomain) || !parent.nestParent) throw kerr("EINVAL", "amd: not a nest parent");
    const v = new AmdViommu(viommu, parent);
    viommu.priv = v;
    parent.viommus.add(v);
    viommu.ops = {
      destroy: () => {
        parent.viommus.delete(v);
        v.gdomids.clear();
      },
      allocDomainNested: async (_vi, _flags, data) => this.allocDomainNested(v, data),
    };
  }

  /**
   * A nested domain from the guest DTE: EOPNOTSUPP for another data type; the DTE copied and validated as Linux
   * does (EINVAL / E2BIG / EOPNOTSUPP); its guest domain ID mapped to a host domain ID shared by every nested
   * domain of the vIOMMU with that guest ID.
   * @linux amd_iommu_alloc_domain_nested
   */
  async allocDomainNested(v: AmdViommu, data: IommuUserData): Promise<IommuDomain> {
    if (data.type !== IOMMU_HWPT_DATA_AMD_GUEST) throw kerr("EOPNOTSUPP", "amd: nested data type");
    this.core.faults.check(AMD_IOMMU_SITES.nested);
    const gdte = copyAmdGuestDte(data);
    const iommu = v.core.iommuDev instanceof AmdIommu ? v.core.iommuDev : undefined;
    validateGdteNested(gdte, iommu ? this.gptLevels(iommu) === 5 : false);
    const gdomId = gdteDomainId(gdte);
    const info = gdomGet(v, gdomId, () => this.pdomIdAlloc());
    const n = new AmdNestedDomain(this.nestedOps, v, gdte, gdomId, info);
    n.owner = this.ops;
    this.nestedDomains.add(n);
    return n;
  }

  /** The DTE of a nested attach: the parent's v1 fields under the host domain ID, then the guest's. @linux set_dte_nested */
  private makeNestedDte(data: IommuDevData, n: AmdNestedDomain): number[] {
    const w = [0, 0, 0, 0, 0, 0, 0, 0];
    w[0] = 1 | 2; // V, TV
    dteSet(w, DTE_W.DOMID, n.gdomInfo.hdomId);
    w[1] = (w[1]! | (1 << (Number(DTE_BIT.IR) - 32)) | (1 << (Number(DTE_BIT.IW) - 32))) >>> 0;
    this.dteSetV1(w, n.viommu.parent);
    if (data.atsEnabled) w[3] = (w[3]! | 1) >>> 0;
    dteApplyGuest(w, n.gdte);
    return w;
  }

  /**
   * Attach a nested domain at the RID: EINVAL while PASIDs are attached; otherwise one DTE update.
   * @linux nested_attach_device
   */
  async nestedAttachDevice(n: AmdNestedDomain, dev: Device, _old: IommuDomain | undefined): Promise<void> {
    const data = this.devData(dev);
    if (data.pasidDomains.size > 0) throw kerr("EINVAL", `${dev.name}: PASIDs attached`);
    if (data.domain === n) return;
    const old = data.domain;
    await this.iopfRemoveDevice(data);
    if (data.atsSupported) data.atsEnabled = true;
    data.domain = n;
    n.devices.add(data);
    this.clearRidGcr3(data, old);
    this.updateDte(data, this.makeNestedDte(data, n));
    this.detachOld(data, old);
    this.gcr3PutIfUnused(data);
  }

  /** @linux nested_domain_free */
  nestedDomainFree(n: AmdNestedDomain): void {
    this.core.diag.warnOn(n.devices.size > 0, `${n.name}: freed while attached`);
    this.nestedDomains.delete(n);
    gdomPut(n.viommu, n.gdomId, n.gdomInfo, (id) => this.pdomIds.erase(id));
  }

  // --- invalidation ---------------------------------------------------------------------------------------------

  /**
   * Flush [address, address + size) of a domain. v1: one size-encoded INVALIDATE_IOMMU_PAGES per IOMMU on the
   * domain ID (and on the host domain ID of every guest domain of its vIOMMUs); v2: one per attached (device,
   * PASID) on the device's GCR3 domain ID with PASID and GN (PASID 0 for the RID). Then INVALIDATE_IOTLB_PAGES per
   * ATS device, and COMPLETION_WAIT.
   * @linux amd_iommu_domain_flush_pages (__domain_flush_pages, domain_flush_pages_v1/_v2, domain_flush_complete)
   */
  domainFlushPages(d: ProtectionDomain, address: number, size: number): void {
    const wait = new Set<AmdIommu>(d.iommus.keys());
    if (d.pdMode === PD_MODE.V2) {
      for (const data of d.devices) {
        if (!data.gcr3) continue;
        data.iommu.queueCommand(buildInvIommuPages(address, size, data.gcr3.domid, 0));
        if (data.atsEnabled) data.iommu.queueCommand(buildInvIotlbPages(data.devid, 32, address, size, 0));
      }
      for (const { data, pasid } of d.pasidDevs) {
        wait.add(data.iommu);
        data.iommu.queueCommand(buildInvIommuPages(address, size, data.gcr3!.domid, pasid));
        if (data.atsEnabled) data.iommu.queueCommand(buildInvIotlbPages(data.devid, 32, address, size, pasid));
      }
    } else {
      for (const iommu of d.iommus.keys()) iommu.queueCommand(buildInvIommuPages(address, size, d.id));
      for (const v of d.viommus) {
        const iommu = v.core.iommuDev;
        if (!(iommu instanceof AmdIommu)) continue;
        wait.add(iommu);
        for (const g of v.gdomids.values()) iommu.queueCommand(buildInvIommuPages(address, size, g.hdomId));
      }
      for (const data of d.devices) {
        if (data.atsEnabled) data.iommu.queueCommand(buildInvIotlbPages(data.devid, 32, address, size));
      }
    }
    for (const iommu of wait) iommu.completionWait();
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
