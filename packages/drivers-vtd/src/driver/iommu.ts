/**
 * One VT-d unit as the driver sees it: its registers, capability decoding, the root table, the invalidation queue
 * (or register-based invalidation) with synchronous submission and error recovery, the fault and page-request
 * interrupts, per-unit domain IDs, and the devices it translates by requester ID.
 * @linux drivers/iommu/intel/iommu.h struct intel_iommu; dmar.c (dmar_enable_qi, qi_submit_sync, qi_check_fault,
 * dmar_fault, __iommu_flush_*), iommu.c (iommu_set_root_entry, iommu_enable_translation), prq.c
 */
import {
  type Device,
  HwRing,
  type IommuCore,
  IommuDevice,
  type IommuIrqLines,
  IommuThreadedIrq,
  type IopfQueue,
  iommuMmioResource,
  iopfQueueDiscardPartial,
  isIommuIrqLines,
  kerr,
  type Machine,
  pollHwProgress,
  type Task,
  XA_LIMIT,
  XArray,
} from "@iommu-sim/core";
import {
  cap,
  DMA_CCMD,
  DMA_FECTL_IM,
  DMA_FSTS,
  DMA_GCMD,
  DMA_GSTS,
  DMA_IQA_DW,
  DMA_PRS,
  DMA_RTADDR_SMT,
  DMA_TLB,
  DMAR,
  decodePageReq,
  ecap,
  FLPT_DEFAULT_DID,
  type PageReqDsc,
  QI_GRAN,
  QI_STATUS,
  type QiDesc,
  qiDescContext,
  qiDescIotlb,
  qiDescPasidCache,
  qiDescWait,
} from "./regs.js";

/** Descriptors in the invalidation queue. @linux QI_LENGTH */
export const QI_LENGTH = 256;
/** Page order of the page request queue. @linux PRQ_ORDER */
export const PRQ_ORDER = 4;
/** Polls without hardware progress before a register handshake or a QI wait gives up. @linux DMAR_OPERATION_TIMEOUT */
const POLL_LIMIT = 64;

/** A primary fault record as dmar_fault reads it. @linux the fields dmar_fault_do_one prints */
export interface DmarFaultRecord {
  sid: number;
  /** -1 without a PASID. */
  pasid: number;
  addr: number;
  reason: number;
  /** 1 = read (the record's T bit). */
  read: boolean;
}

/** Hooks into the driver (so this file needs no import of driver.ts). @linux dmar_fault / prq_event_thread calling into the driver */
export interface IntelIommuSink {
  handleFault(iommu: IntelIommu, rec: DmarFaultRecord): void;
  handlePageRequest(iommu: IntelIommu, req: PageReqDsc): Promise<void>;
}

/** The unit's interrupt line names. */
type IrqName = "fault" | "prq" | "inv";

/** Driver options. @linux intel_iommu=sm_off, intel_iommu=... (dmar_disabled / no QI) */
export interface IntelIommuOptions {
  /** Use legacy mode even when the unit supports scalable mode (intel_iommu=sm_off). */
  smOff?: boolean;
  /** Force register-based invalidation (no QI). */
  noQi?: boolean;
  /**
   * Test-only mutant: leave out the IOTLB and device-TLB invalidations after unmap (the strict stale-cache checker
   * must notice). Never set outside tests.
   */
  skipIotlbFlush?: boolean;
}

/**
 * A VT-d unit.
 * @linux struct intel_iommu
 */
export class IntelIommu extends IommuDevice {
  readonly machine: Machine;
  readonly core: IommuCore;
  readonly pdev: Device;
  readonly base: number;
  /** @linux intel_iommu.seq_id */
  readonly seqId: number;
  /** CAP / ECAP halves. @linux intel_iommu.cap / ecap */
  capLo = 0;
  capHi = 0;
  ecapLo = 0;
  ecapHi = 0;
  /** Scalable mode in use. @linux sm_supported(iommu) */
  sm = false;
  /** Second-stage levels the unit supports, largest first. @linux intel_iommu.agaw (as levels) */
  ssLevels = 4;
  /** @linux intel_iommu.gcmd */
  gcmd = 0;
  rootPa = -1;
  /** Context tables by root-table slot (legacy: bus; scalable: bus * 2 + upper). */
  readonly ctxTables = new Map<number, number>();
  /** Domain IDs in use. @linux intel_iommu.domain_ida */
  readonly dids: XArray<object>;
  /** Devices by requester ID. @linux intel_iommu.device_rbtree */
  readonly deviceRbtree = new Map<number, unknown>();
  /** The IOPF queue for page requests. @linux intel_iommu.iopf_queue */
  iopfQueue: IopfQueue | undefined;
  /** Fault records read, oldest first (what dmar_fault logs). */
  readonly faults: DmarFaultRecord[] = [];
  /** Page requests read from the PRQ, oldest first. */
  readonly pageRequests: PageReqDsc[] = [];
  /** Descriptors submitted to the invalidation queue (statistics, tests). */
  descriptorsIssued = 0;
  sink: IntelIommuSink | undefined;
  private qi: { basePa: number; statusPa: number; freeHead: number; dw: boolean } | undefined;
  /** Index arithmetic of the invalidation queue (head/tail without a wrap bit: one slot stays free). */
  private readonly qiRing = new HwRing(Math.log2(QI_LENGTH), false);
  private prqPa = -1;
  private irqLines: IommuIrqLines<IrqName> | undefined;
  private faultThread: Task<void> | undefined;
  /** @linux the PRQ interrupt's thread */
  private readonly prqIrq: IommuThreadedIrq;

  constructor(
    core: IommuCore,
    pdev: Device,
    seqId: number,
    readonly options: IntelIommuOptions,
  ) {
    const mmio = iommuMmioResource(pdev);
    super({ dev: pdev, name: `dmar${seqId}` });
    this.machine = core.machine;
    this.prqIrq = new IommuThreadedIrq(
      this.machine.scheduler,
      () => `irq/${this.name}-prq`,
      () => this.prqEventThread(),
    );
    this.core = core;
    this.pdev = pdev;
    this.base = mmio.start;
    this.seqId = seqId;
    this.dids = new XArray<object>(core.machine.faults, "intel_iommu_domain_id");
  }

  /** @linux readl */
  readl(off: number): number {
    return this.machine.mmio.read32(this.base + off) >>> 0;
  }

  /** @linux writel */
  writel(off: number, v: number): void {
    this.machine.mmio.write32(this.base + off, v >>> 0);
  }

  /** 64-bit write as low half, then high half. @linux dmar_writeq (lo_hi_writeq) */
  writeq(off: number, lo: number, hi: number): void {
    this.writel(off, lo);
    this.writel(off + 4, hi);
  }

  /** The physical pages the driver allocates. */
  allocPages(order: number, site: string): number {
    const pa = this.machine.pages.allocPages(order, site);
    this.machine.memory.fill(pa, 4096 * 2 ** order, 0);
    return pa;
  }

  freePages(pa: number, order: number): void {
    this.machine.pages.freePages(pa, order);
  }

  // --- capabilities ---------------------------------------------------------------------------------------------

  /** Read CAP/ECAP and decide the mode. @linux alloc_iommu (cap/ecap reads) + iommu_calculate_agaw + sm_supported */
  readCaps(): void {
    this.capLo = this.readl(DMAR.CAP);
    this.capHi = this.readl(DMAR.CAP + 4);
    this.ecapLo = this.readl(DMAR.ECAP);
    this.ecapHi = this.readl(DMAR.ECAP + 4);
    this.sm = ecap.smts(this.ecapHi) === 1 && !this.options.smOff;
    const sagaw = cap.sagaw(this.capLo);
    const mgaw = cap.mgaw(this.capLo);
    // Second stage trusts the SAGAW bits: 5 levels only with a guest width above 48 bits.
    this.ssLevels = mgaw > 48 && sagaw & 8 ? 5 : sagaw & 4 ? 4 : sagaw & 2 ? 3 : 0;
    if (this.ssLevels === 0)
      throw kerr("ENODEV", `${this.name}: no supported address width (SAGAW 0x${sagaw.toString(16)})`);
  }

  /** First-stage levels: 5 with FL5LP and a guest width above 48 bits, else 4. @linux compute_vasz_lg2_fs */
  get fsLevels(): number {
    return cap.mgaw(this.capLo) > 48 && this.fl5lp ? 5 : 4;
  }

  get qis(): boolean {
    return ecap.qis(this.ecapLo) === 1 && !this.options.noQi;
  }
  get ndoms(): number {
    return cap.ndoms(this.capLo);
  }
  get cachingMode(): boolean {
    return cap.cachingMode(this.capLo) === 1;
  }
  get psi(): boolean {
    return cap.pgselInv(this.capHi) === 1;
  }
  get mamv(): number {
    return cap.maxAmaskVal(this.capHi);
  }
  get flts(): boolean {
    return this.sm && ecap.flts(this.ecapHi) === 1;
  }
  get slts(): boolean {
    return !this.sm || ecap.slts(this.ecapHi) === 1;
  }
  get nesting(): boolean {
    return this.sm && ecap.nest(this.ecapLo) === 1 && this.flts && this.slts;
  }
  get slads(): boolean {
    return this.sm && ecap.slads(this.ecapHi) === 1;
  }
  get passThrough(): boolean {
    return ecap.passThrough(this.ecapLo) === 1;
  }
  get devTlb(): boolean {
    return ecap.devTlb(this.ecapLo) === 1;
  }
  get prs(): boolean {
    return this.sm && ecap.prs(this.ecapLo) === 1;
  }
  get pasidBits(): number {
    return this.sm && ecap.pasid(this.ecapHi) === 1 ? ecap.pss(this.ecapHi) + 1 : 0;
  }
  get srs(): boolean {
    return this.sm && ecap.srs(this.ecapLo) === 1;
  }
  get smpwc(): boolean {
    return this.sm && ecap.smpwc(this.ecapHi) === 1;
  }
  get superpages(): number {
    return cap.superPageVal(this.capHi) & 3;
  }
  get fl1gp(): boolean {
    return cap.fl1gpSupport(this.capHi) === 1;
  }
  get fl5lp(): boolean {
    return cap.fl5lpSupport(this.capHi) === 1;
  }

  // --- GCMD handshakes ------------------------------------------------------------------------------------------

  /** Issue one GCMD command and wait for its status bit. @linux IOMMU_WAIT_OP on DMAR_GSTS_REG */
  private gcmdWait(value: number, statusBit: number, want: boolean): void {
    this.writel(DMAR.GCMD, value);
    pollHwProgress(
      0,
      () => 0,
      () => ((this.readl(DMAR.GSTS) & statusBit) !== 0) === want,
      POLL_LIMIT,
      () => `${this.name}: GCMD 0x${(value >>> 0).toString(16)} not acknowledged`,
    );
  }

  /** Program and latch the root table, then flush the context, PASID and IOTLB caches. @linux iommu_set_root_entry */
  setRootEntry(): void {
    this.writeq(
      DMAR.RTADDR,
      ((this.rootPa % 4294967296) | (this.sm ? DMA_RTADDR_SMT : 0)) >>> 0,
      Math.floor(this.rootPa / 4294967296),
    );
    this.gcmdWait(this.gcmd | DMA_GCMD.SRTP, DMA_GSTS.RTPS, true);
    this.flushContext(0, 0, 0, QI_GRAN.CC_GLOBAL);
    if (this.sm) this.submitSync([qiDescPasidCache(0, 0, QI_GRAN.PC_GLOBAL)]);
    this.flushIotlb(0, 0, 0, false, QI_GRAN.IOTLB_GLOBAL);
  }

  /** @linux iommu_enable_translation */
  enableTranslation(): void {
    this.gcmd |= DMA_GCMD.TE;
    this.gcmdWait(this.gcmd, DMA_GSTS.TES, true);
  }

  /** @linux iommu_disable_translation */
  disableTranslation(): void {
    this.gcmd &= ~DMA_GCMD.TE;
    this.gcmdWait(this.gcmd, DMA_GSTS.TES, false);
  }

  /** A write-buffer flush, when the unit requires one. @linux iommu_flush_write_buffer */
  flushWriteBuffer(): void {
    if (!cap.rwbf(this.capLo)) return;
    this.writel(DMAR.GCMD, this.gcmd | DMA_GCMD.WBF);
  }

  // --- invalidation queue ---------------------------------------------------------------------------------------

  /** Allocate and enable the invalidation queue. @linux dmar_enable_qi / __dmar_enable_qi */
  enableQi(): void {
    if (!this.qis) return;
    const dw = this.sm;
    const basePa = this.allocPages(dw ? 1 : 0, "intel_iommu_qi");
    let statusPa: number;
    try {
      statusPa = this.allocPages(0, "intel_iommu_qi_status");
    } catch (e) {
      this.freePages(basePa, dw ? 1 : 0); // as dmar_enable_qi frees qi->desc when desc_status fails
      throw e;
    }
    this.qi = { basePa, statusPa, freeHead: 0, dw };
    this.writeq(DMAR.IQT, 0, 0);
    this.writeq(DMAR.IQA, (basePa % 4294967296) | (dw ? DMA_IQA_DW | 1 : 0), Math.floor(basePa / 4294967296));
    this.gcmd |= DMA_GCMD.QIE;
    this.gcmdWait(this.gcmd, DMA_GSTS.QIES, true);
  }

  /** @linux dmar_disable_qi */
  disableQi(): void {
    if (!this.qi) return;
    this.gcmd &= ~DMA_GCMD.QIE;
    this.gcmdWait(this.gcmd, DMA_GSTS.QIES, false);
    this.freePages(this.qi.basePa, this.qi.dw ? 1 : 0);
    this.freePages(this.qi.statusPa, 0);
    this.qi = undefined;
  }

  /**
   * Submit descriptors plus a wait descriptor (status write + fence) and wait for the status. On an invalid
   * descriptor (IQE) the bad one is overwritten by a copy of the wait descriptor, IQE is cleared and EINVAL is
   * returned; on a device-TLB timeout (ITE) the batch is retried. Falls back to the registers without QI.
   * @linux qi_submit_sync + qi_check_fault
   */
  submitSync(descs: readonly QiDesc[]): void {
    const qi = this.qi;
    if (!qi) throw kerr("EINVAL", `${this.name}: no invalidation queue`);
    const mem = this.machine.memory;
    const shift = qi.dw ? 5 : 4;
    const size = qi.dw ? 32 : 16;
    for (let attempt = 0; ; attempt++) {
      // Wait for room (descriptors + wait + one free slot).
      const need = descs.length + 2;
      pollHwProgress(
        this.readl(DMAR.IQH),
        () => this.readl(DMAR.IQH),
        () => this.qiRing.freeSlots(qi.freeHead, this.readl(DMAR.IQH) >>> shift) >= need,
        POLL_LIMIT,
        () => `${this.name}: invalidation queue full`,
      );
      const start = qi.freeHead;
      for (const d of descs) {
        const pa = qi.basePa + qi.freeHead * size;
        for (let i = 0; i < 4; i++) mem.write32(pa + 4 * i, d[i]!);
        if (qi.dw) for (let i = 4; i < 8; i++) mem.write32(pa + 4 * i, 0);
        qi.freeHead = this.qiRing.advance(qi.freeHead, 1);
      }
      const waitIndex = qi.freeHead;
      const statusPa = qi.statusPa + 4 * waitIndex;
      mem.write32(statusPa, QI_STATUS.IN_USE);
      const wait = qiDescWait(statusPa, QI_STATUS.DONE);
      const wpa = qi.basePa + waitIndex * size;
      for (let i = 0; i < 4; i++) mem.write32(wpa + 4 * i, wait[i]!);
      if (qi.dw) for (let i = 4; i < 8; i++) mem.write32(wpa + 4 * i, 0);
      qi.freeHead = this.qiRing.advance(qi.freeHead, 1);
      this.descriptorsIssued += descs.length;
      this.writeq(DMAR.IQT, qi.freeHead << shift, 0);
      const res = { rc: "ok" as "ok" | "EINVAL" | "EAGAIN" };
      pollHwProgress(
        this.readl(DMAR.IQH),
        () => {
          const h = this.readl(DMAR.IQH);
          if (mem.read32(statusPa) !== QI_STATUS.DONE) res.rc = this.checkFault(start, waitIndex, shift, size);
          return h;
        },
        () => res.rc !== "ok" || mem.read32(statusPa) === QI_STATUS.DONE,
        POLL_LIMIT,
        () => {
          this.core.diag.warnOn(true, `${this.name}: invalidation wait timed out`);
          return `${this.name}: QI timeout`;
        },
      );
      mem.write32(statusPa, QI_STATUS.FREE);
      if (res.rc === "EINVAL") throw kerr("EINVAL", `${this.name}: invalid invalidation descriptor`);
      if (res.rc === "EAGAIN") {
        if (attempt >= 3) throw kerr("ETIMEDOUT", `${this.name}: device-TLB invalidation timed out`);
        continue;
      }
      return;
    }
  }

  /** @linux qi_check_fault */
  private checkFault(start: number, waitIndex: number, shift: number, size: number): "ok" | "EINVAL" | "EAGAIN" {
    const qi = this.qi!;
    const fsts = this.readl(DMAR.FSTS);
    if (fsts & DMA_FSTS.IQE) {
      const head = this.readl(DMAR.IQH) >>> shift;
      const inBatch = start <= waitIndex ? head >= start && head < waitIndex : head >= start || head < waitIndex;
      if (inBatch) {
        // Replace the bad descriptor by the wait descriptor so the queue can go on.
        const mem = this.machine.memory;
        for (let i = 0; i < size; i += 4)
          mem.write32(qi.basePa + head * size + i, mem.read32(qi.basePa + waitIndex * size + i));
        this.writel(DMAR.FSTS, DMA_FSTS.IQE);
        return "EINVAL";
      }
    }
    if (fsts & DMA_FSTS.ITE) {
      this.writel(DMAR.FSTS, DMA_FSTS.ITE);
      return "EAGAIN";
    }
    if (fsts & DMA_FSTS.ICE) this.writel(DMAR.FSTS, DMA_FSTS.ICE);
    return "ok";
  }

  /** Context-cache invalidation, queued or by register. @linux qi_flush_context / __iommu_flush_context */
  flushContext(did: number, sid: number, fm: number, gran: number): void {
    if (this.qi) {
      this.submitSync([qiDescContext(did, sid, fm, gran)]);
      return;
    }
    const hiGran =
      gran === QI_GRAN.CC_GLOBAL
        ? DMA_CCMD.GLOBAL_HI
        : gran === QI_GRAN.CC_DOMAIN
          ? DMA_CCMD.DOMAIN_HI
          : DMA_CCMD.DEVICE_HI;
    this.writeq(DMAR.CCMD, (did & 0xffff) | ((sid & 0xffff) << 16), (DMA_CCMD.ICC_HI | hiGran | (fm & 3)) >>> 0);
    pollHwProgress(
      0,
      () => 0,
      () => (this.readl(DMAR.CCMD + 4) & DMA_CCMD.ICC_HI) === 0,
      POLL_LIMIT,
      () => `${this.name}: CCMD timeout`,
    );
  }

  /** IOTLB invalidation (second stage), queued or by register. @linux qi_flush_iotlb / __iommu_flush_iotlb */
  flushIotlb(did: number, addr: number, am: number, ih: boolean, gran: number): void {
    if (this.qi) {
      this.submitSync([qiDescIotlb(did, addr, ih, am, gran)]);
      return;
    }
    const iro = ecap.iotlbOffset(this.ecapLo);
    if (gran === QI_GRAN.IOTLB_PSI)
      this.writeq(iro, ((addr % 4294967296) | (ih ? 1 << 6 : 0) | am) >>> 0, Math.floor(addr / 4294967296));
    const g =
      gran === QI_GRAN.IOTLB_GLOBAL ? DMA_TLB.GLOBAL_HI : gran === QI_GRAN.IOTLB_DSI ? DMA_TLB.DSI_HI : DMA_TLB.PSI_HI;
    this.writeq(
      iro + 8,
      0,
      (DMA_TLB.IVT_HI | g | DMA_TLB.DR_HI | DMA_TLB.DW_HI | (gran === QI_GRAN.IOTLB_GLOBAL ? 0 : did & 0xffff)) >>> 0,
    );
    pollHwProgress(
      0,
      () => 0,
      () => (this.readl(iro + 12) & DMA_TLB.IVT_HI) === 0,
      POLL_LIMIT,
      () => `${this.name}: IOTLB timeout`,
    );
    this.descriptorsIssued++;
  }

  /** Whether invalidations go through the queue. */
  get queued(): boolean {
    return this.qi !== undefined;
  }

  // --- domain IDs -----------------------------------------------------------------------------------------------

  /** A free domain ID (0 and FLPT_DEFAULT_DID are reserved). @linux ida_alloc_range(&iommu->domain_ida, ...) */
  allocDid(token: object): number {
    return this.dids.alloc(token, XA_LIMIT(FLPT_DEFAULT_DID + 1, this.ndoms - 1));
  }

  freeDid(did: number): void {
    this.dids.erase(did);
  }

  // --- interrupts -----------------------------------------------------------------------------------------------

  /** Connect the fault (and page-request) interrupts and unmask them. @linux dmar_set_interrupt / intel_iommu_enable_prq's request_threaded_irq */
  setupIrqs(): void {
    const line = this.machine.hw.get(this.pdev.name);
    if (isIommuIrqLines<IrqName>(line)) {
      this.irqLines = line;
      line.connectIrq("fault", () => this.faultIrq());
      if (this.prqPa >= 0) line.connectIrq("prq", () => this.prqIrq.raise());
    }
    this.writel(DMAR.FECTL, 0);
    if (this.prqPa >= 0) this.writel(DMAR.PECTL, 0);
  }

  /** @linux free_irq of the fault / PRQ interrupts */
  async teardownIrqs(): Promise<void> {
    this.writel(DMAR.FECTL, DMA_FECTL_IM);
    for (const l of ["fault", "prq"] as const) this.irqLines?.connectIrq(l, undefined);
    this.irqLines = undefined;
    while (this.faultThread) await this.faultThread.join();
    await this.prqIrq.synchronize();
  }

  private faultIrq(): void {
    // dmar_fault runs in hard-IRQ context in Linux; here it runs at once (it only reads registers and logs).
    this.dmarFault();
  }

  /** Read and clear every pending primary fault record. @linux dmar_fault */
  dmarFault(): void {
    const fsts = this.readl(DMAR.FSTS);
    const nfr = cap.numFaultRegs(this.capHi);
    const fro = cap.faultRegOffset(this.capLo, this.capHi);
    if (fsts & DMA_FSTS.PPF) {
      let idx = (fsts >>> 8) & 0xff;
      for (let n = 0; n < nfr; n++) {
        const at = fro + idx * 16;
        const w3 = this.readl(at + 12);
        if ((w3 & 0x80000000) === 0) break;
        const w2 = this.readl(at + 8);
        const rec: DmarFaultRecord = {
          reason: w3 & 0xff,
          pasid: w2 & 0x80000000 ? (w3 >>> 8) & 0xfffff : -1,
          read: ((w3 >>> 30) & 1) === 1,
          sid: w2 & 0xffff,
          addr: ((this.readl(at) & 0xfffff000) >>> 0) + this.readl(at + 4) * 4294967296,
        };
        this.writel(at + 12, 0x80000000);
        this.faults.push(rec);
        this.sink?.handleFault(this, rec);
        idx = (idx + 1) % nfr;
      }
    }
    this.writel(DMAR.FSTS, DMA_FSTS.PFO | DMA_FSTS.PPF | DMA_FSTS.PRO);
  }

  // --- page request queue ---------------------------------------------------------------------------------------

  /** Allocate the PRQ and program PQA. @linux intel_iommu_enable_prq */
  enablePrq(): void {
    if (!this.prs) return;
    this.prqPa = this.allocPages(PRQ_ORDER, "intel_iommu_prq");
    this.writeq(DMAR.PQH, 0, 0);
    this.writeq(DMAR.PQT, 0, 0);
    this.writeq(DMAR.PQA, ((this.prqPa % 4294967296) | PRQ_ORDER) >>> 0, Math.floor(this.prqPa / 4294967296));
  }

  /** @linux intel_iommu_finish_prq */
  finishPrq(): void {
    if (this.prqPa < 0) return;
    this.writeq(DMAR.PQH, 0, 0);
    this.writeq(DMAR.PQT, 0, 0);
    this.writeq(DMAR.PQA, 0, 0);
    this.freePages(this.prqPa, PRQ_ORDER);
    this.prqPa = -1;
  }

  /** Drain every pending page request now (what the PRQ thread does). @linux synchronize_irq + prq_event_thread */
  async drainPrq(): Promise<void> {
    await this.prqIrq.synchronize();
    await this.prqEventThread();
  }

  /** Read descriptors from PQH to PQT, hand them to the driver, then clear PPR / PRO. @linux prq_event_thread */
  private async prqEventThread(): Promise<void> {
    if (this.prqPa < 0) return;
    const size = 4096 * 2 ** PRQ_ORDER;
    const mask = size - 32;
    this.writel(DMAR.PRS, DMA_PRS.PPR);
    let tail = this.readl(DMAR.PQT) & mask;
    let head = this.readl(DMAR.PQH) & mask;
    const w = new Uint32Array(8);
    while (head !== tail) {
      for (let i = 0; i < 8; i++) w[i] = this.machine.memory.read32(this.prqPa + head + 4 * i);
      const req = decodePageReq(w);
      this.pageRequests.push(req);
      head = (head + 32) & mask;
      // Stop markers (LPIG without R/W) carry nothing to handle.
      if (!(req.lpig && !req.rd && !req.wr)) await this.sink?.handlePageRequest(this, req);
    }
    this.writel(DMAR.PQH, tail);
    if (this.readl(DMAR.PRS) & DMA_PRS.PRO) {
      // Overflow: everything queued has been read. Requests of partly received groups may have been lost (the unit
      // answered their last request itself), so their partial faults go; then PRO clears and requests flow again.
      head = this.readl(DMAR.PQH) & mask;
      tail = this.readl(DMAR.PQT) & mask;
      if (head === tail) {
        if (this.iopfQueue) await iopfQueueDiscardPartial(this.iopfQueue);
        this.writel(DMAR.PRS, DMA_PRS.PRO);
      }
    }
  }

  // --- root and context tables ----------------------------------------------------------------------------------

  /** Allocate the root table. @linux iommu_alloc_root_entry */
  allocRoot(): void {
    this.rootPa = this.allocPages(0, "intel_iommu_root");
  }

  /**
   * The context entry address of (bus, devfn), allocating its context table when `alloc`.
   * @linux iommu_context_addr
   */
  contextAddr(bus: number, devfn: number, alloc: boolean): number {
    const upper = this.sm && devfn >= 0x80;
    const slot = this.sm ? bus * 2 + (upper ? 1 : 0) : bus;
    let table = this.ctxTables.get(slot);
    if (table === undefined) {
      if (!alloc) return -1;
      table = this.allocPages(0, "intel_iommu_context_table");
      this.ctxTables.set(slot, table);
      const re = this.rootPa + bus * 16 + (upper ? 8 : 0);
      this.machine.memory.write32(re + 4, Math.floor(table / 4294967296));
      this.machine.memory.write32(re, ((table % 4294967296) | 1) >>> 0);
    }
    return this.sm ? table + (devfn & 0x7f) * 32 : table + devfn * 16;
  }

  /** Free the root and context tables. @linux free_context_table */
  freeTables(): void {
    for (const t of this.ctxTables.values()) this.freePages(t, 0);
    this.ctxTables.clear();
    if (this.rootPa >= 0) this.freePages(this.rootPa, 0);
    this.rootPa = -1;
  }
}

export { QI_GRAN };
