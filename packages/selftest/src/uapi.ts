/**
 * The selftest uAPI: `struct iommu_test_cmd` with its per-op union members, the op numbers and the mock driver's
 * constants (re-exported from drivers-mock where it declares them), with the kernel's names and values.
 * @linux drivers/iommu/iommufd/iommufd_test.h
 */
import { type UapiField, type UapiFieldSpec, UapiStruct, type UapiValue } from "@iommu-sim/core";
import { _IO, IOMMUFD_CMD_BASE, IOMMUFD_TYPE } from "@iommu-sim/iommufd";

export {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_PASID_RESERVED,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IOMMUPT_AMDV1,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
  MOCK_PAGE_SIZE,
  MOCK_PASID_WIDTH,
} from "@iommu-sim/drivers-mock";

/** The selftest command. @linux IOMMU_TEST_CMD (_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)) */
export const IOMMU_TEST_CMD = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32);

/** Ops of IOMMU_TEST_CMD. @linux enum IOMMU_TEST_OP_* (iommufd_test.h) */
export const IOMMU_TEST_OP = {
  ADD_RESERVED: 1,
  MOCK_DOMAIN: 2,
  MD_CHECK_MAP: 3,
  MD_CHECK_REFS: 4,
  CREATE_ACCESS: 5,
  DESTROY_ACCESS_PAGES: 6,
  ACCESS_PAGES: 7,
  ACCESS_RW: 8,
  SET_TEMP_MEMORY_LIMIT: 9,
  MOCK_DOMAIN_REPLACE: 10,
  ACCESS_REPLACE_IOAS: 11,
  MOCK_DOMAIN_FLAGS: 12,
  DIRTY: 13,
  MD_CHECK_IOTLB: 14,
  TRIGGER_IOPF: 15,
  DEV_CHECK_CACHE: 16,
  TRIGGER_VEVENT: 17,
  PASID_ATTACH: 18,
  PASID_REPLACE: 19,
  PASID_DETACH: 20,
  PASID_CHECK_HWPT: 21,
} as const;
/** An op number. */
export type IommuTestOp = (typeof IOMMU_TEST_OP)[keyof typeof IOMMU_TEST_OP];

/** @linux IOMMU_TEST_OP_ADD_RESERVED */
export const IOMMU_TEST_OP_ADD_RESERVED = IOMMU_TEST_OP.ADD_RESERVED;
/** @linux IOMMU_TEST_OP_MOCK_DOMAIN */
export const IOMMU_TEST_OP_MOCK_DOMAIN = IOMMU_TEST_OP.MOCK_DOMAIN;
/** @linux IOMMU_TEST_OP_MD_CHECK_MAP */
export const IOMMU_TEST_OP_MD_CHECK_MAP = IOMMU_TEST_OP.MD_CHECK_MAP;
/** @linux IOMMU_TEST_OP_MD_CHECK_REFS */
export const IOMMU_TEST_OP_MD_CHECK_REFS = IOMMU_TEST_OP.MD_CHECK_REFS;
/** @linux IOMMU_TEST_OP_CREATE_ACCESS */
export const IOMMU_TEST_OP_CREATE_ACCESS = IOMMU_TEST_OP.CREATE_ACCESS;
/** @linux IOMMU_TEST_OP_DESTROY_ACCESS_PAGES */
export const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = IOMMU_TEST_OP.DESTROY_ACCESS_PAGES;
/** @linux IOMMU_TEST_OP_ACCESS_PAGES */
export const IOMMU_TEST_OP_ACCESS_PAGES = IOMMU_TEST_OP.ACCESS_PAGES;
/** @linux IOMMU_TEST_OP_ACCESS_RW */
export const IOMMU_TEST_OP_ACCESS_RW = IOMMU_TEST_OP.ACCESS_RW;
/** @linux IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT */
export const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT;
/** @linux IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE */
export const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE;
/** @linux IOMMU_TEST_OP_ACCESS_REPLACE_IOAS */
export const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = IOMMU_TEST_OP.ACCESS_REPLACE_IOAS;
/** @linux IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS */
export const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS;
/** @linux IOMMU_TEST_OP_DIRTY */
export const IOMMU_TEST_OP_DIRTY = IOMMU_TEST_OP.DIRTY;
/** @linux IOMMU_TEST_OP_MD_CHECK_IOTLB */
export const IOMMU_TEST_OP_MD_CHECK_IOTLB = IOMMU_TEST_OP.MD_CHECK_IOTLB;
/** @linux IOMMU_TEST_OP_TRIGGER_IOPF */
export const IOMMU_TEST_OP_TRIGGER_IOPF = IOMMU_TEST_OP.TRIGGER_IOPF;
/** @linux IOMMU_TEST_OP_DEV_CHECK_CACHE */
export const IOMMU_TEST_OP_DEV_CHECK_CACHE = IOMMU_TEST_OP.DEV_CHECK_CACHE;
/** @linux IOMMU_TEST_OP_TRIGGER_VEVENT */
export const IOMMU_TEST_OP_TRIGGER_VEVENT = IOMMU_TEST_OP.TRIGGER_VEVENT;
/** @linux IOMMU_TEST_OP_PASID_ATTACH */
export const IOMMU_TEST_OP_PASID_ATTACH = IOMMU_TEST_OP.PASID_ATTACH;
/** @linux IOMMU_TEST_OP_PASID_REPLACE */
export const IOMMU_TEST_OP_PASID_REPLACE = IOMMU_TEST_OP.PASID_REPLACE;
/** @linux IOMMU_TEST_OP_PASID_DETACH */
export const IOMMU_TEST_OP_PASID_DETACH = IOMMU_TEST_OP.PASID_DETACH;
/** @linux IOMMU_TEST_OP_PASID_CHECK_HWPT */
export const IOMMU_TEST_OP_PASID_CHECK_HWPT = IOMMU_TEST_OP.PASID_CHECK_HWPT;

/** The access writes the pinned pages. @linux MOCK_FLAGS_ACCESS_WRITE */
export const MOCK_FLAGS_ACCESS_WRITE = 1 << 0;
/** syzkaller IOVA conversion. @linux MOCK_FLAGS_ACCESS_SYZ */
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16;
/** ACCESS_RW writes (else reads). @linux MOCK_ACCESS_RW_WRITE */
export const MOCK_ACCESS_RW_WRITE = 1 << 0;
/** ACCESS_RW through the slow path. @linux MOCK_ACCESS_RW_SLOW_PATH */
export const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2;
/** CREATE_ACCESS of an access that pins pages. @linux MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES */
export const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1 << 0;
/** Mock device with a huge IOVA aperture. @linux MOCK_FLAGS_DEVICE_HUGE_IOVA */
export const MOCK_FLAGS_DEVICE_HUGE_IOVA = 1 << 1;
/** Mock device cache IDs. @linux MOCK_DEV_CACHE_ID_MAX */
export const MOCK_DEV_CACHE_ID_MAX = 3;
/** @linux MOCK_DEV_CACHE_NUM */
export const MOCK_DEV_CACHE_NUM = 4;
/** Initial value of a mock device's cache entries. @linux IOMMU_TEST_DEV_CACHE_DEFAULT */
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;
/** vEVENTQ type of the mock. @linux IOMMU_VEVENTQ_TYPE_SELFTEST */
export const IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeefbeef;
/** HW queue type of the mock. @linux IOMMU_HW_QUEUE_TYPE_SELFTEST */
export const IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdeadbeef;
/** @linux IOMMU_TEST_HW_QUEUE_MAX */
export const IOMMU_TEST_HW_QUEUE_MAX = 2;
/** vIOMMU invalidation data type of the mock. @linux IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST */
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
/** @linux IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;

/** @linux struct iommu_test_hw_info */
export const iommu_test_hw_info = new UapiStruct("iommu_test_hw_info", [
  { name: "flags", type: "u32" },
  { name: "test_reg", type: "u32" },
]);
/** @linux struct iommu_hwpt_selftest */
export const iommu_hwpt_selftest = new UapiStruct("iommu_hwpt_selftest", [
  { name: "iotlb", type: "u32" },
  { name: "pagetable_type", type: "u32" },
]);
/** @linux struct iommu_hwpt_invalidate_selftest */
export const iommu_hwpt_invalidate_selftest = new UapiStruct("iommu_hwpt_invalidate_selftest", [
  { name: "flags", type: "u32" },
  { name: "iotlb_id", type: "u32" },
]);

const u32 = (name: string): UapiFieldSpec => ({ name, type: "u32" });
const u64 = (name: string): UapiFieldSpec => ({ name, type: "u64" });

/** The members of the union, by op (each laid out at offset 16). @linux the anonymous union of iommu_test_cmd */
const UNION_MEMBERS: Record<IommuTestOp, { member: string; fields: UapiFieldSpec[] }> = {
  [IOMMU_TEST_OP.ADD_RESERVED]: { member: "add_reserved", fields: [u64("start"), u64("length")] },
  [IOMMU_TEST_OP.MOCK_DOMAIN]: {
    member: "mock_domain",
    fields: [u32("out_stdev_id"), u32("out_hwpt_id"), u32("out_idev_id")],
  },
  [IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS]: {
    member: "mock_domain_flags",
    fields: [u32("out_stdev_id"), u32("out_hwpt_id"), u32("out_idev_id"), u32("dev_flags")],
  },
  [IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE]: { member: "mock_domain_replace", fields: [u32("pt_id")] },
  [IOMMU_TEST_OP.MD_CHECK_MAP]: { member: "check_map", fields: [u64("iova"), u64("length"), u64("uptr")] },
  [IOMMU_TEST_OP.MD_CHECK_REFS]: { member: "check_refs", fields: [u64("length"), u64("uptr"), u32("refs")] },
  [IOMMU_TEST_OP.CREATE_ACCESS]: { member: "create_access", fields: [u32("out_access_fd"), u32("flags")] },
  [IOMMU_TEST_OP.DESTROY_ACCESS_PAGES]: { member: "destroy_access_pages", fields: [u32("access_pages_id")] },
  [IOMMU_TEST_OP.ACCESS_PAGES]: {
    member: "access_pages",
    fields: [u32("flags"), u32("out_access_pages_id"), u64("iova"), u64("length"), u64("uptr")],
  },
  [IOMMU_TEST_OP.ACCESS_RW]: {
    member: "access_rw",
    fields: [u64("iova"), u64("length"), u64("uptr"), u32("flags")],
  },
  [IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT]: { member: "memory_limit", fields: [u32("limit")] },
  [IOMMU_TEST_OP.ACCESS_REPLACE_IOAS]: { member: "access_replace_ioas", fields: [u32("ioas_id")] },
  [IOMMU_TEST_OP.DIRTY]: {
    member: "dirty",
    fields: [u32("flags"), u64("iova"), u64("length"), u64("page_size"), u64("uptr"), u64("out_nr_dirty")],
  },
  [IOMMU_TEST_OP.MD_CHECK_IOTLB]: { member: "check_iotlb", fields: [u32("iotlb_id"), u32("iotlb")] },
  [IOMMU_TEST_OP.TRIGGER_IOPF]: {
    member: "trigger_iopf",
    fields: [u32("dev_id"), u32("pasid"), u32("grpid"), u32("perm"), u64("addr")],
  },
  [IOMMU_TEST_OP.DEV_CHECK_CACHE]: { member: "check_dev_cache", fields: [u32("cache_id"), u32("cache")] },
  [IOMMU_TEST_OP.TRIGGER_VEVENT]: { member: "trigger_vevent", fields: [u32("dev_id")] },
  [IOMMU_TEST_OP.PASID_ATTACH]: { member: "pasid_attach", fields: [u32("pasid"), u32("pt_id")] },
  [IOMMU_TEST_OP.PASID_REPLACE]: { member: "pasid_replace", fields: [u32("pasid"), u32("pt_id")] },
  [IOMMU_TEST_OP.PASID_DETACH]: { member: "pasid_detach", fields: [u32("pasid")] },
  [IOMMU_TEST_OP.PASID_CHECK_HWPT]: { member: "pasid_check", fields: [u32("pasid"), u32("hwpt_id")] },
};

/** Offset of the union in the struct. */
export const IOMMU_TEST_CMD_UNION_OFFSET = 16;
/** Offset of `last`. */
const LAST_OFFSET = 64;
const HEADER: UapiFieldSpec[] = [u32("size"), u32("op"), u32("id"), u32("__reserved")];
const PAD = "__union_pad";
const TAIL = "__tail_pad";

function layoutFor(op: number, member: string, fields: UapiFieldSpec[]): UapiStruct {
  const probe = new UapiStruct(`iommu_test_cmd.${member}`, [...HEADER, ...fields]);
  const end = probe.fields.reduce((a, f) => Math.max(a, f.offset + f.size), 0);
  const pad: UapiFieldSpec[] = end < LAST_OFFSET ? [{ name: PAD, type: "u8", count: LAST_OFFSET - end }] : [];
  // The union holds __aligned_u64 members, so the struct is 8-aligned: 72 bytes whatever the op.
  const tail: UapiFieldSpec[] = probe.size % 8 || !fields.some((f) => f.type === "u64") ? [u32(TAIL)] : [];
  let s = new UapiStruct(`iommu_test_cmd.${member}`, [...HEADER, ...fields, ...pad, u32("last")]);
  if (s.size !== 72)
    s = new UapiStruct(`iommu_test_cmd.${member}`, [...HEADER, ...fields, ...pad, u32("last"), ...tail]);
  if (s.size !== 72 || s.field("last").offset !== LAST_OFFSET) throw new Error(`bad layout of op ${op}`);
  return s;
}

/** One laid-out struct per op: the header, that op's union member at offset 16, and `last` at 64. */
export const IOMMU_TEST_CMD_LAYOUTS: ReadonlyMap<number, UapiStruct> = new Map(
  Object.entries(UNION_MEMBERS).map(([op, u]) => [Number(op), layoutFor(Number(op), u.member, u.fields)]),
);

/** The union member name of an op (`mock_domain`, `check_map`, …). */
export function iommuTestCmdMember(op: number): string | undefined {
  return UNION_MEMBERS[op as IommuTestOp]?.member;
}

/** The fields of each op's union member, in object form (numbers for __u32, bigints for __u64). */
export interface IommuTestCmdUnion {
  [IOMMU_TEST_OP.ADD_RESERVED]: { start: bigint; length: bigint };
  [IOMMU_TEST_OP.MOCK_DOMAIN]: { out_stdev_id: number; out_hwpt_id: number; out_idev_id: number };
  [IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS]: {
    out_stdev_id: number;
    out_hwpt_id: number;
    out_idev_id: number;
    dev_flags: number;
  };
  [IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE]: { pt_id: number };
  [IOMMU_TEST_OP.MD_CHECK_MAP]: { iova: bigint; length: bigint; uptr: bigint };
  [IOMMU_TEST_OP.MD_CHECK_REFS]: { length: bigint; uptr: bigint; refs: number };
  [IOMMU_TEST_OP.CREATE_ACCESS]: { out_access_fd: number; flags: number };
  [IOMMU_TEST_OP.DESTROY_ACCESS_PAGES]: { access_pages_id: number };
  [IOMMU_TEST_OP.ACCESS_PAGES]: {
    flags: number;
    out_access_pages_id: number;
    iova: bigint;
    length: bigint;
    uptr: bigint;
  };
  [IOMMU_TEST_OP.ACCESS_RW]: { iova: bigint; length: bigint; uptr: bigint; flags: number };
  [IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT]: { limit: number };
  [IOMMU_TEST_OP.ACCESS_REPLACE_IOAS]: { ioas_id: number };
  [IOMMU_TEST_OP.DIRTY]: {
    flags: number;
    iova: bigint;
    length: bigint;
    page_size: bigint;
    uptr: bigint;
    out_nr_dirty: bigint;
  };
  [IOMMU_TEST_OP.MD_CHECK_IOTLB]: { iotlb_id: number; iotlb: number };
  [IOMMU_TEST_OP.TRIGGER_IOPF]: { dev_id: number; pasid: number; grpid: number; perm: number; addr: bigint };
  [IOMMU_TEST_OP.DEV_CHECK_CACHE]: { cache_id: number; cache: number };
  [IOMMU_TEST_OP.TRIGGER_VEVENT]: { dev_id: number };
  [IOMMU_TEST_OP.PASID_ATTACH]: { pasid: number; pt_id: number };
  [IOMMU_TEST_OP.PASID_REPLACE]: { pasid: number; pt_id: number };
  [IOMMU_TEST_OP.PASID_DETACH]: { pasid: number };
  [IOMMU_TEST_OP.PASID_CHECK_HWPT]: { pasid: number; hwpt_id: number };
}

/** The header of `struct iommu_test_cmd`. */
export interface IommuTestCmdHeader {
  size: number;
  op: number;
  id: number;
  __reserved: number;
  last: number;
}

/**
 * `struct iommu_test_cmd` for one op, flattened: the header plus that op's union member fields. The kernel's
 * `check_iotlb.id` and `check_dev_cache.id` are named `iotlb_id` and `cache_id` here, as they would collide with
 * the header's `id`.
 * @linux struct iommu_test_cmd
 */
export type IommuTestCmd<O extends IommuTestOp = IommuTestOp> = IommuTestCmdHeader & IommuTestCmdUnion[O];

/**
 * `struct iommu_test_cmd` as one {@link UapiStruct} whose union is laid out by the `op` field: encoding picks the
 * layout from the object's `op`, decoding from the bytes at offset 4. `fields` lists the header and every union
 * member field (each at its own op's offset), so object-form callers get their op's out fields back; an unknown
 * op keeps only the header (its union stays opaque).
 * @linux struct iommu_test_cmd
 */
export class IommuTestCmdStruct extends UapiStruct<Record<string, UapiValue>> {
  constructor() {
    super("iommu_test_cmd", [...HEADER, { name: PAD, type: "u8", count: LAST_OFFSET - 16 }, u32("last"), u32(TAIL)]);
    const seen = new Map<string, UapiField>();
    for (const f of this.fields) if (f.name !== PAD && f.name !== TAIL) seen.set(f.name, f);
    for (const s of IOMMU_TEST_CMD_LAYOUTS.values()) {
      for (const f of s.fields) if (f.name !== PAD && f.name !== TAIL && !seen.has(f.name)) seen.set(f.name, f);
    }
    // The union's fields, for the ioctl core's copy back to an object-form caller.
    (this as unknown as { fields: readonly UapiField[] }).fields = [...seen.values()];
  }

  override encode(obj: Partial<Record<string, UapiValue>>, out = new Uint8Array(this.size)): Uint8Array {
    const op = typeof obj.op === "bigint" ? Number(obj.op) : obj.op;
    const layout = typeof op === "number" ? IOMMU_TEST_CMD_LAYOUTS.get(op) : undefined;
    if (!layout) {
      const header: Record<string, UapiValue> = {};
      for (const n of ["size", "op", "id", "__reserved", "last"]) {
        const v = obj[n];
        if (v !== undefined) header[n] = v;
      }
      return new UapiStruct("iommu_test_cmd", [
        ...HEADER,
        { name: PAD, type: "u8", count: 48 },
        u32("last"),
        u32(TAIL),
      ]).encode(header, out);
    }
    return layout.encode(obj, out);
  }

  override decode(bytes: Uint8Array): Record<string, UapiValue> {
    const op = bytes.byteLength >= 8 ? new DataView(bytes.buffer, bytes.byteOffset, 8).getUint32(4, true) : 0;
    const layout = IOMMU_TEST_CMD_LAYOUTS.get(op);
    const o = layout ? layout.decode(bytes) : super.decode(bytes);
    delete o[PAD];
    delete o[TAIL];
    return o;
  }
}

/** The struct the IOMMU_TEST_CMD ioctl op is registered with. @linux IOCTL_OP(IOMMU_TEST_CMD, iommufd_test, struct iommu_test_cmd, last) */
export const iommu_test_cmd = new IommuTestCmdStruct();
