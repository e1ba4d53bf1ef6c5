/**
 * The mock IOMMU's architecture, as the silicon sees it: every register field and every in-memory descriptor field
 * declared once, as data (`{ name, bit, width }`), read like a spec table. The hardware model decodes raw memory with
 * these definitions only; it knows nothing of Linux's page-table code (`@iommu-sim/core`'s pgtable), exactly as a
 * real IOMMU knows nothing of `io-pgtable`. The driver reads the same tables as its "header file" (a real driver's
 * header is written from the same spec); it never imports the model, and the tests (which encode tables by hand)
 * check the two against each other.
 *
 * Bit numbers of a descriptor count from bit 0 of its first little-endian 32-bit word across the whole descriptor
 * (bit 64 is bit 0 of the third word), as the SMMUv3 spec numbers STE bits; a field never crosses a 32-bit word.
 *
 * @linux drivers/iommu/iommufd/selftest.c (the mock IOMMU) — the mock has no spec, so this file is its spec
 */

import { field } from "@iommu-sim/core";

export { type Field, field, fieldGet, fieldPrep, fieldSet, maskOf, shiftOf, wordOf } from "@iommu-sim/core";

// ---------------------------------------------------------------------------------------------------------------
// Register file (4 KiB window). Offsets in bytes; every register is 32 bits wide; 64-bit quantities are a _LO/_HI
// pair, low word first.

/** Access type of a register. @linux register access types of a spec table (RO/RW/WO/W1C) */
export type RegAccess = "ro" | "rw" | "wo" | "w1c";

/**
 * One register of the mock register file.
 * @linux a register offset #define (e.g. ARM_SMMU_CR0) with its access rules
 */
export interface RegDef {
  readonly name: string;
  readonly offset: number;
  readonly access: RegAccess;
}

const reg = (name: string, offset: number, access: RegAccess): RegDef => ({ name, offset, access });

/**
 * The mock IOMMU's registers.
 * @linux drivers/iommu/iommufd/selftest.c mock_iommu_device (which has no registers: the simulation adds them so
 * the template shows a real driver's register-programming path)
 */
export const REG = {
  /** Supported page sizes, as a bitmap of sizes (bit n set: 2^n bytes). */
  IDR0: reg("IDR0", 0x000, "ro"),
  /** Feature bits: see {@link IDR1}. */
  IDR1: reg("IDR1", 0x004, "ro"),
  /** Cache geometry: see {@link IDR2}. */
  IDR2: reg("IDR2", 0x008, "ro"),
  /** Control: see {@link CR}. */
  CR: reg("CR", 0x010, "rw"),
  /** Status: see {@link STATUS}. */
  STATUS: reg("STATUS", 0x014, "w1c"),
  /** Device table base (4 KiB aligned) and log2 of its entry count: see {@link BASE}. */
  DT_BASE_LO: reg("DT_BASE_LO", 0x020, "rw"),
  DT_BASE_HI: reg("DT_BASE_HI", 0x024, "rw"),
  /** Fault queue base (4 KiB aligned) and log2 of its record count: see {@link BASE}. */
  FQ_BASE_LO: reg("FQ_BASE_LO", 0x030, "rw"),
  FQ_BASE_HI: reg("FQ_BASE_HI", 0x034, "rw"),
  /** Fault queue consumer index (software writes it after reading records). */
  FQ_HEAD: reg("FQ_HEAD", 0x038, "rw"),
  /** Fault queue producer index (hardware advances it). */
  FQ_TAIL: reg("FQ_TAIL", 0x03c, "ro"),
  /** Invalidation operands, then the command register that runs the invalidation. */
  INV_TAG: reg("INV_TAG", 0x040, "rw"),
  INV_RID: reg("INV_RID", 0x044, "rw"),
  INV_PASID: reg("INV_PASID", 0x048, "rw"),
  INV_ADDR_LO: reg("INV_ADDR_LO", 0x050, "rw"),
  INV_ADDR_HI: reg("INV_ADDR_HI", 0x054, "rw"),
  INV_LAST_LO: reg("INV_LAST_LO", 0x058, "rw"),
  INV_LAST_HI: reg("INV_LAST_HI", 0x05c, "rw"),
  /** Writing it runs the invalidation named by {@link INV_CMD}.OP, synchronously. */
  INV_CMD: reg("INV_CMD", 0x060, "wo"),
  /** Count of invalidation commands run (wraps at 2^32). */
  INV_COUNT: reg("INV_COUNT", 0x064, "ro"),
  /** Page response operands, then the doorbell that sends the response to the device. */
  PRESP_RID: reg("PRESP_RID", 0x080, "rw"),
  PRESP_PASID: reg("PRESP_PASID", 0x084, "rw"),
  PRESP_INFO: reg("PRESP_INFO", 0x088, "rw"),
  PRESP_SEND: reg("PRESP_SEND", 0x08c, "wo"),
} as const;

/** Size of the register window. @linux the register window size of an IOMMU (ARM_SMMU_REG_SZ) */
export const MOCK_MMIO_SIZE = 0x1000;

/** IDR1: features. @linux ARM_SMMU_IDR0 / VT-d ECAP feature fields, for the mock */
export const IDR1 = {
  /** PASID width in bits (0: no PASID support). */
  PASID_BITS: field("PASID_BITS", 0, 5),
  /** Most page-table levels a context may name. */
  MAX_LEVELS: field("MAX_LEVELS", 5, 3),
  /** Input address bits the walker accepts. */
  IAS: field("IAS", 8, 6),
  /** Output address bits. */
  OAS: field("OAS", 14, 6),
  /** Nested (stage-1 through stage-2) translation. */
  NESTING: field("NESTING", 20),
  /** Hardware dirty-bit update. */
  DIRTY: field("DIRTY", 21),
  /** Page requests (PRI) and page responses. */
  PRI: field("PRI", 22),
} as const;

/** IDR2: cache geometry (informational: software never needs it to be correct). @linux ARM_SMMU_IDR1 queue/table size fields, for the mock */
export const IDR2 = {
  /** log2 of IOTLB entries. */
  TLB_LG2: field("TLB_LG2", 0, 5),
  /** IOTLB associativity. */
  TLB_WAYS: field("TLB_WAYS", 5, 3),
  /** log2 of configuration-cache entries. */
  CFG_LG2: field("CFG_LG2", 8, 5),
} as const;

/** CR: control. @linux ARM_SMMU_CR0 (SMMUEN, EVTQEN) for the mock */
export const CR = {
  /** Translation enable. While 0 every DMA bypasses translation. */
  EN: field("EN", 0),
  /** Fault queue enable: records are written to memory. */
  FQEN: field("FQEN", 1),
  /** Raise the interrupt line when a record is queued. */
  FQIRQEN: field("FQIRQEN", 2),
} as const;

/** STATUS: acknowledgements and error flags. @linux ARM_SMMU_CR0ACK / GERROR for the mock */
export const STATUS = {
  /** Mirrors CR.EN once the model applied it. */
  EN_ACK: field("EN_ACK", 0),
  /** Mirrors CR.FQEN. */
  FQEN_ACK: field("FQEN_ACK", 1),
  /** A record was dropped because the fault queue was full (write 1 to clear). */
  FQ_OVF: field("FQ_OVF", 8),
} as const;

/** DT_BASE_LO / FQ_BASE_LO: log2 of the entry count, and the address bits 31:12 (HI holds bits 51:32). @linux ARM_SMMU_STRTAB_BASE / EVTQ_BASE address + log2size fields */
export const BASE = {
  LOG2SIZE: field("LOG2SIZE", 0, 5),
  ADDR_LO: field("ADDR_LO", 12, 20),
  ADDR_HI: field("ADDR_HI", 0, 20),
} as const;

/** INV_TAG: the cache tags an invalidation selects. @linux the ASID/VMID fields of CMDQ_TLBI_* commands, for the mock */
export const INV_TAG = {
  /** Domain ID (the paging or stage-2 tag). */
  DID: field("DID", 0, 16),
  /** Stage-1 cache ID (nested stage-1 tag; 0 = none). */
  S1ID: field("S1ID", 16, 16),
} as const;

/** INV_CMD: which invalidation to run. @linux the opcode field of a command-queue entry (CMDQ_0_OP) */
export const INV_CMD = {
  OP: field("OP", 0, 4),
} as const;

/** INV_CMD.OP values. @linux CMDQ_OP_TLBI_NSNH_ALL / TLBI_S12_VMALL / TLBI_S2_IPA / TLBI_NH_ASID / CFGI_STE / CFGI_CD */
export const INV_OP = {
  /** Every IOTLB and configuration-cache entry. */
  ALL: 1,
  /** IOTLB entries tagged with INV_TAG.DID (any stage-1 ID). */
  DOMAIN: 2,
  /** IOTLB entries of INV_TAG.DID (any stage-1 ID) whose page lies in [INV_ADDR, INV_LAST]. */
  RANGE: 3,
  /** IOTLB entries tagged with INV_TAG.DID and INV_TAG.S1ID (a nested stage-1's cache). */
  S1: 4,
  /** Configuration cache entries of requester INV_RID (device entry and all its PASID entries). */
  DEVICE: 5,
  /** The configuration cache entry of (INV_RID, INV_PASID). */
  PASID: 6,
} as const;

/** PRESP_PASID: the PASID of the answered request. @linux CMDQ_PRI_0_SSID / CMDQ_PRI_0_SSV */
export const PRESP_PASID = {
  PASID: field("PASID", 0, 20),
  /** The request carried a PASID. */
  PV: field("PV", 31),
} as const;

/** PRESP_INFO: group index and response code. @linux CMDQ_PRI_1_GRPID / CMDQ_PRI_1_RESP */
export const PRESP_INFO = {
  /** Page request group index. */
  PRGI: field("PRGI", 0, 9),
  /** Response code: 0 success, 1 invalid, 2 failure. */
  CODE: field("CODE", 12, 4),
} as const;

// ---------------------------------------------------------------------------------------------------------------
// In-memory structures.

/**
 * Page-table entry (8 bytes; tables of 512 entries, 4 KiB, at every level; level 0 maps 2 KiB, level 1 1 MiB,
 * level l 2^(11 + 9l) bytes). Table pointers are V|T plus a 4 KiB-aligned address; leaves exist at levels 0 and 1
 * only. The same layout serves paging domains, stage-2 parents and nested stage-1 tables (whose addresses are IPAs).
 * @linux drivers/iommu/generic_pt/fmt/iommu_mock.c — the format the selftest's mock domain walks
 */
export const PTE = {
  /** Valid. */
  V: field("V", 0),
  /** Table pointer (levels ≥ 1); reserved at level 0. */
  T: field("T", 1),
  /** Readable. */
  R: field("R", 2),
  /** Writable. */
  W: field("W", 3),
  /** Cacheable (no effect on translation). */
  C: field("C", 4),
  /** No execute. */
  NX: field("NX", 5),
  /** Dirty: set by the hardware on the first write when the context tracks dirty pages. */
  D: field("D", 6),
  /** Device memory (no effect on translation). */
  MMIO: field("MMIO", 7),
  /** Privileged accesses only. */
  PRIV: field("PRIV", 8),
  /** Reserved, must be 0. */
  RES0: field("RES0", 9, 2),
  /** Output address bits 31:11 (table pointers: 4 KiB aligned, bit 11 must be 0). */
  OA_LO: field("OA_LO", 11, 21),
  /** Output address bits 51:32. */
  OA_HI: field("OA_HI", 32, 20),
  /** Reserved, must be 0. */
  RES1: field("RES1", 52, 12),
} as const;

/** log2 of the smallest page (the level-0 leaf), and index bits per level. @linux PT_GRANUL_SHIFT of generic_pt/fmt/iommu_mock.c (MOCK_PAGE_SIZE) */
export const PT_GRANULE_LG2 = 11;
/** @linux PT_TABLEMEM_LG2SZ - 3 of the mock format */
export const PT_BITS_PER_LEVEL = 9;
/** Highest level whose entries may be leaves: level 0 maps 2 KiB pages, level 1 blocks of 1 MiB. @linux the mock format's leaf levels (MOCK_HUGE_PAGE_SIZE at level 1) */
export const PT_MAX_LEAF_LEVEL = 1;
/** Most levels a context may name (levels cover 2^(11 + 9 * levels) bytes of input). @linux PT_MAX_TOP_LEVEL + 1 of the mock format */
export const PT_MAX_LEVELS = 5;

/**
 * Context entry (32 bytes): a device-table entry, indexed by requester ID, and also the layout of a PASID-table
 * entry (where PASID_EN, PASID_BITS and PASID_DIR are reserved).
 *
 * | word | bits  | field                                                     |
 * |------|-------|-----------------------------------------------------------|
 * | 0    | 0     | V                                                         |
 * | 0    | 2:1   | MODE: 0 abort, 1 bypass, 2 translate, 3 nested            |
 * | 0    | 3     | DIRTY: set D on writes (the stage-2 leaf when nested)     |
 * | 0    | 4     | PRI: turn translation faults into page requests           |
 * | 0    | 5     | PASID_EN: PASID-tagged DMA uses the PASID directory       |
 * | 0    | 10:8  | LEVELS of the table at TTB (paging or stage-2)            |
 * | 0    | 13:11 | S1_LEVELS of the nested stage-1 at S1TTB                  |
 * | 0    | 20:16 | PASID_BITS: PASIDs at or above 2^PASID_BITS fault         |
 * | 1    | 15:0  | DID: domain ID, the IOTLB tag of the table at TTB         |
 * | 1    | 31:16 | S1ID: stage-1 cache ID (nested), 0 otherwise              |
 * | 2-3  | 51:12 | TTB: root table PA, 4 KiB aligned                         |
 * | 4-5  | 51:12 | S1TTB: nested stage-1 root, an IPA, 4 KiB aligned         |
 * | 6-7  | 51:12 | PASID_DIR: PASID directory PA, 4 KiB aligned              |
 * @linux drivers/iommu/iommufd/selftest.c mock_domain / mock_domain_nested (what a device "attached" to them sees),
 * laid out like an SMMUv3 STE
 */
export const CTX = {
  V: field("V", 0),
  MODE: field("MODE", 1, 2),
  DIRTY: field("DIRTY", 3),
  PRI: field("PRI", 4),
  PASID_EN: field("PASID_EN", 5),
  LEVELS: field("LEVELS", 8, 3),
  S1_LEVELS: field("S1_LEVELS", 11, 3),
  PASID_BITS: field("PASID_BITS", 16, 5),
  DID: field("DID", 32, 16),
  S1ID: field("S1ID", 48, 16),
  TTB_LO: field("TTB_LO", 76, 20),
  TTB_HI: field("TTB_HI", 96, 20),
  S1TTB_LO: field("S1TTB_LO", 140, 20),
  S1TTB_HI: field("S1TTB_HI", 160, 20),
  PASID_DIR_LO: field("PASID_DIR_LO", 204, 20),
  PASID_DIR_HI: field("PASID_DIR_HI", 224, 20),
} as const;

/** Bytes of a context entry. @linux STRTAB_STE_DWORDS * 8, for the mock */
export const CTX_SIZE = 32;

/** CTX.MODE values. @linux STRTAB_STE_0_CFG_ABORT / _BYPASS / _S2_TRANS / _NESTED */
export const CTX_MODE = {
  ABORT: 0,
  BYPASS: 1,
  TRANSLATE: 2,
  NESTED: 3,
} as const;

/**
 * PASID directory entry (8 bytes): points at a 4 KiB leaf of 128 context entries. PASID p uses directory entry
 * p >> 7 and leaf entry p & 127; the directory has 2^max(0, PASID_BITS - 7) entries.
 * @linux the VT-d scalable-mode PASID directory, simplified
 */
export const PASID_DIRENT = {
  V: field("V", 0),
  ADDR_LO: field("ADDR_LO", 12, 20),
  ADDR_HI: field("ADDR_HI", 32, 20),
} as const;

/** log2 of context entries per PASID leaf table. @linux PASID_PDE_SHIFT (VT-d), for the mock */
export const PASID_LEAF_LG2 = 7;

/**
 * Fault-queue record (32 bytes): a translation fault, or a page request (PRI).
 *
 * | word | bits  | field                                                  |
 * |------|-------|--------------------------------------------------------|
 * | 0    | 3:0   | TYPE: 1 fault, 2 page request                          |
 * | 0    | 15:8  | CODE: the fault code (FAULT_CODE); 0 for a request     |
 * | 0    | 16    | READ                                                   |
 * | 0    | 17    | WRITE                                                  |
 * | 0    | 18    | EXEC                                                   |
 * | 0    | 19    | PRIV                                                   |
 * | 0    | 20    | PV: PASID valid                                        |
 * | 0    | 21    | LAST: last request of its group                        |
 * | 1    | 31:0  | RID: requester ID                                      |
 * | 2    | 19:0  | PASID                                                  |
 * | 3    | 8:0   | PRGI: page request group index                         |
 * | 4-5  | 51:0  | ADDR: faulting IOVA (page address for a request)       |
 * @linux drivers/iommu/iommufd/selftest.c mock_viommu event / struct iommu_fault_page_request, as a queue record
 */
export const FAULT = {
  TYPE: field("TYPE", 0, 4),
  CODE: field("CODE", 8, 8),
  READ: field("READ", 16),
  WRITE: field("WRITE", 17),
  EXEC: field("EXEC", 18),
  PRIV: field("PRIV", 19),
  PV: field("PV", 20),
  LAST: field("LAST", 21),
  RID: field("RID", 32, 32),
  PASID: field("PASID", 64, 20),
  PRGI: field("PRGI", 96, 9),
  ADDR_LO: field("ADDR_LO", 128, 32),
  ADDR_HI: field("ADDR_HI", 160, 20),
} as const;

/** Bytes of a fault record. @linux EVTQ_ENT_DWORDS * 8, for the mock */
export const FAULT_RECORD_SIZE = 32;

/** FAULT.TYPE values. @linux enum iommu_fault_type (IOMMU_FAULT_PAGE_REQ) vs an event record */
export const FAULT_TYPE = {
  FAULT: 1,
  PAGE_REQUEST: 2,
} as const;

/**
 * Fault codes: `DmaTranslation.faultCode` and the CODE of a fault record. Listed in the order the model checks them.
 * @linux the mock has none; shaped like SMMUv3's event IDs (C_BAD_STREAMID, F_TRANSLATION, F_PERMISSION, ...)
 */
export const FAULT_CODE = {
  /** Requester ID beyond the device table, or its context entry is not valid. */
  BAD_DEVICE: 1,
  /** The context is in ABORT mode (blocked domain). */
  ABORT: 2,
  /** PASID-tagged DMA to a context without PASIDs, a PASID out of range, or an invalid PASID entry. */
  BAD_PASID: 3,
  /** A context or table entry has reserved bits set or an impossible shape. */
  BAD_ENTRY: 4,
  /** The address is beyond what the context's levels translate. */
  ADDR_SIZE: 5,
  /** No valid leaf maps the address. */
  TRANSLATION: 6,
  /** The leaf does not allow this access. */
  PERMISSION: 7,
  /** Stage-2 (parent) fault while translating a nested stage-1 walk or its output. */
  S2_TRANSLATION: 8,
  /** The context has PRI: the fault became a page request; the device retries after the response. */
  PAGE_REQUEST: 9,
} as const;

/** Short texts of the fault codes, by code (index 0: ""). @linux arm_smmu_event_names / the event IDs' texts */
export const FAULT_REASON: readonly string[] = [
  "",
  "bad device (no valid device-table entry)",
  "abort (blocked)",
  "bad PASID",
  "bad table entry",
  "address size",
  "translation fault",
  "permission fault",
  "stage-2 fault",
  "page request issued",
];

/** PRESP_INFO.CODE values. @linux enum iommu_page_response_code */
export const PRESP_CODE = {
  SUCCESS: 0,
  INVALID: 1,
  FAILURE: 2,
} as const;
