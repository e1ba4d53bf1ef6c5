/**
 * The uAPI the fuzzer speaks, as data: for every iommufd ioctl, every IOMMU_TEST_CMD op and every VFIO cdev and
 * type1-compat ioctl, its struct and how to fill each field (a size, an object ID of some kinds, flags from a known
 * set, a user VA, a length, an IOVA, an fd, …), plus which out fields produce resources for later calls. This is
 * the part of a syzkaller description (sys/linux/dev_iommufd.txt) that matters here.
 * @linux include/uapi/linux/iommufd.h, drivers/iommu/iommufd/iommufd_test.h, include/uapi/linux/vfio.h
 */
import type { UapiStruct } from "@iommu-sim/core";
import * as I from "@iommu-sim/iommufd";
import * as S from "@iommu-sim/selftest";

/** Kinds of value a call can produce and a later call consume. */
export type ResourceKind =
  | "ioas"
  | "hwpt"
  | "dev"
  | "stdev"
  | "viommu"
  | "vdev"
  | "fault"
  | "veventq"
  | "hwq"
  | "access_pages"
  | "iova"
  | "va"
  | "fd_iommufd"
  | "fd_vfio"
  | "fd_access"
  | "fd_fault"
  | "fd_veventq"
  | "fd_memfd";

/** How to fill one field. */
export type FieldGen =
  | { k: "size" }
  | { k: "argsz" }
  | { k: "id"; of: ResourceKind[] }
  | { k: "fd"; of: ResourceKind[] }
  | { k: "flags"; bits: number }
  | { k: "enum"; values: readonly number[] }
  | { k: "zero" }
  | { k: "out" }
  | { k: "va" }
  | { k: "len" }
  | { k: "iova" }
  | { k: "u32" }
  | { k: "u64" }
  | { k: "pasid" }
  | { k: "small"; max: number }
  /** A user pointer to a blob of `bytes` random-ish bytes (written to the scratch pages first). */
  | { k: "ptr"; bytes: number };

/** One ioctl as the generator sees it. */
export interface IoctlSpec {
  /** `IOMMU_IOAS_MAP`, `IOMMU_TEST_OP_MOCK_DOMAIN`, `VFIO_IOMMU_MAP_DMA`, … (the reproducer's constant name). */
  name: string;
  cmd: number;
  /** Which file it is issued on. */
  on: "fd_iommufd" | "fd_vfio";
  /** Absent for ioctls whose argument is an integer (VFIO_CHECK_EXTENSION). */
  struct?: UapiStruct<object>;
  /** The export of the struct's layout, for reproducers (`iommu_ioas_map`). */
  structName?: string;
  fields: Record<string, FieldGen>;
  /** Fields with one value (IOMMU_TEST_CMD's `op`). */
  fixed?: Record<string, number>;
  /** Out fields that produce resources. */
  outs?: Record<string, ResourceKind>;
  /** For integer-argument ioctls: the values to pass. */
  intArgs?: readonly number[];
  /** Relative frequency. */
  weight: number;
  /**
   * Typical uses, each overriding some fields with tighter choices (a paging HWPT on an IOAS, a nested one on a
   * parent): one is applied to about half the generated calls, so deep objects get made at all.
   */
  presets?: Record<string, FieldGen>[];
}

const size: FieldGen = { k: "size" };
const zero: FieldGen = { k: "zero" };
const out: FieldGen = { k: "out" };
const id = (...of: ResourceKind[]): FieldGen => ({ k: "id", of });
const flags = (bits: number): FieldGen => ({ k: "flags", bits });
const en = (...values: number[]): FieldGen => ({ k: "enum", values });
const MAPF = I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE;
const PT = ["ioas", "hwpt", "viommu"] as ResourceKind[];

function iommufd(
  name: keyof typeof I & string,
  structName: keyof typeof I & string,
  weight: number,
  fields: Record<string, FieldGen>,
  outs?: Record<string, ResourceKind>,
  presets?: Record<string, FieldGen>[],
): IoctlSpec {
  return {
    ...(presets ? { presets } : {}),
    name,
    // biome-ignore lint/performance/noDynamicNamespaceImportAccess: specs name uAPI exports by their kernel names
    cmd: I[name] as number,
    on: "fd_iommufd",
    // biome-ignore lint/performance/noDynamicNamespaceImportAccess: specs name uAPI exports by their kernel names
    struct: I[structName] as unknown as UapiStruct<object>,
    structName,
    fields,
    weight,
    ...(outs ? { outs } : {}),
  };
}

const IOMMUFD_IOCTLS: IoctlSpec[] = [
  iommufd("IOMMU_DESTROY", "iommu_destroy", 6, {
    size,
    id: id("ioas", "hwpt", "viommu", "vdev", "fault", "veventq", "hwq", "dev"),
  }),
  iommufd(
    "IOMMU_IOAS_ALLOC",
    "iommu_ioas_alloc",
    8,
    { size, flags: flags(0), out_ioas_id: out },
    { out_ioas_id: "ioas" },
  ),
  iommufd("IOMMU_IOAS_ALLOW_IOVAS", "iommu_ioas_allow_iovas", 2, {
    size,
    ioas_id: id("ioas"),
    num_iovas: { k: "small", max: 4 },
    __reserved: zero,
    allowed_iovas: { k: "ptr", bytes: 64 },
  }),
  iommufd(
    "IOMMU_IOAS_COPY",
    "iommu_ioas_copy",
    4,
    {
      size,
      flags: flags(MAPF),
      dst_ioas_id: id("ioas"),
      src_ioas_id: id("ioas"),
      length: { k: "len" },
      dst_iova: { k: "iova" },
      src_iova: { k: "iova" },
    },
    { dst_iova: "iova" },
  ),
  iommufd("IOMMU_IOAS_IOVA_RANGES", "iommu_ioas_iova_ranges", 3, {
    size,
    ioas_id: id("ioas"),
    num_iovas: { k: "small", max: 4 },
    __reserved: zero,
    allowed_iovas: { k: "ptr", bytes: 0 },
    out_iova_alignment: out,
  }),
  iommufd(
    "IOMMU_IOAS_MAP",
    "iommu_ioas_map",
    14,
    {
      size,
      flags: flags(MAPF),
      ioas_id: id("ioas"),
      __reserved: zero,
      user_va: { k: "va" },
      length: { k: "len" },
      iova: { k: "iova" },
    },
    { iova: "iova" },
  ),
  iommufd(
    "IOMMU_IOAS_MAP_FILE",
    "iommu_ioas_map_file",
    4,
    {
      size,
      flags: flags(MAPF),
      ioas_id: id("ioas"),
      fd: { k: "fd", of: ["fd_memfd"] },
      start: { k: "len" },
      length: { k: "len" },
      iova: { k: "iova" },
    },
    { iova: "iova" },
  ),
  iommufd("IOMMU_IOAS_UNMAP", "iommu_ioas_unmap", 8, {
    size,
    ioas_id: id("ioas"),
    iova: { k: "iova" },
    length: { k: "len" },
  }),
  iommufd("IOMMU_OPTION", "iommu_option", 2, {
    size,
    option_id: en(I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_HUGE_PAGES, 2),
    op: en(I.IOMMU_OPTION_OP_SET, I.IOMMU_OPTION_OP_GET, 2),
    __reserved: zero,
    object_id: id("ioas"),
    val64: { k: "small", max: 2 },
  }),
  iommufd("IOMMU_VFIO_IOAS", "iommu_vfio_ioas", 2, {
    size,
    ioas_id: id("ioas"),
    op: en(I.IOMMU_VFIO_IOAS_GET, I.IOMMU_VFIO_IOAS_SET, I.IOMMU_VFIO_IOAS_CLEAR, 3),
    __reserved: zero,
  }),
  iommufd(
    "IOMMU_HWPT_ALLOC",
    "iommu_hwpt_alloc",
    8,
    {
      size,
      flags: flags(
        I.IOMMU_HWPT_ALLOC_NEST_PARENT |
          I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING |
          I.IOMMU_HWPT_FAULT_ID_VALID |
          I.IOMMU_HWPT_ALLOC_PASID,
      ),
      dev_id: id("dev"),
      pt_id: id(...PT),
      out_hwpt_id: out,
      __reserved: zero,
      data_type: en(I.IOMMU_HWPT_DATA_NONE, S.IOMMU_HWPT_DATA_SELFTEST, I.IOMMU_HWPT_DATA_ARM_SMMUV3),
      data_len: en(0, 8, 4, 16),
      data_uptr: { k: "ptr", bytes: 8 },
      fault_id: id("fault"),
      __reserved2: zero,
    },
    { out_hwpt_id: "hwpt" },
  ),
  iommufd("IOMMU_GET_HW_INFO", "iommu_hw_info", 2, {
    size,
    flags: flags(I.IOMMU_HW_INFO_FLAG_INPUT_TYPE),
    dev_id: id("dev"),
    data_len: en(0, 8, 4, 64),
    data_uptr: { k: "ptr", bytes: 0 },
    out_data_type: en(0, S.IOMMU_HW_INFO_TYPE_SELFTEST),
  }),
  iommufd("IOMMU_HWPT_SET_DIRTY_TRACKING", "iommu_hwpt_set_dirty_tracking", 2, {
    size,
    flags: flags(I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE),
    hwpt_id: id("hwpt"),
    __reserved: zero,
  }),
  iommufd("IOMMU_HWPT_GET_DIRTY_BITMAP", "iommu_hwpt_get_dirty_bitmap", 2, {
    size,
    hwpt_id: id("hwpt"),
    flags: flags(I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR),
    __reserved: zero,
    iova: { k: "iova" },
    length: { k: "len" },
    page_size: en(4096, 0, 8192, 3),
    data: { k: "ptr", bytes: 0 },
  }),
  iommufd(
    "IOMMU_HWPT_INVALIDATE",
    "iommu_hwpt_invalidate",
    3,
    {
      size,
      hwpt_id: id("hwpt", "viommu"),
      data_uptr: { k: "ptr", bytes: 32 },
      data_type: en(S.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, S.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST, 0, 1),
      entry_len: en(8, 0, 4, 16),
      entry_num: { k: "small", max: 4 },
      __reserved: zero,
    },
    undefined,
    [
      {
        hwpt_id: id("hwpt"),
        data_type: en(S.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST),
        entry_len: en(8),
        entry_num: en(1, 2),
      },
      {
        hwpt_id: id("viommu"),
        data_type: en(S.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST),
        entry_len: en(8),
        entry_num: en(1, 2),
      },
    ],
  ),
  iommufd(
    "IOMMU_FAULT_QUEUE_ALLOC",
    "iommu_fault_alloc",
    3,
    { size, flags: flags(0), out_fault_id: out, out_fault_fd: out },
    {
      out_fault_id: "fault",
      out_fault_fd: "fd_fault",
    },
  ),
  iommufd(
    "IOMMU_VIOMMU_ALLOC",
    "iommu_viommu_alloc",
    4,
    {
      size,
      flags: flags(0),
      type: en(S.IOMMU_VIOMMU_TYPE_SELFTEST, I.IOMMU_VIOMMU_TYPE_DEFAULT, I.IOMMU_VIOMMU_TYPE_ARM_SMMUV3),
      dev_id: id("dev"),
      hwpt_id: id("hwpt"),
      out_viommu_id: out,
      data_len: en(0, 4, 8),
      __reserved: zero,
      data_uptr: { k: "ptr", bytes: 8 },
    },
    { out_viommu_id: "viommu" },
  ),
  iommufd(
    "IOMMU_VDEVICE_ALLOC",
    "iommu_vdevice_alloc",
    4,
    {
      size,
      viommu_id: id("viommu"),
      dev_id: id("dev"),
      out_vdevice_id: out,
      virt_id: { k: "small", max: 0x100 },
    },
    { out_vdevice_id: "vdev" },
  ),
  iommufd("IOMMU_IOAS_CHANGE_PROCESS", "iommu_ioas_change_process", 1, { size, __reserved: zero }),
  iommufd(
    "IOMMU_VEVENTQ_ALLOC",
    "iommu_veventq_alloc",
    3,
    {
      size,
      flags: flags(0),
      viommu_id: id("viommu"),
      type: en(S.IOMMU_VEVENTQ_TYPE_SELFTEST, 0, 1),
      veventq_depth: en(2, 1, 0, 1 << 19, (1 << 19) + 1),
      out_veventq_id: out,
      out_veventq_fd: out,
      __reserved: zero,
    },
    { out_veventq_id: "veventq", out_veventq_fd: "fd_veventq" },
  ),
  iommufd(
    "IOMMU_HW_QUEUE_ALLOC",
    "iommu_hw_queue_alloc",
    3,
    {
      size,
      flags: flags(0),
      viommu_id: id("viommu"),
      type: en(S.IOMMU_HW_QUEUE_TYPE_SELFTEST, 0, 1),
      index: { k: "small", max: 3 },
      out_hw_queue_id: out,
      nesting_parent_iova: { k: "iova" },
      length: { k: "len" },
    },
    { out_hw_queue_id: "hwq" },
  ),
];

const T = S.IOMMU_TEST_OP;
function testOp(
  opName: keyof typeof T & string,
  weight: number,
  fields: Record<string, FieldGen>,
  outs?: Record<string, ResourceKind>,
  presets?: Record<string, FieldGen>[],
): IoctlSpec {
  return {
    ...(presets ? { presets } : {}),
    name: `IOMMU_TEST_OP_${opName}`,
    cmd: S.IOMMU_TEST_CMD,
    on: "fd_iommufd",
    struct: S.iommu_test_cmd as unknown as UapiStruct<object>,
    structName: "iommu_test_cmd",
    fields: { size, __reserved: zero, ...fields, last: zero },
    fixed: { op: T[opName] },
    weight,
    ...(outs ? { outs } : {}),
  };
}

const ACCESS_FLAGS = S.MOCK_FLAGS_ACCESS_WRITE | S.MOCK_FLAGS_ACCESS_SYZ;
const TEST_OPS: IoctlSpec[] = [
  testOp("ADD_RESERVED", 2, { id: id("ioas"), start: { k: "iova" }, length: { k: "len" } }),
  testOp(
    "MOCK_DOMAIN",
    10,
    { id: id("ioas", "hwpt"), out_stdev_id: out, out_hwpt_id: out, out_idev_id: out },
    {
      out_stdev_id: "stdev",
      out_hwpt_id: "hwpt",
      out_idev_id: "dev",
    },
  ),
  testOp(
    "MOCK_DOMAIN_FLAGS",
    5,
    {
      id: id("ioas", "hwpt"),
      out_stdev_id: out,
      out_hwpt_id: out,
      out_idev_id: out,
      dev_flags: flags(S.MOCK_FLAGS_DEVICE_NO_DIRTY | S.MOCK_FLAGS_DEVICE_HUGE_IOVA | S.MOCK_FLAGS_DEVICE_PASID),
    },
    { out_stdev_id: "stdev", out_hwpt_id: "hwpt", out_idev_id: "dev" },
    [{ id: id("ioas"), dev_flags: en(S.MOCK_FLAGS_DEVICE_PASID, 0) }],
  ),
  testOp("MD_CHECK_MAP", 2, { id: id("hwpt", "ioas"), iova: { k: "iova" }, length: { k: "len" }, uptr: { k: "va" } }),
  testOp("MD_CHECK_REFS", 1, { id: id("ioas"), length: { k: "len" }, uptr: { k: "va" }, refs: { k: "small", max: 2 } }),
  testOp(
    "CREATE_ACCESS",
    4,
    { id: id("ioas"), out_access_fd: out, flags: flags(S.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) },
    {
      out_access_fd: "fd_access",
    },
  ),
  testOp("DESTROY_ACCESS_PAGES", 2, { id: { k: "fd", of: ["fd_access"] }, access_pages_id: id("access_pages") }),
  testOp(
    "ACCESS_PAGES",
    4,
    {
      id: { k: "fd", of: ["fd_access"] },
      flags: flags(ACCESS_FLAGS),
      out_access_pages_id: out,
      iova: { k: "iova" },
      length: { k: "len" },
      uptr: { k: "va" },
    },
    { out_access_pages_id: "access_pages" },
  ),
  testOp("ACCESS_RW", 4, {
    id: { k: "fd", of: ["fd_access"] },
    iova: { k: "iova" },
    length: { k: "len" },
    uptr: { k: "va" },
    flags: flags(S.MOCK_ACCESS_RW_WRITE | S.MOCK_ACCESS_RW_SLOW_PATH | S.MOCK_FLAGS_ACCESS_SYZ),
  }),
  testOp("SET_TEMP_MEMORY_LIMIT", 1, { limit: { k: "small", max: 512 } }),
  testOp("MOCK_DOMAIN_REPLACE", 4, { id: id("stdev"), pt_id: id("ioas", "hwpt") }),
  testOp("ACCESS_REPLACE_IOAS", 3, { id: { k: "fd", of: ["fd_access"] }, ioas_id: id("ioas") }),
  testOp("DIRTY", 1, {
    id: id("hwpt"),
    flags: flags(0),
    iova: { k: "iova" },
    length: { k: "len" },
    page_size: en(4096, 0, 8192),
    uptr: { k: "va" },
    out_nr_dirty: out,
  }),
  testOp("MD_CHECK_IOTLB", 1, { id: id("hwpt"), iotlb_id: { k: "small", max: 4 }, iotlb: { k: "u32" } }),
  testOp("TRIGGER_IOPF", 2, {
    dev_id: id("dev"),
    pasid: { k: "pasid" },
    grpid: { k: "small", max: 4 },
    perm: flags(I.IOMMU_PGFAULT_PERM_READ | I.IOMMU_PGFAULT_PERM_WRITE),
    addr: { k: "iova" },
  }),
  testOp("DEV_CHECK_CACHE", 1, { id: id("stdev"), cache_id: { k: "small", max: 4 }, cache: { k: "u32" } }),
  testOp("TRIGGER_VEVENT", 2, { dev_id: id("dev", "stdev") }),
  testOp("PASID_ATTACH", 3, { id: id("stdev"), pasid: { k: "pasid" }, pt_id: id("hwpt", "ioas") }),
  testOp("PASID_REPLACE", 2, { id: id("stdev"), pasid: { k: "pasid" }, pt_id: id("hwpt", "ioas") }),
  testOp("PASID_DETACH", 2, { id: id("stdev"), pasid: { k: "pasid" } }),
  testOp("PASID_CHECK_HWPT", 1, { id: id("stdev"), pasid: { k: "pasid" }, hwpt_id: id("hwpt") }),
];

function vfio(
  name: keyof typeof I & string,
  on: IoctlSpec["on"],
  weight: number,
  structName: (keyof typeof I & string) | undefined,
  fields: Record<string, FieldGen>,
  extra: Partial<IoctlSpec> = {},
): IoctlSpec {
  return {
    name,
    // biome-ignore lint/performance/noDynamicNamespaceImportAccess: specs name uAPI exports by their kernel names
    cmd: I[name] as number,
    on,
    // biome-ignore lint/performance/noDynamicNamespaceImportAccess: specs name uAPI exports by their kernel names
    ...(structName ? { struct: I[structName] as unknown as UapiStruct<object>, structName } : {}),
    fields,
    weight,
    ...extra,
  };
}

const VFIO_IOCTLS: IoctlSpec[] = [
  vfio(
    "VFIO_DEVICE_BIND_IOMMUFD",
    "fd_vfio",
    4,
    "vfio_device_bind_iommufd",
    {
      argsz: { k: "argsz" },
      flags: flags(0),
      iommufd: { k: "fd", of: ["fd_iommufd"] },
      out_devid: out,
    },
    { outs: { out_devid: "dev" } },
  ),
  vfio(
    "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    "fd_vfio",
    4,
    "vfio_device_attach_iommufd_pt",
    {
      argsz: { k: "argsz" },
      flags: flags(I.VFIO_DEVICE_ATTACH_PASID),
      pt_id: id(...PT),
      pasid: { k: "pasid" },
    },
    { outs: { pt_id: "hwpt" } },
  ),
  vfio("VFIO_DEVICE_DETACH_IOMMUFD_PT", "fd_vfio", 2, "vfio_device_detach_iommufd_pt", {
    argsz: { k: "argsz" },
    flags: flags(I.VFIO_DEVICE_DETACH_PASID),
    pasid: { k: "pasid" },
  }),
  vfio("VFIO_GET_API_VERSION", "fd_iommufd", 1, undefined, {}, { intArgs: [0] }),
  vfio("VFIO_CHECK_EXTENSION", "fd_iommufd", 1, undefined, {}, { intArgs: [0, 1, 3, 7, 0xffffffff] }),
  vfio("VFIO_SET_IOMMU", "fd_iommufd", 2, undefined, {}, { intArgs: [1, 3, 0, 8] }),
  vfio("VFIO_IOMMU_GET_INFO", "fd_iommufd", 2, "vfio_iommu_type1_info", {
    argsz: { k: "enum", values: [24, 16, 15, 64, 128, 0] },
    flags: out,
    iova_pgsizes: out,
    cap_offset: out,
    pad: zero,
  }),
  vfio("VFIO_IOMMU_DIRTY_PAGES", "fd_iommufd", 0.5, undefined, {}, { intArgs: [0] }),
  vfio("VFIO_IOMMU_MAP_DMA", "fd_iommufd", 3, "vfio_iommu_type1_dma_map", {
    argsz: { k: "argsz" },
    flags: flags(I.VFIO_DMA_MAP_FLAG_READ | I.VFIO_DMA_MAP_FLAG_WRITE),
    vaddr: { k: "va" },
    iova: { k: "iova" },
    size: { k: "len" },
  }),
  vfio("VFIO_IOMMU_UNMAP_DMA", "fd_iommufd", 2, "vfio_iommu_type1_dma_unmap", {
    argsz: { k: "argsz" },
    flags: flags(I.VFIO_DMA_UNMAP_FLAG_ALL),
    iova: { k: "iova" },
    size: { k: "len" },
  }),
];

/** Every ioctl the fuzzer issues. */
export const IOCTL_SPECS: readonly IoctlSpec[] = [...IOMMUFD_IOCTLS, ...TEST_OPS, ...VFIO_IOCTLS];

/** Specs by name. */
export const SPEC_BY_NAME: ReadonlyMap<string, IoctlSpec> = new Map(IOCTL_SPECS.map((s) => [s.name, s]));

/** Every uAPI ioctl number of the iommufd table (for the coverage report: a number no spec covers is a gap). */
export const IOMMUFD_IOCTL_NUMBERS: readonly number[] = Object.values(I.IOMMUFD_CMD).map((nr) =>
  I._IO(I.IOMMUFD_TYPE, nr),
);
