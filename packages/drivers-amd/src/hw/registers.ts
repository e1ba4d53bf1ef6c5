/**
 * The AMD-Vi MMIO register file, as the specification's register tables: offsets, then each register's fields.
 * 64-bit registers are two 32-bit words; a field is declared on the word that holds it (`bit` counted across the
 * 64-bit register, so bit 32 is bit 0 of the high word). Head and tail registers hold byte offsets into their ring.
 * Spec: AMD I/O Virtualization Technology (IOMMU) Specification §3.4; ../../../../../shared/reference/formats.md §4.1.
 * @linux drivers/iommu/amd/amd_iommu_types.h (MMIO_*_OFFSET, CONTROL_*_EN, MMIO_STATUS_*, FEATURE_*); QEMU
 * hw/i386/amd_iommu.h (AMDVI_MMIO_*)
 */
import { bits, field } from "@iommu-sim/core";

/** Register offsets. @linux MMIO_DEV_TABLE_OFFSET, MMIO_CMD_BUF_OFFSET, ... */
export const AMD_REG = {
  DEV_TAB_BASE: 0x0000,
  CMD_BUF_BASE: 0x0008,
  EVT_LOG_BASE: 0x0010,
  CONTROL: 0x0018,
  EXCL_BASE: 0x0020,
  EXCL_LIMIT: 0x0028,
  EFR: 0x0030,
  PPR_LOG_BASE: 0x0038,
  EFR2: 0x01a0,
  CMD_HEAD: 0x2000,
  CMD_TAIL: 0x2008,
  EVT_HEAD: 0x2010,
  EVT_TAIL: 0x2018,
  STATUS: 0x2020,
  PPR_HEAD: 0x2030,
  PPR_TAIL: 0x2038,
} as const;

/** Size of the register window the model decodes (the platform maps 512 KiB). @linux MMIO_REG_END_OFFSET region */
export const AMD_MMIO_SIZE = 0x80000;
/** Words of the register array the model keeps (up to the PPR tail). */
export const AMD_REG_WORDS = (AMD_REG.PPR_TAIL + 8) >>> 2;

/** Device Table Base register. @linux iommu_set_device_table (dev_table_size >> 12) - 1 */
export const DEV_TAB_BASE = {
  SIZE: bits("Size", 8, 0),
  BASE_LO: bits("DevTabBase_lo", 31, 12),
  BASE_HI: bits("DevTabBase_hi", 51, 32),
} as const;

/** Command buffer / event log / PPR log base registers (same layout). @linux iommu_set_cmd_buf... (CMD_BUFFER_SIZE 0x9 << 56) */
export const LOG_BASE = {
  BASE_LO: bits("Base_lo", 31, 12),
  BASE_HI: bits("Base_hi", 51, 32),
  LEN: bits("Len", 59, 56),
} as const;

/** Control register fields. @linux CONTROL_IOMMU_EN, CONTROL_EVT_LOG_EN, ... */
export const CONTROL = {
  IOMMU_EN: field("IommuEn", 0),
  HT_TUN_EN: field("HtTunEn", 1),
  EVT_LOG_EN: field("EventLogEn", 2),
  EVT_INT_EN: field("EventIntEn", 3),
  COMWAIT_INT_EN: field("ComWaitIntEn", 4),
  INV_TIMEOUT: bits("InvTimeout", 7, 5),
  PASSPW: field("PassPW", 8),
  RESPASSPW: field("ResPassPW", 9),
  COHERENT: field("Coherent", 10),
  ISOC: field("Isoc", 11),
  CMDBUF_EN: field("CmdBufEn", 12),
  PPRLOG_EN: field("PPRLogEn", 13),
  PPRINT_EN: field("PPRIntEn", 14),
  PPR_EN: field("PPREn", 15),
  GT_EN: field("GTEn", 16),
  GA_EN: field("GAEn", 17),
} as const;

/** Status register fields (interrupt and overflow bits are write-1-to-clear). @linux MMIO_STATUS_* */
export const STATUS = {
  EVT_OVERFLOW: field("EventOverflow", 0),
  EVT_INT: field("EventLogInt", 1),
  COMWAIT_INT: field("ComWaitInt", 2),
  EVT_RUN: field("EventLogRun", 3),
  CMDBUF_RUN: field("CmdBufRun", 4),
  PPR_OVERFLOW: field("PPROverflow", 5),
  PPR_INT: field("PPRInt", 6),
  PPR_RUN: field("PPRLogRun", 7),
} as const;

/** Status bits that software clears by writing 1. */
export const STATUS_W1C = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 5) | (1 << 6);

/** Extended Feature Register fields. @linux FEATURE_PREFETCH, FEATURE_PPR, FEATURE_GT, FEATURE_IA, ... */
export const EFR = {
  PREF_SUP: field("PrefSup", 0),
  PPR_SUP: field("PPRSup", 1),
  XT_SUP: field("XTSup", 2),
  NX_SUP: field("NXSup", 3),
  GT_SUP: field("GTSup", 4),
  IA_SUP: field("IASup", 6),
  GA_SUP: field("GASup", 7),
  HE_SUP: field("HESup", 8),
  PC_SUP: field("PCSup", 9),
  HATS: bits("HATS", 11, 10),
  GATS: bits("GATS", 13, 12),
  GLX_SUP: bits("GLXSup", 15, 14),
  PASMAX: bits("PASmax", 36, 32),
  GIO_SUP: field("GIoSup", 48),
  HA_SUP: field("HASup", 49),
  HD_SUP: field("HDSup", 52),
} as const;

/** Head/tail registers: a byte offset, 16-byte aligned. @linux QEMU AMDVI_MMIO_*_HEAD mask (bits 18:4) */
export const RING_PTR = bits("Offset", 18, 4);
