/**
 * One SMMUv3 as its driver sees it: the register window, the features read from the ID registers, the stream
 * table (linear or 2-level), the command/event/PRI queues, the reset sequence, and the event/PRI/GERROR handlers.
 * Everything reaches the hardware through MMIO registers and memory allocated from the machine's page allocator.
 * @linux arm-smmu-v3.c: struct arm_smmu_device, arm_smmu_device_hw_probe, arm_smmu_init_structures,
 * arm_smmu_init_queues / arm_smmu_init_one_queue, arm_smmu_init_strtab(_linear/_2lvl), arm_smmu_init_l2_strtab,
 * arm_smmu_device_reset, arm_smmu_device_disable, arm_smmu_write_reg_sync, arm_smmu_update_gbpa,
 * arm_smmu_evtq_thread, arm_smmu_priq_thread, arm_smmu_gerror_handler
 */
import {
  type Device,
  type IommuCore,
  IommuDevice,
  type IommuIrqLines,
  type IopfQueue,
  iommuMmioResource,
  isIommuIrqLines,
  kerr,
  type Machine,
  type Task,
  XArray,
} from "@iommu-sim/core";
import { armSmmuGetSteUsed, armSmmuWriteEntry, type EntryQwords, type EntryWriter } from "./entry-writer.js";
import { SMMU_REG_ID } from "./iommufd.js";
import type { ArmSmmuMaster } from "./master.js";
import { ArmSmmuCmdq, ArmSmmuQueue, type CmdEnt, newCmdEnt, type SmmuRegs } from "./queue.js";
import {
  CMDQ_OP,
  CR0,
  CR1,
  CR2,
  EVT_ID,
  EVTQ,
  GBPA,
  GERROR,
  get32,
  IDR0,
  IDR0_VAL,
  IDR1,
  IDR3,
  IDR5,
  IRQ_CTRL,
  PRIQ,
  prep32,
  prep64,
  Q_BASE,
  Q_REG,
  QUEUE,
  SMMU_REG,
  STRTAB,
  STRTAB_BASE,
  STRTAB_BASE_CFG,
  STRTAB_L1_DESC,
} from "./regs.js";
import { makeAbortSte, type SteFeatures } from "./ste.js";

const TWO_32 = 4294967296;
const PAGE = 4096;

/** Page order of `bytes`. */
export function orderOf(bytes: number): number {
  let o = 0;
  while (PAGE * 2 ** o < bytes) o++;
  return o;
}

/** Options of the driver (module parameters, test hooks). */
export interface ArmSmmuV3Options {
  /**
   * Stream-table format: "auto" (2-level when IDR0.ST_LEVEL offers it, as Linux does), or force "linear".
   * Linux has no such parameter; tests use it to exercise both formats on one platform.
   */
  strtab?: "auto" | "linear";
  /** The kernel's PAGE_SIZE, which picks the io-pgtable granule. Default 4096. @linux PAGE_SIZE */
  pageSize?: number;
  /** Offer contiguous-hint page sizes (generic_pt ARMv8 behaviour). Default false (io-pgtable-arm). */
  contig?: boolean;
  /** Don't send CMDQ_OP_PREFETCH_CFG after an STE update. @linux ARM_SMMU_OPT_SKIP_PREFETCH */
  skipPrefetch?: boolean;
  /** TEST ONLY: leave out every TLBI command, so a stale-TLB checker has something to find. */
  skipTlbi?: boolean;
  /** TEST ONLY: called after each 64-bit store into a live STE or CD (e.g. to issue DMA in between). */
  onEntryWrite?: (e: EntryWriteEvent) => void;
}

/** What `onEntryWrite` receives. */
export interface EntryWriteEvent {
  kind: "ste" | "cd";
  smmu: ArmSmmuDevice;
  sid: number;
  ssid: number;
  qword: number;
  value: bigint;
}

/** Features read from the ID registers. @linux ARM_SMMU_FEAT_* bits of arm_smmu_device.features */
export interface ArmSmmuFeatures extends SteFeatures {
  twoLvlStrtab: boolean;
  twoLvlCdtab: boolean;
  ttEndianLe: boolean;
  pri: boolean;
  ats: boolean;
  sev: boolean;
  msi: boolean;
  coherency: boolean;
  transS1: boolean;
  transS2: boolean;
  hyp: boolean;
  stallForce: boolean;
  vax: boolean;
  rangeInv: boolean;
  btm: boolean;
  hdHttu: boolean;
  haHttu: boolean;
  s2fwb: boolean;
  nesting: boolean;
}

/** A decoded event-queue record. @linux the u64 evt[EVTQ_ENT_DWORDS] arm_smmu_evtq_thread reads */
export interface ArmSmmuEvent {
  id: number;
  sid: number;
  ssid: number;
  ssv: boolean;
  stall: boolean;
  stag: number;
  rnw: boolean;
  pnu: boolean;
  ind: boolean;
  s2: boolean;
  class: number;
  addr: number;
  ipa: number;
  /** The device the SID belongs to, if any. */
  device: string | undefined;
  /** The raw record, eight 32-bit words. */
  raw: Uint32Array;
}

/** A decoded PRI-queue record. @linux the u64 evt[PRIQ_ENT_DWORDS] arm_smmu_handle_ppr reads */
export interface ArmSmmuPri {
  sid: number;
  ssid: number;
  ssv: boolean;
  last: boolean;
  grpid: number;
  read: boolean;
  write: boolean;
  exec: boolean;
  priv: boolean;
  addr: number;
}

/** Hooks the device calls into the driver (so this file needs no import of the driver). */
export interface ArmSmmuEventSink {
  handleEvent(smmu: ArmSmmuDevice, evt: ArmSmmuEvent): Promise<void>;
  handlePri(smmu: ArmSmmuDevice, pri: ArmSmmuPri): Promise<void>;
}

/** The unit's interrupt line names. */
type IrqName = "evtq" | "priq" | "gerror";

/** Stream table state. @linux struct arm_smmu_strtab_cfg */
export interface ArmSmmuStrtab {
  fmt: number;
  /** Linear table or L1 table PA. */
  basePa: number;
  order: number;
  /** log2 StreamIDs covered. */
  log2size: number;
  /** L2 table PAs by L1 index (2-level only). @linux strtab_cfg.l2.l2ptrs */
  l2: (number | undefined)[];
  numL1: number;
}

/** How many times a register handshake is polled before ETIMEDOUT. @linux ARM_SMMU_POLL_TIMEOUT_US */
const POLL_LIMIT = 64;

/**
 * One SMMUv3 instance.
 * @linux struct arm_smmu_device
 */
export class ArmSmmuDevice extends IommuDevice implements SmmuRegs {
  readonly machine: Machine;
  readonly core: IommuCore;
  readonly pdev: Device;
  readonly mmioBase: number;
  readonly options: ArmSmmuV3Options;
  feat!: ArmSmmuFeatures;
  /** @linux arm_smmu_device.{sid_bits, ssid_bits, asid_bits, vmid_bits, ias, oas, pgsize_bitmap} */
  sidBits = 0;
  ssidBits = 0;
  asidBits = 8;
  vmidBits = 8;
  ias = 0;
  oas = 0;
  pgsizeBitmap = 0;
  /** Raw ID registers, for GET_HW_INFO. */
  idr = new Uint32Array(6);
  iidr = 0;
  /** @linux ARM_SMMU_AIDR, read for IOMMU_GET_HW_INFO */
  aidr = 0;
  strtab: ArmSmmuStrtab | undefined;
  cmdq!: ArmSmmuCmdq;
  evtq!: ArmSmmuQueue;
  priq: ArmSmmuQueue | undefined;
  /** VMIDs in use. @linux arm_smmu_device.vmid_map (an IDA) */
  readonly vmidMap: XArray<object>;
  /** Masters by StreamID. @linux arm_smmu_device.streams (rb-tree) */
  readonly streams = new Map<number, ArmSmmuMaster>();
  /** @linux arm_smmu_device.evtq.iopf */
  iopfQueue: IopfQueue | undefined;
  /** Every event record read, oldest first (what Linux logs with dev_info). */
  readonly events: ArmSmmuEvent[] = [];
  /** Every PRI record read, oldest first. */
  readonly pris: ArmSmmuPri[] = [];
  /** Global errors seen. */
  readonly gerrors: string[] = [];
  sink: ArmSmmuEventSink | undefined;
  private irqLine: IommuIrqLines<IrqName> | undefined;
  private thread: Task<void> | undefined;
  private irqPending = false;
  private readonly cfgiEnt = newCmdEnt(CMDQ_OP.CFGI_STE);
  private readonly prefetchEnt = newCmdEnt(CMDQ_OP.PREFETCH_CFG);

  constructor(core: IommuCore, pdev: Device, options: ArmSmmuV3Options) {
    const mmio = iommuMmioResource(pdev);
    super({ dev: pdev, name: pdev.name });
    this.machine = core.machine;
    this.core = core;
    this.pdev = pdev;
    this.mmioBase = mmio.start;
    this.options = options;
    this.vmidMap = new XArray<object>(core.machine.faults, "arm_smmu_vmid");
  }

  /** @linux readl_relaxed */
  readl(off: number): number {
    return this.machine.mmio.read32(this.mmioBase + off);
  }

  /** @linux writel_relaxed */
  writel(off: number, v: number): void {
    this.machine.mmio.write32(this.mmioBase + off, v >>> 0);
  }

  /** @linux writeq_relaxed */
  writeq(off: number, v: bigint): void {
    this.machine.mmio.write64(this.mmioBase + off, v);
  }

  /** Record a WARN in the machine's diagnostics. */
  warn(message: string): void {
    this.core.diag.warnOn(true, `${this.name}: ${message}`);
  }

  // --- probe ----------------------------------------------------------------------------------------------------

  /**
   * Read IDR0/1/3/5 into features and sizes. ENXIO for hardware the driver cannot use.
   * @linux arm_smmu_device_hw_probe
   */
  hwProbe(): void {
    const idr0 = this.readl(SMMU_REG.IDR0);
    const idr1 = this.readl(SMMU_REG.IDR1);
    const idr3 = this.readl(SMMU_REG.IDR3);
    const idr5 = this.readl(SMMU_REG.IDR5);
    // Every ID register is kept for IOMMU_GET_HW_INFO (arm_smmu_hw_info reads them all).
    this.idr.set([idr0, idr1, this.readl(SMMU_REG_ID.IDR2), idr3, this.readl(SMMU_REG_ID.IDR4), idr5]);
    this.iidr = this.readl(SMMU_REG.IIDR);
    this.aidr = this.readl(SMMU_REG_ID.AIDR);
    const f: ArmSmmuFeatures = {
      twoLvlStrtab: get32(idr0, IDR0.ST_LVL) === IDR0_VAL.ST_LVL_2LVL,
      twoLvlCdtab: get32(idr0, IDR0.CD2L) !== 0,
      ttEndianLe: false,
      pri: get32(idr0, IDR0.PRI) !== 0,
      ats: get32(idr0, IDR0.ATS) !== 0,
      sev: get32(idr0, IDR0.SEV) !== 0,
      msi: get32(idr0, IDR0.MSI) !== 0,
      coherency: get32(idr0, IDR0.COHACC) !== 0,
      transS1: get32(idr0, IDR0.S1P) !== 0,
      transS2: get32(idr0, IDR0.S2P) !== 0,
      hyp: get32(idr0, IDR0.HYP) !== 0,
      e2h: false,
      stalls: false,
      stallForce: false,
      vax: get32(idr5, IDR5.VAX) === 1,
      rangeInv: get32(idr3, IDR3.RIL) !== 0,
      btm: false,
      haHttu: get32(idr0, IDR0.HTTU) >= IDR0_VAL.HTTU_ACCESS,
      hdHttu: get32(idr0, IDR0.HTTU) === IDR0_VAL.HTTU_ACCESS_DIRTY,
      s2fwb: false,
      nesting: false,
      attrTypesOvr: get32(idr1, IDR1.ATTR_TYPES_OVR) !== 0,
    };
    // 2-level stream tables only when wanted; without 2-level support the SID space must fit a linear table.
    if (this.options.strtab === "linear") f.twoLvlStrtab = false;
    switch (get32(idr0, IDR0.TTENDIAN)) {
      case IDR0_VAL.TTENDIAN_MIXED:
      case IDR0_VAL.TTENDIAN_LE:
        f.ttEndianLe = true;
        break;
      default:
        throw kerr("ENXIO", `${this.name}: unknown/unsupported TT endianness`);
    }
    switch (get32(idr0, IDR0.STALL_MODEL)) {
      case IDR0_VAL.STALL_MODEL_FORCE:
        f.stallForce = true;
        f.stalls = true;
        break;
      case IDR0_VAL.STALL_MODEL_STALL:
        f.stalls = true;
        break;
    }
    if (!f.transS1 && !f.transS2) throw kerr("ENXIO", `${this.name}: no translation support!`);
    const ttf = get32(idr0, IDR0.TTF);
    if (ttf === IDR0_VAL.TTF_AARCH32_64) this.ias = 40;
    else if (ttf !== IDR0_VAL.TTF_AARCH64) throw kerr("ENXIO", `${this.name}: AArch64 table format not supported!`);
    this.asidBits = get32(idr0, IDR0.ASID16) ? 16 : 8;
    this.vmidBits = get32(idr0, IDR0.VMID16) ? 16 : 8;
    f.nesting = f.transS1 && f.transS2;
    f.s2fwb = f.nesting && get32(idr3, IDR3.FWB) !== 0;
    if (get32(idr1, IDR1.TABLES_PRESET) || get32(idr1, IDR1.QUEUES_PRESET) || get32(idr1, IDR1.REL)) {
      throw kerr("ENXIO", `${this.name}: embedded implementation not supported`);
    }
    this.ssidBits = get32(idr1, IDR1.SSIDSIZE);
    this.sidBits = get32(idr1, IDR1.SIDSIZE);
    // A 2-level table only pays off with more than one L2 table's worth of StreamIDs.
    if (this.sidBits <= STRTAB.SPLIT) f.twoLvlStrtab = false;
    this.maxPasids = this.ssidBits > 0 ? 2 ** this.ssidBits : 0;
    let pg = 0;
    if (get32(idr5, IDR5.GRAN64K)) pg += 2 ** 16 + 2 ** 29;
    if (get32(idr5, IDR5.GRAN16K)) pg += 2 ** 14 + 2 ** 25;
    if (get32(idr5, IDR5.GRAN4K)) pg += 2 ** 12 + 2 ** 21 + 2 ** 30;
    const oasCodes = [32, 36, 40, 42, 44, 48, 52];
    const oasCode = get32(idr5, IDR5.OAS);
    this.oas = oasCodes[oasCode] ?? 48;
    if (this.oas === 52) pg += 2 ** 42;
    this.pgsizeBitmap = pg;
    this.ias = Math.max(this.ias, this.oas);
    if (f.hdHttu && !f.coherency) f.hdHttu = false;
    this.feat = f;
    this.cmdqShift = Math.min(get32(idr1, IDR1.CMDQS), QUEUE.CMDQ_MAX_SZ_SHIFT);
    this.evtqShift = Math.min(get32(idr1, IDR1.EVTQS), QUEUE.EVTQ_MAX_SZ_SHIFT);
    this.priqShift = Math.min(get32(idr1, IDR1.PRIQS), QUEUE.PRIQ_MAX_SZ_SHIFT);
    if (this.cmdqShift < 1) throw kerr("ENXIO", `${this.name}: command queue too small`);
  }

  private cmdqShift = 0;
  private evtqShift = 0;
  private priqShift = 0;

  /**
   * Allocate the queues and the stream table. Frees what it allocated and rethrows on failure.
   * @linux arm_smmu_init_structures
   */
  initStructures(): void {
    const pages = this.machine.pages;
    const made: [number, number][] = [];
    const alloc = (bytes: number, site: string) => {
      const order = orderOf(bytes);
      const pa = pages.allocPages(order, site);
      made.push([pa, order]);
      return { pa, order };
    };
    try {
      const c = alloc((1 << this.cmdqShift) * QUEUE.CMDQ_ENT_BYTES, "arm_smmu_cmdq");
      const cq = new ArmSmmuQueue(
        "cmdq",
        c.pa,
        c.order,
        this.cmdqShift,
        QUEUE.CMDQ_ENT_BYTES,
        SMMU_REG.CMDQ_PROD,
        SMMU_REG.CMDQ_CONS,
      );
      this.cmdq = new ArmSmmuCmdq(cq, this, this.machine.memory, this);
      const e = alloc((1 << this.evtqShift) * QUEUE.EVTQ_ENT_BYTES, "arm_smmu_evtq");
      this.evtq = new ArmSmmuQueue(
        "evtq",
        e.pa,
        e.order,
        this.evtqShift,
        QUEUE.EVTQ_ENT_BYTES,
        SMMU_REG.EVTQ_PROD,
        SMMU_REG.EVTQ_CONS,
      );
      if (this.feat.pri) {
        const p = alloc((1 << this.priqShift) * QUEUE.PRIQ_ENT_BYTES, "arm_smmu_priq");
        this.priq = new ArmSmmuQueue(
          "priq",
          p.pa,
          p.order,
          this.priqShift,
          QUEUE.PRIQ_ENT_BYTES,
          SMMU_REG.PRIQ_PROD,
          SMMU_REG.PRIQ_CONS,
        );
      }
      this.initStrtab(alloc);
    } catch (e) {
      for (const [pa, order] of made.reverse()) pages.freePages(pa, order);
      this.strtab = undefined;
      this.priq = undefined;
      throw e;
    }
  }

  /** @linux arm_smmu_init_strtab / arm_smmu_init_strtab_linear / arm_smmu_init_strtab_2lvl */
  private initStrtab(alloc: (bytes: number, site: string) => { pa: number; order: number }): void {
    if (this.feat.twoLvlStrtab) {
      let size = STRTAB.L1_SZ_SHIFT - 3;
      size = Math.min(size, this.sidBits - STRTAB.SPLIT);
      const numL1 = 1 << size;
      size += STRTAB.SPLIT;
      if (size < this.sidBits) this.gerrors.push(`2-level strtab only covers ${size}/${this.sidBits} bits of SID`);
      const t = alloc(numL1 * STRTAB.L1_DESC_BYTES, "arm_smmu_strtab_l1");
      this.strtab = {
        fmt: STRTAB_BASE_CFG.FMT_2LVL,
        basePa: t.pa,
        order: t.order,
        log2size: size,
        l2: new Array<number | undefined>(numL1).fill(undefined),
        numL1,
      };
    } else {
      const n = 2 ** this.sidBits;
      const t = alloc(n * STRTAB.STE_BYTES, "arm_smmu_strtab");
      this.strtab = {
        fmt: STRTAB_BASE_CFG.FMT_LINEAR,
        basePa: t.pa,
        order: t.order,
        log2size: this.sidBits,
        l2: [],
        numL1: 0,
      };
      this.initInitialStes(t.pa, n);
    }
  }

  /** Fill fresh STEs with abort (the table is not live yet, so no sync). @linux arm_smmu_init_initial_stes */
  private initInitialStes(pa: number, n: number): void {
    const ste = makeAbortSte();
    const lo = Number(ste[0]! & 0xffffffffn);
    const mem = this.machine.memory;
    for (let i = 0; i < n; i++) mem.write32(pa + i * STRTAB.STE_BYTES, lo);
  }

  /** Free the structures of {@link initStructures}. @linux the devm frees of arm_smmu_device_remove */
  freeStructures(): void {
    const pages = this.machine.pages;
    const st = this.strtab;
    if (st) {
      for (const l2 of st.l2)
        if (l2 !== undefined) pages.freePages(l2, orderOf((1 << STRTAB.SPLIT) * STRTAB.STE_BYTES));
      pages.freePages(st.basePa, st.order);
      this.strtab = undefined;
    }
    if (this.priq) pages.freePages(this.priq.basePa, this.priq.order);
    this.priq = undefined;
    if (this.evtq) pages.freePages(this.evtq.basePa, this.evtq.order);
    if (this.cmdq) pages.freePages(this.cmdq.q.basePa, this.cmdq.q.order);
  }

  /** Whether `sid` fits the stream table. @linux arm_smmu_sid_in_range */
  sidInRange(sid: number): boolean {
    const st = this.strtab;
    if (!st) return false;
    if (st.fmt === STRTAB_BASE_CFG.FMT_2LVL) return sid >>> STRTAB.SPLIT < st.numL1;
    return sid < 2 ** this.sidBits;
  }

  /**
   * Make sure the L2 table of `sid` exists (2-level), filled with abort STEs, and its L1 descriptor written.
   * @linux arm_smmu_init_l2_strtab / arm_smmu_init_sid_strtab
   */
  initSidStrtab(sid: number): void {
    if (!this.sidInRange(sid)) throw kerr("ERANGE", `${this.name}: StreamID 0x${sid.toString(16)} out of range`);
    const st = this.strtab!;
    if (st.fmt !== STRTAB_BASE_CFG.FMT_2LVL) return;
    const idx = sid >>> STRTAB.SPLIT;
    if (st.l2[idx] !== undefined) return;
    const n = 1 << STRTAB.SPLIT;
    const pa = this.machine.pages.allocPages(orderOf(n * STRTAB.STE_BYTES), "arm_smmu_strtab_l2");
    this.initInitialStes(pa, n);
    st.l2[idx] = pa;
    const desc = prep64(STRTAB_L1_DESC.SPAN, STRTAB.SPLIT + 1) | (BigInt(pa) & STRTAB_L1_DESC.L2PTR_MASK);
    this.machine.memory.write64(st.basePa + idx * STRTAB.L1_DESC_BYTES, desc);
  }

  /** Physical address of the STE of `sid`. @linux arm_smmu_get_step_for_sid */
  stePa(sid: number): number {
    const st = this.strtab!;
    if (st.fmt === STRTAB_BASE_CFG.FMT_LINEAR) return st.basePa + sid * STRTAB.STE_BYTES;
    const l2 = st.l2[sid >>> STRTAB.SPLIT];
    if (l2 === undefined) throw kerr("EINVAL", `${this.name}: no L2 stream table for SID 0x${sid.toString(16)}`);
    return l2 + (sid & ((1 << STRTAB.SPLIT) - 1)) * STRTAB.STE_BYTES;
  }

  /** Read the live STE of `sid`. */
  readSte(sid: number): bigint[] {
    const pa = this.stePa(sid);
    const out: bigint[] = [];
    for (let i = 0; i < STRTAB.STE_QWORDS; i++) out.push(this.machine.memory.read64(pa + 8 * i));
    return out;
  }

  /**
   * Update the STE of `sid` to `target` with the hitless writer, then prefetch it.
   * @linux arm_smmu_write_ste
   */
  writeSte(sid: number, target: EntryQwords): void {
    const pa = this.stePa(sid);
    const mem = this.machine.memory;
    const hook = this.options.onEntryWrite;
    // Test-only mutant "smmuv3:half-written-entry": the store of qword 0 that makes an STE valid never happens.
    const half = this.machine.mutant("smmuv3:half-written-entry");
    const writer: EntryWriter = {
      getUsed: armSmmuGetSteUsed,
      read: (i) => mem.read64(pa + 8 * i),
      write: (i, v) => {
        if (half && i === 0 && (v & 1n) === 1n && (mem.read64(pa) & 1n) === 0n) return;
        mem.write64(pa + 8 * i, v);
        hook?.({ kind: "ste", smmu: this, sid, ssid: 0, qword: i, value: v });
      },
      sync: () => {
        const c = this.cfgiEnt;
        c.opcode = CMDQ_OP.CFGI_STE;
        c.sid = sid;
        c.leaf = true;
        this.cmdq.issueOne(c, true);
      },
      warn: (m) => this.core.diag.warnOnOnce(true, `${this.name}: ${m}`),
    };
    armSmmuWriteEntry(writer, target);
    if (!this.options.skipPrefetch) {
      this.prefetchEnt.sid = sid;
      this.cmdq.issueOne(this.prefetchEnt, false);
    }
  }

  /** Issue commands with a trailing CMD_SYNC. @linux arm_smmu_cmdq_batch_submit */
  issueSync(ents: readonly CmdEnt[], count: number): void {
    this.cmdq.issue(ents, count, true);
  }

  // --- reset ----------------------------------------------------------------------------------------------------

  /** Write a register and poll its ACK register until it matches. @linux arm_smmu_write_reg_sync */
  writeRegSync(val: number, reg: number, ack: number): void {
    this.writel(reg, val);
    for (let i = 0; i < POLL_LIMIT; i++) if (this.readl(ack) === val >>> 0) return;
    throw kerr("ETIMEDOUT", `${this.name}: timeout waiting for register 0x${ack.toString(16)} = 0x${val.toString(16)}`);
  }

  /** Update GBPA with the UPDATE handshake. @linux arm_smmu_update_gbpa */
  updateGbpa(set: number, clr: number): void {
    const upd = prep32(GBPA.UPDATE, 1);
    let reg = 0;
    const waitIdle = () => {
      for (let i = 0; i < POLL_LIMIT; i++) {
        reg = this.readl(SMMU_REG.GBPA);
        if (!(reg & upd)) return;
      }
      throw kerr("ETIMEDOUT", `${this.name}: GBPA not responding to update`);
    };
    waitIdle();
    reg = (reg & ~clr) | set;
    this.writel(SMMU_REG.GBPA, (reg | upd) >>> 0);
    waitIdle();
  }

  /** @linux arm_smmu_device_disable */
  deviceDisable(): void {
    this.writeRegSync(0, SMMU_REG.CR0, SMMU_REG.CR0ACK);
  }

  /**
   * Program the structures and enable the SMMU, queue by queue, each through the CR0/CR0ACK handshake.
   * @linux arm_smmu_device_reset (+ arm_smmu_setup_irqs)
   */
  deviceReset(): void {
    const cr0 = this.readl(SMMU_REG.CR0);
    if (cr0 & prep32(CR0.SMMUEN, 1)) {
      this.gerrors.push("SMMU currently enabled! Resetting...");
      this.updateGbpa(prep32(GBPA.ABORT, 1), 0);
    }
    this.deviceDisable();
    this.writel(
      SMMU_REG.CR1,
      prep32(CR1.TABLE_SH, CR1.SH_ISH) |
        prep32(CR1.TABLE_OC, CR1.CACHE_WB) |
        prep32(CR1.TABLE_IC, CR1.CACHE_WB) |
        prep32(CR1.QUEUE_SH, CR1.SH_ISH) |
        prep32(CR1.QUEUE_OC, CR1.CACHE_WB) |
        prep32(CR1.QUEUE_IC, CR1.CACHE_WB),
    );
    this.writel(SMMU_REG.CR2, prep32(CR2.PTM, 1) | prep32(CR2.RECINVSID, 1) | (this.feat.e2h ? prep32(CR2.E2H, 1) : 0));
    // Stream table. @linux arm_smmu_write_strtab
    const st = this.strtab!;
    this.writeq(SMMU_REG.STRTAB_BASE, (BigInt(st.basePa) & STRTAB_BASE.ADDR_MASK) | STRTAB_BASE.RA);
    this.writel(
      SMMU_REG.STRTAB_BASE_CFG,
      prep32(STRTAB_BASE_CFG.FMT, st.fmt) |
        prep32(STRTAB_BASE_CFG.LOG2SIZE, st.log2size) |
        (st.fmt === STRTAB_BASE_CFG.FMT_2LVL ? prep32(STRTAB_BASE_CFG.SPLIT, STRTAB.SPLIT) : 0),
    );
    // Command queue.
    const cq = this.cmdq.q;
    this.writeq(SMMU_REG.CMDQ_BASE, this.qBase(cq));
    this.writel(SMMU_REG.CMDQ_PROD, cq.prod);
    this.writel(SMMU_REG.CMDQ_CONS, cq.cons);
    let enables = prep32(CR0.CMDQEN, 1);
    this.writeRegSync(enables, SMMU_REG.CR0, SMMU_REG.CR0ACK);
    // Invalidate any cached configuration and stale TLB entries.
    this.cmdq.issueOne(newCmdEnt(CMDQ_OP.CFGI_ALL), true);
    if (this.feat.hyp) this.cmdq.issueOne(newCmdEnt(CMDQ_OP.TLBI_EL2_ALL), true);
    this.cmdq.issueOne(newCmdEnt(CMDQ_OP.TLBI_NSNH_ALL), true);
    // Event queue.
    this.writeq(SMMU_REG.EVTQ_BASE, this.qBase(this.evtq));
    this.writel(SMMU_REG.EVTQ_PROD, this.evtq.prod);
    this.writel(SMMU_REG.EVTQ_CONS, this.evtq.cons);
    enables |= prep32(CR0.EVTQEN, 1);
    this.writeRegSync(enables, SMMU_REG.CR0, SMMU_REG.CR0ACK);
    if (this.priq) {
      this.writeq(SMMU_REG.PRIQ_BASE, this.qBase(this.priq));
      this.writel(SMMU_REG.PRIQ_PROD, this.priq.prod);
      this.writel(SMMU_REG.PRIQ_CONS, this.priq.cons);
      enables |= prep32(CR0.PRIQEN, 1);
      this.writeRegSync(enables, SMMU_REG.CR0, SMMU_REG.CR0ACK);
    }
    if (this.feat.ats) {
      enables |= prep32(CR0.ATSCHK, 1);
      this.writeRegSync(enables, SMMU_REG.CR0, SMMU_REG.CR0ACK);
    }
    this.setupIrqs();
    enables |= prep32(CR0.SMMUEN, 1);
    this.writeRegSync(enables, SMMU_REG.CR0, SMMU_REG.CR0ACK);
  }

  private qBase(q: ArmSmmuQueue): bigint {
    return Q_BASE.RWA | (BigInt(q.basePa) & Q_BASE.ADDR_MASK) | BigInt(q.maxNShift);
  }

  /** Disable IRQs, hook the (combined) handler, enable GERROR/EVTQ/PRIQ IRQs. @linux arm_smmu_setup_irqs */
  private setupIrqs(): void {
    this.writeRegSync(0, SMMU_REG.IRQ_CTRL, SMMU_REG.IRQ_CTRLACK);
    const line = this.machine.hw.get(this.pdev.name);
    if (isIommuIrqLines<IrqName>(line)) {
      this.irqLine = line;
      line.connectIrq("gerror", () => this.handleGerror());
      line.connectIrq("evtq", () => this.irq());
      if (this.priq) line.connectIrq("priq", () => this.irq());
    }
    const en =
      prep32(IRQ_CTRL.GERROR_IRQEN, 1) |
      prep32(IRQ_CTRL.EVTQ_IRQEN, 1) |
      (this.priq ? prep32(IRQ_CTRL.PRIQ_IRQEN, 1) : 0);
    this.writeRegSync(en, SMMU_REG.IRQ_CTRL, SMMU_REG.IRQ_CTRLACK);
  }

  /** Disable the SMMU, abort incoming traffic, disconnect the IRQ, wait for the threads. @linux arm_smmu_device_remove / _shutdown */
  async shutdown(): Promise<void> {
    this.deviceDisable();
    this.updateGbpa(prep32(GBPA.ABORT, 1), 0);
    for (const l of ["gerror", "evtq", "priq"] as const) this.irqLine?.connectIrq(l, undefined);
    this.irqLine = undefined;
    while (this.thread) await this.thread.join();
  }

  // --- interrupts and queues ---------------------------------------------------------------------------------------

  /** The hard IRQ of the event/PRI queues: wake the thread. @linux the primary handler (IRQ_WAKE_THREAD) */
  private irq(): void {
    this.irqPending = true;
    if (this.thread !== undefined) return;
    this.thread = this.machine.scheduler.spawn(`irq/${this.name}-evtq`, () => this.combinedThread());
  }

  private async combinedThread(): Promise<void> {
    try {
      while (this.irqPending) {
        this.irqPending = false;
        await this.evtqThread();
        if (this.priq) await this.priqThread();
      }
    } finally {
      this.thread = undefined;
    }
  }

  /**
   * Consume every pending event and PRI record now (what the threaded IRQ does; tests and models without an
   * interrupt line call it).
   * @linux synchronize_irq + arm_smmu_combined_irq_thread
   */
  async drainQueues(): Promise<void> {
    while (this.thread) await this.thread.join();
    await this.evtqThread();
    if (this.priq) await this.priqThread();
  }

  /** Read PROD from the register; report an overflow. @linux queue_sync_prod_in */
  private syncProdIn(q: ArmSmmuQueue): boolean {
    const prod = this.readl(q.prodReg);
    const ovf = ((prod ^ q.prod) & Q_REG.OVF) !== 0;
    q.prod = prod >>> 0;
    return ovf;
  }

  /** Acknowledge an overflow by copying its flag into CONS. @linux queue_sync_cons_ovf */
  private syncConsOvf(q: ArmSmmuQueue): void {
    if (((q.prod ^ q.cons) & Q_REG.OVF) === 0) return;
    q.cons = ((q.prod & Q_REG.OVF) | q.wrp(q.cons) | q.idx(q.cons)) >>> 0;
    this.writel(q.consReg, q.cons);
  }

  /** Copy one entry out and advance CONS. @linux queue_remove_raw */
  private removeRaw(q: ArmSmmuQueue, out: Uint32Array): boolean {
    if (q.empty()) return false;
    const pa = q.entPa(q.cons);
    for (let i = 0; i < q.entWords; i++) out[i] = this.machine.memory.read32(pa + 4 * i);
    q.cons = ((q.cons & Q_REG.OVF) | q.inc(q.cons & ~Q_REG.OVF, 1)) >>> 0;
    this.writel(q.consReg, q.cons);
    return true;
  }

  /** @linux arm_smmu_evtq_thread */
  private async evtqThread(): Promise<void> {
    const q = this.evtq;
    if (!q || !this.strtab) return;
    const raw = new Uint32Array(8);
    do {
      while (this.removeRaw(q, raw)) {
        const evt = this.decodeEvent(raw);
        this.events.push(evt);
        await this.sink?.handleEvent(this, evt);
      }
      if (this.syncProdIn(q)) this.gerrors.push("EVTQ overflow detected -- events lost");
    } while (!q.empty());
    this.syncConsOvf(q);
  }

  private decodeEvent(raw: Uint32Array): ArmSmmuEvent {
    const w0 = raw[0]!;
    const w2 = raw[2]!;
    const w3 = raw[3]!;
    const sid = raw[1]!;
    return {
      id: get32(w0, EVTQ.ID),
      sid,
      ssv: get32(w0, EVTQ.SSV) !== 0,
      ssid: get32(w0, EVTQ.SSID),
      stag: get32(w2, EVTQ.STAG),
      stall: get32(w2, EVTQ.STALL) !== 0,
      pnu: get32(w3, EVTQ.PNU) !== 0,
      ind: get32(w3, EVTQ.IND) !== 0,
      rnw: get32(w3, EVTQ.RNW) !== 0,
      s2: get32(w3, EVTQ.S2) !== 0,
      class: get32(w3, EVTQ.CLASS),
      addr: raw[5]! * TWO_32 + raw[4]!,
      ipa: (raw[7]! & 0xfffff) * TWO_32 + (raw[6]! & 0xfffff000),
      device: this.streams.get(sid)?.dev.name,
      raw: raw.slice(),
    };
  }

  /** @linux arm_smmu_priq_thread */
  private async priqThread(): Promise<void> {
    const q = this.priq;
    if (!q) return;
    const raw = new Uint32Array(4);
    do {
      while (this.removeRaw(q, raw)) {
        const w1 = raw[1]!;
        const ssv = get32(w1, PRIQ.SSID_V) !== 0;
        const pri: ArmSmmuPri = {
          sid: raw[0]!,
          ssv,
          ssid: ssv ? get32(w1, PRIQ.SSID) : 0,
          last: get32(w1, PRIQ.PRG_LAST) !== 0,
          priv: get32(w1, PRIQ.PERM_PRIV) !== 0,
          exec: get32(w1, PRIQ.PERM_EXEC) !== 0,
          read: get32(w1, PRIQ.PERM_READ) !== 0,
          write: get32(w1, PRIQ.PERM_WRITE) !== 0,
          grpid: get32(raw[2]!, PRIQ.PRG_IDX),
          addr: raw[3]! * TWO_32 + (raw[2]! & 0xfffff000),
        };
        this.pris.push(pri);
        await this.sink?.handlePri(this, pri);
      }
      if (this.syncProdIn(q)) this.gerrors.push("PRIQ overflow detected -- requests lost");
    } while (!q.empty());
    this.syncConsOvf(q);
  }

  /** @linux arm_smmu_gerror_handler */
  handleGerror(): boolean {
    const gerror = this.readl(SMMU_REG.GERROR);
    const gerrorn = this.readl(SMMU_REG.GERRORN);
    const active = (gerror ^ gerrorn) & GERROR.ERR_MASK;
    if (!active) return false;
    this.gerrors.push(`unexpected global error reported (0x${active.toString(16)})`);
    if (active & prep32(GERROR.SFM_ERR, 1)) {
      this.gerrors.push("device has entered Service Failure Mode!");
      this.deviceDisable();
    }
    if (active & prep32(GERROR.CMDQ_ERR, 1)) this.gerrors.push(this.cmdq.skipErr());
    this.writel(SMMU_REG.GERRORN, gerror);
    return true;
  }

  /** Event IDs Linux forwards to the fault handler. */
  static isFaultEvent(id: number): boolean {
    return (
      id === EVT_ID.F_TRANSLATION || id === EVT_ID.F_ADDR_SIZE || id === EVT_ID.F_ACCESS || id === EVT_ID.F_PERMISSION
    );
  }

  /**
   * Configuration errors a guest caused through its vSTE/CD: forwarded to a vmaster's vEVENTQ like faults.
   * @linux arm_smmu_handle_event's EVT_ID_BAD_STE_CONFIG, STREAM_DISABLED, BAD_SUBSTREAMID_CONFIG, BAD_CD_CONFIG
   */
  static isGuestConfigEvent(id: number): boolean {
    return (
      id === EVT_ID.C_BAD_STE ||
      id === EVT_ID.F_STREAM_DISABLED ||
      id === EVT_ID.C_BAD_SUBSTREAMID ||
      id === EVT_ID.C_BAD_CD
    );
  }
}
