/**
 * The mock IOMMU driver: `iommu_ops` and the domain ops, built per machine when the module loads, and the platform
 * driver that binds each "mock" IOMMU, initialises its hardware and registers the instance.
 */
import {
  type Device,
  devIommuFwspecGet,
  devIommuPrivGet,
  devIommuPrivSet,
  genericDeviceGroup,
  IOMMU_CAP,
  IOMMU_DIRTY_NO_CLEAR,
  IOMMU_DOMAIN,
  IOMMU_HWPT_ALLOC,
  type IommuCore,
  type IommuDevice,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IommuOps,
  type IommuUserData,
  type IommuUserDataArray,
  type IommuViommu,
  type IommuViommuOps,
  type IotlbGather,
  iommuDeviceRegister,
  iommuDeviceUnregister,
  iommuFwspecAddIds,
  iopfQueueAlloc,
  iopfQueueFree,
  kerr,
  type ModuleContext,
  XA_LIMIT,
  XArray,
} from "@iommu-sim/core";
import { CTX_MODE, INV_OP, PT_MAX_LEVELS } from "../spec/fields.js";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_PASID_RESERVED,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_HUGE_IAS,
  MOCK_IAS,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_OAS,
  MOCK_PASID_WIDTH,
  MOCK_PGSIZE_BITMAP,
} from "./consts.js";
import {
  ctxForDomain,
  MockNestedDomain,
  MockPagingDomain,
  newMockPageTable,
  pagingOf,
  trackAttach,
} from "./domains.js";
import { MockIommu, MockMaster } from "./mock-iommu.js";
import { createMockViommuOps, IOMMU_VIOMMU_TYPE_SELFTEST, mockViommuInit } from "./viommu.js";

/** The type IOMMU_GET_HW_INFO asks for without IOMMU_HW_INFO_FLAG_INPUT_TYPE. @linux IOMMU_HW_INFO_TYPE_DEFAULT */
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
/** Hardware-info type of the mock. @linux IOMMU_HW_INFO_TYPE_SELFTEST (iommufd_test.h) */
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
/** The mock's `test_reg` value in its hardware info. @linux IOMMU_HW_INFO_SELFTEST_REGVAL */
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;
/** Allocation sites the fault injector can fail. @linux the fault-injection sites of selftest.c (fail_iommufd / iommufd_fail_nth) */
export const MOCK_SITES = {
  master: "mock_probe_device",
  domain: "mock_domain_alloc",
  did: "mock_domain_id",
  nested: "mock_domain_alloc_nested",
} as const;

function u32(data: Uint8Array, off: number): number {
  if (off + 4 > data.length) return 0;
  return new DataView(data.buffer, data.byteOffset + off, 4).getUint32(0, true);
}

function u64num(data: Uint8Array, off: number): number {
  const lo = u32(data, off);
  const hi = u32(data, off + 4);
  return hi * 2 ** 32 + lo;
}

/** Everything one machine's mock driver owns. */
class MockDriverState {
  readonly dids: XArray<object>;
  readonly s1ids: XArray<object>;
  readonly ops: IommuOps;
  readonly pagingOps: IommuDomainOps;
  readonly nestedOps: IommuDomainOps;
  readonly dirtyOps: IommuDirtyOps;
  readonly identity: IommuDomain;
  readonly blocked: IommuDomain;
  /** @linux mock_viommu_ops */
  readonly viommuOps: IommuViommuOps;

  constructor(
    readonly ctx: ModuleContext,
    readonly core: IommuCore,
  ) {
    const faults = ctx.machine.faults;
    this.dids = new XArray<object>(faults, MOCK_SITES.did);
    this.s1ids = new XArray<object>(faults, MOCK_SITES.did);
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDev(d, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d, dev, pasid, old),
      mapPages: (d, iova, pa, pgsize, count, prot, gather) => {
        const p = d as MockPagingDomain;
        const leaf = p.leafSize(pgsize);
        return p.pt.map(iova, pa, leaf, (count * pgsize) / leaf, prot, gather);
      },
      unmapPages: (d, iova, pgsize, count, gather) => {
        const p = d as MockPagingDomain;
        const leaf = p.leafSize(pgsize);
        return p.pt.unmap(iova, leaf, (count * pgsize) / leaf, gather);
      },
      iovaToPhys: (d, iova) => (d as MockPagingDomain).pt.iovaToPhys(iova),
      iotlbSync: (d, gather) => this.iotlbSync(d as MockPagingDomain, gather),
      flushIotlbAll: (d) => this.flushAll(d as MockPagingDomain),
      free: (d) => this.freePaging(d as MockPagingDomain),
    };
    this.dirtyOps = {
      setDirtyTracking: (d, enabled) => this.setDirtyTracking(d as MockPagingDomain, enabled),
      readAndClearDirty: (d, iova, size, flags, record) => {
        const p = d as MockPagingDomain;
        // Without tracking there is nothing to read unless the caller only peeks. @linux mock_domain_read_and_clear_dirty
        if (!p.dirtyTracking && !(flags & IOMMU_DIRTY_NO_CLEAR))
          throw kerr("EINVAL", `${p.name}: dirty tracking is off`);
        p.pt.readAndClearDirty(iova, size, record, flags);
      },
    };
    this.nestedOps = {
      attachDev: (d, dev, old) => this.attachDev(d, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d, dev, pasid, old),
      cacheInvalidateUser: (d, array) => this.cacheInvalidateUser(d as MockNestedDomain, array),
      free: (d) => this.freeNested(d as MockNestedDomain),
    };
    this.viommuOps = createMockViommuOps({
      allocNested: (parent, data, viommu) => this.nestedFromData(parent, data, viommu),
    });
    this.identity = new IommuDomain({
      type: IOMMU_DOMAIN.IDENTITY,
      name: "mock_identity",
      ops: { attachDev: (d, dev, old) => this.attachDev(d, dev, old) },
    });
    this.blocked = new IommuDomain({
      type: IOMMU_DOMAIN.BLOCKED,
      name: "mock_blocking",
      ops: {
        attachDev: (d, dev, old) => this.attachDev(d, dev, old),
        setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d, dev, pasid, old),
      },
    });
    this.ops = {
      owner: ctx.owner,
      capable: (dev, cap) => this.capable(dev, cap),
      // mock_domain_hw_info: only the default type or the selftest's own can be asked for.
      hwInfo: (_dev, type) => {
        if (type !== IOMMU_HW_INFO_TYPE_DEFAULT && type !== IOMMU_HW_INFO_TYPE_SELFTEST) {
          throw kerr("EOPNOTSUPP", `mock: no hw_info of type 0x${type.toString(16)}`);
        }
        const data = new Uint8Array(8);
        const v = new DataView(data.buffer);
        v.setUint32(0, 0, true);
        v.setUint32(4, IOMMU_HW_INFO_SELFTEST_REGVAL, true);
        return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data };
      },
      domainAllocPaging: (dev) => this.allocPaging(dev, 0, undefined),
      domainAllocPagingFlags: (dev, flags, data) => this.allocPaging(dev, flags, data),
      domainAllocNested: (dev, parent, flags, data) => this.allocNested(dev, parent, flags, data),
      identityDomain: this.identity,
      blockedDomain: this.blocked,
      releaseDomain: this.blocked,
      ofXlate: async (dev, args) => {
        core.probeLock.assertHeld();
        const id = args.args[0];
        if (id === undefined) throw kerr("EINVAL", `${dev.name}: iommus specifier without an ID`);
        iommuFwspecAddIds(core, dev, [id]);
      },
      probeDeviceFwspec: async (dev, iommu) => this.probeDevice(dev, iommu as MockIommu),
      releaseDevice: (dev) => this.releaseDevice(dev),
      deviceGroup: async (dev) => {
        core.probeLock.assertHeld();
        return genericDeviceGroup(core, dev);
      },
      pageResponse: (dev, fault, msg) => {
        const master = this.master(dev);
        const pasid = fault.fault.prm.flags & 1 ? msg.pasid : -1;
        for (const sid of master.sids) master.iommu.pageResponse(sid, pasid, msg.grpid, msg.code);
      },
      // The guest owns the PASID table of a nested domain (as with SMMUv3 CD tables): a page request with a PASID
      // no domain is attached at goes to the nested domain at the RID. @linux mock_ops.user_pasid_table
      userPasidTable: true,
      // vIOMMU (viommu.ts). @linux mock_get_viommu_size / mock_viommu_init
      getViommuSize: (_dev, type) => (type === IOMMU_VIOMMU_TYPE_SELFTEST ? 1 : 0),
      viommuInit: (viommu, parent, data) => mockViommuInit(viommu, parent, data, this.viommuOps),
      pgsizeBitmap: MOCK_PGSIZE_BITMAP,
      defaultDomainOps: this.pagingOps,
    };
  }

  master(dev: Device): MockMaster {
    const m = devIommuPrivGet<MockMaster>(dev);
    if (!m) throw kerr("ENODEV", `${dev.name} is not probed by the mock IOMMU`);
    return m;
  }

  // --- probing ------------------------------------------------------------------------------------------------

  capable(dev: Device, cap: number): boolean {
    switch (cap) {
      case IOMMU_CAP.CACHE_COHERENCY:
        return true;
      case IOMMU_CAP.DIRTY_TRACKING: {
        const m = devIommuPrivGet<MockMaster>(dev);
        return m?.iommu.supportsDirty === true && !(m.flags & MOCK_FLAGS_DEVICE_NO_DIRTY);
      }
      default:
        return false;
    }
  }

  /** @linux mock_probe_device (with arm_smmu_probe_device's stream-ID checks) */
  async probeDevice(dev: Device, iommu: MockIommu): Promise<void> {
    const core = this.core;
    core.probeLock.assertHeld();
    const fwspec = devIommuFwspecGet(dev);
    if (!fwspec || fwspec.numIds === 0) throw kerr("ENODEV", `${dev.name}: no stream IDs`);
    for (const sid of fwspec.ids) {
      if (sid >= iommu.numSids) throw kerr("ERANGE", `${dev.name}: stream ID ${sid} beyond the device table`);
      if (iommu.masters.has(sid)) throw kerr("EEXIST", `${dev.name}: stream ID ${sid} already in use`);
    }
    core.faults.check(MOCK_SITES.master);
    const flagsRaw = dev.platformData["mock-dev-flags"];
    const flags = typeof flagsRaw === "number" ? flagsRaw : 0;
    const bitsRaw = dev.platformData["pasid-num-bits"];
    let pasidBits = typeof bitsRaw === "number" ? bitsRaw : 0;
    if (flags & MOCK_FLAGS_DEVICE_PASID && pasidBits === 0) pasidBits = MOCK_PASID_WIDTH;
    pasidBits = Math.min(pasidBits, iommu.pasidBits);
    const master = new MockMaster(dev, iommu, [...fwspec.ids], flags, pasidBits);
    devIommuPrivSet(core, dev, master);
    for (const sid of master.sids) {
      iommu.masters.set(sid, master);
      iommu.writeDte(sid, { mode: CTX_MODE.ABORT });
    }
  }

  /** @linux mock_release_device / arm_smmu_release_device */
  releaseDevice(dev: Device): void {
    const master = devIommuPrivGet<MockMaster>(dev);
    if (!master) return;
    const iommu = master.iommu;
    this.core.diag.warnOn(master.iopfRefs !== 0, `${dev.name}: released with IOPF still enabled`);
    trackAttach(master.domain, iommu, -1);
    master.domain = undefined;
    for (const d of master.pasids.values()) trackAttach(d, iommu, -1);
    master.pasids.clear();
    for (const sid of master.sids) {
      iommu.writeDte(sid, undefined);
      iommu.masters.delete(sid);
    }
    iommu.freePasidTables(master);
  }

  // --- domain allocation --------------------------------------------------------------------------------------

  /** @linux mock_domain_alloc_paging_flags */
  async allocPaging(dev: Device, flags: number, data: IommuUserData | undefined): Promise<IommuDomain> {
    const master = this.master(dev);
    const H = IOMMU_HWPT_ALLOC;
    if (flags & ~(H.NEST_PARENT | H.DIRTY_TRACKING | H.PASID)) throw kerr("EOPNOTSUPP", "mock: unsupported flags");
    if (flags & H.DIRTY_TRACKING && !this.capable(dev, IOMMU_CAP.DIRTY_TRACKING)) {
      throw kerr("EOPNOTSUPP", `${dev.name}: no dirty tracking`);
    }
    // struct iommu_hwpt_selftest { iotlb; pagetable_type }, zero-extended (iommu_copy_struct_from_user).
    let pagetableType = MOCK_IOMMUPT_DEFAULT;
    if (data) {
      if (data.type !== IOMMU_HWPT_DATA_SELFTEST || flags & H.NEST_PARENT) throw kerr("EOPNOTSUPP", "mock: bad data");
      if (data.data.length >= 8) pagetableType = u32(data.data, 4);
      // MOCK_IOMMUPT_AMDV1 (the real AMD v1 format) is not modelled.
      if (pagetableType !== MOCK_IOMMUPT_DEFAULT && pagetableType !== MOCK_IOMMUPT_HUGE) {
        throw kerr("EOPNOTSUPP", "mock: unsupported pagetable_type");
      }
    }
    const ias = pagetableType === MOCK_IOMMUPT_HUGE ? MOCK_HUGE_IAS : MOCK_IAS;
    const core = this.core;
    core.faults.check(MOCK_SITES.domain);
    const token = {};
    const did = this.dids.alloc(token, XA_LIMIT(1, 0xffff));
    let domain: MockPagingDomain | undefined;
    const sync = (g: IotlbGather) => {
      if (domain) this.iotlbSync(domain, g);
    };
    let pt: ReturnType<typeof newMockPageTable>;
    try {
      pt = newMockPageTable(master.iommu, ias, MOCK_OAS, sync);
    } catch (e) {
      this.dids.erase(did);
      throw e;
    }
    domain = new MockPagingDomain(
      this.pagingOps,
      pt,
      did,
      (flags & H.NEST_PARENT) !== 0,
      flags & H.DIRTY_TRACKING ? this.dirtyOps : undefined,
      pagetableType,
    );
    return domain;
  }

  /** @linux mock_domain_alloc_nested */
  async allocNested(dev: Device, parent: IommuDomain, flags: number, data: IommuUserData): Promise<IommuDomain> {
    const master = this.master(dev);
    if (flags & ~IOMMU_HWPT_ALLOC.PASID) throw kerr("EOPNOTSUPP", "mock: unsupported nested flags");
    if (!(parent instanceof MockPagingDomain) || !parent.nestParent)
      throw kerr("EINVAL", "mock: parent is not a nesting parent");
    if (!master.iommu.supportsNesting) throw kerr("EOPNOTSUPP", "mock: no nesting");
    return this.nestedFromData(parent, data, undefined);
  }

  /**
   * A nested domain on `parent` from `struct iommu_hwpt_selftest` data, on a vIOMMU or not.
   * @linux __mock_domain_alloc_nested
   */
  async nestedFromData(
    parent: MockPagingDomain,
    data: IommuUserData,
    viommu: IommuViommu | undefined,
  ): Promise<IommuDomain> {
    if (data.type !== IOMMU_HWPT_DATA_SELFTEST) throw kerr("EOPNOTSUPP", "mock: bad nested data type");
    // iommu_copy_struct_from_user(..., iotlb): at least offsetofend(iotlb).
    if (data.data.length < 4) throw kerr("EINVAL", "mock: nested data too short");
    // struct iommu_hwpt_selftest { __u32 iotlb; __u32 pagetable_type; } plus the simulation's stage-1 root
    // { __aligned_u64 s1_ttb; __u32 s1_levels; __u32 __reserved; } (absent: stage-1 bypass).
    const iotlb = data.data.length >= 4 ? u32(data.data, 0) : IOMMU_TEST_IOTLB_DEFAULT;
    const s1ttb = u64num(data.data, 8);
    const s1Levels = u32(data.data, 16);
    if (s1ttb !== 0 && (s1ttb % 4096 !== 0 || s1Levels < 1 || s1Levels > PT_MAX_LEVELS)) {
      throw kerr("EINVAL", "mock: bad stage-1 table");
    }
    this.core.faults.check(MOCK_SITES.nested);
    const token = {};
    const s1id = this.s1ids.alloc(token, XA_LIMIT(1, 0xffff));
    const d = new MockNestedDomain(this.nestedOps, parent, s1id, s1ttb === 0 ? -1 : s1ttb, s1Levels, iotlb);
    d.owner = this.ops;
    d.viommu = viommu;
    return d;
  }

  freePaging(d: MockPagingDomain): void {
    this.core.diag.warnOn(d.attachedTo.size > 0, `${d.name}: freed while attached`);
    d.pt.free();
    this.dids.erase(d.did);
  }

  freeNested(d: MockNestedDomain): void {
    for (const iommu of d.parent.attachedTo.keys()) iommu.invalidate(INV_OP.S1, { did: d.parent.did, s1id: d.s1id });
    this.s1ids.erase(d.s1id);
  }

  // --- attach -------------------------------------------------------------------------------------------------

  /** @linux mock_domain_nop_attach / arm_smmu_attach_dev */
  async attachDev(domain: IommuDomain, dev: Device, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    const iommu = master.iommu;
    const p = pagingOf(domain);
    if (p?.dirtyOps && master.flags & MOCK_FLAGS_DEVICE_NO_DIRTY) {
      throw kerr("EINVAL", `${dev.name} cannot attach to a dirty-tracking domain`);
    }
    // A nested domain of a vIOMMU needs the device's vDEVICE there (ENOENT). @linux mock_domain_nop_attach
    if (domain instanceof MockNestedDomain && domain.viommu) domain.viommu.getVdevId(dev);
    const prev = master.domain ?? old;
    await iommu.enableIopf(master, domain);
    const ctx = ctxForDomain(domain);
    if (master.pasidDir >= 0) {
      ctx.pasidDir = master.pasidDir;
      ctx.pasidBits = master.pasidBits;
    }
    for (const sid of master.sids) iommu.writeDte(sid, ctx);
    trackAttach(domain, iommu, 1);
    trackAttach(master.domain, iommu, -1);
    master.domain = domain;
    await iommu.disableIopf(master, prev);
  }

  /** @linux mock_domain_set_dev_pasid_nop (and the blocked domain's set_dev_pasid, which removes the PASID) */
  async setDevPasid(domain: IommuDomain, dev: Device, pasid: number, old: IommuDomain | undefined): Promise<void> {
    const master = this.master(dev);
    const iommu = master.iommu;
    if (master.pasidBits === 0 || pasid >= 2 ** master.pasidBits)
      throw kerr("EINVAL", `${dev.name}: bad PASID ${pasid}`);
    if (pasid === IOMMU_TEST_PASID_RESERVED) {
      // The selftest's designed failure: every second attach of this PASID fails before touching anything, so the
      // core's rollback to the old domain is exercised; a detach (the blocked domain) re-arms it.
      if (domain === this.blocked) master.pasidReservedFakeError = false;
      else if (master.pasidReservedFakeError) {
        master.pasidReservedFakeError = false;
        throw kerr("ENOMEM", `${dev.name}: designed failure of PASID ${pasid}`);
      } else master.pasidReservedFakeError = true;
    }
    const prev = master.pasids.get(pasid) ?? old;
    if (domain === this.blocked) {
      iommu.writePasidEntry(master, pasid, undefined);
      trackAttach(master.pasids.get(pasid), iommu, -1);
      master.pasids.delete(pasid);
      await iommu.disableIopf(master, prev);
      return;
    }
    if (domain.type === IOMMU_DOMAIN.IDENTITY) throw kerr("EOPNOTSUPP", "mock: no identity PASID attach");
    const hadDir = master.pasidDir >= 0;
    iommu.ensurePasidDir(master);
    await iommu.enableIopf(master, domain);
    try {
      iommu.writePasidEntry(master, pasid, ctxForDomain(domain));
    } catch (e) {
      await iommu.disableIopf(master, domain);
      throw e;
    }
    if (!hadDir) {
      // Point the device entry at the new PASID directory.
      const ctx = ctxForDomain(master.domain);
      ctx.pasidDir = master.pasidDir;
      ctx.pasidBits = master.pasidBits;
      for (const sid of master.sids) iommu.writeDte(sid, ctx);
    }
    trackAttach(domain, iommu, 1);
    trackAttach(master.pasids.get(pasid), iommu, -1);
    master.pasids.set(pasid, domain);
    await iommu.disableIopf(master, prev);
  }

  // --- invalidation -------------------------------------------------------------------------------------------

  /** @linux mock_iotlb_sync / arm_smmu_iotlb_sync */
  iotlbSync(d: MockPagingDomain, gather: IotlbGather): void {
    if (gather.end >= gather.start) {
      for (const iommu of d.attachedTo.keys()) {
        iommu.invalidate(INV_OP.RANGE, { did: d.did, first: gather.start, last: gather.end });
      }
    }
    gather.freePages(this.ctx.machine.pages);
  }

  /** @linux arm_smmu_flush_iotlb_all */
  flushAll(d: MockPagingDomain): void {
    for (const iommu of d.attachedTo.keys()) iommu.invalidate(INV_OP.DOMAIN, { did: d.did });
  }

  /** @linux mock_domain_set_dirty_tracking */
  async setDirtyTracking(d: MockPagingDomain, enabled: boolean): Promise<void> {
    if (d.dirtyTracking === enabled) return;
    d.dirtyTracking = enabled;
    for (const iommu of d.attachedTo.keys()) {
      for (const master of new Set(iommu.masters.values())) {
        if (pagingOf(master.domain) === d) {
          const ctx = ctxForDomain(master.domain);
          if (master.pasidDir >= 0) {
            ctx.pasidDir = master.pasidDir;
            ctx.pasidBits = master.pasidBits;
          }
          for (const sid of master.sids) iommu.writeDte(sid, ctx);
        }
        for (const [pasid, pd] of master.pasids) {
          if (pagingOf(pd) === d) iommu.writePasidEntry(master, pasid, ctxForDomain(pd));
        }
      }
      iommu.invalidate(INV_OP.DOMAIN, { did: d.did });
    }
  }

  /**
   * Invalidate the nested domain's caches from user entries `struct iommu_hwpt_invalidate_selftest { __u32 flags;
   * __u32 iotlb_id; }`; `entryNum` becomes the number handled.
   * @linux mock_domain_cache_invalidate_user
   */
  async cacheInvalidateUser(d: MockNestedDomain, array: IommuUserDataArray): Promise<void> {
    if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST) {
      array.entryNum = 0;
      throw kerr("EINVAL", "mock: bad invalidation type");
    }
    let done = 0;
    try {
      for (let i = 0; i < array.entryNum; i++) {
        // iommu_copy_struct_from_user_array(..., iotlb_id): entry_len must be within [8, 8].
        const e = array.entry(i, 8, 8);
        const flags = u32(e, 0);
        const id = u32(e, 4);
        if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) throw kerr("EOPNOTSUPP", "mock: bad invalidation flags");
        if (id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX) throw kerr("EINVAL", `mock: bad iotlb_id ${id}`);
        if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) d.iotlb.fill(0);
        else d.iotlb[id] = 0;
        for (const iommu of d.parent.attachedTo.keys())
          iommu.invalidate(INV_OP.S1, { did: d.parent.did, s1id: d.s1id });
        done++;
      }
    } finally {
      array.entryNum = done;
    }
  }
}

/**
 * Create the mock IOMMU driver for one machine.
 * @linux the mock_ops / mock_iommu_device setup of iommufd_test_init
 */
function createMockDriver(ctx: ModuleContext, core: IommuCore) {
  const s = new MockDriverState(ctx, core);
  return {
    ops: s.ops,
    state: s,
    /** @linux mock_iommu_device registration (iommu_device_register) / arm_smmu_device_probe */
    async probe(pdev: Device) {
      const iommu = new MockIommu(core, pdev);
      iommu.hwInit();
      try {
        iommu.iopfQueue = iopfQueueAlloc(ctx.machine, pdev.name);
      } catch (e) {
        await iommu.hwFini();
        throw e;
      }
      try {
        await iommuDeviceRegister(core, iommu, s.ops, pdev);
      } catch (e) {
        await iopfQueueFree(iommu.iopfQueue);
        iommu.iopfQueue = undefined;
        await iommu.hwFini();
        throw e;
      }
      return iommu;
    },
    /** @linux arm_smmu_device_remove */
    async remove(_pdev: Device, iommu: IommuDevice) {
      const m = iommu as MockIommu;
      await iommuDeviceUnregister(core, m);
      await m.drainFaultQueue();
      await iopfQueueFree(m.iopfQueue);
      m.iopfQueue = undefined;
      await m.hwFini();
    },
  };
}

export { createMockDriver, MockDriverState };
