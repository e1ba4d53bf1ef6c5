/**
 * The SMMUv3 driver for one machine: `iommu_ops` and domain ops, platform probe/remove, device probe and groups,
 * domain allocation (stage 1 with ASIDs, stage 2 with VMIDs for nesting parents, identity, blocked, nested),
 * attach/replace/set_dev_pasid writing STEs and CDs through the hitless writer, IOTLB/ATC invalidation through
 * gathered commands and CMD_SYNC, event/PRI handling into core's IOPF, page responses, dirty tracking.
 * @linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c (arm_smmu_ops, arm_smmu_device_probe, ...),
 * arm-smmu-v3-iommufd.c (arm_smmu_make_nested_domain_ste, arm_smmu_validate_vste, arm_smmu_attach_dev_nested)
 */
import {
  type Device,
  devIommuFwspecGet,
  devIommuPrivGet,
  devIommuPrivSet,
  IOMMU_CAP,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_DOMAIN,
  IOMMU_FAULT_PAGE_REQUEST,
  IOMMU_FAULT_READ,
  IOMMU_FAULT_WRITE,
  IOMMU_HWPT_ALLOC,
  IOMMU_PAGE_RESP,
  IOMMU_RESV,
  IOMMU_WRITE,
  type IommuCore,
  type IommuDevice,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IommuOps,
  type IommuPageResponse,
  type IommuUserData,
  type IommuViommuOps,
  IoPageTable,
  type IopfFault,
  IotlbGather,
  iommuDeviceRegister,
  iommuDeviceUnregister,
  iommuFwspecAddIds,
  iommuGetDomainForDev,
  iommuPciOrGenericDeviceGroup,
  iopfFaultFromRequest,
  iopfQueueAlloc,
  iopfQueueFree,
  iopfRefcountGet,
  iopfRefcountPut,
  iopfReportFromDriver,
  KernelError,
  kerr,
  type ModuleContext,
  reportIommuFault,
  XA_LIMIT,
  XArray,
} from "@iommu-sim/core";
import { ARM_SMMU_DOMAIN, ArmSmmuDomain, ArmSmmuNestedDomain, pagingOf } from "./domain.js";
import { armLpaeFormat, armLpaeRestrictPgsizes } from "./io-pgtable-arm.js";
import { type ArmSmmuVste, armSmmuHwInfo, armSmmuValidateVste } from "./iommufd.js";
import { ArmSmmuMaster, type ArmSmmuMasterDomain } from "./master.js";
import { type CmdEnt, newCmdEnt } from "./queue.js";
import { CMD_VAL, CMDQ_OP, CTXDESC, STE, STE_VAL } from "./regs.js";
import {
  ArmSmmuDevice,
  type ArmSmmuEvent,
  type ArmSmmuEventSink,
  type ArmSmmuPri,
  type ArmSmmuV3Options,
} from "./smmu.js";
import { makeAbortSte, makeBypassSte, makeCdtableSte, makeNestedDomainSte, makeS1Cd, makeS2DomainSte } from "./ste.js";
import {
  type ArmSmmuVmaster,
  type ArmVsmmu,
  armSmmuGetViommuSize,
  armSmmuPrepareVmaster,
  armVmasterReportEvent,
  armVsmmuInit,
  createArmVsmmuOps,
} from "./viommu.js";

/** The software MSI window. @linux MSI_IOVA_BASE / MSI_IOVA_LENGTH */
export const MSI_IOVA_BASE = 0x8000000;
export const MSI_IOVA_LENGTH = 0x100000;
/** The CPU's virtual address bits, which cap a stage-1 IAS. @linux VA_BITS */
export const VA_BITS = 48;
/** Commands per batch. @linux CMDQ_BATCH_ENTRIES */
export const CMDQ_BATCH_ENTRIES = 64;

/** Fault-injection sites. */
export const ARM_SMMU_SITES = {
  master: "arm_smmu_probe_device",
  domain: "arm_smmu_domain_alloc",
  asid: "arm_smmu_asid",
} as const;

const PAGING_FLAGS = IOMMU_HWPT_ALLOC.DIRTY_TRACKING | IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID;

/**
 * A reusable batch of commands, submitted when full and at the end with a CMD_SYNC.
 * @linux struct arm_smmu_cmdq_batch, arm_smmu_cmdq_batch_add / _submit
 */
class CmdBatch {
  readonly ents: CmdEnt[] = [];
  num = 0;
  constructor(private readonly smmu: () => ArmSmmuDevice) {
    for (let i = 0; i < CMDQ_BATCH_ENTRIES; i++) this.ents.push(newCmdEnt());
  }
  /** The next slot, copied from `tmpl`. */
  add(tmpl: CmdEnt): void {
    if (this.num === CMDQ_BATCH_ENTRIES) {
      this.smmu().cmdq.issue(this.ents, this.num, false);
      this.num = 0;
    }
    Object.assign(this.ents[this.num++]!, tmpl);
  }
  submit(): void {
    this.smmu().cmdq.issue(this.ents, this.num, true);
    this.num = 0;
  }
}

/** Attach bookkeeping across prepare/commit. @linux struct arm_smmu_attach_state */
interface AttachState {
  master: ArmSmmuMaster;
  ssid: number;
  oldDomain: IommuDomain | undefined;
  atsEnabled: boolean;
  disableAts: boolean;
  cdNeedsAts: boolean;
  newMd: ArmSmmuMasterDomain | undefined;
  /** @linux arm_smmu_attach_state.vmaster */
  vmaster: ArmSmmuVmaster | undefined;
}

/**
 * Everything one machine's SMMUv3 driver owns.
 * @linux the file-scope state of arm-smmu-v3.c (arm_smmu_asid_xa, arm_smmu_ops, the static identity/blocked
 * domains)
 */
export class ArmSmmuDriver implements ArmSmmuEventSink {
  /** ASIDs of stage-1 domains. @linux arm_smmu_asid_xa */
  readonly asids: XArray<object>;
  readonly ops: IommuOps;
  readonly pagingOps: IommuDomainOps;
  readonly nestedOps: IommuDomainOps;
  readonly dirtyOps: IommuDirtyOps;
  readonly identity: IommuDomain;
  readonly blocked: IommuDomain;
  readonly instances = new Set<ArmSmmuDevice>();
  /** @linux arm_vsmmu_ops */
  readonly viommuOps: IommuViommuOps;
  /** The vmaster of each master attached to a stage-1 nested domain of a vIOMMU. @linux arm_smmu_master.vmaster */
  readonly vmasters = new WeakMap<ArmSmmuMaster, ArmSmmuVmaster>();
  private readonly mixed = new WeakSet<IotlbGather>();
  private batchSmmu: ArmSmmuDevice | undefined;
  private readonly batch = new CmdBatch(() => this.batchSmmu!);
  private readonly tlbiEnt = newCmdEnt();

  constructor(
    readonly ctx: ModuleContext,
    readonly core: IommuCore,
    readonly options: ArmSmmuV3Options,
  ) {
    this.asids = new XArray<object>(ctx.machine.faults, ARM_SMMU_SITES.asid);
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDev(d as ArmSmmuDomain, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.s1SetDevPasid(d as ArmSmmuDomain, dev, pasid, old),
      mapPages: (d, iova, pa, pgsize, count, prot, gather) =>
        (d as ArmSmmuDomain).pt.map(
          iova,
          pa,
          pgsize,
          count,
          // Test-only mutant: every mapping writable.
          ctx.machine.mutant("smmuv3:wrong-permission") ? prot | IOMMU_WRITE : prot,
          gather,
        ),
      unmapPages: (d, iova, pgsize, count, gather) => this.unmapPages(d as ArmSmmuDomain, iova, pgsize, count, gather),
      iovaToPhys: (d, iova) => (d as ArmSmmuDomain).pt.iovaToPhys(iova),
      flushIotlbAll: (d) => this.flushIotlbAll(d as ArmSmmuDomain),
      iotlbSync: (d, gather) => this.iotlbSync(d as ArmSmmuDomain, gather),
      free: (d) => this.domainFreePaging(d as ArmSmmuDomain),
    };
    this.dirtyOps = {
      setDirtyTracking: async () => {},
      readAndClearDirty: (d, iova, size, flags, record) =>
        this.readAndClearDirty(d as ArmSmmuDomain, iova, size, flags, record),
    };
    this.nestedOps = {
      attachDev: (d, dev, old) => this.attachDevNested(d as ArmSmmuNestedDomain, dev, old),
      free: () => {},
    };
    this.viommuOps = createArmVsmmuOps({
      master: (dev) => this.master(dev),
      allocNested: (vsmmu, vste) => this.newNested(vsmmu.s2Parent, vste, vsmmu),
    });
    this.identity = new IommuDomain({
      type: IOMMU_DOMAIN.IDENTITY,
      name: "arm_smmu_identity",
      ops: { attachDev: (_d, dev, old) => this.attachDevIdentity(dev, old) },
    });
    this.blocked = new IommuDomain({
      type: IOMMU_DOMAIN.BLOCKED,
      name: "arm_smmu_blocked",
      ops: {
        attachDev: (_d, dev, old) => this.attachDevBlocked(dev, old),
        setDevPasid: (_d, dev, pasid, old) => this.blockingSetDevPasid(dev, pasid, old),
      },
    });
    this.ops = {
      owner: ctx.owner,
      capable: (dev, cap) => this.capable(dev, cap),
      hwInfo: (dev, type) => this.hwInfo(dev, type),
      domainAllocPaging: (dev) => this.domainAllocPagingFlags(dev, 0, undefined),
      domainAllocPagingFlags: (dev, flags, data) => this.domainAllocPagingFlags(dev, flags, data),
      // Nested domains come only from a vIOMMU (arm_vsmmu_alloc_domain_nested), as in Linux.
      getViommuSize: (dev, type) => armSmmuGetViommuSize(this.master(dev), type),
      viommuInit: (viommu, parent, data) => armVsmmuInit(viommu, parent, data, this.viommuOps),
      identityDomain: this.identity,
      blockedDomain: this.blocked,
      releaseDomain: this.blocked,
      ofXlate: async (dev, args) => this.ofXlate(dev, args.args),
      probeDeviceFwspec: async (dev, iommu) => this.probeDevice(dev, iommu as ArmSmmuDevice),
      releaseDevice: (dev) => this.releaseDevice(dev),
      deviceGroup: async (dev) => this.deviceGroup(dev),
      getResvRegions: () => [
        { start: MSI_IOVA_BASE, length: MSI_IOVA_LENGTH, prot: 0x1 | 0x2 | 0x10, type: IOMMU_RESV.SW_MSI },
      ],
      pageResponse: (dev, fault, msg) => this.pageResponse(dev, fault, msg),
      defaultDomainOps: this.pagingOps,
      userPasidTable: true,
    };
  }

  private get machine() {
    return this.ctx.machine;
  }

  /**
   * A boolean firmware property of `dev` (its platform data; the driver core fills `dma-can-stall` from the
   * description's `dmaCanStall`).
   * @linux device_property_read_bool
   */
  private deviceReadBool(dev: Device, prop: "dma-can-stall"): boolean {
    return dev.platformData[prop] === true;
  }

  /** The master of a probed device. ENODEV otherwise. @linux dev_iommu_priv_get */
  master(dev: Device): ArmSmmuMaster {
    const m = devIommuPrivGet<ArmSmmuMaster>(dev);
    if (!(m instanceof ArmSmmuMaster)) throw kerr("ENODEV", `${dev.name} is not behind an SMMUv3`);
    return m;
  }

  // --- platform probe ---------------------------------------------------------------------------------------

  /** @linux arm_smmu_device_probe */
  async deviceProbe(pdev: Device): Promise<ArmSmmuDevice> {
    const smmu = new ArmSmmuDevice(this.core, pdev, this.options);
    smmu.hwProbe();
    smmu.initStructures();
    try {
      smmu.deviceReset();
      smmu.sink = this;
      if (smmu.feat.pri || smmu.feat.stalls) smmu.iopfQueue = iopfQueueAlloc(this.machine, pdev.name);
      await iommuDeviceRegister(this.core, smmu, this.ops, pdev);
    } catch (e) {
      await iopfQueueFree(smmu.iopfQueue);
      smmu.iopfQueue = undefined;
      try {
        await smmu.shutdown();
      } catch {
        // the hardware may not respond: free the memory regardless
      }
      smmu.freeStructures();
      throw e;
    }
    this.instances.add(smmu);
    return smmu;
  }

  /** @linux arm_smmu_device_remove */
  async deviceRemove(smmu: ArmSmmuDevice): Promise<void> {
    await iommuDeviceUnregister(this.core, smmu);
    await smmu.drainQueues();
    await iopfQueueFree(smmu.iopfQueue);
    smmu.iopfQueue = undefined;
    await smmu.shutdown();
    smmu.freeStructures();
    this.instances.delete(smmu);
  }

  // --- device probe -----------------------------------------------------------------------------------------

  /** Add the DT specifier's StreamID to the fwspec. @linux arm_smmu_of_xlate */
  async ofXlate(dev: Device, args: readonly number[]): Promise<void> {
    this.core.probeLock.assertHeld();
    const id = args[0];
    if (id === undefined) throw kerr("EINVAL", `${dev.name}: iommus specifier without a StreamID`);
    iommuFwspecAddIds(this.core, dev, [id]);
  }

  /** @linux arm_smmu_probe_device + arm_smmu_insert_master */
  async probeDevice(dev: Device, smmu: ArmSmmuDevice): Promise<void> {
    this.core.probeLock.assertHeld();
    if (this.core.diag.warnOnOnce(devIommuPrivGet(dev) !== undefined, `${dev.name}: already probed`)) {
      throw kerr("EBUSY", `${dev.name}: already probed`);
    }
    const fwspec = devIommuFwspecGet(dev);
    if (!fwspec || fwspec.numIds === 0) throw kerr("ENODEV", `${dev.name}: no StreamIDs`);
    // Bridged PCI devices may carry the same ID twice.
    const sids = [...new Set(fwspec.ids)];
    for (const sid of sids) {
      if (!smmu.sidInRange(sid)) throw kerr("ERANGE", `${dev.name}: StreamID 0x${sid.toString(16)} out of range`);
      if (smmu.streams.has(sid))
        throw kerr("EINVAL", `${dev.name}: aliasing StreamID 0x${sid.toString(16)} unsupported`);
    }
    this.core.faults.check(ARM_SMMU_SITES.master);
    for (const sid of sids) smmu.initSidStrtab(sid);
    let ssidBits = 0;
    const prop = dev.platformData["pasid-num-bits"];
    if (typeof prop === "number") ssidBits = prop;
    if (dev.pci) ssidBits = dev.pci.pasidBits; // arm_smmu_enable_pasid: from pci_max_pasids
    ssidBits = Math.min(smmu.ssidBits, ssidBits);
    // Without 2-level CD tables the whole CD table is one linear allocation: keep it within 64 KiB.
    if (!smmu.feat.twoLvlCdtab) ssidBits = Math.min(ssidBits, CTXDESC.LINEAR_CDMAX);
    const stall = (smmu.feat.stalls && this.deviceReadBool(dev, "dma-can-stall")) || smmu.feat.stallForce;
    const ats = dev.pci?.ats === true && smmu.feat.ats;
    const pri = dev.pci?.pri === true && smmu.feat.pri && ats;
    const master = new ArmSmmuMaster(dev, smmu, sids, ssidBits, stall, ats, pri);
    // Test-only mutant: a reference taken in probe and never put (the leak class of "iommu: fix device leaks").
    if (this.ctx.machine.mutant("smmuv3:leaked-device-ref")) dev.get("arm_smmu_probe_device");
    devIommuPrivSet(this.core, dev, master);
    for (const sid of sids) smmu.streams.set(sid, master);
  }

  /** @linux arm_smmu_release_device (the core attached the release domain, blocked, first) */
  releaseDevice(dev: Device): void {
    const master = devIommuPrivGet<ArmSmmuMaster>(dev);
    if (!(master instanceof ArmSmmuMaster)) return;
    const smmu = master.smmu;
    this.core.diag.warnOn(master.iopfRefcount !== 0, `${dev.name}: released with IOPF enabled`);
    // Normally blocked already: make sure the STE aborts before the master goes.
    if (master.domain !== this.blocked)
      this.attachDevSte(master, makeAbortSte(), STE_VAL.S1DSS_TERMINATE, undefined, this.blocked);
    for (const sid of master.streams) smmu.streams.delete(sid);
    this.commitVmaster(master, undefined);
    master.freeCdTables();
  }

  /** @linux arm_smmu_device_group */
  deviceGroup(dev: Device) {
    return iommuPciOrGenericDeviceGroup(this.core, dev);
  }

  /** @linux arm_smmu_capable */
  capable(dev: Device, cap: number): boolean {
    const master = devIommuPrivGet<ArmSmmuMaster>(dev);
    switch (cap) {
      case IOMMU_CAP.CACHE_COHERENCY:
        return master?.smmu.feat.coherency === true;
      case IOMMU_CAP.NOEXEC:
      case IOMMU_CAP.DEFERRED_FLUSH:
        return true;
      case IOMMU_CAP.ENFORCE_CACHE_COHERENCY:
        return master?.smmu.feat.coherency === true;
      case IOMMU_CAP.DIRTY_TRACKING:
        return master !== undefined && this.dbmCapable(master.smmu);
      default:
        return false;
    }
  }

  /** @linux arm_smmu_dbm_capable */
  dbmCapable(smmu: ArmSmmuDevice): boolean {
    return smmu.feat.hdHttu && smmu.feat.coherency;
  }

  /**
   * `struct iommu_hw_info_arm_smmuv3 { __u32 flags, __reserved, idr[6], iidr, aidr; }` from the ID registers read
   * at probe.
   * @linux arm_smmu_hw_info
   */
  hwInfo(dev: Device, type = 0): { type: number; data: Uint8Array } {
    return armSmmuHwInfo(this.master(dev).smmu, type);
  }

  // --- domains ----------------------------------------------------------------------------------------------

  /** @linux arm_smmu_domain_alloc_paging_flags + arm_smmu_domain_finalise */
  async domainAllocPagingFlags(dev: Device, flags: number, data: IommuUserData | undefined): Promise<IommuDomain> {
    const master = this.master(dev);
    const smmu = master.smmu;
    if (flags & ~PAGING_FLAGS || data) throw kerr("EOPNOTSUPP", "arm-smmu-v3: unsupported domain flags or data");
    const H = IOMMU_HWPT_ALLOC;
    let stage: number;
    let nestParent = false;
    switch (flags) {
      case 0:
        stage = smmu.feat.transS1 ? ARM_SMMU_DOMAIN.S1 : ARM_SMMU_DOMAIN.S2;
        break;
      case H.NEST_PARENT:
        if (!smmu.feat.nesting) throw kerr("EOPNOTSUPP", "arm-smmu-v3: no nesting support");
        stage = ARM_SMMU_DOMAIN.S2;
        nestParent = true;
        break;
      case H.DIRTY_TRACKING:
      case H.DIRTY_TRACKING | H.PASID:
      case H.PASID:
        if (!smmu.feat.transS1) throw kerr("EOPNOTSUPP", "arm-smmu-v3: no stage 1");
        stage = ARM_SMMU_DOMAIN.S1;
        break;
      default:
        throw kerr("EOPNOTSUPP", "arm-smmu-v3: unsupported flag combination");
    }
    const enableDirty = (flags & H.DIRTY_TRACKING) !== 0;
    if (enableDirty && !this.dbmCapable(smmu)) throw kerr("EOPNOTSUPP", "arm-smmu-v3: no HTTU dirty support");
    this.core.faults.check(ARM_SMMU_SITES.domain);
    let ias: number;
    let oas: number;
    if (stage === ARM_SMMU_DOMAIN.S1) {
      ias = Math.min(smmu.feat.vax ? 52 : 48, VA_BITS);
      oas = smmu.ias;
    } else {
      ias = smmu.ias;
      oas = smmu.oas;
    }
    const { granuleLg2 } = armLpaeRestrictPgsizes(smmu.pgsizeBitmap, this.options.pageSize ?? 4096, oas);
    const fmt = armLpaeFormat(stage === ARM_SMMU_DOMAIN.S1 ? 1 : 2, granuleLg2, {
      hd: enableDirty,
      oas52: oas > 48,
      contig: this.options.contig === true,
    });
    let domain: ArmSmmuDomain | undefined;
    const pt = new IoPageTable(fmt, this.machine.memory, this.machine.pages, {
      ias,
      oas,
      site: "arm_smmu_pgtable",
      diag: this.core.diag,
      sync: (g) => {
        if (domain) this.iotlbSync(domain, g);
        else g.freePages(this.machine.pages);
      },
    });
    const token = {};
    let tag: number;
    try {
      if (stage === ARM_SMMU_DOMAIN.S1) tag = this.asids.alloc(token, XA_LIMIT(1, 2 ** smmu.asidBits - 1));
      else tag = smmu.vmidMap.alloc(token, XA_LIMIT(1, 2 ** smmu.vmidBits - 1));
    } catch (e) {
      pt.free();
      throw e;
    }
    domain = new ArmSmmuDomain(
      this.pagingOps,
      smmu,
      stage,
      pt,
      tag,
      nestParent,
      enableDirty,
      enableDirty ? this.dirtyOps : undefined,
    );
    domain.owner = this.ops;
    return domain;
  }

  /** @linux arm_smmu_domain_free_paging (free_io_pgtable_ops flushes the ASID/VMID first) */
  domainFreePaging(d: ArmSmmuDomain): void {
    this.core.diag.warnOn(d.devices.size > 0, `${d.name}: freed while attached`);
    this.tlbInvContext(d);
    d.pt.free();
    if (d.stage === ARM_SMMU_DOMAIN.S1) this.asids.erase(d.tag);
    else d.smmu.vmidMap.erase(d.tag);
  }

  /**
   * A nested domain straight on a stage-2 parent, without a vIOMMU (kernel-API tests; Linux allocates nested
   * domains only through arm_vsmmu_alloc_domain_nested, which iommufd reaches via the vIOMMU's ops). EINVAL for a
   * parent that is not a nesting parent of this SMMU; the vSTE checks of {@link armSmmuValidateVste}.
   * @linux arm_vsmmu_alloc_domain_nested / arm_smmu_validate_vste
   */
  async domainAllocNested(dev: Device, parent: IommuDomain, flags: number, data: IommuUserData): Promise<IommuDomain> {
    const master = this.master(dev);
    if (flags) throw kerr("EOPNOTSUPP", "arm-smmu-v3: nested flags");
    if (!(parent instanceof ArmSmmuDomain) || !parent.nestParent || parent.smmu !== master.smmu) {
      throw kerr("EINVAL", "arm-smmu-v3: parent is not a nesting parent of this SMMU");
    }
    return this.newNested(parent, armSmmuValidateVste(data), undefined);
  }

  /** @linux the allocation half of arm_vsmmu_alloc_domain_nested */
  private newNested(parent: ArmSmmuDomain, vste: ArmSmmuVste, vsmmu: ArmVsmmu | undefined): ArmSmmuNestedDomain {
    const d = new ArmSmmuNestedDomain(this.nestedOps, parent, vste.ste, vste.enableAts, vsmmu);
    d.owner = this.ops;
    return d;
  }

  // --- attach -----------------------------------------------------------------------------------------------

  /** Write `ste` to every StreamID of the master. @linux arm_smmu_install_ste_for_dev */
  private installSteForDev(master: ArmSmmuMaster, ste: BigUint64Array): void {
    if (master.cdTable) master.cdTable.inSte = Number((ste[0]! & STE.CFG.mask) >> 1n) === STE_VAL.CFG_S1_TRANS;
    master.steAtsEnabled = Number((ste[1]! & STE.EATS.mask) >> BigInt(STE.EATS.bit)) === STE_VAL.EATS_TRANS;
    for (const sid of master.streams) master.smmu.writeSte(sid, ste);
  }

  private ssidsInUse(master: ArmSmmuMaster): boolean {
    return (master.cdTable?.usedSsids ?? 0) > 0;
  }

  /** Enable page requests (PRI or stall) for an attachment with a fault handler. @linux arm_smmu_enable_iopf */
  private async enableIopf(master: ArmSmmuMaster, domain: IommuDomain): Promise<void> {
    if (domain.iopfHandler === undefined) return;
    const smmu = master.smmu;
    if (!smmu.iopfQueue || !(master.priSupported || master.stallEnabled)) {
      throw kerr("EOPNOTSUPP", `${master.dev.name}: no page-request support`);
    }
    await iopfRefcountGet(master, smmu.iopfQueue);
  }

  /** @linux arm_smmu_disable_iopf */
  private async disableIopf(master: ArmSmmuMaster, domain: IommuDomain | undefined): Promise<void> {
    if (domain?.iopfHandler === undefined) return;
    await iopfRefcountPut(
      master,
      () => master.smmu.iopfQueue,
      () => master.smmu.drainQueues(),
    );
  }

  /** @linux arm_smmu_attach_prepare */
  private async attachPrepare(state: AttachState, newDomain: IommuDomain): Promise<void> {
    const master = state.master;
    if (newDomain instanceof ArmSmmuNestedDomain) state.vmaster = armSmmuPrepareVmaster(newDomain, master.dev);
    const paging = pagingOf(newDomain);
    // ATS only with page tables behind it (bypass/abort STEs deny translated traffic).
    if (paging || state.cdNeedsAts) state.atsEnabled = !state.disableAts && master.atsSupported;
    if (paging) {
      await this.enableIopf(master, newDomain);
      const md: ArmSmmuMasterDomain = {
        master,
        ssid: state.ssid,
        nestedAtsFlush: newDomain instanceof ArmSmmuNestedDomain && state.atsEnabled,
        ats: state.atsEnabled,
      };
      paging.devices.add(md);
      if (state.atsEnabled) paging.nrAtsMasters++;
      state.newMd = md;
    }
    if (!state.atsEnabled && master.atsEnabled) {
      // Flush the ATC before the STE stops allowing translated traffic.
      this.atcInvMaster(master, 0);
    }
  }

  /** @linux arm_smmu_attach_commit */
  private async attachCommit(state: AttachState): Promise<void> {
    const master = state.master;
    if (state.ssid === 0) this.commitVmaster(master, state.vmaster);
    if (state.atsEnabled && master.atsEnabled) this.atcInvMaster(master, state.ssid);
    else if (state.atsEnabled && !master.atsEnabled) this.atcInvMaster(master, 0);
    master.atsEnabled = state.atsEnabled;
    this.removeMasterDomain(master, state.oldDomain, state.ssid, state.newMd);
    await this.disableIopf(master, state.oldDomain);
  }

  /** @linux arm_smmu_remove_master_domain */
  private removeMasterDomain(
    master: ArmSmmuMaster,
    domain: IommuDomain | undefined,
    ssid: number,
    keep: ArmSmmuMasterDomain | undefined,
  ): void {
    const paging = pagingOf(domain);
    if (!paging) return;
    for (const md of paging.devices) {
      if (md.master === master && md.ssid === ssid && md !== keep) {
        paging.devices.delete(md);
        if (md.ats) paging.nrAtsMasters--;
        break;
      }
    }
  }

  /** @linux arm_smmu_attach_dev (paging domains) */
  async attachDev(domain: ArmSmmuDomain, dev: Device, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    if (domain.smmu !== master.smmu) throw kerr("EINVAL", `${dev.name}: domain belongs to another SMMU`);
    let cdPa = -1;
    if (domain.stage === ARM_SMMU_DOMAIN.S1) cdPa = master.allocCdPtr(0);
    else if (this.ssidsInUse(master)) throw kerr("EBUSY", `${dev.name}: PASIDs in use, cannot attach stage 2`);
    const state = this.newState(master, 0, master.domain ?? old);
    await this.attachPrepare(state, domain);
    if (domain.stage === ARM_SMMU_DOMAIN.S1) {
      const cd = makeS1Cd({ asid: domain.asid, cfg: domain.s1cfg!, hd: domain.hd }, master.stallEnabled);
      master.writeCdEntry(0, cdPa, cd);
      const ste = makeCdtableSte(master.smmu.feat, master.cdTable!, {
        atsEnabled: state.atsEnabled,
        s1dss: STE_VAL.S1DSS_SSID0,
        stallEnabled: master.stallEnabled,
      });
      this.installSteForDev(master, ste);
    } else {
      const ste = makeS2DomainSte(master.smmu.feat, { vmid: domain.vmid, cfg: domain.s2cfg! }, state.atsEnabled);
      this.installSteForDev(master, ste);
      master.clearCd(0);
    }
    master.domain = domain;
    await this.attachCommit(state);
  }

  private newState(master: ArmSmmuMaster, ssid: number, old: IommuDomain | undefined): AttachState {
    return {
      master,
      ssid,
      oldDomain: old,
      atsEnabled: false,
      disableAts: false,
      cdNeedsAts: false,
      newMd: undefined,
      vmaster: undefined,
    };
  }

  /** @linux arm_smmu_attach_commit_vmaster / arm_smmu_master_clear_vmaster */
  private commitVmaster(master: ArmSmmuMaster, vmaster: ArmSmmuVmaster | undefined): void {
    if (vmaster) this.vmasters.set(master, vmaster);
    else this.vmasters.delete(master);
  }

  /** @linux arm_smmu_attach_dev_nested */
  async attachDevNested(domain: ArmSmmuNestedDomain, dev: Device, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    if (domain.parent.smmu !== master.smmu) throw kerr("EINVAL", `${dev.name}: nested domain of another SMMU`);
    if (this.ssidsInUse(master)) throw kerr("EBUSY", `${dev.name}: PASIDs in use`);
    const state = this.newState(master, 0, master.domain ?? old);
    state.disableAts = !domain.enableAts;
    await this.attachPrepare(state, domain);
    const p = domain.parent;
    const ste = makeNestedDomainSte(master.smmu.feat, domain.ste, { vmid: p.vmid, cfg: p.s2cfg! }, state.atsEnabled);
    this.installSteForDev(master, ste);
    master.domain = domain;
    await this.attachCommit(state);
  }

  /** Attach an STE-only configuration (identity, blocked). @linux arm_smmu_attach_dev_ste */
  private attachDevSte(
    master: ArmSmmuMaster,
    ste: BigUint64Array,
    s1dss: number,
    old: IommuDomain | undefined,
    domain: IommuDomain,
  ): AttachState {
    const state = this.newState(master, 0, master.domain ?? old);
    let target = ste;
    if (this.ssidsInUse(master)) {
      // PASIDs keep the CD table live: the RID gets S1DSS behaviour instead.
      state.cdNeedsAts = true;
      state.atsEnabled = master.atsSupported;
      target = makeCdtableSte(master.smmu.feat, master.cdTable!, {
        atsEnabled: state.atsEnabled,
        s1dss,
        stallEnabled: master.stallEnabled,
      });
    }
    if (!state.atsEnabled && master.atsEnabled) this.atcInvMaster(master, 0);
    this.installSteForDev(master, target);
    master.atsEnabled = state.atsEnabled;
    this.removeMasterDomain(master, state.oldDomain, 0, undefined);
    this.commitVmaster(master, undefined);
    master.domain = domain;
    // After leaving the old domain's device list, so nothing else rewrites CD 0.
    if (master.cdTable && (master.readCd(0)[0]! & (1n << 31n)) !== 0n) master.clearCd(0);
    return state;
  }

  /** @linux arm_smmu_attach_dev_identity */
  async attachDevIdentity(dev: Device, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    const state = this.attachDevSte(master, makeBypassSte(master.smmu.feat), STE_VAL.S1DSS_BYPASS, old, this.identity);
    await this.disableIopf(master, state.oldDomain);
  }

  /** @linux arm_smmu_attach_dev_blocked */
  async attachDevBlocked(dev: Device, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    const state = this.attachDevSte(master, makeAbortSte(), STE_VAL.S1DSS_TERMINATE, old, this.blocked);
    await this.disableIopf(master, state.oldDomain);
  }

  /** Make the STE a CD-table STE with the RID domain's S1DSS, if not already. @linux arm_smmu_update_ste */
  private updateSte(master: ArmSmmuMaster, sidDomain: IommuDomain | undefined, atsEnabled: boolean): void {
    if (master.cdTable?.inSte && master.steAtsEnabled === atsEnabled) return;
    let s1dss: number = STE_VAL.S1DSS_TERMINATE;
    if (sidDomain?.type === IOMMU_DOMAIN.IDENTITY) s1dss = STE_VAL.S1DSS_BYPASS;
    else
      this.core.diag.warnOn(
        sidDomain?.type !== IOMMU_DOMAIN.BLOCKED,
        `${master.dev.name}: update_ste with a paging RID`,
      );
    const ste = makeCdtableSte(master.smmu.feat, master.cdTable!, {
      atsEnabled,
      s1dss,
      stallEnabled: master.stallEnabled,
    });
    this.installSteForDev(master, ste);
  }

  /** Attach a stage-1 domain at a PASID. @linux arm_smmu_s1_set_dev_pasid / arm_smmu_set_pasid */
  async s1SetDevPasid(domain: ArmSmmuDomain, dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    if (domain.stage !== ARM_SMMU_DOMAIN.S1) throw kerr("EINVAL", `${dev.name}: PASID attach needs stage 1`);
    if (domain.smmu !== master.smmu) throw kerr("EINVAL", `${dev.name}: domain of another SMMU`);
    if (master.ssidBits === 0 || pasid >= 2 ** master.ssidBits) throw kerr("EINVAL", `${dev.name}: bad PASID ${pasid}`);
    const sidDomain = iommuGetDomainForDev(dev) ?? master.domain;
    const rid = master.domain ?? sidDomain;
    if (!master.cdTable?.inSte && rid?.type !== IOMMU_DOMAIN.IDENTITY && rid?.type !== IOMMU_DOMAIN.BLOCKED) {
      throw kerr("EINVAL", `${dev.name}: the RID domain cannot carry PASIDs`);
    }
    const cdPa = master.allocCdPtr(pasid);
    const state = this.newState(master, pasid, master.pasids.get(pasid) ?? old);
    await this.attachPrepare(state, domain);
    const cd = makeS1Cd({ asid: domain.asid, cfg: domain.s1cfg!, hd: domain.hd }, master.stallEnabled);
    master.writeCdEntry(pasid, cdPa, cd);
    this.updateSte(master, rid, state.atsEnabled);
    master.pasids.set(pasid, domain);
    await this.attachCommit(state);
  }

  /** Remove a PASID attachment. @linux arm_smmu_blocking_set_dev_pasid */
  async blockingSetDevPasid(dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    const prev = master.pasids.get(pasid) ?? old;
    master.clearCd(pasid);
    if (master.atsEnabled) this.atcInvMaster(master, pasid);
    this.removeMasterDomain(master, prev, pasid, undefined);
    master.pasids.delete(pasid);
    await this.disableIopf(master, prev);
    if (!this.ssidsInUse(master)) {
      const rid = master.domain;
      if (rid === this.identity) await this.attachDevIdentity(dev, rid);
      else if (rid === this.blocked) await this.attachDevBlocked(dev, rid);
    }
  }

  // --- invalidation -----------------------------------------------------------------------------------------

  /** Unmap and record the page size in the gather. @linux arm_lpae_unmap_pages + io_pgtable_tlb_add_page */
  unmapPages(d: ArmSmmuDomain, iova: number, pgsize: number, count: number, gather: IotlbGather): number {
    const n = d.pt.unmap(iova, pgsize, count, gather);
    if (n > 0) {
      if (gather.pgsize === 0) gather.pgsize = pgsize;
      else if (gather.pgsize !== pgsize) this.mixed.add(gather);
    }
    return n;
  }

  /** @linux arm_smmu_iotlb_sync */
  iotlbSync(d: ArmSmmuDomain, gather: IotlbGather): void {
    if (gather.end >= gather.start && gather.end > 0) {
      const mixed = this.mixed.has(gather) || gather.pgsize === 0;
      const granule = mixed ? 2 ** d.pt.format.granuleLg2 : gather.pgsize;
      // Freed tables mean walk-cache entries went too: a non-leaf invalidation.
      const leaf = gather.freelist.length === 0 && !mixed;
      this.tlbInvRangeDomain(d, gather.start, gather.end - gather.start + 1, granule, leaf);
      this.mixed.delete(gather);
    }
    gather.freePages(this.machine.pages);
  }

  /** Invalidate the whole ASID/VMID, then the ATCs. @linux arm_smmu_tlb_inv_context / arm_smmu_flush_iotlb_all */
  flushIotlbAll(d: ArmSmmuDomain): void {
    this.tlbInvContext(d);
  }

  /** @linux arm_smmu_tlb_inv_context */
  tlbInvContext(d: ArmSmmuDomain): void {
    const c = newCmdEnt();
    if (d.stage === ARM_SMMU_DOMAIN.S1) {
      c.opcode = d.smmu.feat.e2h ? CMDQ_OP.TLBI_EL2_ASID : CMDQ_OP.TLBI_NH_ASID;
      c.asid = d.asid;
    } else {
      c.opcode = CMDQ_OP.TLBI_S12_VMALL;
      c.vmid = d.vmid;
    }
    if (this.skipTlbi) d.smmu.cmdq.issue([], 0, true);
    else d.smmu.cmdq.issueOne(c, true);
    this.atcInvDomain(d, 0, 0);
  }

  /** TLBI commands left out: the test-only `skipTlbi` option or the "smmuv3:skip-invalidation" mutant. */
  private get skipTlbi(): boolean {
    return this.options.skipTlbi === true || this.ctx.machine.mutant("smmuv3:skip-invalidation");
  }

  /** @linux arm_smmu_tlb_inv_range_domain */
  tlbInvRangeDomain(d: ArmSmmuDomain, iova: number, size: number, granule: number, leaf: boolean): void {
    const c = this.tlbiEnt;
    Object.assign(c, newCmdEntZero);
    c.leaf = leaf;
    if (d.stage === ARM_SMMU_DOMAIN.S1) {
      c.opcode = d.smmu.feat.e2h ? CMDQ_OP.TLBI_EL2_VA : CMDQ_OP.TLBI_NH_VA;
      c.asid = d.asid;
    } else {
      c.opcode = CMDQ_OP.TLBI_S2_IPA;
      c.vmid = d.vmid;
    }
    this.tlbInvRange(d, c, iova, size, granule);
    if (d.nestParent) {
      // A changed stage 2 invalidates every nested stage-1 entry under the VMID.
      const all = newCmdEnt(CMDQ_OP.TLBI_NH_ALL);
      all.vmid = d.vmid;
      if (this.skipTlbi) d.smmu.cmdq.issue([], 0, true);
      else d.smmu.cmdq.issueOne(all, true);
    }
    this.atcInvDomain(d, iova, size);
  }

  /** Range (RIL) or per-granule TLBI commands, batched, then CMD_SYNC. @linux __arm_smmu_tlb_inv_range */
  private tlbInvRange(d: ArmSmmuDomain, cmd: CmdEnt, iova: number, size: number, granule: number): void {
    if (!size) return;
    const smmu = d.smmu;
    const end = iova + size;
    let numPages = 0;
    let tg = 0;
    let invRange = granule;
    const ril = smmu.feat.rangeInv;
    if (ril) {
      tg = d.pt.format.granuleLg2;
      numPages = Math.floor(size / 2 ** tg);
      cmd.tg = (tg - 10) / 2;
      if (cmd.leaf) cmd.ttl = 4 - Math.floor((Math.log2(granule) - 3) / (tg - 3));
      else if ((numPages & CMD_VAL.TLBI_RANGE_NUM_MAX) === 1) numPages++;
    }
    this.batchSmmu = smmu;
    const b = this.batch;
    b.num = 0;
    while (iova < end) {
      if (ril) {
        const scale = ctz(numPages);
        cmd.scale = scale;
        const num = Math.floor(numPages / 2 ** scale) & CMD_VAL.TLBI_RANGE_NUM_MAX;
        cmd.num = num - 1;
        invRange = num * 2 ** (scale + tg);
        numPages -= num * 2 ** scale;
      }
      cmd.addr = iova;
      if (!this.skipTlbi) b.add(cmd);
      iova += invRange;
    }
    b.submit();
  }

  /** Build an ATC_INV for [iova, iova+size) (size 0: everything). @linux arm_smmu_atc_inv_to_cmd */
  private atcInvToCmd(ssid: number, iova: number, size: number, cmd: CmdEnt): void {
    Object.assign(cmd, newCmdEntZero);
    cmd.opcode = CMDQ_OP.ATC_INV;
    cmd.substreamValid = ssid !== 0;
    cmd.ssid = ssid;
    if (!size) {
      cmd.atcSize = CMD_VAL.ATC_INV_SIZE_ALL;
      return;
    }
    const pageStart = BigInt(Math.floor(iova / 4096));
    const pageEnd = BigInt(Math.floor((iova + size - 1) / 4096));
    // The smallest aligned power-of-two span of pages covering both ends.
    const log2Span = (pageStart ^ pageEnd).toString(2).length - ((pageStart ^ pageEnd) === 0n ? 1 : 0);
    const start = Number((pageStart >> BigInt(log2Span)) << BigInt(log2Span));
    cmd.addr = start * 4096;
    cmd.atcSize = log2Span;
  }

  /** @linux arm_smmu_atc_inv_master */
  atcInvMaster(master: ArmSmmuMaster, ssid: number): void {
    if (!master.atsSupported) return;
    const c = newCmdEnt();
    this.atcInvToCmd(ssid, 0, 0, c);
    const ents = master.streams.map((sid) => ({ ...c, sid }));
    master.smmu.issueSync(ents, ents.length);
  }

  /** @linux arm_smmu_atc_inv_domain */
  private atcInvDomain(d: ArmSmmuDomain, iova: number, size: number): void {
    if (d.nrAtsMasters === 0) return;
    const ents: CmdEnt[] = [];
    for (const md of d.devices) {
      if (!md.master.atsEnabled) continue;
      const c = newCmdEnt();
      if (md.nestedAtsFlush) this.atcInvToCmd(0, 0, 0, c);
      else this.atcInvToCmd(md.ssid, iova, size, c);
      for (const sid of md.master.streams) ents.push({ ...c, sid });
    }
    if (ents.length) d.smmu.issueSync(ents, ents.length);
  }

  // --- dirty tracking ---------------------------------------------------------------------------------------

  /** @linux arm_smmu_read_and_clear_dirty (+ the iotlb sync iommufd does after it) */
  readAndClearDirty(
    d: ArmSmmuDomain,
    iova: number,
    size: number,
    flags: number,
    record: (iova: number, length: number) => void,
  ): void {
    const gather = new IotlbGather();
    d.pt.readAndClearDirty(iova, size, record, flags, gather);
    if (!(flags & IOMMU_DIRTY_NO_CLEAR)) {
      if (gather.end >= gather.start && gather.end > 0) gather.pgsize = 2 ** d.pt.format.granuleLg2;
      this.mixed.add(gather);
      this.iotlbSync(d, gather);
    }
  }

  // --- faults -----------------------------------------------------------------------------------------------

  /** @linux arm_smmu_handle_evt (stall → IOPF) + the dev_info of unhandled events */
  async handleEvent(smmu: ArmSmmuDevice, evt: ArmSmmuEvent): Promise<void> {
    const fault = ArmSmmuDevice.isFaultEvent(evt.id);
    if (!fault && !ArmSmmuDevice.isGuestConfigEvent(evt.id)) return;
    const master = smmu.streams.get(evt.sid);
    if (!master) return;
    if (evt.stall && !evt.s2) {
      await iopfReportFromDriver(
        master.dev,
        iopfFaultFromRequest({
          pasid: evt.ssv ? evt.ssid : -1,
          grpid: evt.stag,
          addr: evt.addr,
          read: evt.rnw,
          write: !evt.rnw,
          exec: evt.ind,
          priv: evt.pnu,
          last: true,
          responseNeedsPasid: false,
        }),
      );
      return;
    }
    const vmaster = this.vmasters.get(master);
    if (vmaster && !evt.s2) {
      // A guest's stage-1 fault: to its vEVENTQ with the virtual SID, instead of being logged here.
      try {
        await armVmasterReportEvent(vmaster, evt.raw);
        return;
      } catch (e) {
        // No vEVENTQ (EOPNOTSUPP) or a dropped event: Linux logs the event as unhandled.
        if (!(e instanceof KernelError)) throw e;
      }
    }
    if (!fault) return;
    const domain = evt.ssv ? master.pasids.get(evt.ssid) : master.domain;
    if (domain) reportIommuFault(domain, master.dev, evt.addr, evt.rnw ? IOMMU_FAULT_READ : IOMMU_FAULT_WRITE);
  }

  /**
   * A PRI page request: to core's IOPF when the device has a fault-handling attachment, else denied at the end of
   * its group.
   * @linux arm_smmu_handle_ppr (with PRI reported to io-pgfault as in the SMMUv3 PRI series)
   */
  async handlePri(smmu: ArmSmmuDevice, pri: ArmSmmuPri): Promise<void> {
    const master = smmu.streams.get(pri.sid);
    if (!master || master.iopfRefcount === 0) {
      if (pri.last) this.sendPriResp(smmu, pri.sid, pri.ssv ? pri.ssid : -1, pri.grpid, CMD_VAL.PRI_RESP_DENY);
      return;
    }
    await iopfReportFromDriver(
      master.dev,
      iopfFaultFromRequest({
        pasid: pri.ssv ? pri.ssid : -1,
        grpid: pri.grpid,
        addr: pri.addr,
        read: pri.read,
        write: pri.write,
        exec: pri.exec,
        priv: pri.priv,
        last: pri.last,
        responseNeedsPasid: true,
      }),
    );
  }

  private sendPriResp(smmu: ArmSmmuDevice, sid: number, ssid: number, grpid: number, resp: number): void {
    const c = newCmdEnt(CMDQ_OP.PRI_RESP);
    c.sid = sid;
    c.substreamValid = ssid >= 0;
    c.ssid = ssid >= 0 ? ssid : 0;
    c.grpid = grpid;
    c.resp = resp;
    smmu.cmdq.issueOne(c, false);
  }

  /**
   * Answer a page request: PRI_RESP for PCI PRI, RESUME for a stalled transaction. No CMD_SYNC (it would not
   * wait for anything).
   * @linux arm_smmu_page_response
   */
  pageResponse(dev: Device, fault: IopfFault, msg: IommuPageResponse): void {
    const master = this.master(dev);
    const smmu = master.smmu;
    const sid = master.streams[0]!;
    if (master.priSupported) {
      const resp =
        msg.code === IOMMU_PAGE_RESP.SUCCESS
          ? CMD_VAL.PRI_RESP_SUCC
          : msg.code === IOMMU_PAGE_RESP.INVALID
            ? CMD_VAL.PRI_RESP_DENY
            : CMD_VAL.PRI_RESP_FAIL;
      const pasid = fault.fault.prm.flags & IOMMU_FAULT_PAGE_REQUEST.PASID_VALID ? msg.pasid : -1;
      this.sendPriResp(smmu, sid, pasid, msg.grpid, resp);
      return;
    }
    if (!master.stallEnabled) return;
    const c = newCmdEnt(CMDQ_OP.RESUME);
    c.sid = sid;
    c.stag = msg.grpid;
    c.resp = msg.code === IOMMU_PAGE_RESP.SUCCESS ? CMD_VAL.RESUME_RETRY : CMD_VAL.RESUME_ABORT;
    smmu.cmdq.issueOne(c, false);
  }
}

const newCmdEntZero = newCmdEnt();

function ctz(n: number): number {
  if (n === 0) return 0;
  let c = 0;
  while (n % 2 === 0) {
    n /= 2;
    c++;
  }
  return c;
}

/**
 * Create the driver for one machine.
 * @linux module init of arm-smmu-v3 (arm_smmu_driver registration) with arm_smmu_ops
 */
export function createArmSmmuDriver(ctx: ModuleContext, core: IommuCore, options: ArmSmmuV3Options) {
  const s = new ArmSmmuDriver(ctx, core, options);
  return {
    ops: s.ops,
    state: s,
    probe: (pdev: Device) => s.deviceProbe(pdev),
    remove: (_pdev: Device, iommu: IommuDevice) => s.deviceRemove(iommu as ArmSmmuDevice),
  };
}
