/**
 * What the driver knows of the hardware, as amd_iommu_types.h has it: register offsets and bits, the DTE bits it
 * writes, command builders and the event / PPR log decoders. Kept apart from src/hw (a driver never reads the
 * model's definitions).
 * @linux drivers/iommu/amd/amd_iommu_types.h; iommu.c (build_completion_wait, build_inv_dte, build_inv_iommu_pages,
 * build_inv_address, build_complete_ppr, build_inv_all, iommu_print_event)
 */

/** MMIO offsets. @linux MMIO_*_OFFSET */
export const MMIO = {
  DEV_TABLE: 0x0000,
  CMD_BUF: 0x0008,
  EVT_BUF: 0x0010,
  CONTROL: 0x0018,
  EXT_FEATURES: 0x0030,
  PPR_LOG: 0x0038,
  EXT_FEATURES2: 0x01a0,
  CMD_HEAD: 0x2000,
  CMD_TAIL: 0x2008,
  EVT_HEAD: 0x2010,
  EVT_TAIL: 0x2018,
  STATUS: 0x2020,
  PPR_HEAD: 0x2030,
  PPR_TAIL: 0x2038,
} as const;

/** Control register bit numbers. @linux CONTROL_IOMMU_EN, CONTROL_EVT_LOG_EN, ... */
export const CONTROL = {
  IOMMU_EN: 0,
  EVT_LOG_EN: 2,
  EVT_INT_EN: 3,
  COMWAIT_EN: 4,
  COHERENT_EN: 10,
  CMDBUF_EN: 12,
  PPRLOG_EN: 13,
  PPRINT_EN: 14,
  PPR_EN: 15,
  GT_EN: 16,
} as const;

/** Status bits. @linux MMIO_STATUS_EVT_OVERFLOW_MASK, MMIO_STATUS_EVT_INT_MASK, MMIO_STATUS_PPR_INT_MASK, ... */
export const STATUS = {
  EVT_OVERFLOW: 1 << 0,
  EVT_INT: 1 << 1,
  COM_WAIT_INT: 1 << 2,
  PPR_OVERFLOW: 1 << 5,
  PPR_INT: 1 << 6,
};

/** EFR bits (low / high half). @linux FEATURE_PPR, FEATURE_GT, FEATURE_IA, FEATURE_HATS, FEATURE_PASID (PASmax) */
export const FEATURE = {
  PPR: 1 << 1,
  GT: 1 << 4,
  IA: 1 << 6,
  HATS_SHIFT: 10,
  GATS_SHIFT: 12,
  GLX_SHIFT: 14,
  PASMAX_HI_SHIFT: 0,
  GIOSUP_HI: 1 << 16,
  HASUP_HI: 1 << 17,
  HDSUP_HI: 1 << 20,
} as const;

/** EFR2 bits (low half). @linux FEATURE_GCR3TRPMODE */
export const FEATURE2 = {
  GCR3TRPMODE: 1 << 3,
} as const;

/**
 * DTE fields as (32-bit word, shift, mask) for the driver's word-array DTEs: HAD 8:7, GIOV 54, GV 55, GLX 57:56,
 * GCR3TRP[14:12] 60:58, DomainID 79:64, GCR3TRP[30:15] 95:80, GCR3TRP[51:31] 127:107, guest paging mode 183:182.
 * @linux DTE_FLAG_HAD, DTE_FLAG_GIOV, DTE_FLAG_GV, DTE_GLX, DTE_GCR3_14_12, DTE_DOMID_MASK, DTE_GCR3_30_15,
 * DTE_GCR3_51_31, DTE_GPT_LEVEL_MASK
 */
export const DTE_W = {
  HAD: { w: 0, shift: 7, mask: 3 },
  MODE: { w: 0, shift: 9, mask: 7 },
  PPR: { w: 1, shift: 20, mask: 1 },
  GIOV: { w: 1, shift: 22, mask: 1 },
  GV: { w: 1, shift: 23, mask: 1 },
  GLX: { w: 1, shift: 24, mask: 3 },
  GCR3_14_12: { w: 1, shift: 26, mask: 7 },
  DOMID: { w: 2, shift: 0, mask: 0xffff },
  GCR3_30_15: { w: 2, shift: 16, mask: 0xffff },
  GCR3_51_31: { w: 3, shift: 11, mask: 0x1fffff },
  GPT_LEVEL: { w: 5, shift: 22, mask: 3 },
} as const;

/** A DTE field of {@link DTE_W}. @linux the DTE_* GENMASK_ULL definitions */
export type DteField = (typeof DTE_W)[keyof typeof DTE_W];

/** The value of `f` in the DTE words `w`. @linux FIELD_GET on struct dev_table_entry.data[] */
export function dteGet(w: readonly number[], f: DteField): number {
  return ((w[f.w]! >>> 0) >>> f.shift) & f.mask;
}

/** Set `f` to `v` in the DTE words `w`. @linux FIELD_PREP into struct dev_table_entry.data[] */
export function dteSet(w: number[], f: DteField, v: number): void {
  w[f.w] = ((w[f.w]! & ~(f.mask << f.shift)) | ((v & f.mask) << f.shift)) >>> 0;
}

/** The GCR3 table root pointer into its three DTE pieces (bits 14:12, 30:15, 51:31). @linux set_dte_gcr3_table */
export function dteSetGcr3Root(w: number[], pa: number): void {
  dteSet(w, DTE_W.GCR3_14_12, Math.floor(pa / 2 ** 12));
  dteSet(w, DTE_W.GCR3_30_15, Math.floor(pa / 2 ** 15));
  dteSet(w, DTE_W.GCR3_51_31, Math.floor(pa / 2 ** 31));
}

/** Guest paging mode values of the DTE. @linux GUEST_PGTABLE_4_LEVEL, GUEST_PGTABLE_5_LEVEL */
export const GUEST_PGTABLE = { L4: 0, L5: 1 } as const;

/** The GCR3 table entry valid bit. @linux GCR3_VALID */
export const GCR3_VALID = 1;

/** Entries in the command buffer and the logs (2^9, as CMD_BUFFER_SIZE / EVT_BUFFER_SIZE give). */
export const LOG_LEN_SHIFT = 9;
/** Bytes of the command buffer and of each log. @linux CMD_BUFFER_SIZE, EVT_BUFFER_SIZE, PPR_LOG_SIZE */
export const LOG_BYTES = 16 << LOG_LEN_SHIFT;

/** DTE bits the driver writes (qword index, bit). @linux DTE_FLAG_*, DEV_ENTRY_MODE_*, DTE_DOMID_MASK */
export const DTE_BIT = {
  V: 0n,
  TV: 1n,
  MODE_SHIFT: 9n,
  PPR: 52n,
  GIOV: 54n,
  GV: 55n,
  GLX_SHIFT: 56n,
  IR: 61n,
  IW: 62n,
} as const;

/** Command opcodes. @linux CMD_COMPL_WAIT, CMD_INV_DEV_ENTRY, CMD_INV_IOMMU_PAGES, ... */
export const CMD_OP = {
  COMPL_WAIT: 1,
  INV_DEV_ENTRY: 2,
  INV_IOMMU_PAGES: 3,
  INV_IOTLB_PAGES: 4,
  COMPLETE_PPR: 7,
  INV_ALL: 8,
} as const;

/** A command as four 32-bit words. @linux struct iommu_cmd */
export type IommuCmd = [number, number, number, number];

/** The address that means "every page" with the size bit. @linux CMD_INV_IOMMU_ALL_PAGES_ADDRESS */
export const INV_ALL_PAGES_HI = 0x7fffffff;
export const INV_ALL_PAGES_LO = 0xfffff000 | 0;

/** @linux build_completion_wait (store of `data` at `addr`) */
export function buildCompletionWait(addr: number, data: number): IommuCmd {
  return [((addr >>> 0) & ~7) | 1, (CMD_OP.COMPL_WAIT << 28) | (Math.floor(addr / 2 ** 32) & 0xfffff), data >>> 0, 0];
}

/** @linux build_inv_dte */
export function buildInvDte(devid: number): IommuCmd {
  return [devid & 0xffff, CMD_OP.INV_DEV_ENTRY << 28, 0, 0];
}

/**
 * The address and size bit for an invalidation of [address, address + size): one page without S; otherwise the
 * address with every bit below the highest bit where start and end differ set, so the hardware's first zero bit
 * gives an aligned power-of-two range covering both; beyond bit 51 the whole space.
 * @linux build_inv_address
 */
export function buildInvAddress(address: number, size: number): { lo: number; hi: number; s: boolean } {
  const first = Math.floor(address / 4096);
  const last = Math.floor((address + size - 1) / 4096);
  if (first === last)
    return { lo: ((address % 2 ** 32) & 0xfffff000) >>> 0, hi: Math.floor(address / 2 ** 32), s: false };
  const end = address + size - 1;
  let msb = 0;
  for (let b = 52; b >= 0; b--) {
    if (Math.floor(address / 2 ** b) % 2 !== Math.floor(end / 2 ** b) % 2) {
      msb = b;
      break;
    }
  }
  if (msb > 51) return { lo: INV_ALL_PAGES_LO >>> 0, hi: INV_ALL_PAGES_HI, s: true };
  const a = address - (address % 2 ** msb) + (2 ** msb - 1);
  return { lo: ((a % 2 ** 32) & 0xfffff000) >>> 0, hi: Math.floor(a / 2 ** 32), s: true };
}

/** INVALIDATE_IOMMU_PAGES for a domain (PDE set: cached table entries go too). @linux build_inv_iommu_pages */
export function buildInvIommuPages(address: number, size: number, domid: number, pasid = -1): IommuCmd {
  const { lo, hi, s } = buildInvAddress(address, size);
  const gn = pasid >= 0;
  return [
    gn ? pasid & 0xfffff : 0,
    (CMD_OP.INV_IOMMU_PAGES << 28) | (domid & 0xffff),
    (lo | (s ? 1 : 0) | 2 | (gn ? 4 : 0)) >>> 0,
    hi >>> 0,
  ];
}

/** INVALIDATE_IOTLB_PAGES for an ATS device (with GN, PASID[15:8] and PASID[7:0]). @linux build_inv_iotlb_pages */
export function buildInvIotlbPages(devid: number, qdep: number, address: number, size: number, pasid = -1): IommuCmd {
  const { lo, hi, s } = buildInvAddress(address, size);
  const gn = pasid >= 0;
  return [
    ((devid & 0xffff) | ((qdep & 0xff) << 24) | (gn ? ((pasid >>> 8) & 0xff) << 16 : 0)) >>> 0,
    ((CMD_OP.INV_IOTLB_PAGES << 28) | (devid & 0xffff) | (gn ? (pasid & 0xff) << 16 : 0)) >>> 0,
    (lo | (s ? 1 : 0) | (gn ? 4 : 0)) >>> 0,
    hi >>> 0,
  ];
}

/** @linux build_complete_ppr */
export function buildCompletePpr(devid: number, pasid: number, status: number, tag: number, gn: boolean): IommuCmd {
  return [
    devid & 0xffff,
    (CMD_OP.COMPLETE_PPR << 28) | (gn ? pasid & 0xfffff : 0),
    gn ? 4 : 0,
    ((tag & 0x1ff) | ((status & 0xf) << 12)) >>> 0,
  ];
}

/** @linux build_inv_all */
export function buildInvAll(): IommuCmd {
  return [0, CMD_OP.INV_ALL << 28, 0, 0];
}

/** Event types. @linux EVENT_TYPE_ILL_DEV, EVENT_TYPE_IO_FAULT, ... */
export const EVENT_TYPE = {
  ILL_DEV: 0x1,
  IO_FAULT: 0x2,
  DEV_TAB_ERR: 0x3,
  PAGE_TAB_ERR: 0x4,
  ILL_CMD: 0x5,
  CMD_HARD_ERR: 0x6,
  IOTLB_INV_TO: 0x7,
  INV_DEV_REQ: 0x8,
  INV_PPR_REQ: 0x9,
} as const;

/** A decoded event log entry. @linux the fields iommu_print_event reads */
export interface AmdEvent {
  type: number;
  devid: number;
  /** PASID or domain ID (20 bits). */
  pasid: number;
  flags: number;
  address: number;
}

/** Decode one event entry. @linux iommu_print_event (EVENT_DEVID, EVENT_TYPE, EVENT_FLAGS, pasid) */
export function decodeEvent(w: Uint32Array | number[]): AmdEvent {
  return {
    type: (w[1]! >>> 28) & 0xf,
    devid: w[0]! & 0xffff,
    pasid: (w[0]! & 0xf0000) | (w[1]! & 0xffff),
    flags: (w[1]! >>> 16) & 0xfff,
    address: (w[3]! >>> 0) * 2 ** 32 + (w[2]! >>> 0),
  };
}

/** A decoded PPR log entry. @linux the fields iommu_call_iopf_notifier reads (PPR_DEVID, PPR_PASID, PPR_TAG, ...) */
export interface AmdPprEntry {
  devid: number;
  pasid: number;
  tag: number;
  flags: number;
  type: number;
  address: number;
}

/** PPR flags. @linux PPR_FLAG_EXEC, PPR_FLAG_READ, PPR_FLAG_WRITE, PPR_FLAG_US, PPR_FLAG_GN */
export const PPR_FLAG = { EXEC: 0x002, READ: 0x004, WRITE: 0x020, US: 0x040, GN: 0x100 } as const;

/** Decode one PPR entry. @linux PPR_DEVID, PPR_PASID, PPR_TAG, PPR_FLAGS, PPR_REQ_TYPE */
export function decodePpr(w: Uint32Array | number[]): AmdPprEntry {
  return {
    devid: w[0]! & 0xffff,
    pasid: (w[0]! >>> 16) | (((w[1]! >>> 10) & 0xf) << 16),
    tag: w[1]! & 0x3ff,
    flags: (w[1]! >>> 16) & 0xfff,
    type: (w[1]! >>> 28) & 0xf,
    address: (w[3]! >>> 0) * 2 ** 32 + ((w[2]! & 0xfffff000) >>> 0),
  };
}
