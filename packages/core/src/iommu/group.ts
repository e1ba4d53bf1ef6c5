/**
 * IOMMU groups: the smallest sets of devices the IOMMU can isolate from each other, their registry, the generic
 * and PCI grouping policies, adding a probed device to its group with the group's default domain, and removing it.
 * @linux struct iommu_group, iommu_group_alloc, generic_device_group, pci_device_group, __iommu_probe_device's group
 * step, iommu_setup_default_domain, __iommu_group_remove_device, iommu_deinit_device (drivers/iommu/iommu.c)
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { KernelError } from "../kernel/errno.js";
import type { FaultInjector } from "../kernel/fault-inject.js";
import { Kref } from "../kernel/kref.js";
import type { RefTracker } from "../kernel/ref-tracker.js";
import { Mutex } from "../kernel/sched/mutex.js";
import type { Scheduler } from "../kernel/sched/scheduler.js";
import { kfree } from "../kernel/slab.js";
import { XA_FLAGS_ALLOC, XArray } from "../kernel/xarray.js";
import type { Device } from "../platform/driver-core/device.js";
import { pciAcsEnabled, pciAcsPathEnabled, pciForEachDmaAlias, REQ_ACS_FLAGS } from "../platform/driver-core/pci.js";
import {
  groupSetDomain,
  groupSetDomainInternal,
  IOMMU_SET_DOMAIN_MUST_SUCCEED,
  iommuDeviceSetDomain,
} from "./attach.js";
import { devHasIommu, devIommu, devIommuOps } from "./dev-iommu.js";
import { type IommuDomain, iommuDomainAllocType, iommuDomainFree, iommuDomainTypeStr } from "./domain.js";
import type { PasidArrayEntry } from "./pasid.js";
import { iommuCreateDeviceDirectMappings } from "./resv.js";
import { IOMMU_CAP, IOMMU_DOMAIN } from "./types.js";

/** What {@link IommuGroups} needs from its machine. */
export interface IommuGroupsDeps {
  diag: Diagnostics;
  faults: FaultInjector;
  scheduler: Scheduler;
  /** When given, groups with references left at teardown are reported as leaks with their holders. */
  refs?: RefTracker | undefined;
  /** Default domains are identity domains. @linux iommu.passthrough=1 / CONFIG_IOMMU_DEFAULT_PASSTHROUGH */
  passthrough?: boolean;
  /** Strict (synchronous) IOTLB invalidation; false selects DMA-FQ default domains. Default true. @linux iommu.strict */
  strict?: boolean;
}

/** The machine-wide default-domain policy. @linux iommu_def_domain_type / iommu_dma_strict */
export interface IommuDomainPolicy {
  passthrough: boolean;
  strict: boolean;
}

/**
 * The per-machine group state part A's IommuCore owns (`core.groups`): every live group, the group ID allocator,
 * the global PASID allocator and the default-domain policy.
 * @linux iommu_group_kset, iommu_group_ida, iommu_global_pasid_ida, iommu_def_domain_type, iommu_dma_strict
 */
export class IommuGroups {
  readonly diag: Diagnostics;
  readonly faults: FaultInjector;
  readonly scheduler: Scheduler;
  readonly refs: RefTracker | undefined;
  /** The default-domain policy; may be changed before devices are probed. */
  readonly options: IommuDomainPolicy;
  /** Live groups by ID. */
  private readonly byId = new Map<number, IommuGroup>();
  /** @linux iommu_group_ida */
  readonly ida: XArray<IommuGroup>;
  /** @linux iommu_global_pasid_ida */
  readonly globalPasidIda: XArray<object>;

  constructor(deps: IommuGroupsDeps) {
    this.diag = deps.diag;
    this.faults = deps.faults;
    this.scheduler = deps.scheduler;
    this.refs = deps.refs;
    this.options = { passthrough: deps.passthrough ?? false, strict: deps.strict ?? true };
    this.ida = new XArray<IommuGroup>(deps.faults, "ida_alloc", XA_FLAGS_ALLOC);
    this.globalPasidIda = new XArray<object>(deps.faults, "ida_alloc", XA_FLAGS_ALLOC);
  }

  /**
   * The default domain type: identity with passthrough, else DMA when strict, DMA_FQ when lazy.
   * @linux iommu_def_domain_type (as iommu_subsys_init settles it)
   */
  get defDomainType(): number {
    if (this.options.passthrough) return IOMMU_DOMAIN.IDENTITY;
    return this.options.strict ? IOMMU_DOMAIN.DMA : IOMMU_DOMAIN.DMA_FQ;
  }

  /**
   * Make identity the default domain type.
   * @linux iommu_set_default_passthrough
   */
  setDefaultPassthrough(): void {
    this.options.passthrough = true;
  }

  /**
   * Make translation the default domain type.
   * @linux iommu_set_default_translated
   */
  setDefaultTranslated(): void {
    this.options.passthrough = false;
  }

  /**
   * Force strict invalidation.
   * @linux iommu_set_dma_strict
   */
  setDmaStrict(): void {
    this.options.strict = true;
  }

  /**
   * Whether default domains are identity domains.
   * @linux iommu_default_passthrough
   */
  get passthrough(): boolean {
    return this.defDomainType === IOMMU_DOMAIN.IDENTITY;
  }

  /** The live group with `id`, without taking a reference (for tests and reports). */
  find(id: number): IommuGroup | undefined {
    return this.byId.get(id);
  }

  /** Every live group, by ID. */
  list(): IommuGroup[] {
    return [...this.byId.values()].sort((a, b) => a.id - b.id);
  }

  /** @internal */
  add(group: IommuGroup): void {
    this.byId.set(group.id, group);
  }

  /** @internal */
  remove(group: IommuGroup): void {
    this.byId.delete(group.id);
    this.ida.erase(group.id);
  }
}

/** The part of IommuCore the group code needs (part A's `IommuCore` has it). */
export interface IommuCoreLike {
  readonly groups: IommuGroups;
}

/**
 * One device of a group.
 * @linux struct group_device
 */
export interface GroupDevice {
  dev: Device;
  /** @linux group_device.name (the sysfs link name) */
  name: string;
}

/**
 * A group. Reference counted with holder tags (`iommuGroupGet`/`iommuGroupPut`); released, and its ID freed, when
 * the last reference goes. `mutex` serialises domain changes, DMA ownership and membership.
 * @linux struct iommu_group
 */
export class IommuGroup {
  readonly id: number;
  /** @linux iommu_group.name */
  name: string | undefined = undefined;
  /** @linux iommu_group.devices */
  readonly devices: GroupDevice[] = [];
  /** @linux iommu_group.mutex */
  readonly mutex: Mutex;
  /** @linux iommu_group.pasid_array (entries are domains or attach handles) */
  readonly pasidArray = new XArray<PasidArrayEntry>(undefined, "xa_store", 0);
  /** @linux iommu_group.default_domain */
  defaultDomain: IommuDomain | undefined = undefined;
  /** @linux iommu_group.blocking_domain */
  blockingDomain: IommuDomain | undefined = undefined;
  /** @linux iommu_group.domain */
  domain: IommuDomain | undefined = undefined;
  /** @linux iommu_group.owner_cnt */
  ownerCnt = 0;
  /** @linux iommu_group.owner */
  owner: unknown = undefined;
  /** @linux iommu_group.iommu_data */
  iommuData: unknown = undefined;
  /** @linux iommu_group.iommu_data_release */
  iommuDataRelease: ((data: unknown) => void) | undefined = undefined;
  /** On a bus_iommu_probe list waiting for its default domain. @linux !list_empty(&group->entry) */
  onProbeList = false;
  /** @linux iommu_group.devices_kobj's kref */
  readonly kref: Kref;
  /** The registry it belongs to. */
  readonly registry: IommuGroups;

  /** Use {@link iommuGroupAlloc}. */
  constructor(registry: IommuGroups, id: number, holder: string) {
    this.registry = registry;
    this.id = id;
    this.mutex = new Mutex(registry.scheduler, `iommu_group ${id}`, { lockClass: "iommu_group.mutex" });
    this.kref = new Kref(registry.diag, `iommu_group ${id}`, () => this.release(), registry.refs, {
      initialHolder: holder,
    });
  }

  /** @linux iommu_group_release */
  private release(): void {
    const r = this.registry;
    if (this.iommuDataRelease) this.iommuDataRelease(this.iommuData);
    r.remove(this);
    r.diag.warnOn(this.defaultDomain !== undefined, `iommu_group ${this.id} released with a default domain`);
    r.diag.warnOn(this.blockingDomain !== undefined, `iommu_group ${this.id} released with a blocking domain`);
    kfree(r.diag, this, `iommu_group ${this.id}`);
  }

  /** `iommu_group N`. */
  toString(): string {
    return `iommu_group ${this.id}`;
  }

  /** A short form for test-runner diffs and JSON (the object graph reaches the whole machine). */
  toJSON(): string {
    return `IommuGroup(${this.id})`;
  }

  /** A short form for `util.inspect` / console.log. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toJSON();
  }
}

/** Default holder tag of group references handed between the core and drivers. */
export const GROUP_REF = "iommu_group";

/**
 * Allocate a group with a new ID; the caller holds the first reference. ENOMEM from the fault injector.
 * @linux iommu_group_alloc
 */
export function iommuGroupAlloc(core: IommuCoreLike, holder = GROUP_REF): IommuGroup {
  const r = core.groups;
  r.faults.check("iommu_group_alloc");
  const id = r.ida.alloc(undefined);
  const group = new IommuGroup(r, id, holder);
  r.ida.store(id, group);
  r.add(group);
  return group;
}

/**
 * The device's group with a new reference, or undefined when it has none.
 * @linux iommu_group_get
 */
export function iommuGroupGet(dev: Device, holder = GROUP_REF): IommuGroup | undefined {
  const group = dev.iommuGroup as IommuGroup | undefined;
  if (group) group.kref.get(holder);
  return group;
}

/**
 * Take another reference on `group`; returns it.
 * @linux iommu_group_ref_get
 */
export function iommuGroupRefGet(group: IommuGroup, holder = GROUP_REF): IommuGroup {
  group.kref.get(holder);
  return group;
}

/**
 * Drop a reference; the group is released with the last one.
 * @linux iommu_group_put
 */
export function iommuGroupPut(group: IommuGroup | undefined, holder = GROUP_REF): void {
  group?.kref.put(holder);
}

/**
 * @linux iommu_group_id
 */
export function iommuGroupId(group: IommuGroup): number {
  return group.id;
}

/**
 * Name the group (shown in sysfs); undefined clears the name.
 * @linux iommu_group_set_name
 */
export function iommuGroupSetName(group: IommuGroup, name: string | undefined): void {
  group.name = name;
}

/**
 * @linux iommu_group_get_iommudata
 */
export function iommuGroupGetIommudata(group: IommuGroup): unknown {
  return group.iommuData;
}

/**
 * @linux iommu_group_set_iommudata
 */
export function iommuGroupSetIommudata(
  group: IommuGroup,
  data: unknown,
  release: ((data: unknown) => void) | undefined,
): void {
  group.iommuData = data;
  group.iommuDataRelease = release;
}

/**
 * Assert the device's group mutex is held by the caller.
 * @linux iommu_group_mutex_assert
 */
export function iommuGroupMutexAssert(dev: Device): void {
  (dev.iommuGroup as IommuGroup).mutex.assertHeld();
}

/**
 * The first device of the group (the group mutex must be held).
 * @linux iommu_group_first_dev
 */
export function iommuGroupFirstDev(group: IommuGroup): Device {
  group.mutex.assertHeld();
  const first = group.devices[0];
  if (!first) throw new KernelError("ENODEV", `${group} has no devices`);
  return first.dev;
}

/**
 * Call `fn` for each device of the group under its mutex, stopping at the first non-zero result.
 * @linux iommu_group_for_each_dev
 */
export async function iommuGroupForEachDev(
  group: IommuGroup,
  fn: (dev: Device) => number | Promise<number>,
): Promise<number> {
  await group.mutex.lock();
  try {
    for (const gdev of group.devices) {
      const ret = await fn(gdev.dev);
      if (ret) return ret;
    }
    return 0;
  } finally {
    group.mutex.unlock();
  }
}

// --- grouping policies -----------------------------------------------------------------------------------------

/**
 * One group per device.
 * @linux generic_device_group
 */
export function genericDeviceGroup(core: IommuCoreLike, _dev: Device): IommuGroup {
  return iommuGroupAlloc(core);
}

/**
 * One group per IOMMU instance, shared by every device it translates (the instance keeps a reference).
 * @linux generic_single_device_group
 */
export function genericSingleDeviceGroup(core: IommuCoreLike, dev: Device): IommuGroup {
  const iommu = devIommu(dev)?.iommuDev;
  if (!iommu) throw new KernelError("ENODEV", `${dev.name} has no IOMMU`);
  if (!iommu.singletonGroup) iommu.singletonGroup = iommuGroupAlloc(core, "singleton_group");
  return iommuGroupRefGet(iommu.singletonGroup as IommuGroup);
}

function samePciBus(a: Device, b: Device): boolean {
  return a.bus === b.bus && a.pci !== undefined && b.pci !== undefined && a.pci.busNr === b.pci.busNr;
}

/** Registered PCI functions on the same segment as `pdev` (for_each_pci_dev restricted to its segment). */
function pciDevsOf(pdev: Device): Device[] {
  return pdev.bus.devices.filter((d) => d.registered && d.pci !== undefined);
}

/**
 * Whether `a` carries `b`'s requester ID as a DMA alias or the reverse (same bus only).
 * @linux pci_devs_are_dma_aliases
 */
export function pciDevsAreDmaAliases(a: Device, b: Device): boolean {
  if (!a.pci || !b.pci || !samePciBus(a, b)) return false;
  return a.pci.aliases.includes(b.pci.rid) || b.pci.aliases.includes(a.pci.rid);
}

/** For a multi-function device without ACS, an existing group of a non-isolated sibling function. */
function getPciFunctionAliasGroup(pdev: Device, devfns: Set<number>): IommuGroup | undefined {
  const pci = pdev.pci!;
  if (!pci.multifunction || pciAcsEnabled(pdev, REQ_ACS_FLAGS)) return undefined;
  for (const tmp of pciDevsOf(pdev)) {
    if (tmp === pdev || !samePciBus(tmp, pdev) || tmp.pci!.devfn >> 3 !== pci.devfn >> 3) continue;
    if (pciAcsEnabled(tmp, REQ_ACS_FLAGS)) continue;
    const group = getPciAliasGroup(tmp, devfns);
    if (group) return group;
  }
  return undefined;
}

/** An existing group of `pdev`, or of a device it aliases or that aliases it (loop-safe through `devfns`). */
function getPciAliasGroup(pdev: Device, devfns: Set<number>): IommuGroup | undefined {
  const devfn = pdev.pci!.devfn & 0xff;
  if (devfns.has(devfn)) return undefined;
  devfns.add(devfn);
  const own = iommuGroupGet(pdev);
  if (own) return own;
  for (const tmp of pciDevsOf(pdev)) {
    if (tmp === pdev || !samePciBus(tmp, pdev)) continue;
    if (pciDevsAreDmaAliases(pdev, tmp)) {
      const g = getPciAliasGroup(tmp, devfns) ?? getPciFunctionAliasGroup(tmp, devfns);
      if (g) return g;
    }
  }
  return undefined;
}

/**
 * Group a PCI function by topology: share a group with any device it DMA-aliases (or that aliases it), with every
 * device below an upstream port without ACS, and with non-isolated functions of its slot; otherwise allocate one.
 * The flat topology has one virtual root port per PCI bus, whose ACS is the bus's `acs` flag: without ACS, the
 * port's group is the one any other device on the bus already belongs to.
 * @linux pci_device_group (with get_pci_alias_or_group, get_pci_alias_group, get_pci_function_alias_group)
 */
export function pciDeviceGroup(core: IommuCoreLike, dev: Device): IommuGroup {
  const diag = core.groups.diag;
  if (diag.warnOn(!dev.pci, `pci_device_group on non-PCI device ${dev.name}`)) {
    throw new KernelError("EINVAL", `${dev.name} is not a PCI device`);
  }
  // Upstream DMA alias: a device aliased through topology cannot have its own group.
  let found: IommuGroup | undefined;
  let pdev = dev;
  pciForEachDmaAlias(dev, (p) => {
    pdev = p;
    found = iommuGroupGet(p);
    return found ? 1 : 0;
  });
  if (found) return found;
  // Up to the first port enforcing ACS: below a port without it, devices share the port's group.
  if (!pciAcsPathEnabled(pdev, undefined, REQ_ACS_FLAGS)) {
    for (const other of pciDevsOf(pdev)) {
      if (other === pdev) continue;
      const g = iommuGroupGet(other);
      if (g) return g;
    }
  }
  const devfns = new Set<number>();
  const aliasGroup = getPciAliasGroup(pdev, devfns) ?? getPciFunctionAliasGroup(pdev, devfns);
  if (aliasGroup) return aliasGroup;
  return iommuGroupAlloc(core);
}

/**
 * The group policy of a driver that implements none: PCI topology for PCI functions, one group per device
 * otherwise (what the VT-d and AMD drivers' device_group do).
 * @linux intel_iommu_device_group / amd_iommu_device_group
 */
export function iommuDefaultDeviceGroup(core: IommuCoreLike, dev: Device): IommuGroup {
  return dev.pci ? pciDeviceGroup(core, dev) : genericDeviceGroup(core, dev);
}

/**
 * A driver's `deviceGroup` for PCI-topology grouping: checks that the iommu core holds the probe lock (the driver
 * op runs inside `__iommu_probe_device`), then groups PCI functions by topology and other devices one per group.
 * @linux intel_iommu_device_group, amd_iommu_device_group, arm_smmu_device_group
 */
export async function iommuPciOrGenericDeviceGroup(
  core: IommuCoreLike & { probeLock: { assertHeld(): void } },
  dev: Device,
): Promise<IommuGroup> {
  core.probeLock.assertHeld();
  return iommuDefaultDeviceGroup(core, dev);
}

/**
 * The group a probed device belongs to, from the driver's `deviceGroup` (or {@link iommuDefaultDeviceGroup}),
 * referenced for the device. Throws the driver's error; EINVAL (and a warning) when it returns nothing.
 * @linux the ops->device_group step of iommu_init_device
 */
export async function iommuDeviceGroup(core: IommuCoreLike, dev: Device): Promise<IommuGroup> {
  const ops = devIommuOps(dev);
  const group = ops.deviceGroup ? await ops.deviceGroup(dev) : iommuDefaultDeviceGroup(core, dev);
  if (core.groups.diag.warnOnOnce(group == null, "device_group returned no group")) {
    throw new KernelError("EINVAL", `device_group of ${dev.name} returned no group`);
  }
  return group;
}

// --- default domain --------------------------------------------------------------------------------------------

/**
 * Combine the driver's preferred default-domain type of `dev` with `curType` (0: no preference yet). Conflicting
 * preferences are reported; identity wins.
 * @linux iommu_get_def_domain_type
 */
export function iommuGetDefDomainType(group: IommuGroup, dev: Device, curType: number): number {
  const ops = devIommuOps(dev);
  if (!ops.defDomainType) return curType;
  const type = ops.defDomainType(dev);
  if (!type || curType === type) return curType;
  if (!curType) return type;
  group.registry.diag.report(
    "warning",
    `IOMMU driver error, requesting conflicting def_domain_type, ${iommuDomainTypeStr(curType)} and ` +
      `${iommuDomainTypeStr(type)}, for devices in group ${group.id}`,
    { culprit: dev.name },
  );
  return type === IOMMU_DOMAIN.IDENTITY ? type : curType;
}

/**
 * The default-domain type the group's devices require, or `targetType` when compatible; 0 means "the global
 * default", -1 an impossible combination.
 * @linux iommu_get_default_domain_type
 */
export function iommuGetDefaultDomainType(group: IommuGroup, targetType: number): number {
  group.mutex.assertHeld();
  let driverType = 0;
  for (const gdev of group.devices) driverType = iommuGetDefDomainType(group, gdev.dev, driverType);
  if (targetType) {
    if (driverType && targetType !== driverType) return -1;
    return targetType;
  }
  return driverType;
}

async function groupAllocDefaultDomainOfType(group: IommuGroup, reqType: number): Promise<IommuDomain> {
  if (group.defaultDomain && group.defaultDomain.type === reqType) return group.defaultDomain;
  return iommuGroupDomainAlloc(group, reqType);
}

/**
 * A domain of `type` for the group, from the driver of its first device.
 * @linux __iommu_group_domain_alloc
 */
export function iommuGroupDomainAlloc(group: IommuGroup, type: number): Promise<IommuDomain> {
  return iommuDomainAllocType(iommuGroupFirstDev(group), type);
}

/**
 * Allocate the group's default domain: of `reqType`, or (0) of the machine's default type, falling back to DMA.
 * @linux iommu_group_alloc_default_domain
 */
export async function iommuGroupAllocDefaultDomain(group: IommuGroup, reqType: number): Promise<IommuDomain> {
  group.mutex.assertHeld();
  const r = group.registry;
  if (reqType) return groupAllocDefaultDomainOfType(group, reqType);
  try {
    return await groupAllocDefaultDomainOfType(group, r.defDomainType);
  } catch (e) {
    if (r.defDomainType === IOMMU_DOMAIN.DMA) throw new KernelError("EINVAL", (e as Error).message);
  }
  return groupAllocDefaultDomainOfType(group, IOMMU_DOMAIN.DMA);
}

/**
 * Allocate a default domain (`targetType`, or 0 for automatic) and make it the group's current domain. An old
 * default domain is replaced and freed; on failure the old one stays. Direct mappings are installed before the
 * attach, and retried after it for drivers that cannot map before attach. Group mutex held.
 * @linux iommu_setup_default_domain
 */
export async function iommuSetupDefaultDomain(group: IommuGroup, targetType: number): Promise<void> {
  group.mutex.assertHeld();
  const oldDom = group.defaultDomain;
  const reqType = iommuGetDefaultDomainType(group, targetType);
  if (reqType < 0) throw new KernelError("EINVAL", `no default domain type fits ${group}`);
  const dom = await iommuGroupAllocDefaultDomain(group, reqType);
  if (group.defaultDomain === dom) return;
  // A DMA-FQ domain needs deferred-flush support; dma-iommu demotes it to DMA otherwise.
  if (dom.type === IOMMU_DOMAIN.DMA_FQ) {
    const dev = iommuGroupFirstDev(group);
    if (!devIommuOps(dev).capable?.(dev, IOMMU_CAP.DEFERRED_FLUSH)) dom.type = IOMMU_DOMAIN.DMA;
  }

  let directFailed = false;
  for (const gdev of group.devices) {
    try {
      await iommuCreateDeviceDirectMappings(dom, gdev.dev);
    } catch {
      directFailed = true;
    }
  }

  group.defaultDomain = dom;
  if (!group.domain) {
    // Drivers may not fail the first attach; the domain stays as default_domain so the unwind frees it.
    try {
      await groupSetDomainInternal(group, dom, IOMMU_SET_DOMAIN_MUST_SUCCEED);
    } catch (e) {
      group.registry.diag.warnOn(true, `first attach of ${group} to its default domain failed`);
      if (oldDom) iommuDomainFree(oldDom);
      throw e;
    }
  } else {
    try {
      await groupSetDomain(group, dom);
    } catch (e) {
      if (oldDom) {
        iommuDomainFree(dom);
        group.defaultDomain = oldDom;
      }
      throw e;
    }
  }

  if (directFailed) {
    for (const gdev of group.devices) {
      try {
        await iommuCreateDeviceDirectMappings(dom, gdev.dev);
      } catch (e) {
        if (oldDom) {
          await groupSetDomainInternal(group, oldDom, IOMMU_SET_DOMAIN_MUST_SUCCEED).catch(() => undefined);
          iommuDomainFree(dom);
          group.defaultDomain = oldDom;
        }
        throw e;
      }
    }
  }
  if (oldDom) iommuDomainFree(oldDom);
}

/**
 * Set up the default domain of a group whose devices were probed with a group list (bus_iommu_probe's second
 * pass), taking the group mutex. The caller then runs probe_finalize for its devices.
 * @linux the loop body of bus_iommu_probe
 */
export async function iommuGroupSetupDefaultDomain(group: IommuGroup): Promise<void> {
  await group.mutex.lock();
  try {
    group.onProbeList = false;
    await iommuSetupDefaultDomain(group, 0);
  } finally {
    group.mutex.unlock();
  }
}

/**
 * The group's default domain.
 * @linux iommu_group_default_domain
 */
export function iommuGroupDefaultDomain(group: IommuGroup): IommuDomain | undefined {
  return group.defaultDomain;
}

/**
 * The sysfs `type` of the group: blocked, identity, unmanaged, DMA, DMA-FQ or unknown.
 * @linux iommu_group_show_type
 */
export async function iommuGroupShowType(group: IommuGroup): Promise<string> {
  return group.mutex.withLock(() => {
    switch (group.defaultDomain?.type) {
      case IOMMU_DOMAIN.BLOCKED:
        return "blocked";
      case IOMMU_DOMAIN.IDENTITY:
        return "identity";
      case IOMMU_DOMAIN.UNMANAGED:
        return "unmanaged";
      case IOMMU_DOMAIN.DMA:
        return "DMA";
      case IOMMU_DOMAIN.DMA_FQ:
        return "DMA-FQ";
      default:
        return "unknown";
    }
  });
}

/**
 * Change the group's default domain type through sysfs: "identity", "DMA", "DMA-FQ" or "auto". EINVAL for
 * anything else or a group without default domain; EPERM while a driver uses the group (owner_cnt) or it is empty.
 * @linux iommu_group_store_type (without the capability check)
 */
export async function iommuGroupStoreType(group: IommuGroup, buf: string): Promise<void> {
  if (!group.defaultDomain) throw new KernelError("EINVAL", `${group} has no default domain`);
  const types: Record<string, number> = {
    identity: IOMMU_DOMAIN.IDENTITY,
    DMA: IOMMU_DOMAIN.DMA,
    "DMA-FQ": IOMMU_DOMAIN.DMA_FQ,
    auto: 0,
  };
  const reqType = types[buf.trim()];
  if (reqType === undefined) throw new KernelError("EINVAL", `unknown domain type ${buf}`);
  await group.mutex.withLock(async () => {
    const def = group.defaultDomain!;
    if (reqType === IOMMU_DOMAIN.DMA_FQ && def.type === IOMMU_DOMAIN.DMA) {
      def.type = IOMMU_DOMAIN.DMA_FQ;
      return;
    }
    if (group.devices.length === 0 || group.ownerCnt) {
      throw new KernelError("EPERM", `${group} is in use`);
    }
    await iommuSetupDefaultDomain(group, reqType);
  });
}

// --- membership (probe and release) ----------------------------------------------------------------------------

/**
 * The allocation half of joining a group.
 * @linux iommu_group_alloc_device
 */
function iommuGroupAllocDevice(group: IommuGroup, dev: Device): GroupDevice {
  group.registry.faults.check("iommu_group_alloc_device");
  let name = dev.name;
  for (let i = 0; group.devices.some((g) => g.name === name); i++) name = `${dev.name}.${i}`;
  return { dev, name };
}

/**
 * Leaving the group: the consistency checks of the last device going.
 * @linux __iommu_group_free_device
 */
function iommuGroupFreeDevice(group: IommuGroup, gdev: GroupDevice): void {
  if (group.devices.length === 0) {
    group.registry.diag.warnOn(
      group.ownerCnt !== 0 || group.domain !== group.defaultDomain,
      `${group} emptied while owned or not on its default domain`,
    );
  }
  kfree(group.registry.diag, gdev, `group_device ${gdev.name}`);
}

/**
 * Part A's per-device steps of iommu_deinit_device, which the group code runs around its own under the group mutex.
 * @linux the dev_iommu / iommu_device side of iommu_deinit_device
 */
export interface GroupDeviceHooks {
  /** iommu_device_unlink and ops->release_device, before the group's domains may be freed. */
  releaseDevice?(dev: Device): void;
  /** module_put(ops->owner) and dev_iommu_free, after the group's domains were freed. */
  afterRelease?(dev: Device): void;
}

/** Options of {@link iommuGroupAddDevice}. */
export interface GroupAddOptions extends GroupDeviceHooks {
  /**
   * bus_iommu_probe's group list: a new group is appended instead of getting its default domain now; the caller
   * then calls {@link iommuGroupSetupDefaultDomain} for each.
   */
  groupList?: IommuGroup[];
}

/**
 * Tear down the device's IOMMU membership with the group mutex held: attach the driver's release domain, let
 * part A release the device, free the group's domains when it was the last device (before the module reference is
 * dropped), clear `dev.iommuGroup`, let part A drop the module reference and free `dev.iommu`.
 * @linux iommu_deinit_device
 */
async function groupDeinitDevice(group: IommuGroup, dev: Device, hooks: GroupDeviceHooks): Promise<void> {
  group.mutex.assertHeld();
  const ops = devIommuOps(dev);
  const rd = ops.releaseDomain;
  if (!devIommu(dev)?.attachDeferred && rd?.ops.attachDev) await rd.ops.attachDev(rd, dev, group.domain);
  hooks.releaseDevice?.(dev);
  if (group.devices.length === 0) {
    if (group.defaultDomain) {
      iommuDomainFree(group.defaultDomain);
      group.defaultDomain = undefined;
    }
    if (group.blockingDomain) {
      iommuDomainFree(group.blockingDomain);
      group.blockingDomain = undefined;
    }
    group.domain = undefined;
  }
  dev.iommuGroup = undefined;
  hooks.afterRelease?.(dev);
}

/**
 * Put a probed device (`dev.iommu` with `iommuDev`, `maxPasids` and `attachDeferred` set by part A) into its
 * group: find or allocate the group through the driver, add the device, install the direct mappings of the
 * default domain and attach the device to the group's current domain, or set up the default domain of a new group
 * (with `groupList`, defer that: the group is added to the list for {@link iommuGroupSetupDefaultDomain}). On
 * failure the device is deinitialised under the group mutex (part A's iommu_deinit_device: `dev.iommu` is gone
 * afterwards), the group reference dropped, and the error thrown; when the driver's `deviceGroup` fails, nothing
 * exists on the group side and part A unwinds.
 * @linux iommu_init_device's ops->device_group step and the rest of __iommu_probe_device
 */
export async function iommuGroupAddDevice(
  core: IommuCoreLike,
  dev: Device,
  opts: GroupAddOptions = {},
): Promise<IommuGroup> {
  const groupList = opts.groupList;
  if (dev.iommuGroup) return dev.iommuGroup as IommuGroup;
  const group = await iommuDeviceGroup(core, dev);
  dev.iommuGroup = group;

  let gdev: GroupDevice | undefined;
  let allocErr: unknown;
  try {
    gdev = iommuGroupAllocDevice(group, dev);
  } catch (e) {
    allocErr = e;
  }
  await group.mutex.lock();
  try {
    if (!gdev) {
      await groupDeinitDevice(group, dev, opts);
      throw allocErr;
    }
    group.devices.push(gdev);
    try {
      group.registry.diag.warnOn(
        group.defaultDomain !== undefined && group.domain === undefined,
        `${group} has a default domain but no domain`,
      );
      if (group.defaultDomain) {
        await iommuCreateDeviceDirectMappings(group.defaultDomain, dev).catch(() => undefined);
      }
      if (group.domain) {
        await iommuDeviceSetDomain(group, dev, group.domain, undefined, 0);
      } else if (!group.defaultDomain && !groupList) {
        await iommuSetupDefaultDomain(group, 0);
      } else if (!group.defaultDomain && groupList && !group.onProbeList) {
        group.onProbeList = true;
        groupList.push(group);
      }
    } catch (e) {
      group.devices.splice(group.devices.indexOf(gdev), 1);
      iommuGroupFreeDevice(group, gdev);
      await groupDeinitDevice(group, dev, opts);
      throw e;
    }
  } catch (e) {
    group.mutex.unlock();
    iommuGroupPut(group);
    throw e;
  }
  group.mutex.unlock();
  return group;
}

/**
 * Take a device out of its group: remove it from the member list, deinit its IOMMU state through part A (the
 * group's domains are freed with its last device), and drop the device's group reference.
 * @linux __iommu_group_remove_device / iommu_group_remove_device
 */
export async function iommuGroupRemoveDevice(
  _core: IommuCoreLike | undefined,
  dev: Device,
  hooks: GroupDeviceHooks = {},
): Promise<void> {
  const group = dev.iommuGroup as IommuGroup | undefined;
  if (!group) return;
  await group.mutex.lock();
  try {
    const idx = group.devices.findIndex((g) => g.dev === dev);
    if (idx >= 0) {
      const [gdev] = group.devices.splice(idx, 1);
      iommuGroupFreeDevice(group, gdev!);
      if (devHasIommu(dev)) await groupDeinitDevice(group, dev, hooks);
      else dev.iommuGroup = undefined;
    }
  } finally {
    group.mutex.unlock();
  }
  iommuGroupPut(group);
}
