/**
 * The Intel VT-d driver for one machine: `iommu_ops` and the domain ops, the per-unit probe (QI, root table,
 * PRQ, interrupts, translation enable), device probe through the ACPI DMAR (no fwspec: the unit is found from the
 * PCI requester ID), paging domains on core's engine (first stage by default in scalable mode, second stage in
 * legacy mode and for nest parents and dirty tracking), identity and blocked domains, PASID attach, nested
 * domains, IOTLB invalidation through cache tags, faults, page requests into core's IOPF, dirty tracking.
 * @linux drivers/iommu/intel/iommu.c (intel_iommu_ops, intel_iommu_probe_device, intel_iommu_attach_device,
 * intel_iommu_domain_alloc_paging_flags, intel_iommu_get_resv_regions, ...), dmar.c, prq.c, nested.c
 */
import {
  acpiIommuUnitFor,
  type Device,
  devIommuPrivGet,
  devIommuPrivSet,
  IOMMU_CAP,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_DOMAIN,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
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
  type IommuUserDataArray,
  IoPageTable,
  type IopfFault,
  IotlbGather,
  iommuDeviceRegister,
  iommuDeviceUnregister,
  iommuPciOrGenericDeviceGroup,
  iopfFaultFromRequest,
  iopfQueueAlloc,
  iopfQueueFree,
  iopfRefcountGet,
  iopfRefcountPut,
  iopfReportFromDriver,
  kerr,
  type ModuleContext,
  PgtableMapError,
  X86_MSI_RANGE_END,
  X86_MSI_RANGE_START,
  x86_64Format,
} from "@iommu-sim/core";
import {
  cacheTagAssign,
  cacheTagFlushAll,
  cacheTagFlushRange,
  cacheTagFlushRangeNp,
  cacheTagUnassign,
} from "./cache.js";
import { contextClear, contextMap } from "./context.js";
import { DeviceDomainInfo, type DmarAnyDomain, DmarDomain, DmarNestedDomain } from "./domain.js";
import { type DmarFaultRecord, IntelIommu, type IntelIommuOptions, type IntelIommuSink } from "./iommu.js";
import { IOMMU_HWPT_DATA_VTD_S1, intelIommuHwInfo, parseVtdS1, vtdInvalidateUser } from "./iommufd.js";
import {
  pasidAllocTable,
  pasidFreeTable,
  pasidSetupDirtyTracking,
  pasidSetupFirstLevel,
  pasidSetupNested,
  pasidSetupPassThrough,
  pasidSetupSecondLevel,
  pasidTearDownEntry,
  setupSmContext,
  teardownSmContext,
} from "./pasid.js";
import { vtdssFormat } from "./pgtable.js";
import { IOMMU_NO_PASID, type PageReqDsc, QI_RESP, qiDescPageResponse } from "./regs.js";

/** Fault-injection sites. @linux the allocations of intel_iommu_probe_device and domain allocation that can fail */
export const INTEL_IOMMU_SITES = {
  info: "intel_iommu_probe_device",
  domain: "intel_iommu_domain_alloc",
} as const;

/** Driver options. @linux the intel_iommu= command-line options modelled (sm_off) */
export interface IntelIommuDriverOptions extends IntelIommuOptions {}

/**
 * Everything one machine's VT-d driver owns.
 * @linux the file-scope state of intel/iommu.c (intel_iommu_ops, the static identity / blocking domains,
 * dmar_drhd_units' iommus)
 */
export class IntelIommuDriver implements IntelIommuSink {
  readonly ops: IommuOps;
  readonly pagingOps: IommuDomainOps;
  readonly nestedOps: IommuDomainOps;
  readonly dirtyOps: IommuDirtyOps;
  readonly identity: IommuDomain;
  readonly blocked: IommuDomain;
  readonly units = new Map<string, IntelIommu>();
  private seq = 0;

  constructor(
    readonly ctx: ModuleContext,
    readonly core: IommuCore,
    readonly options: IntelIommuDriverOptions,
  ) {
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDevPaging(d as DmarDomain, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d as DmarAnyDomain, dev, pasid, old),
      mapPages: (d, iova, pa, pgsize, count, prot, gather) => {
        // ERRATA_772415_SPR17: a nest parent takes no read-only mappings (PT_FEAT_VTDSS_FORCE_WRITEABLE).
        if ((d as DmarDomain).nestParent && !(prot & IOMMU_WRITE))
          throw new PgtableMapError("EINVAL", 0, `${d.name}: read-only mapping on a nest parent (ERRATA_772415_SPR17)`);
        // Test-only mutant "vtd:wrong-permission": every mapping writable.
        const p = this.machine.mutant("vtd:wrong-permission") ? prot | IOMMU_WRITE : prot;
        return (d as DmarDomain).pt.map(iova, pa, pgsize, count, p, gather);
      },
      unmapPages: (d, iova, pgsize, count, gather) => (d as DmarDomain).pt.unmap(iova, pgsize, count, gather),
      iovaToPhys: (d, iova) => (d as DmarDomain).pt.iovaToPhys(iova),
      flushIotlbAll: (d) => cacheTagFlushAll(d as DmarDomain),
      iotlbSync: (d, gather) => this.iotlbSync(d as DmarDomain, gather),
      iotlbSyncMap: (d, iova, size) => cacheTagFlushRangeNp(d as DmarDomain, iova, iova + size - 1),
      enforceCacheCoherency: () => true,
      free: (d) => this.domainFree(d as DmarDomain),
    };
    this.dirtyOps = {
      setDirtyTracking: async (d, enabled) => this.setDirtyTracking(d as DmarDomain, enabled),
      readAndClearDirty: (d, iova, size, flags, record) =>
        this.readAndClearDirty(d as DmarDomain, iova, size, flags, record),
    };
    this.nestedOps = {
      attachDev: (d, dev, old) => this.attachDevNested(d as DmarNestedDomain, dev, IOMMU_NO_PASID, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d as DmarAnyDomain, dev, pasid, old),
      cacheInvalidateUser: async (d, array: IommuUserDataArray) => vtdInvalidateUser(d as DmarNestedDomain, array),
      free: (d) => this.nestedFree(d as DmarNestedDomain),
    };
    this.identity = new IommuDomain({
      type: IOMMU_DOMAIN.IDENTITY,
      name: "intel_identity",
      ops: {
        attachDev: (_d, dev, old) => this.attachDevIdentity(dev, IOMMU_NO_PASID, old),
        setDevPasid: (_d, dev, pasid, old) => this.attachDevIdentity(dev, pasid, old),
      },
    });
    this.blocked = new IommuDomain({
      type: IOMMU_DOMAIN.BLOCKED,
      name: "intel_blocking",
      ops: {
        attachDev: (_d, dev, old) => this.attachDevBlocked(dev, old),
        setDevPasid: (_d, dev, pasid, old) => this.blockingSetDevPasid(dev, pasid, old),
      },
    });
    this.ops = {
      owner: ctx.owner,
      capable: (dev, cap) => this.capable(dev, cap),
      hwInfo: (dev, type) => intelIommuHwInfo(this.info(dev).iommu, type),
      domainAllocPaging: (dev) => this.domainAllocPagingFlags(dev, 0, undefined),
      domainAllocPagingFlags: (dev, flags, data) => this.domainAllocPagingFlags(dev, flags, data),
      domainAllocNested: (dev, parent, flags, data) => this.domainAllocNested(dev, parent, flags, data),
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

  /** The device info of a probed device. ENODEV otherwise. @linux dev_iommu_priv_get */
  info(dev: Device): DeviceDomainInfo {
    const i = devIommuPrivGet<DeviceDomainInfo>(dev);
    if (!(i instanceof DeviceDomainInfo)) throw kerr("ENODEV", `${dev.name} is not behind a VT-d unit`);
    return i;
  }

  // --- unit probe -----------------------------------------------------------------------------------------------

  /**
   * Bring one DRHD unit up: capabilities, invalidation queue, root table, page request queue, interrupts; register
   * it (which probes its devices and attaches their default domains); then enable translation.
   * @linux alloc_iommu + init_dmars (intel_iommu_init_qi, iommu_alloc_root_entry, iommu_set_root_entry,
   * intel_iommu_enable_prq, dmar_set_interrupt) + iommu_device_register + iommu_enable_translation
   */
  async unitProbe(pdev: Device): Promise<IntelIommu> {
    const iommu = new IntelIommu(this.core, pdev, this.seq++, this.options);
    iommu.readCaps();
    if (iommu.sm && !iommu.qis) throw kerr("ENODEV", `${pdev.name}: scalable mode needs queued invalidation`);
    iommu.maxPasids = 2 ** iommu.pasidBits;
    iommu.sink = this;
    this.units.set(pdev.name, iommu);
    try {
      iommu.enableQi();
      iommu.allocRoot();
      iommu.setRootEntry();
      iommu.enablePrq();
      if (iommu.prs) iommu.iopfQueue = iopfQueueAlloc(this.machine, iommu.name);
      iommu.setupIrqs();
      await iommuDeviceRegister(this.core, iommu, this.ops);
      iommu.enableTranslation();
    } catch (e) {
      this.units.delete(pdev.name);
      await this.unitTeardown(iommu);
      throw e;
    }
    return iommu;
  }

  /** @linux the reverse of unitProbe (intel_iommu_shutdown / free_dmar_iommu) */
  async unitRemove(iommu: IntelIommu): Promise<void> {
    await iommuDeviceUnregister(this.core, iommu);
    this.units.delete(iommu.pdev.name);
    await this.unitTeardown(iommu);
  }

  private async unitTeardown(iommu: IntelIommu): Promise<void> {
    if (iommu.gcmd & (1 << 31)) iommu.disableTranslation();
    await iommu.teardownIrqs();
    await iopfQueueFree(iommu.iopfQueue);
    iommu.iopfQueue = undefined;
    iommu.finishPrq();
    iommu.disableQi();
    iommu.freeTables();
  }

  // --- device probe ---------------------------------------------------------------------------------------------

  /**
   * Find the device's unit from the DMAR (device scope or INCLUDE_PCI_ALL), set up its info, and in scalable mode
   * its PASID table and context entries.
   * @linux intel_iommu_probe_device (device_lookup_iommu, intel_pasid_alloc_table, intel_pasid_setup_sm_context,
   * device_rbtree_insert)
   */
  async probeDevice(dev: Device): Promise<IntelIommu> {
    this.core.probeLock.assertHeld();
    const pci = dev.pci;
    const unit = acpiIommuUnitFor(this.core, dev);
    if (!pci || unit?.table !== "dmar") throw kerr("ENODEV", `${dev.name}: not in a DMAR device scope`);
    const iommu = this.units.get(unit.unit.iommu);
    if (!iommu) throw kerr("ENODEV", `${dev.name}: its DRHD unit ${unit.unit.iommu} is not probed`);
    if (iommu.deviceRbtree.has(pci.rid)) throw kerr("EBUSY", `${dev.name}: requester ID already probed`);
    this.core.faults.check(INTEL_IOMMU_SITES.info);
    if (this.machine.mutant("vtd:leaked-device-ref")) dev.get("intel_iommu_probe_device"); // test-only mutant
    const pasidBits = iommu.sm ? Math.min(pci.pasidBits, iommu.pasidBits) : 0;
    const ats = pci.ats && iommu.devTlb;
    const info = new DeviceDomainInfo(
      dev,
      iommu,
      pci.segment,
      pci.busNr,
      pci.devfn,
      [pci.rid, ...pci.aliases.filter((a) => a !== pci.rid)],
      ats,
      pasidBits,
      pci.pri && ats && iommu.prs && pasidBits >= 0,
    );
    if (iommu.sm) {
      pasidAllocTable(iommu, info);
      try {
        setupSmContext(iommu, info);
      } catch (e) {
        pasidFreeTable(iommu, info);
        throw e;
      }
    }
    devIommuPrivSet(this.core, dev, info);
    iommu.deviceRbtree.set(info.rid, info);
    return iommu;
  }

  /** @linux intel_iommu_release_device (the core attached the blocking release domain first) */
  releaseDevice(dev: Device): void {
    const info = devIommuPrivGet<DeviceDomainInfo>(dev);
    if (!(info instanceof DeviceDomainInfo)) return;
    const iommu = info.iommu;
    this.core.diag.warnOn(info.iopfRefcount !== 0, `${dev.name}: released with IOPF enabled`);
    if (iommu.sm) {
      teardownSmContext(iommu, info);
      pasidFreeTable(iommu, info);
    } else contextClear(iommu, info);
    iommu.deviceRbtree.delete(info.rid);
  }

  /** @linux intel_iommu_capable */
  capable(dev: Device, cap: number): boolean {
    const info = devIommuPrivGet<DeviceDomainInfo>(dev);
    switch (cap) {
      case IOMMU_CAP.CACHE_COHERENCY:
      case IOMMU_CAP.DEFERRED_FLUSH:
        return true;
      case IOMMU_CAP.ENFORCE_CACHE_COHERENCY:
        return true;
      case IOMMU_CAP.DIRTY_TRACKING:
        return info instanceof DeviceDomainInfo && info.iommu.slads;
      default:
        return false;
    }
  }

  /**
   * RMRRs covering the device as direct-mapped regions, and the interrupt range as MSI.
   * @linux intel_iommu_get_resv_regions
   */
  getResvRegions(dev: Device): IommuResvRegion[] {
    const out: IommuResvRegion[] = [];
    const pci = dev.pci;
    if (pci) {
      for (const r of this.core.driverCore.firmware.rmrr) {
        if (r.segment !== pci.segment || !r.scope.includes(pci.rid)) continue;
        out.push({
          start: r.base,
          length: r.end - r.base + 1,
          prot: IOMMU_READ | IOMMU_WRITE,
          type: IOMMU_RESV.DIRECT,
        });
      }
    }
    out.push({
      start: X86_MSI_RANGE_START,
      length: X86_MSI_RANGE_END - X86_MSI_RANGE_START + 1,
      prot: 0,
      type: IOMMU_RESV.MSI,
    });
    return out;
  }

  // --- domains --------------------------------------------------------------------------------------------------

  /**
   * First stage when the unit is in scalable mode with FLTS and no flag needs a second stage; second stage
   * otherwise.
   * @linux intel_iommu_domain_alloc_paging_flags (intel_iommu_domain_alloc_first_stage / _second_stage)
   */
  async domainAllocPagingFlags(dev: Device, flags: number, data: IommuUserData | undefined): Promise<IommuDomain> {
    const H = IOMMU_HWPT_ALLOC;
    const iommu = this.info(dev).iommu;
    if (flags & ~(H.NEST_PARENT | H.DIRTY_TRACKING | H.FAULT_ID_VALID | H.PASID))
      throw kerr("EOPNOTSUPP", "intel: flags");
    if (data) throw kerr("EOPNOTSUPP", "intel: paging domains take no data");
    const wantFs = (flags & ~(H.PASID | H.FAULT_ID_VALID)) === 0 && iommu.flts;
    if (!wantFs) {
      if ((flags & H.NEST_PARENT && !iommu.nesting) || (flags & H.DIRTY_TRACKING && !iommu.slads)) {
        throw kerr("EOPNOTSUPP", "intel: unsupported second-stage flags");
      }
      if (!iommu.slts) throw kerr("EOPNOTSUPP", "intel: no second-stage translation");
    }
    this.core.faults.check(INTEL_IOMMU_SITES.domain);
    const m = this.machine;
    let domain: DmarDomain | undefined;
    const sync = (g: IotlbGather) => {
      if (domain) this.iotlbSync(domain, g);
      else g.freePages(m.pages);
    };
    let pt: IoPageTable;
    if (wantFs) {
      const levels = iommu.fsLevels;
      pt = new IoPageTable(x86_64Format(levels, iommu.fl1gp), m.memory, m.pages, {
        ias: levels === 5 ? 53 : 47,
        oas: Math.min(52, 53),
        site: "intel_iommu_pgtable",
        diag: this.core.diag,
        sync,
      });
    } else {
      const levels = iommu.ssLevels;
      pt = new IoPageTable(vtdssFormat(levels, iommu.superpages), m.memory, m.pages, {
        ias: Math.min(12 + 9 * levels, 53),
        oas: 52,
        site: "intel_iommu_pgtable",
        diag: this.core.diag,
        sync,
      });
    }
    domain = new DmarDomain(
      this.pagingOps,
      pt,
      wantFs,
      (flags & H.NEST_PARENT) !== 0,
      flags & H.DIRTY_TRACKING ? this.dirtyOps : undefined,
      iommu.name,
    );
    domain.owner = this.ops;
    return domain;
  }

  /** @linux intel_iommu_domain_free (paging) */
  domainFree(d: DmarDomain): void {
    this.core.diag.warnOn(d.attached.size > 0 || d.iommuArray.size > 0, `${d.name}: freed while attached`);
    d.pt.free();
  }

  /** @linux intel_iommu_domain_alloc_nested */
  async domainAllocNested(dev: Device, parent: IommuDomain, flags: number, data: IommuUserData): Promise<IommuDomain> {
    const iommu = this.info(dev).iommu;
    if (!iommu.nesting || flags & ~IOMMU_HWPT_ALLOC.PASID) throw kerr("EOPNOTSUPP", "intel: nesting");
    // As Linux: the data type, then the parent, then the struct itself.
    if (data.type !== IOMMU_HWPT_DATA_VTD_S1) throw kerr("EOPNOTSUPP", "intel: nested data type");
    if (!(parent instanceof DmarDomain) || parent.firstStage || !parent.nestParent) {
      throw kerr("EINVAL", "intel: parent is not a second-stage nest parent");
    }
    const s1 = parseVtdS1(data);
    const d = new DmarNestedDomain(this.nestedOps, parent, s1);
    d.owner = this.ops;
    parent.nestedChildren.add(d);
    return d;
  }

  private nestedFree(d: DmarNestedDomain): void {
    this.core.diag.warnOn(d.attached.size > 0, `${d.name}: freed while attached`);
    d.parent.nestedChildren.delete(d);
  }

  /** The DID of `d` on `iommu`, allocated on first use. @linux domain_attach_iommu */
  private domainAttachIommu(d: DmarAnyDomain, iommu: IntelIommu): number {
    const cur = d.iommuArray.get(iommu);
    if (cur) {
      cur.refcnt++;
      return cur.did;
    }
    const did = iommu.allocDid(d);
    d.iommuArray.set(iommu, { did, refcnt: 1 });
    return did;
  }

  /** @linux domain_detach_iommu */
  private domainDetachIommu(d: DmarAnyDomain, iommu: IntelIommu): void {
    const cur = d.iommuArray.get(iommu);
    if (!cur) return;
    if (--cur.refcnt > 0) return;
    d.iommuArray.delete(iommu);
    iommu.freeDid(cur.did);
  }

  private asDmar(d: IommuDomain | undefined): DmarAnyDomain | undefined {
    return d instanceof DmarDomain || d instanceof DmarNestedDomain ? d : undefined;
  }

  /** Forget the old attachment of (device, PASID): cache tags, DID reference, device list, IOPF. */
  private async detachOld(info: DeviceDomainInfo, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const d = this.asDmar(old);
    if (d) {
      cacheTagUnassign(d, info, pasid);
      for (const a of d.attached) if (a.info === info && a.pasid === pasid) d.attached.delete(a);
      this.domainDetachIommu(d, info.iommu);
    }
    await this.iopfForDomainRemove(info, old);
  }

  // --- attach ---------------------------------------------------------------------------------------------------

  /** @linux paging_domain_compatible */
  private compatible(d: DmarDomain, iommu: IntelIommu): void {
    if (d.firstStage && !iommu.flts) throw kerr("EINVAL", `${iommu.name}: no first stage`);
    if (!d.firstStage && !iommu.slts) throw kerr("EINVAL", `${iommu.name}: no second stage`);
    if (d.dirtyOps && !iommu.slads) throw kerr("EINVAL", `${iommu.name}: no dirty tracking`);
    if (d.nestParent && !iommu.nesting) throw kerr("EINVAL", `${iommu.name}: no nesting`);
    if (!d.firstStage && d.levels > iommu.ssLevels) throw kerr("EINVAL", `${iommu.name}: address width`);
  }

  /** Program the device's RID (or a PASID) for a paging domain. */
  private setupPaging(d: DmarDomain, info: DeviceDomainInfo, pasid: number, did: number): void {
    const iommu = info.iommu;
    if (!iommu.sm) contextMap(iommu, info, d.pt.root, d.levels, did);
    else if (d.firstStage) pasidSetupFirstLevel(iommu, info, pasid, d.pt.root, d.levels, did);
    else pasidSetupSecondLevel(iommu, info, pasid, d.pt.root, d.levels, did, d.dirtyTracking);
  }

  /** @linux intel_iommu_attach_device + dmar_domain_attach_device */
  async attachDevPaging(d: DmarDomain, dev: Device, old: IommuDomain | undefined): Promise<void> {
    const info = this.info(dev);
    const iommu = info.iommu;
    this.compatible(d, iommu);
    if (!iommu.sm && d.firstStage) throw kerr("EINVAL", "intel: first stage needs scalable mode");
    const prev = info.domain ?? old;
    await this.iopfForDomainSet(info, d, prev);
    const did = this.domainAttachIommu(d, iommu);
    try {
      this.setupPaging(d, info, IOMMU_NO_PASID, did);
    } catch (e) {
      this.domainDetachIommu(d, iommu);
      await this.iopfForDomainRemove(info, d);
      throw e;
    }
    await this.detachOld(info, IOMMU_NO_PASID, prev);
    d.attached.add({ info, pasid: IOMMU_NO_PASID });
    cacheTagAssign(d, iommu, did, info, IOMMU_NO_PASID);
    info.domain = d;
    // iommu_enable_pci_ats: the device may now cache translations; device-TLB flushes follow every change.
    if (info.atsSupported) info.atsEnabled = true;
  }

  /** @linux intel_nested_attach_dev / intel_nested_set_dev_pasid */
  async attachDevNested(d: DmarNestedDomain, dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const info = this.info(dev);
    const iommu = info.iommu;
    this.compatible(d.parent, iommu);
    const prev = pasid === IOMMU_NO_PASID ? (info.domain ?? old) : (info.pasids.get(pasid) ?? old);
    const did = this.domainAttachIommu(d, iommu);
    try {
      pasidSetupNested(iommu, info, pasid, d.s1, d.parent.pt.root, d.parent.levels, did, d.parent.dirtyTracking);
    } catch (e) {
      this.domainDetachIommu(d, iommu);
      throw e;
    }
    await this.detachOld(info, pasid, prev);
    d.attached.add({ info, pasid });
    cacheTagAssign(d, iommu, did, info, pasid);
    if (pasid === IOMMU_NO_PASID) info.domain = d;
    else info.pasids.set(pasid, d);
    if (info.atsSupported) info.atsEnabled = true;
  }

  /** @linux identity_domain_attach_dev / identity_domain_set_dev_pasid */
  async attachDevIdentity(dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const info = this.info(dev);
    const iommu = info.iommu;
    if (!iommu.passThrough) throw kerr("EOPNOTSUPP", `${iommu.name}: no pass-through`);
    const prev = pasid === IOMMU_NO_PASID ? (info.domain ?? old) : (info.pasids.get(pasid) ?? old);
    if (!iommu.sm) {
      if (pasid !== IOMMU_NO_PASID) throw kerr("EOPNOTSUPP", "intel: PASIDs need scalable mode");
      contextMap(iommu, info, -1, iommu.ssLevels, 1);
    } else pasidSetupPassThrough(iommu, info, pasid);
    await this.detachOld(info, pasid, prev);
    if (pasid === IOMMU_NO_PASID) info.domain = this.identity;
    else info.pasids.set(pasid, this.identity);
  }

  /** @linux blocking_domain_attach_dev (device_block_translation) */
  async attachDevBlocked(dev: Device, old: IommuDomain | undefined): Promise<void> {
    const info = this.info(dev);
    const iommu = info.iommu;
    const prev = info.domain ?? old;
    if (iommu.sm) pasidTearDownEntry(iommu, info, IOMMU_NO_PASID);
    else contextClear(iommu, info);
    await this.detachOld(info, IOMMU_NO_PASID, prev);
    info.domain = this.blocked;
  }

  /** @linux blocking_domain_set_dev_pasid (intel_pasid_tear_down_entry + domain_remove_dev_pasid) */
  async blockingSetDevPasid(dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const info = this.info(dev);
    const prev = info.pasids.get(pasid) ?? old;
    pasidTearDownEntry(info.iommu, info, pasid);
    await this.detachOld(info, pasid, prev);
    info.pasids.delete(pasid);
  }

  /** Attach a paging or nested domain at a PASID. @linux intel_iommu_set_dev_pasid */
  async setDevPasid(d: DmarAnyDomain, dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const info = this.info(dev);
    const iommu = info.iommu;
    if (!iommu.sm || info.pasidBits === 0 || pasid === IOMMU_NO_PASID || pasid >= 2 ** info.pasidBits) {
      throw kerr("EINVAL", `${dev.name}: PASID ${pasid} not supported`);
    }
    if (d instanceof DmarNestedDomain) {
      await this.iopfForDomainSet(info, d, info.pasids.get(pasid) ?? old);
      await this.attachDevNested(d, dev, pasid, old);
      return;
    }
    this.compatible(d, iommu);
    const prev = info.pasids.get(pasid) ?? old;
    await this.iopfForDomainSet(info, d, prev);
    const did = this.domainAttachIommu(d, iommu);
    try {
      this.setupPaging(d, info, pasid, did);
    } catch (e) {
      this.domainDetachIommu(d, iommu);
      await this.iopfForDomainRemove(info, d);
      throw e;
    }
    await this.detachOld(info, pasid, prev);
    d.attached.add({ info, pasid });
    cacheTagAssign(d, iommu, did, info, pasid);
    info.pasids.set(pasid, d);
  }

  // --- IOPF -----------------------------------------------------------------------------------------------------

  /** @linux iopf_for_domain_set → intel_iommu_enable_iopf */
  private async iopfForDomainSet(info: DeviceDomainInfo, d: IommuDomain, prev: IommuDomain | undefined): Promise<void> {
    if (d.iopfHandler === undefined || d === prev) return;
    const iommu = info.iommu;
    if (!info.priSupported || !iommu.iopfQueue) throw kerr("ENODEV", `${info.dev.name}: no page requests`);
    await iopfRefcountGet(info, iommu.iopfQueue);
  }

  /** @linux iopf_for_domain_remove → intel_iommu_disable_iopf */
  private async iopfForDomainRemove(info: DeviceDomainInfo, d: IommuDomain | undefined): Promise<void> {
    if (d?.iopfHandler === undefined) return;
    await iopfRefcountPut(
      info,
      () => info.iommu.iopfQueue,
      () => info.iommu.drainPrq(),
    );
  }

  // --- invalidation ---------------------------------------------------------------------------------------------

  /** @linux intel_iommu_tlb_sync (leaf-only hint when no table was freed) */
  iotlbSync(d: DmarDomain, gather: IotlbGather): void {
    if (gather.end >= gather.start && gather.end > 0 && !this.machine.mutant("vtd:skip-invalidation")) {
      cacheTagFlushRange(d, gather.start, gather.end, gather.freelist.length === 0);
    }
    gather.freePages(this.machine.pages);
  }

  // --- dirty tracking -------------------------------------------------------------------------------------------

  /** @linux intel_iommu_set_dirty_tracking */
  async setDirtyTracking(d: DmarDomain, enabled: boolean): Promise<void> {
    if (d.dirtyTracking === enabled) return;
    for (const a of d.attached) pasidSetupDirtyTracking(a.info.iommu, a.info, a.pasid, enabled);
    for (const n of d.nestedChildren)
      for (const a of n.attached) pasidSetupDirtyTracking(a.info.iommu, a.info, a.pasid, enabled);
    d.dirtyTracking = enabled;
  }

  /** @linux intel_iommu_read_and_clear_dirty (the core's iotlb sync follows) */
  readAndClearDirty(
    d: DmarDomain,
    iova: number,
    size: number,
    flags: number,
    record: (iova: number, len: number) => void,
  ): void {
    if (!d.dirtyTracking && !(flags & IOMMU_DIRTY_NO_CLEAR)) throw kerr("EINVAL", `${d.name}: dirty tracking is off`);
    const gather = new IotlbGather();
    d.pt.readAndClearDirty(iova, size, record, flags, gather);
    if (!(flags & IOMMU_DIRTY_NO_CLEAR)) this.iotlbSync(d, gather);
  }

  // --- faults and page requests ---------------------------------------------------------------------------------

  /** A primary fault: logged (Linux prints it). @linux dmar_fault_do_one */
  handleFault(_iommu: IntelIommu, _rec: DmarFaultRecord): void {}

  /** @linux prq_event_thread (checks) + intel_prq_report */
  async handlePageRequest(iommu: IntelIommu, req: PageReqDsc): Promise<void> {
    const bad = (code: number) => {
      if (!req.lpig) return;
      iommu.submitSync([qiDescPageResponse(req.rid, req.pasidPresent, req.pasid, code, req.prgIndex)]);
    };
    if (req.addr >= 2 ** 47 && iommu.fsLevels === 4) return bad(QI_RESP.INVALID);
    if (req.pm && (req.rd || req.wr)) return bad(QI_RESP.INVALID);
    if (req.exe && req.rd) return bad(QI_RESP.INVALID);
    const info = iommu.deviceRbtree.get(req.rid) as DeviceDomainInfo | undefined;
    if (!info) return bad(QI_RESP.INVALID);
    await iopfReportFromDriver(
      info.dev,
      iopfFaultFromRequest({
        pasid: req.pasidPresent ? req.pasid : -1,
        grpid: req.prgIndex,
        addr: req.addr,
        read: req.rd,
        write: req.wr,
        exec: req.exe,
        priv: req.pm,
        last: req.lpig,
        responseNeedsPasid: true,
      }),
    );
  }

  /** A page group response descriptor, the response code passed as the core gives it. @linux intel_iommu_page_response */
  pageResponse(dev: Device, fault: IopfFault, msg: IommuPageResponse): void {
    const info = this.info(dev);
    const prm = fault.fault.prm;
    const pasidPresent = (prm.flags & 1) !== 0;
    info.iommu.submitSync([qiDescPageResponse(info.rid, pasidPresent, prm.pasid, msg.code, prm.grpid)]);
  }
}
