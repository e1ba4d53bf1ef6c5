/**
 * User-space side of the selftest: a typed `testCmd()` for IOMMU_TEST_CMD, and the helpers of the kernel's
 * `iommufd_utils.h` as methods of a fixture object (`self->fd`, `self->ioas_id`), so the kernel selftests port
 * almost line for line: `test_cmd_mock_domain(ioas, &stdev, &hwpt, &idev)` becomes
 * `const { stdevId, hwptId, idevId } = await t.testCmdMockDomain(ioas)`, and `test_err_X(ENOENT, …)` becomes
 * `expect(await errnoOf(t.testX(…))).toBe("ENOENT")`.
 * @linux tools/testing/selftests/iommu/iommufd_utils.h
 */
import type { Process } from "@iommu-sim/core";
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VIOMMU_ALLOC,
  IOMMUFD_PAGE_RESP_SUCCESS,
  type IommuHwInfo,
  iommu_hwpt_page_response,
  iommu_hwpt_pgfault,
  iommufd_vevent_header,
} from "@iommu-sim/iommufd";
import { SELFTEST_DEFAULT_MEMORY_LIMIT } from "./selftest.js";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_TEST_CMD,
  IOMMU_TEST_CMD_LAYOUTS,
  IOMMU_TEST_OP,
  type IommuTestCmd,
  type IommuTestCmdUnion,
  type IommuTestOp,
  MOCK_DEV_CACHE_NUM,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
} from "./uapi.js";

/** The caller of an ioctl: a core `Process`. */
export type SelftestProcess = Pick<
  Process,
  "ioctl" | "close" | "open" | "read" | "write" | "mmap" | "readMemory" | "writeMemory"
>;

/** sizeof(struct iommu_viommu_event_selftest). @linux struct iommu_viommu_event_selftest { __u32 virt_id; } */
const VEVENT_SELFTEST_SIZE = 4;

/**
 * Issue IOMMU_TEST_CMD with `op` and its union fields in the kernel's binary layout; out fields are written back
 * into `fields` and the whole decoded struct is returned. Rejects with the kernel's errno.
 * @linux ioctl(fd, IOMMU_TEST_CMD, &struct iommu_test_cmd)
 */
export async function testCmd<O extends IommuTestOp>(
  p: SelftestProcess,
  fd: number,
  op: O,
  fields: Partial<IommuTestCmdUnion[O]> & { id?: number; size?: number; __reserved?: number; last?: number } = {},
): Promise<IommuTestCmd<O>> {
  const layout = IOMMU_TEST_CMD_LAYOUTS.get(op);
  if (!layout) throw new RangeError(`unknown IOMMU_TEST_OP ${op}`);
  const size = fields.size ?? layout.size;
  const bytes = new Uint8Array(Math.max(size, layout.size));
  layout.encode({ ...(fields as unknown as Record<string, never>), op, size }, bytes);
  await p.ioctl(fd, IOMMU_TEST_CMD, bytes.subarray(0, Math.max(size, 4)));
  const out = layout.decode(bytes) as Record<string, unknown>;
  delete out.__union_pad;
  delete out.__tail_pad;
  for (const k of Object.keys(fields)) if (k in out) (fields as Record<string, unknown>)[k] = out[k];
  return out as unknown as IommuTestCmd<O>;
}

/**
 * The errno code a promise rejects with, or 0 when it resolves (the `EXPECT_ERRNO` of the selftests).
 * @linux EXPECT_ERRNO (tools/testing/selftests/iommu/iommufd_utils.h)
 */
export async function errnoOf(p: Promise<unknown>): Promise<string | 0> {
  try {
    await p;
    return 0;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== "string") throw e;
    return code;
  }
}

/** An error carrying an errno code, as the C helpers set `errno` for checks done in user space. */
function errnoError(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

/** IDs returned by MOCK_DOMAIN. */
export interface MockDomainIds {
  stdevId: number;
  hwptId: number;
  idevId: number;
}

/**
 * The fixture of a selftest: a process, its /dev/iommu fd and the current IOAS, with the helpers of
 * iommufd_utils.h as methods. A helper without an `Id` suffix uses `this.ioasId`, as the C macros use
 * `self->ioas_id`.
 * @linux FIXTURE(iommufd_*) with the macros of iommufd_utils.h
 */
export class SelftestFixture {
  /** @linux self->ioas_id */
  ioasId = 0;

  constructor(
    /** The process the selftest runs as. */
    readonly p: SelftestProcess,
    /** @linux self->fd */
    public fd: number,
  ) {}

  /** IOMMU_TEST_CMD on this fixture's fd. @linux ioctl(self->fd, _IOMMU_TEST_CMD(op), &cmd) */
  cmd<O extends IommuTestOp>(
    op: O,
    fields: Partial<IommuTestCmdUnion[O]> & { id?: number; size?: number } = {},
  ): Promise<IommuTestCmd<O>> {
    return testCmd(this.p, this.fd, op, fields);
  }

  /** @linux ioctl(self->fd, ...) */
  ioctl(cmd: number, arg: object | Uint8Array | null): Promise<number> {
    return this.p.ioctl(this.fd, cmd, arg);
  }

  /** @linux test_ioctl_ioas_alloc */
  async testIoctlIoasAlloc(): Promise<number> {
    const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
    await this.ioctl(IOMMU_IOAS_ALLOC, cmd);
    return cmd.out_ioas_id;
  }

  /** @linux test_ioctl_destroy / _test_ioctl_destroy */
  async testIoctlDestroy(id: number): Promise<void> {
    await this.ioctl(IOMMU_DESTROY, { size: 0, id });
  }

  /** @linux _test_ioctl_ioas_map */
  async testIoctlIoasMapRaw(ioasId: number, buffer: bigint, length: number | bigint, iova: bigint, flags: number) {
    const cmd = { size: 0, flags, ioas_id: ioasId, __reserved: 0, user_va: buffer, length: BigInt(length), iova };
    await this.ioctl(IOMMU_IOAS_MAP, cmd);
    return cmd.iova;
  }

  /** @linux test_ioctl_ioas_map_id */
  testIoctlIoasMapId(ioasId: number, buffer: bigint, length: number | bigint): Promise<bigint> {
    return this.testIoctlIoasMapRaw(ioasId, buffer, length, 0n, IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE);
  }

  /** @linux test_ioctl_ioas_map */
  testIoctlIoasMap(buffer: bigint, length: number | bigint): Promise<bigint> {
    return this.testIoctlIoasMapId(this.ioasId, buffer, length);
  }

  /** @linux test_ioctl_ioas_map_fixed_id */
  async testIoctlIoasMapFixedId(ioasId: number, buffer: bigint, length: number | bigint, iova: number | bigint) {
    const flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
    await this.testIoctlIoasMapRaw(ioasId, buffer, length, BigInt(iova), flags);
  }

  /** @linux test_ioctl_ioas_map_fixed */
  testIoctlIoasMapFixed(buffer: bigint, length: number | bigint, iova: number | bigint): Promise<void> {
    return this.testIoctlIoasMapFixedId(this.ioasId, buffer, length, iova);
  }

  /** Unmap; resolves to the length unmapped. @linux _test_ioctl_ioas_unmap / test_ioctl_ioas_unmap_id */
  async testIoctlIoasUnmapId(ioasId: number, iova: number | bigint, length: number | bigint): Promise<bigint> {
    const cmd = { size: 0, ioas_id: ioasId, iova: BigInt(iova), length: BigInt(length) };
    await this.ioctl(IOMMU_IOAS_UNMAP, cmd);
    return cmd.length;
  }

  /** @linux test_ioctl_ioas_unmap */
  testIoctlIoasUnmap(iova: number | bigint, length: number | bigint): Promise<bigint> {
    return this.testIoctlIoasUnmapId(this.ioasId, iova, length);
  }

  /** @linux test_cmd_mock_domain / _test_cmd_mock_domain */
  async testCmdMockDomain(ptId: number): Promise<MockDomainIds> {
    const r = await this.cmd(IOMMU_TEST_OP.MOCK_DOMAIN, { id: ptId });
    return { stdevId: r.out_stdev_id, hwptId: r.out_hwpt_id, idevId: r.out_idev_id };
  }

  /** @linux test_cmd_mock_domain_flags / _test_cmd_mock_domain_flags */
  async testCmdMockDomainFlags(ptId: number, devFlags: number): Promise<MockDomainIds> {
    const r = await this.cmd(IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS, { id: ptId, dev_flags: devFlags });
    return { stdevId: r.out_stdev_id, hwptId: r.out_hwpt_id, idevId: r.out_idev_id };
  }

  /** Resolves to the HWPT the device now uses. @linux test_cmd_mock_domain_replace / _test_cmd_mock_domain_replace */
  async testCmdMockDomainReplace(stdevId: number, ptId: number): Promise<number> {
    const r = await this.cmd(IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE, { id: stdevId, pt_id: ptId });
    return r.pt_id;
  }

  /** @linux test_cmd_hwpt_alloc / _test_cmd_hwpt_alloc */
  async testCmdHwptAlloc(
    deviceId: number,
    ptId: number,
    flags: number,
    data: { type: number; uptr: bigint; len: number } = { type: 0, uptr: 0n, len: 0 },
  ): Promise<number> {
    const cmd = {
      size: 0,
      flags,
      dev_id: deviceId,
      pt_id: ptId,
      out_hwpt_id: 0,
      __reserved: 0,
      data_type: data.type,
      data_len: data.len,
      data_uptr: data.uptr,
      fault_id: 0,
      __reserved2: 0,
    };
    await this.ioctl(IOMMU_HWPT_ALLOC, cmd);
    return cmd.out_hwpt_id;
  }

  /**
   * A paging HWPT with `struct iommu_hwpt_selftest { .pagetable_type }` (MOCK_IOMMUPT_DEFAULT or _HUGE).
   * @linux test_cmd_hwpt_alloc_iommupt
   */
  async testCmdHwptAllocIommupt(deviceId: number, ptId: number, flags: number, iommuptType: number): Promise<number> {
    const cfg = new Uint8Array(8);
    new DataView(cfg.buffer).setUint32(4, iommuptType, true);
    const uptr = this.userBuffer(cfg);
    return this.testCmdHwptAlloc(deviceId, ptId, flags, { type: IOMMU_HWPT_DATA_SELFTEST, uptr, len: 8 });
  }

  /** @linux test_cmd_add_reserved */
  async testCmdAddReserved(ioasId: number, start: number | bigint, length: number | bigint): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.ADD_RESERVED, { id: ioasId, start: BigInt(start), length: BigInt(length) });
  }

  /** Resolves to the access fd. @linux test_cmd_create_access / _test_cmd_create_access */
  async testCmdCreateAccess(ioasId: number, flags: number): Promise<number> {
    const r = await this.cmd(IOMMU_TEST_OP.CREATE_ACCESS, { id: ioasId, flags });
    return r.out_access_fd;
  }

  /** @linux test_cmd_destroy_access */
  testCmdDestroyAccess(accessId: number): Promise<void> {
    return this.p.close(accessId);
  }

  /** @linux test_cmd_destroy_access_pages / _test_cmd_destroy_access_pages */
  async testCmdDestroyAccessPages(accessId: number, accessPagesId: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.DESTROY_ACCESS_PAGES, { id: accessId, access_pages_id: accessPagesId });
  }

  /** @linux test_cmd_access_replace_ioas / _test_cmd_access_replace_ioas */
  async testCmdAccessReplaceIoas(accessId: number, ioasId: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.ACCESS_REPLACE_IOAS, { id: accessId, ioas_id: ioasId });
  }

  /** Check that the mock domain maps the user pages. @linux check_mock_iova / IOMMU_TEST_OP_MD_CHECK_MAP */
  async testCmdMdCheckMap(hwptId: number, ptr: bigint, iova: number | bigint, length: number | bigint) {
    await this.cmd(IOMMU_TEST_OP.MD_CHECK_MAP, { id: hwptId, iova: BigInt(iova), length: BigInt(length), uptr: ptr });
  }

  /** @linux check_refs */
  async checkRefs(ptr: bigint, length: number | bigint, refs: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.MD_CHECK_REFS, { length: BigInt(length), uptr: ptr, refs });
  }

  /** @linux test_ioctl_set_temp_memory_limit */
  async testIoctlSetTempMemoryLimit(limit: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT, { limit });
  }

  /** @linux test_ioctl_set_default_memory_limit */
  testIoctlSetDefaultMemoryLimit(): Promise<void> {
    return this.testIoctlSetTempMemoryLimit(SELFTEST_DEFAULT_MEMORY_LIMIT);
  }

  /** @linux test_cmd_set_dirty_tracking / _test_cmd_set_dirty_tracking */
  async testCmdSetDirtyTracking(hwptId: number, enabled: boolean): Promise<void> {
    await this.ioctl(IOMMU_HWPT_SET_DIRTY_TRACKING, {
      size: 0,
      flags: enabled ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
      hwpt_id: hwptId,
      __reserved: 0,
    });
  }

  /** @linux test_cmd_get_dirty_bitmap / _test_cmd_get_dirty_bitmap */
  async testCmdGetDirtyBitmap(
    hwptId: number,
    length: number | bigint,
    iova: number | bigint,
    pageSize: number | bigint,
    bitmap: bigint,
    flags: number,
  ): Promise<void> {
    await this.ioctl(IOMMU_HWPT_GET_DIRTY_BITMAP, {
      size: 0,
      hwpt_id: hwptId,
      flags,
      __reserved: 0,
      iova: BigInt(iova),
      length: BigInt(length),
      page_size: BigInt(pageSize),
      data: bitmap,
    });
  }

  /** Resolves to the number of IOVAs marked dirty. @linux test_cmd_mock_domain_set_dirty */
  async testCmdMockDomainSetDirty(
    hwptId: number,
    length: number | bigint,
    iova: number | bigint,
    pageSize: number | bigint,
    bitmap: bigint,
  ): Promise<bigint> {
    const r = await this.cmd(IOMMU_TEST_OP.DIRTY, {
      id: hwptId,
      iova: BigInt(iova),
      length: BigInt(length),
      page_size: BigInt(pageSize),
      uptr: bitmap,
    });
    return r.out_nr_dirty;
  }

  /**
   * Resolves to the IOMMU_GET_HW_INFO reply. A `dataType` other than DEFAULT is passed as `in_data_type` with
   * IOMMU_HW_INFO_FLAG_INPUT_TYPE.
   * @linux test_cmd_get_hw_info / _test_cmd_get_hw_info
   */
  async testCmdGetHwInfo(
    deviceId: number,
    data: bigint,
    dataLen: number,
    dataType = IOMMU_HW_INFO_TYPE_DEFAULT,
  ): Promise<IommuHwInfo> {
    const cmd = {
      size: 0,
      flags: dataType !== IOMMU_HW_INFO_TYPE_DEFAULT ? IOMMU_HW_INFO_FLAG_INPUT_TYPE : 0,
      dev_id: deviceId,
      data_len: dataLen,
      data_uptr: data,
      // in_data_type shares out_data_type's slot.
      out_data_type: dataType,
      out_max_pasid_log2: 0,
      __reserved: [0, 0, 0],
      out_capabilities: 0n,
    };
    await this.ioctl(IOMMU_GET_HW_INFO, cmd);
    return cmd as unknown as IommuHwInfo;
  }

  /** @linux test_cmd_get_hw_capabilities */
  async testCmdGetHwCapabilities(deviceId: number): Promise<bigint> {
    return (await this.testCmdGetHwInfo(deviceId, 0n, 0)).out_capabilities;
  }

  /** @linux test_cmd_pasid_attach */
  async testCmdPasidAttach(stdevId: number, pasid: number, ptId: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.PASID_ATTACH, { id: stdevId, pasid, pt_id: ptId });
  }

  /** @linux test_cmd_pasid_replace */
  async testCmdPasidReplace(stdevId: number, pasid: number, ptId: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.PASID_REPLACE, { id: stdevId, pasid, pt_id: ptId });
  }

  /** @linux test_cmd_pasid_detach */
  async testCmdPasidDetach(stdevId: number, pasid: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.PASID_DETACH, { id: stdevId, pasid });
  }

  /** @linux test_cmd_pasid_check_hwpt */
  async testCmdPasidCheckHwpt(stdevId: number, pasid: number, hwptId: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.PASID_CHECK_HWPT, { id: stdevId, pasid, hwpt_id: hwptId });
  }

  /** @linux test_cmd_trigger_iopf */
  async testCmdTriggerIopf(deviceId: number, pasid: number, grpid = 0x2, perm = 0x3, addr = 0xdeadbeafn) {
    await this.cmd(IOMMU_TEST_OP.TRIGGER_IOPF, { dev_id: deviceId, pasid, grpid, perm, addr });
  }

  /** Copy `bytes` into fresh user memory; resolves to its address (0 for `null`, the selftests' NULL pointer). */
  userBuffer(bytes: Uint8Array | null): bigint {
    if (!bytes) return 0n;
    const va = this.p.mmap(Math.max(4096, bytes.length));
    this.p.writeMemory(va, bytes);
    return va;
  }

  /**
   * IOMMU_HWPT_ALLOC of a nested HWPT (or, on a vIOMMU, one of its nested HWPTs) with driver data; `data` is copied
   * to user memory (`null` passes a NULL pointer), `dataLen` defaults to its length.
   * @linux test_cmd_hwpt_alloc_nested / _test_cmd_hwpt_alloc
   */
  async testCmdHwptAllocNested(
    deviceId: number,
    ptId: number,
    flags: number,
    dataType: number,
    data: Uint8Array | null,
    dataLen = data?.length ?? 0,
  ): Promise<number> {
    return this.testCmdHwptAlloc(deviceId, ptId, flags, { type: dataType, uptr: this.userBuffer(data), len: dataLen });
  }

  /** A nested HWPT whose faults go to `faultId`. @linux test_cmd_hwpt_alloc_iopf / _test_cmd_hwpt_alloc */
  async testCmdHwptAllocIopf(
    deviceId: number,
    ptId: number,
    faultId: number,
    flags: number,
    dataType: number,
    data: Uint8Array | null,
    dataLen = data?.length ?? 0,
  ): Promise<number> {
    const cmd = {
      size: 0,
      flags,
      dev_id: deviceId,
      pt_id: ptId,
      out_hwpt_id: 0,
      __reserved: 0,
      data_type: dataType,
      data_len: dataLen,
      data_uptr: this.userBuffer(data),
      fault_id: faultId,
      __reserved2: 0,
    };
    await this.ioctl(IOMMU_HWPT_ALLOC, cmd);
    return cmd.out_hwpt_id;
  }

  /** Entry `iotlbId` of a mock nested domain's IOTLB holds `expected`. @linux test_cmd_hwpt_check_iotlb */
  async testCmdHwptCheckIotlb(hwptId: number, iotlbId: number, expected: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.MD_CHECK_IOTLB, { id: hwptId, iotlb_id: iotlbId, iotlb: expected });
  }

  /** @linux test_cmd_hwpt_check_iotlb_all */
  async testCmdHwptCheckIotlbAll(hwptId: number, expected: number): Promise<void> {
    for (let i = 0; i < MOCK_NESTED_DOMAIN_IOTLB_NUM; i++) await this.testCmdHwptCheckIotlb(hwptId, i, expected);
  }

  /** Entry `cacheId` of a mock device's cache holds `expected`. @linux test_cmd_dev_check_cache */
  async testCmdDevCheckCache(deviceId: number, cacheId: number, expected: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.DEV_CHECK_CACHE, { id: deviceId, cache_id: cacheId, cache: expected });
  }

  /** @linux test_cmd_dev_check_cache_all */
  async testCmdDevCheckCacheAll(deviceId: number, expected: number): Promise<void> {
    for (let i = 0; i < MOCK_DEV_CACHE_NUM; i++) await this.testCmdDevCheckCache(deviceId, i, expected);
  }

  /**
   * IOMMU_HWPT_INVALIDATE on a nested HWPT or a vIOMMU with `entryNum` entries of `entryLen` bytes from `reqs`
   * (`null`: a NULL pointer). Resolves to the errno (0 on success) and the `entry_num` the kernel wrote back, as
   * the C helpers return both (`test_err_hwpt_invalidate` then `assert(num_inv == …)`).
   * @linux _test_cmd_hwpt_invalidate (test_cmd_hwpt_invalidate, test_cmd_viommu_invalidate, test_err_*)
   */
  async testCmdHwptInvalidate(
    hwptId: number,
    reqs: Uint8Array | null,
    dataType: number,
    entryLen: number,
    entryNum: number,
  ): Promise<{ errno: string | 0; entryNum: number }> {
    const cmd = {
      size: 0,
      hwpt_id: hwptId,
      data_uptr: this.userBuffer(reqs),
      data_type: dataType,
      entry_len: entryLen,
      entry_num: entryNum,
      __reserved: 0,
    };
    const errno = await errnoOf(this.ioctl(IOMMU_HWPT_INVALIDATE, cmd));
    return { errno, entryNum: cmd.entry_num };
  }

  /** Resolves to the vIOMMU ID. @linux test_cmd_viommu_alloc / _test_cmd_viommu_alloc */
  async testCmdViommuAlloc(deviceId: number, hwptId: number, type: number, data: Uint8Array | null = null) {
    const cmd = {
      size: 0,
      flags: 0,
      type,
      dev_id: deviceId,
      hwpt_id: hwptId,
      out_viommu_id: 0,
      data_len: data?.length ?? 0,
      __reserved: 0,
      data_uptr: this.userBuffer(data),
    };
    await this.ioctl(IOMMU_VIOMMU_ALLOC, cmd);
    return cmd.out_viommu_id;
  }

  /** Resolves to the vDEVICE ID. @linux test_cmd_vdevice_alloc / _test_cmd_vdevice_alloc */
  async testCmdVdeviceAlloc(viommuId: number, idevId: number, virtId: number | bigint): Promise<number> {
    const cmd = { size: 0, viommu_id: viommuId, dev_id: idevId, out_vdevice_id: 0, virt_id: BigInt(virtId) };
    await this.ioctl(IOMMU_VDEVICE_ALLOC, cmd);
    return cmd.out_vdevice_id;
  }

  /** Resolves to the HW queue ID. @linux test_cmd_hw_queue_alloc / _test_cmd_hw_queue_alloc */
  async testCmdHwQueueAlloc(
    viommuId: number,
    type: number,
    idx: number,
    baseAddr: number | bigint,
    len: number | bigint,
  ): Promise<number> {
    const cmd = {
      size: 0,
      flags: 0,
      viommu_id: viommuId,
      type,
      index: idx,
      out_hw_queue_id: 0,
      nesting_parent_iova: BigInt(baseAddr),
      length: BigInt(len),
    };
    await this.ioctl(IOMMU_HW_QUEUE_ALLOC, cmd);
    return cmd.out_hw_queue_id;
  }

  /** A vEVENTQ of depth 2, as the C helper allocates. @linux test_cmd_veventq_alloc / _test_cmd_veventq_alloc */
  async testCmdVeventqAlloc(viommuId: number, type: number, depth = 2): Promise<{ id: number; fd: number }> {
    const cmd = {
      size: 0,
      flags: 0,
      viommu_id: viommuId,
      type,
      veventq_depth: depth,
      out_veventq_id: 0,
      out_veventq_fd: 0,
      __reserved: 0,
    };
    await this.ioctl(IOMMU_VEVENTQ_ALLOC, cmd);
    return { id: cmd.out_veventq_id, fd: cmd.out_veventq_fd };
  }

  /** @linux test_cmd_trigger_vevents / _test_cmd_trigger_vevents */
  async testCmdTriggerVevents(devId: number, nvevents: number): Promise<void> {
    for (let i = 0; i < nvevents; i++) await this.cmd(IOMMU_TEST_OP.TRIGGER_VEVENT, { dev_id: devId });
  }

  /**
   * Read `nvevents` selftest vEVENTs in one read of their total size and check them: EOVERFLOW (a rejection) for a
   * LOST_EVENTS header or a gap after `prevSeq.value`, EINVAL for another virtual ID, EFAULT for an empty read.
   * `prevSeq` carries the last sequence number seen (start at -1).
   * @linux test_cmd_read_vevents / test_err_read_vevents / _test_cmd_read_vevents
   */
  async testCmdReadVevents(
    eventFd: number,
    nvevents: number,
    virtId: number,
    prevSeq: { value: number },
  ): Promise<void> {
    const hdrSize = iommufd_vevent_header.size;
    const rec = hdrSize + VEVENT_SELFTEST_SIZE;
    const got = await this.p.read(eventFd, nvevents * rec);
    if (got.length <= 0) throw errnoError("EFAULT", "no vEVENT to read");
    const data = new Uint8Array(nvevents * rec);
    data.set(got);
    const dv = new DataView(data.buffer);
    for (let i = 0; i < nvevents; i++) {
      const flags = dv.getUint32(i * rec, true);
      const sequence = dv.getUint32(i * rec + 4, true);
      if (flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS || sequence - prevSeq.value > 1) {
        prevSeq.value = sequence;
        throw errnoError("EOVERFLOW", `vEVENTs lost before sequence ${sequence}`);
      }
      prevSeq.value = sequence;
      // The C helper reads the payload of the first record each time; so does this port.
      if (dv.getUint32(hdrSize, true) !== virtId) throw errnoError("EINVAL", "vEVENT of another virtual ID");
    }
  }

  /** Resolves to the fault object ID and its fd. @linux test_ioctl_fault_alloc / _test_ioctl_fault_alloc */
  async testIoctlFaultAlloc(): Promise<{ id: number; fd: number }> {
    const cmd = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
    await this.ioctl(IOMMU_FAULT_QUEUE_ALLOC, cmd);
    return { id: cmd.out_fault_id, fd: cmd.out_fault_fd };
  }

  /**
   * TRIGGER_IOPF for the device, then read the fault from `faultFd` and answer it SUCCESS by its cookie (EIO when
   * nothing can be read or written).
   * @linux test_cmd_trigger_iopf / test_cmd_trigger_iopf_pasid / _test_cmd_trigger_iopf
   */
  async testCmdTriggerIopfRespond(deviceId: number, pasid: number, faultFd: number): Promise<void> {
    await this.cmd(IOMMU_TEST_OP.TRIGGER_IOPF, {
      dev_id: deviceId,
      pasid,
      grpid: 0x2,
      perm: IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE,
      addr: 0xdeadbeafn,
    });
    const bytes = await this.p.read(faultFd, iommu_hwpt_pgfault.size);
    if (bytes.length <= 0) throw errnoError("EIO", "no fault to read");
    const fault = iommu_hwpt_pgfault.decode(bytes) as unknown as { cookie: number };
    const response = iommu_hwpt_page_response.encode({
      cookie: fault.cookie,
      code: IOMMUFD_PAGE_RESP_SUCCESS,
    } as never);
    if ((await this.p.write(faultFd, response)) <= 0) throw errnoError("EIO", "page response not written");
  }

  /**
   * Close the fd, then check with a fresh one that nothing under `buffer` is still pinned.
   * @linux teardown_iommufd
   */
  async teardownIommufd(buffer?: { va: bigint; length: number }): Promise<void> {
    await this.p.close(this.fd);
    if (!buffer) return;
    const fd = await this.p.open("/dev/iommu");
    try {
      await testCmd(this.p, fd, IOMMU_TEST_OP.MD_CHECK_REFS, {
        length: BigInt(buffer.length),
        uptr: buffer.va,
        refs: 0,
      });
    } finally {
      await this.p.close(fd);
    }
  }
}
