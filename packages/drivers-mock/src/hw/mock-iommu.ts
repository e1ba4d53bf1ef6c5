/**
 * The mock IOMMU hardware model: a register file (`fields.ts` REG), a device table of context entries in memory
 * indexed by requester ID (with a PASID directory per device), a page walker over the mock radix format
 * (`walk.ts`), a typed-array IOTLB (`iotlb.ts`) and configuration cache, a fault queue in memory that also carries
 * page requests, and a page-response doorbell.
 *
 * `translate` is the hot path: configuration-cache lookup, IOTLB lookup, and only on a miss a walk; no `Map`, no
 * allocation, no bigint. Faults are returned as codes (FAULT_CODE) after a record is queued.
 */

import type {
  Diagnostics,
  DmaRequest,
  DmaTranslation,
  HwModelContext,
  IommuHwCounters,
  IommuHwModel,
  MmioHandler,
  PageRequestMessage,
  PageResponseRecord,
  PhysicalMemory,
} from "@iommu-sim/core";
import { optionBool, optionNumber } from "@iommu-sim/core";
import {
  BASE,
  CR,
  CTX,
  CTX_MODE,
  CTX_SIZE,
  FAULT,
  FAULT_CODE,
  FAULT_REASON,
  FAULT_RECORD_SIZE,
  FAULT_TYPE,
  fieldGet,
  fieldPrep,
  IDR1,
  IDR2,
  INV_CMD,
  INV_OP,
  INV_TAG,
  MOCK_MMIO_SIZE,
  maskOf,
  PASID_DIRENT,
  PASID_LEAF_LG2,
  PRESP_INFO,
  PRESP_PASID,
  PT_BITS_PER_LEVEL,
  PT_GRANULE_LG2,
  PT_MAX_LEAF_LEVEL,
  PT_MAX_LEVELS,
  PTE,
  REG,
  STATUS,
  shiftOf,
} from "../spec/fields.js";
import * as TLB from "./iotlb.js";
import { MockIotlb, TLB_PERM, tlbTag } from "./iotlb.js";
import { validLevels, WalkResult, walkNested, walkStage } from "./walk.js";

const TWO_32 = 4294967296;
const GRANULE = 1 << PT_GRANULE_LG2;
const GRANULE_MASK = GRANULE - 1;
/** How far a bypassed access stays contiguous: to the end of the 52-bit physical space. */
const PA_LIMIT = 2 ** 52;

// Decoded once from the field tables.
const PTE_R = maskOf(PTE.R);
const PTE_W = maskOf(PTE.W);
const PTE_NX = maskOf(PTE.NX);
const PTE_D = maskOf(PTE.D);
const PTE_PRIV = maskOf(PTE.PRIV);
const CR_EN = maskOf(CR.EN);
const CR_FQEN = maskOf(CR.FQEN);
const CR_FQIRQEN = maskOf(CR.FQIRQEN);
const ST_OVF = maskOf(STATUS.FQ_OVF);
const CTX_V = maskOf(CTX.V);
const CTX_DIRTY = maskOf(CTX.DIRTY);
const CTX_PRI = maskOf(CTX.PRI);
const CTX_PASID_EN = maskOf(CTX.PASID_EN);
const ADDR_LO_M = maskOf(BASE.ADDR_LO);
const ADDR_HI_M = maskOf(BASE.ADDR_HI);

/** Configuration-cache flag bits (decoded from a context entry). */
const CFG_DIRTY = 1;
const CFG_PRI = 2;
/** Configuration-cache slot layout: 8 words per slot (word offsets below); CFG_RID -1 = invalid. */
const CFG_SHIFT = 3;
const CFG_PASID = 1;
const CFG_MODE = 2;
const CFG_FLAGS = 3;
const CFG_TAG = 4;
const CFG_LEVELS = 5;
const CFG_S1LEVELS = 6;
const CFG_HASH = 0x9e3779b1;
/** Word of CR in the register file. */
const CR_WORD = REG.CR.offset >>> 2;
const PERM_NEED_MASK = ~TLB_PERM.DOK;
// The hot path's constants as private consts: V8 folds these into the code, while an imported binding or an
// object property is a load (and a hole check) at every use.
const TLB_HASH = TLB.TLB_HASH;
const TLB_F_PA = TLB.TLB_F_PA;
const TLB_I_TAG = TLB.TLB_I_TAG;
const TLB_I_PERM = TLB.TLB_I_PERM;
const TLB_I_SPAN = TLB.TLB_I_SPAN;
const P_R = TLB_PERM.R;
const P_W = TLB_PERM.W;
const P_X = TLB_PERM.X;
const P_U = TLB_PERM.U;
const P_DOK = TLB_PERM.DOK;
const GRANULE_LG2 = PT_GRANULE_LG2;
const MODE_TRANSLATE = CTX_MODE.TRANSLATE;
const MODE_NESTED = CTX_MODE.NESTED;
const F_PERMISSION = FAULT_CODE.PERMISSION;

// The fast walk's view of an entry (walkFill), from the spec's fields: a table pointer has V and T set and RES0 and
// bit 11 clear (tables are 4 KiB aligned); a leaf has V set and T and RES0 clear.
const PTE_V = maskOf(PTE.V);
const PTE_OA_LO = maskOf(PTE.OA_LO);
const PTE_TABLE_CHECK = maskOf(PTE.V) | maskOf(PTE.T) | maskOf(PTE.RES0) | ((1 << 12) - (1 << PT_GRANULE_LG2));
const PTE_TABLE_OK = maskOf(PTE.V) | maskOf(PTE.T);
const PTE_LEAF_CHECK = maskOf(PTE.V) | maskOf(PTE.T) | maskOf(PTE.RES0);
const BITS_PER_LEVEL = PT_BITS_PER_LEVEL;
const IDX_MASK = (1 << PT_BITS_PER_LEVEL) - 1;
const MAX_LEAF_LEVEL = PT_MAX_LEAF_LEVEL;
/** Size mask of a level-1 leaf (1 MiB). */
const L1_SIZE_MASK = (1 << (PT_GRANULE_LG2 + PT_BITS_PER_LEVEL)) - 1;

/** The low bits of a leaf up to its highest permission bit or D: a lookup table of {@link permOf} covers them. */
const LEAF_PERM_MASK = (1 << (32 - Math.clz32(PTE_R | PTE_W | PTE_NX | PTE_D | PTE_PRIV))) - 1;
/** {@link permOf} of every value of those low bits of a leaf, plus DOK where D is set (the miss path's lookup). */
const LEAF_PERM = new Uint8Array(LEAF_PERM_MASK + 1);
for (let lo = 0; lo <= LEAF_PERM_MASK; lo++) LEAF_PERM[lo] = permOf(lo) | ((lo & PTE_D) !== 0 ? P_DOK : 0);

/**
 * Options of the mock model, from the platform description's `options` of the IOMMU.
 * @linux the properties of the selftest's mock_iommu_device (MOCK_PASID_WIDTH, dirty and nesting support)
 */
export interface MockIommuOptions {
  /** IOTLB entries (power of two). Default 256. */
  tlbEntries?: number;
  /** IOTLB associativity, 1 or 2. Default 2. */
  tlbWays?: number;
  /** Configuration-cache entries (power of two). Default 64. */
  cfgEntries?: number;
  /** PASID width advertised in IDR1. Default 20 (MOCK_PASID_WIDTH). */
  pasidBits?: number;
  /** Page requests supported. Default true. */
  pri?: boolean;
  /** Hardware dirty-bit update supported. Default true. */
  dirty?: boolean;
  /** Nested translation supported. Default true. */
  nesting?: boolean;
}

/**
 * A page response the model delivered to a device (what the device's PRI logic would receive).
 * @linux the PRG Response Message a page_response op sends
 */
export interface MockPageResponseRecord {
  requesterId: number;
  /** -1 when the response carries no PASID. */
  pasid: number;
  prgi: number;
  code: number;
}

/**
 * A page request a device sends (PCIe PRI Page Request Message).
 * @linux the Page Request Message behind struct iommu_fault_page_request
 */
export interface MockPageRequest {
  requesterId: number;
  /** -1 when the request carries no PASID. */
  pasid: number;
  /** The page address (any address in the page). */
  addr: number;
  read: boolean;
  write: boolean;
  exec?: boolean;
  privileged?: boolean;
  /** Page request group index (0..511). */
  prgi: number;
  /** Last request of its group. */
  last: boolean;
}

/** Counters of the model's events (plain numbers, for tests and benches). @linux none: simulation counters (like the iommu perf counters) */
export interface MockIommuStats {
  tlbHits: number;
  tlbMisses: number;
  walks: number;
  cfgMisses: number;
  faults: number;
  pageRequests: number;
  dropped: number;
  invalidations: number;
}

/** Invalidation op names by value, for trace records. */
const INV_OP_NAME: Record<number, string> = Object.fromEntries(Object.entries(INV_OP).map(([k, v]) => [v, k]));

function log2(n: number): number {
  return 31 - Math.clz32(n);
}

/**
 * The mock IOMMU.
 * @linux drivers/iommu/iommufd/selftest.c mock_iommu_device — given registers and in-memory structures so its
 * driver is a complete template
 */
export class MockIommuHw implements IommuHwModel {
  readonly kind = "mock";
  readonly name: string;
  readonly mmio: MmioHandler;
  readonly mmioSize = MOCK_MMIO_SIZE;
  readonly memory: PhysicalMemory;
  readonly diag: Diagnostics;
  readonly iotlb: MockIotlb;
  /** Page responses delivered, oldest first. */
  readonly responses: MockPageResponseRecord[] = [];
  // Event counters (plain fields: the hot path bumps them).
  private nHits = 0;
  private nMisses = 0;
  private nCfgMisses = 0;
  private nFaults = 0;
  private nPageRequests = 0;
  private nDropped = 0;
  private nInvalidations = 0;

  /**
   * The interrupt line: called synchronously (atomic context) after a record is queued while CR.FQIRQEN is set.
   * The driver connects its handler with {@link connectIrq}.
   */
  private irq: (() => void) | undefined;

  // Identification registers.
  private readonly idr0: number;
  private readonly idr1: number;
  private readonly idr2: number;
  /** Register values by word offset (offset >>> 2). */
  private readonly regs = new Uint32Array(MOCK_MMIO_SIZE >>> 2);

  // Configuration cache, direct-mapped, keyed by (rid, pasid).
  private readonly cfgMask: number;
  /** Slot `c` is words `c << 3 ..` (CFG_RID, CFG_PASID, ...): one cache line holds two slots. */
  private readonly cfg: Int32Array;
  /** Root table PAs of slot `c`: `c << 1` the table at TTB, `(c << 1) + 1` the nested stage-1 root. */
  private readonly cfgRoot: Float64Array;
  // The IOTLB's views and geometry, copied here so the hot path reaches them in one load.
  private readonly tlbF: Float64Array;
  private readonly tlbI: Int32Array;
  private readonly tlbSetMask: number;
  private readonly tlbWayShift: number;
  /** Ways - 1: the second probe of a direct-mapped IOTLB looks at the same entry again. */
  private readonly tlbWay2: number;

  private readonly w1 = new WalkResult();
  private readonly w2 = new WalkResult();
  /** Scratch context words, reused by every configuration fetch. */
  private readonly ctxWords = new Uint32Array(CTX_SIZE >>> 2);
  /** Group index of the next page request this model makes up for a faulting DMA. */
  private nextPrgi = 0;

  constructor(ctx: HwModelContext) {
    const o = ctx.options;
    this.name = ctx.name;
    this.memory = ctx.memory;
    this.diag = ctx.diag;
    this.mmio = this;
    const pasidBits = Math.max(0, Math.min(20, optionNumber(o, "pasidBits", 20)));
    this.iotlb = new MockIotlb(Math.max(1, optionNumber(o, "tlbEntries", 256)), optionNumber(o, "tlbWays", 2));
    let cfg = 1;
    while (cfg < Math.max(1, optionNumber(o, "cfgEntries", 64))) cfg <<= 1;
    this.cfgMask = cfg - 1;
    this.cfg = new Int32Array(cfg << CFG_SHIFT);
    for (let c = 0; c < cfg; c++) this.cfg[c << CFG_SHIFT] = -1;
    this.cfgRoot = new Float64Array(cfg << 1);
    this.tlbF = this.iotlb.f64;
    this.tlbI = this.iotlb.i32;
    this.tlbSetMask = this.iotlb.setMask;
    this.tlbWayShift = this.iotlb.wayShift;
    this.tlbWay2 = this.iotlb.ways - 1;

    this.idr0 = ((1 << PT_GRANULE_LG2) | (1 << (PT_GRANULE_LG2 + 9))) >>> 0;
    this.idr1 =
      (fieldPrep(IDR1.PASID_BITS, pasidBits) |
        fieldPrep(IDR1.MAX_LEVELS, PT_MAX_LEVELS) |
        fieldPrep(IDR1.IAS, 48) |
        fieldPrep(IDR1.OAS, 48) |
        fieldPrep(IDR1.NESTING, optionBool(o, "nesting", true) ? 1 : 0) |
        fieldPrep(IDR1.DIRTY, optionBool(o, "dirty", true) ? 1 : 0) |
        fieldPrep(IDR1.PRI, optionBool(o, "pri", true) ? 1 : 0)) >>>
      0;
    this.idr2 =
      (fieldPrep(IDR2.TLB_LG2, log2(this.iotlb.entries)) |
        fieldPrep(IDR2.TLB_WAYS, this.iotlb.ways) |
        fieldPrep(IDR2.CFG_LG2, log2(cfg))) >>>
      0;
  }

  /** A snapshot of the event counters. */
  get stats(): MockIommuStats {
    return {
      tlbHits: this.nHits,
      tlbMisses: this.nMisses,
      walks: this.nMisses,
      cfgMisses: this.nCfgMisses,
      faults: this.nFaults,
      pageRequests: this.nPageRequests,
      dropped: this.nDropped,
      invalidations: this.nInvalidations,
    };
  }

  /**
   * The counters in the shape every model shares (the mock has no command queue: its invalidations are register
   * writes). Every translation looks the IOTLB up, so translations = hits + misses.
   * @linux the PMU events of an IOMMU
   */
  counters(): IommuHwCounters {
    return {
      translations: this.nHits + this.nMisses,
      iotlbHits: this.nHits,
      iotlbMisses: this.nMisses,
      walks: this.nMisses,
      faults: this.nFaults,
      pageRequests: this.nPageRequests,
      invalidations: this.nInvalidations,
    };
  }

  /**
   * Connect the interrupt line (one handler; `undefined` disconnects).
   * @linux request_irq on the IOMMU's event interrupt
   */
  connectIrq(handler: (() => void) | undefined): void {
    this.irq = handler;
  }

  // --- registers ----------------------------------------------------------------------------------------------

  private r(def: { offset: number }): number {
    return this.regs[def.offset >>> 2]!;
  }

  /** @linux readl of a mock IOMMU register */
  read32(offset: number): number {
    switch (offset) {
      case REG.IDR0.offset:
        return this.idr0;
      case REG.IDR1.offset:
        return this.idr1;
      case REG.IDR2.offset:
        return this.idr2;
      case REG.INV_CMD.offset:
      case REG.PRESP_SEND.offset:
        return 0;
      default:
        return (offset & 3) === 0 && offset < MOCK_MMIO_SIZE ? this.regs[offset >>> 2]! : 0;
    }
  }

  /** @linux writel of a mock IOMMU register */
  write32(offset: number, value: number): void {
    if ((offset & 3) !== 0 || offset < 0 || offset >= MOCK_MMIO_SIZE) return;
    const v = value >>> 0;
    const i = offset >>> 2;
    switch (offset) {
      case REG.IDR0.offset:
      case REG.IDR1.offset:
      case REG.IDR2.offset:
      case REG.FQ_TAIL.offset:
      case REG.INV_COUNT.offset:
        return; // read-only
      case REG.CR.offset: {
        const was = this.regs[i]!;
        this.regs[i] = v;
        // Enabling starts from empty caches, as after a reset.
        if ((v & CR_EN) !== 0 && (was & CR_EN) === 0) this.invalidateAllCaches();
        let st = this.r(REG.STATUS) & ~(maskOf(STATUS.EN_ACK) | maskOf(STATUS.FQEN_ACK));
        if (v & CR_EN) st |= maskOf(STATUS.EN_ACK);
        if (v & CR_FQEN) st |= maskOf(STATUS.FQEN_ACK);
        this.regs[REG.STATUS.offset >>> 2] = st >>> 0;
        return;
      }
      case REG.STATUS.offset:
        this.regs[i] = (this.regs[i]! & ~(v & ST_OVF)) >>> 0;
        return;
      case REG.FQ_HEAD.offset:
        this.regs[i] = v & (this.fqEntries() - 1);
        return;
      case REG.INV_CMD.offset:
        this.runInvalidation(fieldGet(v, INV_CMD.OP));
        return;
      case REG.PRESP_SEND.offset:
        this.sendPageResponse();
        return;
      default:
        this.regs[i] = v;
    }
  }

  private base(lo: { offset: number }, hi: { offset: number }): number {
    return ((this.r(lo) & ADDR_LO_M) >>> 0) + (this.r(hi) & ADDR_HI_M) * TWO_32;
  }

  private fqEntries(): number {
    return 2 ** fieldGet(this.r(REG.FQ_BASE_LO), BASE.LOG2SIZE);
  }

  // --- invalidation -------------------------------------------------------------------------------------------

  private invalidateAllCaches(): void {
    this.iotlb.invalidateAll();
    for (let c = 0; c <= this.cfgMask; c++) this.cfg[c << CFG_SHIFT] = -1;
  }

  private runInvalidation(op: number): void {
    const tag = this.r(REG.INV_TAG);
    const did = fieldGet(tag, INV_TAG.DID);
    const s1 = fieldGet(tag, INV_TAG.S1ID);
    const rid = this.r(REG.INV_RID) | 0;
    const pasid = this.r(REG.INV_PASID) | 0;
    switch (op) {
      case INV_OP.ALL:
        this.invalidateAllCaches();
        break;
      case INV_OP.DOMAIN:
        this.iotlb.invalidate(tlbTag(did, 0), 0xffff0000 | 0);
        break;
      case INV_OP.RANGE: {
        const first = this.r(REG.INV_ADDR_LO) + this.r(REG.INV_ADDR_HI) * TWO_32;
        const last = this.r(REG.INV_LAST_LO) + this.r(REG.INV_LAST_HI) * TWO_32;
        // A parent range invalidation drops every nested translation through it: their input pages are IPAs
        // only at stage 1, so nested entries of the domain are dropped whole.
        this.iotlb.invalidate(tlbTag(did, 0), -1, first, last);
        this.iotlb.invalidate(tlbTag(did, 0), 0xffff0000 | 0);
        break;
      }
      case INV_OP.S1:
        this.iotlb.invalidate(tlbTag(did, s1), -1);
        break;
      case INV_OP.DEVICE:
        for (let c = 0; c <= this.cfgMask; c++) if (this.cfg[c << CFG_SHIFT] === rid) this.cfg[c << CFG_SHIFT] = -1;
        break;
      case INV_OP.PASID:
        for (let c = 0; c <= this.cfgMask; c++) {
          const k = c << CFG_SHIFT;
          if (this.cfg[k] === rid && this.cfg[k + CFG_PASID] === pasid) this.cfg[k] = -1;
        }
        break;
      default:
        return; // unknown op: ignored, not counted
    }
    this.nInvalidations++;
    if (this.diag.trace.enabled) {
      this.diag.trace.emit("hw:command", { iommu: this.name, op: `INV_${INV_OP_NAME[op] ?? op}`, did, rid, pasid });
    }
    this.regs[REG.INV_COUNT.offset >>> 2] = (this.r(REG.INV_COUNT) + 1) >>> 0;
  }

  // --- configuration ------------------------------------------------------------------------------------------

  private cfgIndex(rid: number, pasid: number): number {
    return (rid ^ Math.imul(pasid + 1, CFG_HASH)) & this.cfgMask;
  }

  /** Whether configuration-cache slot `c` holds (rid, pasid). */
  private cfgHit(c: number, rid: number, pasid: number): boolean {
    const k = c << CFG_SHIFT;
    return this.cfg[k] === rid && this.cfg[k + CFG_PASID] === pasid;
  }

  /** Read a 32-byte context entry at `pa` into `ctxWords`. */
  private readCtx(pa: number): void {
    const w = this.ctxWords;
    const m = this.memory;
    for (let i = 0; i < 8; i++) w[i] = m.read32(pa + 4 * i);
  }

  private ctxAddr(loF: { bit: number }, hiF: { bit: number }, loMask: number, hiMask: number): number {
    const w = this.ctxWords;
    return ((w[loF.bit >>> 5]! & loMask) >>> 0) + (w[hiF.bit >>> 5]! & hiMask) * TWO_32;
  }

  /**
   * Fetch and decode the configuration of (rid, pasid) into cache slot `c`. Returns 0 or a FAULT_CODE.
   * @linux the device-table / PASID-table lookup of an IOMMU (SMMUv3 STE+CD fetch, VT-d context+PASID entry)
   */
  private fetchConfig(rid: number, pasid: number, c: number): number {
    this.nCfgMisses++;
    const dtLo = this.r(REG.DT_BASE_LO);
    const dtEntries = 2 ** fieldGet(dtLo, BASE.LOG2SIZE);
    if (rid < 0 || rid >= dtEntries) return FAULT_CODE.BAD_DEVICE;
    this.readCtx(this.base(REG.DT_BASE_LO, REG.DT_BASE_HI) + rid * CTX_SIZE);
    let w0 = this.ctxWords[0]!;
    if ((w0 & CTX_V) === 0) return FAULT_CODE.BAD_DEVICE;
    if (pasid >= 0) {
      if ((w0 & CTX_PASID_EN) === 0) return FAULT_CODE.BAD_PASID;
      if (pasid >= 2 ** fieldGet(w0, CTX.PASID_BITS)) return FAULT_CODE.BAD_PASID;
      const dir = this.ctxAddr(CTX.PASID_DIR_LO, CTX.PASID_DIR_HI, maskOf(CTX.PASID_DIR_LO), maskOf(CTX.PASID_DIR_HI));
      const de = dir + (pasid >>> PASID_LEAF_LG2) * 8;
      const dlo = this.memory.read32(de);
      if ((dlo & maskOf(PASID_DIRENT.V)) === 0) return FAULT_CODE.BAD_PASID;
      const leaf =
        ((dlo & maskOf(PASID_DIRENT.ADDR_LO)) >>> 0) +
        (this.memory.read32(de + 4) & maskOf(PASID_DIRENT.ADDR_HI)) * TWO_32;
      this.readCtx(leaf + (pasid & ((1 << PASID_LEAF_LG2) - 1)) * CTX_SIZE);
      w0 = this.ctxWords[0]!;
      if ((w0 & CTX_V) === 0) return FAULT_CODE.BAD_PASID;
    }
    const w = this.ctxWords;
    const mode = fieldGet(w0, CTX.MODE);
    const levels = fieldGet(w0, CTX.LEVELS);
    const s1Levels = fieldGet(w0, CTX.S1_LEVELS);
    if (mode === CTX_MODE.TRANSLATE || mode === CTX_MODE.NESTED) {
      if (!validLevels(levels)) return FAULT_CODE.BAD_ENTRY;
      if (mode === CTX_MODE.NESTED && (!validLevels(s1Levels) || fieldGet(this.idr1, IDR1.NESTING) === 0)) {
        return FAULT_CODE.BAD_ENTRY;
      }
    }
    const w1 = w[CTX.DID.bit >>> 5]!;
    const k = c << CFG_SHIFT;
    const cf = this.cfg;
    cf[k] = rid;
    cf[k + CFG_PASID] = pasid;
    cf[k + CFG_MODE] = mode;
    cf[k + CFG_FLAGS] =
      ((w0 & CTX_DIRTY) !== 0 && fieldGet(this.idr1, IDR1.DIRTY) !== 0 ? CFG_DIRTY : 0) |
      ((w0 & CTX_PRI) !== 0 && fieldGet(this.idr1, IDR1.PRI) !== 0 ? CFG_PRI : 0);
    cf[k + CFG_TAG] = tlbTag(
      (w1 >>> shiftOf(CTX.DID)) & 0xffff,
      mode === CTX_MODE.NESTED ? (w1 >>> shiftOf(CTX.S1ID)) & 0xffff : 0,
    );
    cf[k + CFG_LEVELS] = levels;
    cf[k + CFG_S1LEVELS] = s1Levels;
    this.cfgRoot[c << 1] = this.ctxAddr(CTX.TTB_LO, CTX.TTB_HI, maskOf(CTX.TTB_LO), maskOf(CTX.TTB_HI));
    this.cfgRoot[(c << 1) + 1] = this.ctxAddr(CTX.S1TTB_LO, CTX.S1TTB_HI, maskOf(CTX.S1TTB_LO), maskOf(CTX.S1TTB_HI));
    return 0;
  }

  // --- translation (hot path) ---------------------------------------------------------------------------------

  /**
   * Translate one DMA access. Sync, allocation-free.
   * @linux drivers/iommu/iommufd/selftest.c mock_domain translation as real hardware would do it: device table,
   * IOTLB, page walk, permission and dirty-bit update, fault record
   */
  translate(req: DmaRequest, out: DmaTranslation): void {
    // The common case stays small enough for V8 to inline into the caller's loop: translation enabled, an IOVA
    // below 4 GiB, the configuration cached and translating, an IOTLB hit. Everything else is translateSlow.
    const iova = req.iova;
    if (iova < TWO_32 && (this.regs[CR_WORD]! & CR_EN) !== 0) {
      const k = this.cfgTranslating(req.requesterId, req.pasid);
      if (k >= 0) {
        const tag = this.cfg[k + CFG_TAG]!;
        const vpn = iova >>> GRANULE_LG2;
        const need = needOf(req);
        const e = this.tlbProbe(tag, vpn);
        if (e >= 0 && (this.tlbI[(e << 3) + TLB_I_PERM]! & need) === need) {
          this.nHits++;
          const off = iova & GRANULE_MASK;
          out.pa = this.tlbF[(e << 2) + TLB_F_PA]! + off;
          out.length = this.tlbI[(e << 3) + TLB_I_SPAN]! - off;
          return;
        }
        this.nMisses++;
        if (this.cfg[k + CFG_MODE] !== MODE_TRANSLATE || !this.walkFill(iova, out, k, tag, vpn, need, e)) {
          this.walk(req, out, k >> CFG_SHIFT, tag, vpn, need);
        }
        return;
      }
    }
    this.translateSlow(req, out);
  }

  /**
   * The miss path's common case, kept short: a single-stage walk that ends in a leaf granting `need` with no dirty
   * bit to set; the IOTLB is filled (entry `hit` if the key is cached with fewer permissions, else the set's victim)
   * and `out` written. Returns false, having changed nothing, for everything else, which {@link walk} then walks
   * again and decides (faults, dirty-bit updates); the property test in test/hw-walk-paths.test.ts holds the two to
   * the same decisions. The loop is written here rather than calling walkStage so that the miss path is one call
   * that V8 does not inline into {@link translate}: translate then stays small enough to be inlined into its
   * caller's loop (with walkStage called from here, the IOTLB hit measured 30–60% slower).
   */
  private walkFill(iova: number, out: DmaTranslation, k: number, tag: number, vpn: number, need: number, hit: number) {
    // The walk, for an input below 4 GiB (the caller checked): each level finds its table in the memory's word array
    // and reads one entry. Any entry that is not a plain table pointer or leaf below 4 GiB ends the fast path.
    const mem = this.memory;
    const words = mem.words32;
    let table = this.cfgRoot[(k >> CFG_SHIFT) << 1]!;
    let level = this.cfg[k + CFG_LEVELS]! - 1;
    let shift = GRANULE_LG2 + BITS_PER_LEVEL * level;
    // Input bits above the top level's index: the full walk reports the address-size fault.
    if (shift < 32 && iova >>> shift > IDX_MASK) return false;
    let elo: number;
    for (;;) {
      const base = mem.wordIndexR(table);
      if (base < 0) return false;
      const e = base + (shift < 32 ? ((iova >>> shift) & IDX_MASK) << 1 : 0);
      elo = words[e]!;
      if (words[e + 1] !== 0) return false;
      if ((elo & PTE_TABLE_CHECK) !== PTE_TABLE_OK || level === 0) break;
      table = (elo & PTE_OA_LO) >>> 0;
      level--;
      shift -= BITS_PER_LEVEL;
    }
    if ((elo & PTE_LEAF_CHECK) !== PTE_V || level > MAX_LEAF_LEVEL) return false;
    const sizeMask = level === 0 ? GRANULE_MASK : L1_SIZE_MASK;
    const oa = (elo & PTE_OA_LO) >>> 0;
    if ((oa & sizeMask) !== 0) return false;
    // Permissions (and DOK: no dirty bit to set), the IOTLB fill, the result.
    const perm = LEAF_PERM[elo & LEAF_PERM_MASK]! | ((this.cfg[k + CFG_FLAGS]! & CFG_DIRTY) === 0 ? P_DOK : 0);
    if ((perm & need) !== need) return false;
    const inLeaf = iova & sizeMask;
    const pa = oa + inLeaf;
    const span = sizeMask + 1 - (inLeaf & ~GRANULE_MASK);
    const off = iova & GRANULE_MASK;
    const tlb = this.iotlb;
    const e = hit >= 0 ? hit : tlb.victim(((vpn ^ Math.imul(tag, TLB_HASH)) & this.tlbSetMask) << this.tlbWayShift);
    tlb.write(e, tag, vpn, pa - off, span, perm);
    out.pa = pa;
    out.length = span - off;
    return true;
  }

  /** The configuration-cache words of (rid, pasid) (`c << CFG_SHIFT`) when cached and translating, else -1. */
  private cfgTranslating(rid: number, pasid: number): number {
    const k = ((rid ^ Math.imul(pasid + 1, CFG_HASH)) & this.cfgMask) << CFG_SHIFT;
    const cf = this.cfg;
    return cf[k] === rid && cf[k + CFG_PASID] === pasid && cf[k + CFG_MODE]! >= MODE_TRANSLATE ? k : -1;
  }

  /** The IOTLB entry of (tag, vpn) for a page number below 2^32, or -1: {@link MockIotlb.lookup}, inline. */
  private tlbProbe(tag: number, vpn: number): number {
    const tf = this.tlbF;
    const ti = this.tlbI;
    let e = ((vpn ^ Math.imul(tag, TLB_HASH)) & this.tlbSetMask) << this.tlbWayShift;
    if (tf[e << 2] === vpn && ti[(e << 3) + TLB_I_TAG] === tag) return e;
    e += this.tlbWay2;
    return tf[e << 2] === vpn && ti[(e << 3) + TLB_I_TAG] === tag ? e : -1;
  }

  /** {@link translate} off its inline path: translation off, a configuration miss, bypass/abort, a high IOVA. */
  private translateSlow(req: DmaRequest, out: DmaTranslation): void {
    const iova = req.iova;
    if ((this.regs[CR_WORD]! & CR_EN) === 0) {
      out.pa = iova;
      out.length = PA_LIMIT - iova;
      return;
    }
    const rid = req.requesterId;
    const pasid = req.pasid;
    const c = this.cfgIndex(rid, pasid);
    if (!this.cfgHit(c, rid, pasid)) {
      const f = this.fetchConfig(rid, pasid, c);
      if (f !== 0) {
        this.cfg[c << CFG_SHIFT] = -1;
        this.fault(req, out, f);
        return;
      }
    }
    const k = c << CFG_SHIFT;
    const mode = this.cfg[k + CFG_MODE]!;
    if (mode !== CTX_MODE.TRANSLATE && mode !== CTX_MODE.NESTED) {
      if (mode === CTX_MODE.BYPASS) {
        out.pa = iova;
        out.length = PA_LIMIT - iova;
      } else {
        this.fault(req, out, FAULT_CODE.ABORT);
      }
      return;
    }
    const tag = this.cfg[k + CFG_TAG]!;
    const vpn = iova < TWO_32 ? iova >>> PT_GRANULE_LG2 : Math.floor(iova / GRANULE);
    const need = needOf(req);
    const tlb = this.iotlb;
    const e = tlb.lookup(tag, vpn);
    if (e >= 0 && (tlb.permOf(e) & need) === need) {
      this.nHits++;
      const off = iova < TWO_32 ? iova & GRANULE_MASK : iova % GRANULE;
      out.pa = tlb.paOf(e) + off;
      out.length = tlb.spanOf(e) - off;
      return;
    }
    this.nMisses++;
    this.walk(req, out, c, tag, vpn, need);
  }

  /** The miss path: walk, check, update the dirty bit, fill the IOTLB. */
  private walk(req: DmaRequest, out: DmaTranslation, c: number, tag: number, vpn: number, need: number): void {
    const iova = req.iova;
    const k = c << CFG_SHIFT;
    const cf = this.cfg;
    const w1 = this.w1;
    let f: number;
    let leaf: WalkResult;
    let perm: number;
    if (cf[k + CFG_MODE] === MODE_NESTED) {
      const w2 = this.w2;
      const roots = this.cfgRoot;
      f = walkNested(
        this.memory,
        roots[(c << 1) + 1]!,
        cf[k + CFG_S1LEVELS]!,
        roots[c << 1]!,
        cf[k + CFG_LEVELS]!,
        iova,
        w1,
        w2,
      );
      leaf = w2;
      perm = f === 0 ? permOf(w1.leafLo) & permOf(w2.leafLo) : 0;
    } else {
      f = walkStage(this.memory, this.cfgRoot[c << 1]!, cf[k + CFG_LEVELS]!, iova, w1);
      leaf = w1;
      perm = f === 0 ? permOf(w1.leafLo) : 0;
    }
    if (f === 0) {
      const leafLo = leaf.leafLo;
      if ((cf[k + CFG_FLAGS]! & CFG_DIRTY) === 0 || (leafLo & PTE_D) !== 0) perm |= P_DOK;
      if ((perm & need & PERM_NEED_MASK) !== (need & PERM_NEED_MASK)) {
        f = F_PERMISSION;
      } else {
        if (req.write && (perm & P_DOK) === 0) {
          // Hardware dirty-bit update: set D in the leaf that maps the output (the stage-2 leaf when nested).
          leaf.leafLo = (leafLo | PTE_D) >>> 0;
          this.memory.write32(leaf.ptePa, leaf.leafLo);
          perm |= P_DOK;
        }
        const off = iova < TWO_32 ? iova & GRANULE_MASK : iova % GRANULE;
        const span = leaf.span;
        const pa = leaf.pa;
        this.iotlb.insert(tag, vpn, pa - off, span, perm);
        out.pa = pa;
        out.length = span - off;
        return;
      }
    }
    this.walkFault(req, out, c, f);
  }

  /** A walk's fault: a page request when the context has PRI and the fault is one software can fix, else a record. */
  private walkFault(req: DmaRequest, out: DmaTranslation, c: number, f: number): void {
    if (
      (f === FAULT_CODE.TRANSLATION || f === FAULT_CODE.PERMISSION) &&
      (this.cfg[(c << CFG_SHIFT) + CFG_FLAGS]! & CFG_PRI) !== 0
    ) {
      const prgi = this.nextPrgi;
      this.nextPrgi = (prgi + 1) & 511;
      this.queuePageRequest(
        req.requesterId,
        req.pasid,
        req.iova,
        !req.write,
        req.write,
        req.exec,
        req.privileged,
        prgi,
        true,
      );
      this.nFaults++;
      out.faultCode = FAULT_CODE.PAGE_REQUEST;
      out.faultReason = FAULT_REASON[FAULT_CODE.PAGE_REQUEST]!;
      return;
    }
    this.fault(req, out, f);
  }

  // --- fault queue --------------------------------------------------------------------------------------------

  /** Record a fault and report it in `out`. */
  private fault(req: DmaRequest, out: DmaTranslation, code: number): void {
    this.nFaults++;
    out.faultCode = code;
    out.faultReason = FAULT_REASON[code] ?? "fault";
    if (this.diag.trace.enabled) {
      this.diag.trace.emit("hw:fault", {
        iommu: this.name,
        reason: out.faultReason,
        sid: req.requesterId,
        ssid: req.pasid,
        iova: `0x${req.iova.toString(16)}`,
        write: req.write,
      });
    }
    let w0 = fieldPrep(FAULT.TYPE, FAULT_TYPE.FAULT) | fieldPrep(FAULT.CODE, code);
    if (req.write) w0 |= maskOf(FAULT.WRITE);
    else w0 |= maskOf(FAULT.READ);
    if (req.exec) w0 |= maskOf(FAULT.EXEC);
    if (req.privileged) w0 |= maskOf(FAULT.PRIV);
    this.queueRecord(w0, req.requesterId, req.pasid, 0, req.iova);
  }

  private queuePageRequest(
    rid: number,
    pasid: number,
    addr: number,
    read: boolean,
    write: boolean,
    exec: boolean,
    priv: boolean,
    prgi: number,
    last: boolean,
  ): boolean {
    this.nPageRequests++;
    if (this.diag.trace.enabled) {
      this.diag.trace.emit("hw:page_request", {
        iommu: this.name,
        sid: rid,
        ssid: pasid,
        iova: `0x${addr.toString(16)}`,
        grpid: prgi,
        last,
      });
    }
    let w0 = fieldPrep(FAULT.TYPE, FAULT_TYPE.PAGE_REQUEST);
    if (read) w0 |= maskOf(FAULT.READ);
    if (write) w0 |= maskOf(FAULT.WRITE);
    if (exec) w0 |= maskOf(FAULT.EXEC);
    if (priv) w0 |= maskOf(FAULT.PRIV);
    if (last) w0 |= maskOf(FAULT.LAST);
    const page = addr < TWO_32 ? (addr & ~GRANULE_MASK) >>> 0 : addr - (addr % GRANULE);
    return this.queueRecord(w0, rid, pasid, prgi, page);
  }

  /** Write one record at the tail; false (and STATUS.FQ_OVF) when the queue is off or full. */
  private queueRecord(w0: number, rid: number, pasid: number, prgi: number, addr: number): boolean {
    const cr = this.regs[REG.CR.offset >>> 2]!;
    if ((cr & CR_FQEN) === 0) {
      this.nDropped++;
      return false;
    }
    const n = this.fqEntries();
    const tail = this.r(REG.FQ_TAIL);
    const head = this.r(REG.FQ_HEAD);
    const next = (tail + 1) & (n - 1);
    if (next === head || n < 2) {
      this.regs[REG.STATUS.offset >>> 2] = (this.r(REG.STATUS) | ST_OVF) >>> 0;
      this.nDropped++;
      return false;
    }
    if (pasid >= 0) w0 |= maskOf(FAULT.PV);
    const pa = this.base(REG.FQ_BASE_LO, REG.FQ_BASE_HI) + tail * FAULT_RECORD_SIZE;
    const m = this.memory;
    const lo = addr >>> 0;
    m.write32(pa, w0 >>> 0);
    m.write32(pa + 4, rid >>> 0);
    m.write32(pa + 8, pasid >= 0 ? fieldPrep(FAULT.PASID, pasid) : 0);
    m.write32(pa + 12, fieldPrep(FAULT.PRGI, prgi));
    m.write32(pa + 16, lo);
    m.write32(pa + 20, ((addr - lo) / TWO_32) & maskOf(FAULT.ADDR_HI));
    m.write32(pa + 24, 0);
    m.write32(pa + 28, 0);
    this.regs[REG.FQ_TAIL.offset >>> 2] = next;
    if ((cr & CR_FQIRQEN) !== 0) this.irq?.();
    return true;
  }

  // --- page requests and responses ----------------------------------------------------------------------------

  /**
   * A device sends a page request (PRI). Queued when translation is enabled and the device's context (or PASID
   * entry) has PRI; otherwise the model answers it INVALID itself, as hardware does for a function without PRI
   * enabled. Returns whether it was queued.
   * @linux the Page Request Message that becomes a struct iommu_fault_page_request
   */
  pageRequest(pr: MockPageRequest): boolean {
    const rid = pr.requesterId;
    const pasid = pr.pasid;
    const c = this.cfgIndex(rid, pasid);
    let ok = (this.regs[REG.CR.offset >>> 2]! & CR_EN) !== 0;
    if (ok && !this.cfgHit(c, rid, pasid)) {
      if (this.fetchConfig(rid, pasid, c) !== 0) {
        this.cfg[c << CFG_SHIFT] = -1;
        ok = false;
      }
    }
    if (ok && (this.cfg[(c << CFG_SHIFT) + CFG_FLAGS]! & CFG_PRI) !== 0) {
      if (
        this.queuePageRequest(
          rid,
          pasid,
          pr.addr,
          pr.read,
          pr.write,
          pr.exec ?? false,
          pr.privileged ?? false,
          pr.prgi & 511,
          pr.last,
        )
      ) {
        return true;
      }
    }
    if (pr.last) this.responses.push({ requesterId: rid, pasid, prgi: pr.prgi & 511, code: 1 });
    return false;
  }

  /** A device's page request, as the platform routes it (see {@link pageRequest}). @linux Page Request Message */
  acceptPageRequest(msg: PageRequestMessage): boolean {
    return this.pageRequest({ ...msg, prgi: msg.grpid });
  }

  /** Responses delivered, in IOMMU_PAGE_RESP_* codes (the mock's PRESP codes are those). */
  devicePageResponses(): PageResponseRecord[] {
    return this.responses.map((r) => ({
      requesterId: r.requesterId,
      pasid: r.pasid,
      grpid: r.prgi,
      code: r.code,
    }));
  }

  /** PRESP_SEND: deliver the response described by PRESP_RID/PASID/INFO. */
  private sendPageResponse(): void {
    const p = this.r(REG.PRESP_PASID);
    const info = this.r(REG.PRESP_INFO);
    this.responses.push({
      requesterId: this.r(REG.PRESP_RID),
      pasid: fieldGet(p, PRESP_PASID.PV) ? fieldGet(p, PRESP_PASID.PASID) : -1,
      prgi: fieldGet(info, PRESP_INFO.PRGI),
      code: fieldGet(info, PRESP_INFO.CODE),
    });
  }
}

/** The TLB_PERM bits a request needs (DOK for a write: it must not need a dirty-bit update). */
function needOf(req: DmaRequest): number {
  return (req.write ? P_W | P_DOK : P_R) | (req.exec ? P_X : 0) | (req.privileged ? 0 : P_U);
}

/** IOTLB permission bits of a leaf's low word. */
function permOf(lo: number): number {
  let p = 0;
  if ((lo & PTE_R) !== 0) {
    p |= P_R;
    if ((lo & PTE_NX) === 0) p |= P_X;
  }
  if ((lo & PTE_W) !== 0) p |= P_W;
  if ((lo & PTE_PRIV) === 0) p |= P_U;
  return p;
}
