/**
 * The kernel side of IOMMU_TEST_CMD: the SELFTEST object (a mock device bound to the context on the user's behalf),
 * the selftest accesses behind anonymous fds, and one handler per op, driving the mock driver of drivers-mock.
 * @linux drivers/iommu/iommufd/selftest.c
 */
import {
  anonInodeGetFile,
  createToken,
  currentProcess,
  type DependencyContainer,
  type Device,
  type FileOperations,
  fdInstallAt,
  fget,
  fput,
  GUP_PIN_COUNTING_BIAS,
  getUnusedFdFlags,
  IOMMU_FAULT_PAGE_REQ,
  IOMMU_FAULT_PAGE_REQUEST,
  IOMMU_NO_PASID,
  type IommuDomain,
  iommuIovaToPhys,
  iommuReportDeviceFault,
  type File as KFile,
  kerr,
  type Machine,
  type Module,
  Mutex,
  minPageSize,
  type Process,
  provide,
  putUnusedFd,
} from "@iommu-sim/core";
import {
  MockIommu,
  MockNestedDomain,
  MockPagingDomain,
  mockDevCache,
  mockViommuReportVevent,
} from "@iommu-sim/drivers-mock";
import {
  _IO,
  getIommufdCore,
  IOMMUFD_OBJ,
  IOMMUFD_OBJ_ANY,
  IOMMUFD_TYPE,
  IOPT_IOVA_MAX,
  type IommufdAccess,
  type IommufdAccessOps,
  type IommufdCtx,
  type IommufdDevice,
  type IommufdHwPagetable,
  type IommufdIoctlOp,
  IommufdObject,
  type IommufdObjectTypeOps,
  IommufdTokens,
  type IommufdUcmd,
  iommufdAccessAttach,
  iommufdAccessCreate,
  iommufdAccessDestroy,
  iommufdAccessPinPages,
  iommufdAccessReplace,
  iommufdAccessRw,
  iommufdAccessUnpinPages,
  iommufdDeviceAttach,
  iommufdDeviceAttachedHwpt,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
  iommufdGetDevice,
  iommufdGetIoas,
  iommufdGetObject,
  iommufdObjectAbort,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdPutObject,
  ioptReserveIova,
  PAGE_SIZE,
  U64_MAX,
} from "@iommu-sim/iommufd";
import {
  IOMMU_TEST_OP,
  type IommuTestCmd,
  iommu_test_cmd,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_WRITE,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_PASID_WIDTH,
} from "./uapi.js";

/** Fault-injection sites of this module (the kzallocs of selftest.c). @linux the allocations of selftest.c */
export const SELFTEST_SITES = {
  mockDev: "selftest_mock_dev_alloc",
  staccess: "selftest_staccess_alloc",
  accessItem: "selftest_access_item_alloc",
} as const;

/** The IOMMU instance hot-plugged mock devices sit behind. @linux mock_iommu (selftest.c) */
export const SELFTEST_MOCK_IOMMU = "mock0";
/** First stream ID handed to hot-plugged mock devices (the platform's own devices use low IDs). */
export const SELFTEST_FIRST_SID = 0x40;
/** Default of the temporary memory limit. @linux iommufd_test_memory_limit (65536) */
export const SELFTEST_DEFAULT_MEMORY_LIMIT = 65536;
/** Largest length ACCESS_PAGES / ACCESS_RW accept. @linux the 16 MiB guard of iommufd_test_access_pages */
const ACCESS_MAX_LENGTH = 16 * 1024 * 1024;

/**
 * A mock device the selftest created (its fake cache is drivers-mock's `mockDevCache(dev)`).
 * @linux struct mock_dev (selftest.c)
 */
export class MockDev {
  constructor(
    readonly dev: Device,
    /** @linux mock_dev.id */
    readonly id: number,
    /** @linux mock_dev.flags */
    readonly flags: number,
  ) {}
}

/**
 * The SELFTEST object: owns a mock device's binding to the context; destroying it detaches, unbinds and unplugs.
 * @linux struct selftest_obj (TYPE_IDEV)
 */
export class SelftestObj extends IommufdObject {
  /** @linux selftest_obj.idev.idev */
  idev!: IommufdDevice;
  /** @linux selftest_obj.idev.mock_dev */
  mockDev!: MockDev;
}

/** One pinned range of a selftest access. @linux struct selftest_access_item */
export interface SelftestAccessItem {
  iova: number;
  length: number;
  id: number;
}

/** The state behind an access fd. @linux struct selftest_access */
export class SelftestAccess {
  /** @linux selftest_access.access */
  access: IommufdAccess | undefined = undefined;
  /** @linux selftest_access.items */
  readonly items: SelftestAccessItem[] = [];
  /** @linux selftest_access.next_id */
  nextId = 0;
  constructor(
    /** @linux selftest_access.lock */
    readonly lock: Mutex,
    /** @linux selftest_access.file */
    public file: KFile | undefined = undefined,
  ) {}
}

/**
 * What the selftest keeps per machine: mock-device IDs, the devices by `Device`, the access file operations and the
 * temporary memory limit.
 * @linux the file-scope state of selftest.c (mock_dev_ida, iommufd_test_memory_limit)
 */
export class SelftestState {
  /** @linux iommufd_test_memory_limit */
  memoryLimit = SELFTEST_DEFAULT_MEMORY_LIMIT;
  /** Mock devices alive, by their platform device. */
  readonly mockDevs = new Map<Device, MockDev>();
  private readonly ids = new Set<number>();
  /** @linux iommfd_test_staccess_fops */
  readonly staccessFops: FileOperations;

  constructor(
    readonly machine: Machine,
    owner: Module,
  ) {
    this.staccessFops = {
      owner,
      release: (file) => staccessRelease(file.privateData as SelftestAccess),
    };
  }

  /** @linux ida_alloc(&mock_dev_ida) */
  allocId(): number {
    let id = 0;
    while (this.ids.has(id)) id++;
    this.ids.add(id);
    return id;
  }
  /** @linux ida_free(&mock_dev_ida) */
  freeId(id: number): void {
    this.ids.delete(id);
  }
}

/** DI tokens of the selftest module. */
export const SelftestTokens = {
  /** The per-machine selftest state (provided at module init). */
  state: createToken<SelftestState>("selftest.state"),
} as const;

/** The selftest state of the machine a context belongs to. */
export function selftestStateOf(machine: Machine): SelftestState {
  const c = machine.container;
  if (!c.isRegistered(SelftestTokens.state, true)) throw kerr("ENODEV", "the iommufd selftest module is not loaded");
  return c.resolve(SelftestTokens.state);
}

function machineOf(ictx: IommufdCtx): Machine {
  return ictx.core.machine;
}

/** The mock device state of a device the selftest created (undefined otherwise). */
export function mockDevOf(machine: Machine, dev: Device): MockDev | undefined {
  return selftestStateOf(machine).mockDevs.get(dev);
}

// --- mock devices -------------------------------------------------------------------------------------------

function mockIommuOf(machine: Machine): MockIommu {
  const pdev = machine.driverCore.deviceFor(SELFTEST_MOCK_IOMMU);
  const iommu = pdev?.driverData;
  if (!(iommu instanceof MockIommu)) throw kerr("ENODEV", `no mock IOMMU ${SELFTEST_MOCK_IOMMU}`);
  return iommu;
}

/**
 * Create a mock device: a platform device hot-plugged behind the mock IOMMU with a free stream ID, probed by the
 * IOMMU core as it is added. EINVAL for unknown flags (MOCK_FLAGS_DEVICE_HUGE_IOVA included: mainline dropped it
 * for the MOCK_IOMMUPT_HUGE page-table type); ENOSPC when no stream ID is left.
 * @linux mock_dev_create
 */
export async function mockDevCreate(st: SelftestState, devFlags: number): Promise<MockDev> {
  const m = st.machine;
  if (devFlags & ~(MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID)) {
    throw kerr("EINVAL", `unknown mock device flags 0x${devFlags.toString(16)}`);
  }
  m.faults.check(SELFTEST_SITES.mockDev);
  const iommu = mockIommuOf(m);
  const taken = new Set<number>(iommu.masters.keys());
  for (const md of st.mockDevs.values())
    for (const a of md.dev.of.iommus) if (a.args[0] !== undefined) taken.add(a.args[0]);
  let sid = SELFTEST_FIRST_SID;
  while (sid < iommu.numSids && taken.has(sid)) sid++;
  if (sid >= iommu.numSids) throw kerr("ENOSPC", "no free mock stream ID");
  const bus = m.driverCore.busFor("platform");
  const fw = m.driverCore.firmware.iommus.get(SELFTEST_MOCK_IOMMU);
  if (!bus || !fw) throw kerr("ENODEV", "no platform bus or mock IOMMU");
  const id = st.allocId();
  const name = `iommufd_mock${id}`;
  let dev: Device;
  try {
    dev = await m.driverCore.deviceRegister({
      name,
      bus,
      fwnode: m.driverCore.fwnodes.node(`/${name}`),
      iommus: [{ fwnode: fw.fwnode, args: [sid] }],
      // mock_dev_create's "pasid-num-bits" property: what dev_iommu_get_max_pasids reads.
      platformData: {
        "mock-dev-flags": devFlags,
        "pasid-num-bits": devFlags & MOCK_FLAGS_DEVICE_PASID ? MOCK_PASID_WIDTH : 0,
      },
    });
  } catch (e) {
    st.freeId(id);
    throw e;
  }
  const md = new MockDev(dev, id, devFlags);
  st.mockDevs.set(dev, md);
  return md;
}

/**
 * Unplug a mock device.
 * @linux mock_dev_destroy
 */
export async function mockDevDestroy(st: SelftestState, md: MockDev): Promise<void> {
  st.mockDevs.delete(md.dev);
  await st.machine.driverCore.deviceUnregister(md.dev);
  st.freeId(md.id);
}

/**
 * Destroy op of the SELFTEST object: detach every PASID still attached, then the RID, unbind, unplug. Linux's
 * destroy detaches only the RID, so a PASID left attached (each attach holds a users reference on the device) makes
 * the unbind fail with a WARN and the device, its HWPT and IOAS leak at close; here the leftover PASIDs are detached
 * first (docs/divergences.md).
 * @linux iommufd_selftest_destroy
 */
export async function iommufdSelftestDestroy(obj: IommufdObject): Promise<void> {
  const sobj = obj as SelftestObj;
  const idev = sobj.idev;
  const leftover: number[] = [];
  for (const [pasid, attach] of idev.igroup.pasidAttach) {
    if (pasid !== IOMMU_NO_PASID && attach.devices.get(idev.id) === idev) leftover.push(pasid);
  }
  for (const pasid of leftover) await iommufdDeviceDetach(idev, pasid);
  await iommufdDeviceDetach(sobj.idev, IOMMU_NO_PASID);
  await iommufdDeviceUnbind(sobj.idev);
  await mockDevDestroy(selftestStateOf(machineOf(sobj.ictx)), sobj.mockDev);
}

/** The SELFTEST object type. @linux iommufd_object_ops[IOMMUFD_OBJ_SELFTEST] */
export const SELFTEST_OBJECT_TYPE: IommufdObjectTypeOps = {
  type: IOMMUFD_OBJ.SELFTEST,
  destroy: iommufdSelftestDestroy,
};

// --- helpers -----------------------------------------------------------------------------------------------

function num(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw kerr("EOVERFLOW", `${what} 0x${v.toString(16)} is out of range`);
  return Number(v);
}

/** @linux iommufd_test_get_selftest_obj */
function getSelftestObj(ictx: IommufdCtx, id: number): SelftestObj {
  return iommufdGetObject<SelftestObj>(ictx, id, IOMMUFD_OBJ.SELFTEST);
}

/** A paging HWPT whose domain is a mock paging domain (EINVAL otherwise). @linux get_md_pagetable */
function getMdPagetable(ictx: IommufdCtx, id: number): { hwpt: IommufdHwPagetable; mock: MockPagingDomain } {
  const hwpt = iommufdGetObject<IommufdHwPagetable>(ictx, id, IOMMUFD_OBJ.HWPT_PAGING);
  if (!(hwpt.domain instanceof MockPagingDomain)) {
    iommufdPutObject(ictx, hwpt);
    throw kerr("EINVAL", `HWPT ${id} is not a mock paging domain`);
  }
  return { hwpt, mock: hwpt.domain };
}

/** The physical address of the user page at `va` (faulting it in, as get_user_pages_fast does). */
function userPagePa(ucmd: IommufdUcmd, va: number): number {
  const pas = ucmd.user.pin(va - (va % PAGE_SIZE), 1, false);
  ucmd.user.unpin(pas);
  const pa = pas[0];
  if (pa === undefined) throw kerr("EFAULT");
  return pa;
}

function callerProcess(): Process {
  const p = currentProcess();
  if (!p) throw kerr("EOPNOTSUPP", "IOMMU_TEST_CMD needs a calling process for access fds");
  return p;
}

// --- ops ---------------------------------------------------------------------------------------------------

/**
 * Reserve [start, start + length - 1] (u64 arithmetic, as the C unsigned longs). What lies past the simulated
 * IOVA space is clamped to its top ({@link IOPT_IOVA_MAX}, ULONG_MAX here), so user space's ULONG_MAX-style ends
 * work; a range wholly past it reserves nothing (nothing can be mapped there).
 * @linux iommufd_test_add_reserved
 */
async function testAddReserved(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.ADD_RESERVED>) {
  const ioas = iommufdGetIoas(ucmd.ictx, c.id);
  try {
    const max = BigInt(IOPT_IOVA_MAX);
    const last64 = (c.start + c.length - 1n) & U64_MAX;
    await ioas.iopt.iovaRwsem.downWrite();
    try {
      if (c.start <= max && last64 >= c.start) {
        ioptReserveIova(ioas.iopt, Number(c.start), Number(last64 > max ? max : last64), undefined);
      }
    } finally {
      ioas.iopt.iovaRwsem.upWrite();
    }
  } finally {
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

/** @linux iommufd_test_mock_domain */
async function testMockDomain(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS>) {
  const ictx = ucmd.ictx;
  const st = selftestStateOf(machineOf(ictx));
  const pt = { id: c.id };
  const devFlags = c.op === IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS ? c.dev_flags : 0;
  const sobj = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.SELFTEST, () => new SelftestObj());
  let md: MockDev | undefined;
  let idev: IommufdDevice | undefined;
  let attached = false;
  try {
    md = await mockDevCreate(st, devFlags);
    sobj.mockDev = md;
    const bound = await iommufdDeviceBind(ictx, md.dev, { noCtxRef: true });
    idev = bound.idev;
    sobj.idev = idev;
    await iommufdDeviceAttach(idev, IOMMU_NO_PASID, pt);
    attached = true;
    // Userspace must destroy the stdev_id to destroy the object.
    c.out_hwpt_id = pt.id;
    c.out_stdev_id = sobj.id;
    c.out_idev_id = bound.id;
    ucmd.respond();
  } catch (e) {
    if (attached && idev) await iommufdDeviceDetach(idev, IOMMU_NO_PASID);
    if (idev) await iommufdDeviceUnbind(idev);
    if (md) await mockDevDestroy(st, md);
    iommufdObjectAbort(ictx, sobj);
    throw e;
  }
  iommufdObjectFinalize(ictx, sobj);
}

/** @linux iommufd_test_mock_domain_replace */
async function testMockDomainReplace(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE>) {
  const sobj = getSelftestObj(ucmd.ictx, c.id);
  try {
    const pt = { id: c.pt_id };
    await iommufdDeviceReplace(sobj.idev, IOMMU_NO_PASID, pt);
    c.pt_id = pt.id;
    ucmd.respond();
  } finally {
    iommufdPutObject(ucmd.ictx, sobj);
  }
}

/**
 * Every page of the domain's smallest size under [iova, iova + length) maps the user page under `uptr` (the mock
 * page, or PAGE_SIZE for MOCK_IOMMUPT_HUGE).
 * @linux iommufd_test_md_check_pa
 */
async function testMdCheckPa(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.MD_CHECK_MAP>) {
  const { hwpt, mock } = getMdPagetable(ucmd.ictx, c.id);
  try {
    const pageSize = minPageSize(mock.pgsizeBitmap);
    const P = BigInt(pageSize);
    if (c.iova % P || c.length % P || c.uptr % P || c.uptr + c.length > 0xffff_ffff_ffff_ffffn) {
      throw kerr("EINVAL", "unaligned check_map");
    }
    let iova = num(c.iova, "iova");
    let uptr = num(c.uptr, "uptr");
    for (let left = num(c.length, "length"); left; left -= pageSize) {
      const pa = userPagePa(ucmd, uptr);
      if (iommuIovaToPhys(mock, iova) !== pa + (uptr % PAGE_SIZE) || !isMapped(mock, iova)) {
        throw kerr("EINVAL", `IOVA 0x${iova.toString(16)} does not map the user page`);
      }
      iova += pageSize;
      uptr += pageSize;
    }
  } finally {
    iommufdPutObject(ucmd.ictx, hwpt);
  }
}

function isMapped(d: IommuDomain, iova: number): boolean {
  // A translation to PA 0 is indistinguishable from a hole; user pages are never at PA 0.
  return iommuIovaToPhys(d, iova) !== 0;
}

/** The pin count of every user page in the range equals `refs`. @linux iommufd_test_md_check_refs */
async function testMdCheckRefs(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.MD_CHECK_REFS>) {
  const P = BigInt(PAGE_SIZE);
  if (c.length % P || c.uptr % P || c.uptr + c.length > 0xffff_ffff_ffff_ffffn) throw kerr("EINVAL");
  const table = machineOf(ucmd.ictx).userSpace.pages;
  let uptr = num(c.uptr, "uptr");
  for (let left = num(c.length, "length"); left; left -= PAGE_SIZE) {
    const pa = userPagePa(ucmd, uptr);
    const r = table.refs(pa);
    if (!r) throw kerr("EFAULT", `no page behind 0x${uptr.toString(16)}`);
    if (r.order === 0 && Math.floor(r.refcount / GUP_PIN_COUNTING_BIAS) !== c.refs) {
      throw kerr("EIO", `page 0x${pa.toString(16)} has refcount ${r.refcount}, expected ${c.refs} pins`);
    }
    uptr += PAGE_SIZE;
  }
}

/** @linux iommufd_test_md_check_iotlb */
async function testMdCheckIotlb(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.MD_CHECK_IOTLB>) {
  const hwpt = iommufdGetObject<IommufdHwPagetable>(ucmd.ictx, c.id, IOMMUFD_OBJ.HWPT_NESTED);
  try {
    const d = hwpt.domain;
    if (!(d instanceof MockNestedDomain)) throw kerr("EINVAL", `HWPT ${c.id} is not a mock nested domain`);
    if (c.iotlb_id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX || d.iotlb[c.iotlb_id] !== c.iotlb) throw kerr("EINVAL");
  } finally {
    iommufdPutObject(ucmd.ictx, hwpt);
  }
}

/**
 * Entry `cache_id` of the device's fake cache holds `cache` (EINVAL otherwise, or for a device the selftest did not
 * create).
 * @linux iommufd_test_dev_check_cache
 */
async function testDevCheckCache(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.DEV_CHECK_CACHE>) {
  const idev = iommufdGetDevice(ucmd.ictx, c.id);
  try {
    if (!mockDevOf(machineOf(ucmd.ictx), idev.dev)) throw kerr("EINVAL", "not a mock device");
    const cache = mockDevCache(idev.dev);
    if (c.cache_id > MOCK_DEV_CACHE_ID_MAX || cache[c.cache_id] !== c.cache) throw kerr("EINVAL");
  } finally {
    iommufdPutObject(ucmd.ictx, idev);
  }
}

// --- accesses -----------------------------------------------------------------------------------------------

/** The selftest access behind `fd` of the caller, with a file reference (EBADFD otherwise). @linux iommufd_access_get */
function accessGet(st: SelftestState, fd: number): { sa: SelftestAccess; file: KFile } {
  const proc = callerProcess();
  let file: KFile;
  try {
    file = fget(proc, fd, "selftest");
  } catch {
    throw kerr("EBADFD", `fd ${fd} is not open`);
  }
  if (file.fops !== st.staccessFops) {
    void fput(file, "selftest");
    throw kerr("EBADFD", `fd ${fd} is not a selftest access`);
  }
  return { sa: file.privateData as SelftestAccess, file };
}

/** Unpin every item overlapping [iova, iova + length). @linux iommufd_test_access_unmap */
async function testAccessUnmap(sa: SelftestAccess, iova: number, length: number): Promise<void> {
  const last = iova + length - 1;
  await sa.lock.lock();
  try {
    for (let i = 0; i < sa.items.length; ) {
      const item = sa.items[i]!;
      if (iova > item.iova + item.length - 1 || last < item.iova) {
        i++;
        continue;
      }
      sa.items.splice(i, 1);
      await iommufdAccessUnpinPages(sa.access!, item.iova, item.length);
    }
  } finally {
    sa.lock.unlock();
  }
}

/** @linux selftest_access_ops_pin */
const accessOpsPin: IommufdAccessOps = {
  needsPinPages: true,
  unmap: (data, iova, length) => testAccessUnmap(data as SelftestAccess, iova, length),
};
/** @linux selftest_access_ops */
const accessOps: IommufdAccessOps = {
  unmap: (data, iova, length) => testAccessUnmap(data as SelftestAccess, iova, length),
};

/** @linux iommufd_test_staccess_release */
async function staccessRelease(sa: SelftestAccess): Promise<void> {
  if (sa.access) {
    await testAccessUnmap(sa, 0, Number.MAX_SAFE_INTEGER);
    await iommufdAccessDestroy(sa.access);
  }
}

/** @linux iommufd_test_create_access */
async function testCreateAccess(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.CREATE_ACCESS>) {
  if (c.flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) throw kerr("EOPNOTSUPP", "unknown access flags");
  const ictx = ucmd.ictx;
  const m = machineOf(ictx);
  const st = selftestStateOf(m);
  const proc = callerProcess();
  m.faults.check(SELFTEST_SITES.staccess);
  const sa = new SelftestAccess(new Mutex(m.scheduler, "selftest_access.lock"));
  const file = anonInodeGetFile("[iommufd_test_staccess]", st.staccessFops, sa, { ctx: proc });
  sa.file = file;
  let fd: number;
  try {
    fd = getUnusedFdFlags(proc);
  } catch (e) {
    await fput(file);
    throw e;
  }
  let access: IommufdAccess | undefined;
  try {
    access = iommufdAccessCreate(
      ictx,
      c.flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES ? accessOpsPin : accessOps,
      sa,
    ).access;
    await iommufdAccessAttach(access, c.id);
    c.out_access_fd = fd;
    ucmd.respond();
  } catch (e) {
    if (access) await iommufdAccessDestroy(access);
    putUnusedFd(proc, fd);
    await fput(file);
    throw e;
  }
  sa.access = access;
  fdInstallAt(proc, fd, file);
}

/** @linux iommufd_test_access_replace_ioas */
async function testAccessReplaceIoas(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.ACCESS_REPLACE_IOAS>) {
  const { sa, file } = accessGet(selftestStateOf(machineOf(ucmd.ictx)), c.id);
  try {
    await iommufdAccessReplace(sa.access!, c.ioas_id);
  } finally {
    await fput(file, "selftest");
  }
}

/** @linux iommufd_test_access_pages */
async function testAccessPages(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.ACCESS_PAGES>) {
  if (c.length > BigInt(ACCESS_MAX_LENGTH)) throw kerr("ENOMEM");
  if (c.flags & ~MOCK_FLAGS_ACCESS_WRITE) throw kerr("EOPNOTSUPP", "unsupported access_pages flags");
  const m = machineOf(ucmd.ictx);
  const { sa, file } = accessGet(selftestStateOf(m), c.id);
  try {
    const access = sa.access!;
    if (access.ops !== accessOpsPin) throw kerr("EOPNOTSUPP", "the access does not pin pages");
    const iova = num(c.iova, "iova");
    const length = num(c.length, "length");
    await sa.lock.lock();
    try {
      const pas = await iommufdAccessPinPages(access, iova, length, c.flags & MOCK_FLAGS_ACCESS_WRITE);
      try {
        if (c.uptr) {
          // iommufd_test_check_pages: the pinned pages are the pages under the user VA.
          const base = num(c.uptr, "uptr") - (iova % PAGE_SIZE);
          for (let i = 0; i < pas.length; i++) {
            if (userPagePa(ucmd, base + i * PAGE_SIZE) !== pas[i])
              throw kerr("EIO", "pinned page mismatch (Linux: EBADE, not in core's errno table)");
          }
        }
        m.faults.check(SELFTEST_SITES.accessItem);
        const item = { iova, length, id: sa.nextId++ };
        sa.items.push(item);
        c.out_access_pages_id = item.id;
        try {
          ucmd.respond();
        } catch (e) {
          sa.items.splice(sa.items.indexOf(item), 1);
          throw e;
        }
      } catch (e) {
        await iommufdAccessUnpinPages(access, iova, length);
        throw e;
      }
    } finally {
      sa.lock.unlock();
    }
  } finally {
    await fput(file, "selftest");
  }
}

/** @linux iommufd_test_access_rw */
async function testAccessRw(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.ACCESS_RW>) {
  if (c.length > BigInt(ACCESS_MAX_LENGTH)) throw kerr("ENOMEM");
  if (c.flags & ~(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH)) {
    throw kerr("EOPNOTSUPP", "unsupported access_rw flags");
  }
  const { sa, file } = accessGet(selftestStateOf(machineOf(ucmd.ictx)), c.id);
  try {
    const length = num(c.length, "length");
    const write = (c.flags & MOCK_ACCESS_RW_WRITE) !== 0;
    const tmp = write ? ucmd.user.read(c.uptr, length) : new Uint8Array(length);
    await iommufdAccessRw(sa.access!, num(c.iova, "iova"), tmp, c.flags & MOCK_ACCESS_RW_WRITE);
    if (!write) ucmd.user.write(c.uptr, tmp);
  } finally {
    await fput(file, "selftest");
  }
}

/** @linux iommufd_test_access_item_destroy */
async function testAccessItemDestroy(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.DESTROY_ACCESS_PAGES>) {
  const { sa, file } = accessGet(selftestStateOf(machineOf(ucmd.ictx)), c.id);
  try {
    await sa.lock.lock();
    try {
      const i = sa.items.findIndex((it) => it.id === c.access_pages_id);
      if (i < 0) throw kerr("ENOENT", `no access item ${c.access_pages_id}`);
      const [item] = sa.items.splice(i, 1);
      await iommufdAccessUnpinPages(sa.access!, item!.iova, item!.length);
    } finally {
      sa.lock.unlock();
    }
  } finally {
    await fput(file, "selftest");
  }
}

// --- dirty tracking, faults, PASIDs --------------------------------------------------------------------------

/** Mark the IOVAs whose bits are set in the user bitmap dirty in the mock domain. @linux iommufd_test_dirty */
async function testDirty(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.DIRTY>) {
  if (!c.page_size || !c.length || c.iova % c.page_size || c.length % c.page_size || !c.uptr) {
    throw kerr("EINVAL", "bad dirty range");
  }
  const { hwpt, mock } = getMdPagetable(ucmd.ictx, c.id);
  try {
    if (!mock.dirtyTracking) throw kerr("EINVAL", "dirty tracking is off");
    const max = num(c.length / c.page_size, "length");
    const bitmap = ucmd.user.read(c.uptr, Math.ceil(max / 8));
    const pageSize = num(c.page_size, "page_size");
    const iova = num(c.iova, "iova");
    let count = 0;
    for (let i = 0; i < max; i++) {
      if (!((bitmap[i >> 3]! >> (i & 7)) & 1)) continue;
      // Counted whatever set_dirty answers (an unmapped IOVA, or a huge leaf already dirty), as Linux does.
      mock.pt.setDirty(iova + i * pageSize);
      count++;
    }
    c.out_nr_dirty = BigInt(count);
    ucmd.respond();
  } finally {
    iommufdPutObject(ucmd.ictx, hwpt);
  }
}

/** Report a page request for a device, as its IOMMU would. @linux iommufd_test_trigger_iopf */
async function testTriggerIopf(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.TRIGGER_IOPF>) {
  const idev = iommufdGetDevice(ucmd.ictx, c.dev_id);
  try {
    let flags = IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE;
    if (c.pasid !== IOMMU_NO_PASID) flags |= IOMMU_FAULT_PAGE_REQUEST.PASID_VALID;
    const evt = {
      fault: {
        type: IOMMU_FAULT_PAGE_REQ,
        prm: { flags, pasid: c.pasid, grpid: c.grpid, perm: c.perm, addr: num(c.addr, "addr") },
      },
    };
    try {
      await iommuReportDeviceFault(idev.dev, evt);
    } catch {
      // iommu_report_device_fault's result is ignored by the selftest, as in Linux.
    }
  } finally {
    iommufdPutObject(ucmd.ictx, idev);
  }
}

/**
 * Report a selftest vEVENT for the device: the vIOMMU is the one of the nested HWPT its RID is attached to, the
 * payload its virtual ID there. ENOENT when it is not attached to a nested HWPT of a vIOMMU or has no vDEVICE;
 * EOPNOTSUPP when the vIOMMU has no selftest vEVENTQ.
 * @linux iommufd_test_trigger_vevent
 */
async function testTriggerVevent(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.TRIGGER_VEVENT>) {
  const idev = iommufdGetDevice(ucmd.ictx, c.dev_id);
  try {
    // mdev->viommu: set when the RID is attached to a nested domain allocated on a vIOMMU.
    const domain = iommufdDeviceAttachedHwpt(idev, IOMMU_NO_PASID)?.domain;
    const viommu = domain instanceof MockNestedDomain ? domain.viommu : undefined;
    if (!viommu) throw kerr("ENOENT", `${idev} is not attached to a nested HWPT of a vIOMMU`);
    let virtId = 0;
    try {
      virtId = viommu.getVdevId(idev.dev);
    } catch {
      // No vDEVICE: mdev->vdev_id is 0.
    }
    if (!virtId) throw kerr("ENOENT", `${idev} has no vDEVICE`);
    await mockViommuReportVevent(viommu, virtId);
  } finally {
    iommufdPutObject(ucmd.ictx, idev);
  }
}

/** @linux iommufd_test_pasid_attach */
async function testPasidAttach(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.PASID_ATTACH>) {
  const sobj = getSelftestObj(ucmd.ictx, c.id);
  try {
    const pt = { id: c.pt_id };
    await iommufdDeviceAttach(sobj.idev, c.pasid, pt);
    c.pt_id = pt.id;
    try {
      ucmd.respond();
    } catch (e) {
      await iommufdDeviceDetach(sobj.idev, c.pasid);
      throw e;
    }
  } finally {
    iommufdPutObject(ucmd.ictx, sobj);
  }
}

/** @linux iommufd_test_pasid_replace */
async function testPasidReplace(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.PASID_REPLACE>) {
  const sobj = getSelftestObj(ucmd.ictx, c.id);
  try {
    const pt = { id: c.pt_id };
    await iommufdDeviceReplace(sobj.idev, c.pasid, pt);
    c.pt_id = pt.id;
    ucmd.respond();
  } finally {
    iommufdPutObject(ucmd.ictx, sobj);
  }
}

/** @linux iommufd_test_pasid_detach */
async function testPasidDetach(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.PASID_DETACH>) {
  const sobj = getSelftestObj(ucmd.ictx, c.id);
  try {
    await iommufdDeviceDetach(sobj.idev, c.pasid);
  } finally {
    iommufdPutObject(ucmd.ictx, sobj);
  }
}

/** The PASID is attached to `hwpt_id` (0: to nothing); EINVAL otherwise. @linux iommufd_test_pasid_check_hwpt */
async function testPasidCheckHwpt(ucmd: IommufdUcmd, c: IommuTestCmd<typeof IOMMU_TEST_OP.PASID_CHECK_HWPT>) {
  const ictx = ucmd.ictx;
  const sobj = getSelftestObj(ictx, c.id);
  try {
    const attached = iommufdDeviceAttachedHwpt(sobj.idev, c.pasid)?.domain;
    let expect: IommuDomain | undefined;
    if (c.hwpt_id) {
      const obj = iommufdGetObject(ictx, c.hwpt_id, IOMMUFD_OBJ_ANY);
      try {
        if (obj.type !== IOMMUFD_OBJ.HWPT_PAGING && obj.type !== IOMMUFD_OBJ.HWPT_NESTED) {
          throw kerr("EINVAL", `${c.hwpt_id} is not a HWPT`);
        }
        expect = (obj as IommufdHwPagetable).domain;
      } finally {
        iommufdPutObject(ictx, obj);
      }
    }
    if (attached !== expect) throw kerr("EINVAL", `PASID ${c.pasid} is not attached to ${c.hwpt_id}`);
  } finally {
    iommufdPutObject(ictx, sobj);
  }
}

/**
 * The IOMMU_TEST_CMD handler: dispatch on `op`. EOPNOTSUPP for an unknown op.
 * @linux iommufd_test
 */
export async function iommufdTest(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuTestCmd;
  const O = IOMMU_TEST_OP;
  type C<K extends keyof typeof O> = IommuTestCmd<(typeof O)[K]>;
  switch (cmd.op) {
    case O.ADD_RESERVED:
      return testAddReserved(ucmd, cmd as C<"ADD_RESERVED">);
    case O.MOCK_DOMAIN:
    case O.MOCK_DOMAIN_FLAGS:
      return testMockDomain(ucmd, cmd as C<"MOCK_DOMAIN_FLAGS">);
    case O.MOCK_DOMAIN_REPLACE:
      return testMockDomainReplace(ucmd, cmd as C<"MOCK_DOMAIN_REPLACE">);
    case O.MD_CHECK_MAP:
      return testMdCheckPa(ucmd, cmd as C<"MD_CHECK_MAP">);
    case O.MD_CHECK_REFS:
      return testMdCheckRefs(ucmd, cmd as C<"MD_CHECK_REFS">);
    case O.MD_CHECK_IOTLB:
      return testMdCheckIotlb(ucmd, cmd as C<"MD_CHECK_IOTLB">);
    case O.DEV_CHECK_CACHE:
      return testDevCheckCache(ucmd, cmd as C<"DEV_CHECK_CACHE">);
    case O.CREATE_ACCESS:
      return testCreateAccess(ucmd, cmd as C<"CREATE_ACCESS">);
    case O.ACCESS_REPLACE_IOAS:
      return testAccessReplaceIoas(ucmd, cmd as C<"ACCESS_REPLACE_IOAS">);
    case O.ACCESS_PAGES:
      return testAccessPages(ucmd, cmd as C<"ACCESS_PAGES">);
    case O.ACCESS_RW:
      return testAccessRw(ucmd, cmd as C<"ACCESS_RW">);
    case O.DESTROY_ACCESS_PAGES:
      return testAccessItemDestroy(ucmd, cmd as C<"DESTROY_ACCESS_PAGES">);
    case O.SET_TEMP_MEMORY_LIMIT: {
      const c = cmd as C<"SET_TEMP_MEMORY_LIMIT">;
      // Protects the batch initialisation: not less than one element (sizeof(unsigned long) + sizeof(u32)).
      if (c.limit < 12) throw kerr("EINVAL", "memory limit below one batch element");
      selftestStateOf(machineOf(ucmd.ictx)).memoryLimit = c.limit;
      return;
    }
    case O.DIRTY:
      return testDirty(ucmd, cmd as C<"DIRTY">);
    case O.TRIGGER_IOPF:
      return testTriggerIopf(ucmd, cmd as C<"TRIGGER_IOPF">);
    case O.PASID_ATTACH:
      return testPasidAttach(ucmd, cmd as C<"PASID_ATTACH">);
    case O.PASID_REPLACE:
      return testPasidReplace(ucmd, cmd as C<"PASID_REPLACE">);
    case O.PASID_DETACH:
      return testPasidDetach(ucmd, cmd as C<"PASID_DETACH">);
    case O.PASID_CHECK_HWPT:
      return testPasidCheckHwpt(ucmd, cmd as C<"PASID_CHECK_HWPT">);
    case O.TRIGGER_VEVENT:
      return testTriggerVevent(ucmd, cmd as C<"TRIGGER_VEVENT">);
    default:
      throw kerr("EOPNOTSUPP", `unknown IOMMU_TEST_OP ${cmd.op}`);
  }
}

/** `_IOC_NR` of IOMMU_TEST_CMD. @linux IOMMUFD_CMD_BASE + 32 */
export const IOMMU_TEST_CMD_NR = 0xa0;

/** The IOMMU_TEST_CMD entry of the command table. @linux IOCTL_OP(IOMMU_TEST_CMD, iommufd_test, struct iommu_test_cmd, last) */
export const IOMMU_TEST_CMD_OP: IommufdIoctlOp = {
  nr: IOMMU_TEST_CMD_NR,
  ioctlNum: _IO(IOMMUFD_TYPE, IOMMU_TEST_CMD_NR),
  struct: iommu_test_cmd as unknown as IommufdIoctlOp["struct"],
  minSize: iommu_test_cmd.offsetofend("last"),
  execute: iommufdTest,
};

/** Register the SELFTEST object type and IOMMU_TEST_CMD in a machine's container. */
export function registerSelftestTables(c: DependencyContainer): void {
  c.register(IommufdTokens.objectType, { useValue: SELFTEST_OBJECT_TYPE });
  c.register(IommufdTokens.ioctlOp, { useValue: IOMMU_TEST_CMD_OP });
}

/** Create the per-machine state (module init). */
export function createSelftestState(machine: Machine, owner: Module): SelftestState {
  getIommufdCore(machine); // iommufd must be loaded first (ENODEV otherwise)
  const st = new SelftestState(machine, owner);
  provide(machine.container, SelftestTokens.state, st);
  return st;
}
