/**
 * One AMD IOMMU as the driver sees it: its registers and features, the device table, the command buffer with
 * COMPLETION_WAIT on a semaphore, the event log and PPR log and their interrupt handling, and the DTE write in a
 * safe order followed by INVALIDATE_DEVTAB_ENTRY for the device and its alias.
 * @linux drivers/iommu/amd/amd_iommu_types.h struct amd_iommu; init.c (early_enable_iommu, iommu_set_device_table,
 * iommu_enable_command_buffer, iommu_enable_event_buffer, iommu_enable_ppr_log, iommu_enable); iommu.c
 * (iommu_queue_command, iommu_completion_wait, iommu_flush_dte, amd_iommu_poll_events, update_dte256)
 */
import {
  type Device,
  HwRing,
  type IommuCore,
  IommuDevice,
  type IommuIrqLines,
  IommuThreadedIrq,
  type IopfQueue,
  type IvrsUnit,
  iommuMmioResource,
  isIommuIrqLines,
  kerr,
  type Machine,
  parseBdf,
  pollHwProgress,
} from "@iommu-sim/core";
import {
  type AmdEvent,
  type AmdPprEntry,
  buildCompletionWait,
  buildInvAll,
  buildInvDte,
  CONTROL,
  decodeEvent,
  decodePpr,
  FEATURE,
  FEATURE2,
  type IommuCmd,
  LOG_BYTES,
  LOG_LEN_SHIFT,
  MMIO,
  STATUS,
} from "./regs.js";

/** Polls without progress before a command wait gives up. @linux LOOP_TIMEOUT */
const POLL_LIMIT = 64;
/** Bytes of a DTE. @linux DEV_TABLE_ENTRY_SIZE */
export const DEV_TABLE_ENTRY_SIZE = 32;

/** Hooks into the driver (so this file needs no import of driver.ts). */
export interface AmdIommuSink {
  handleEvent(iommu: AmdIommu, ev: AmdEvent): void;
  handlePpr(iommu: AmdIommu, req: AmdPprEntry): Promise<void>;
}

/** The unit's interrupt line names. */
type IrqName = "event" | "ppr" | "comwait";

/** Driver options. */
export interface AmdIommuOptions {
  /**
   * Test-only mutant: leave out the IOTLB invalidation after unmap (the strict stale-cache checker must notice).
   * Never set outside tests.
   */
  skipIotlbFlush?: boolean;
}

/** The largest DeviceID an IVHD's entries name. @linux the last_bdf init_iommu_from_acpi / find_last_devid_acpi track */
export function ivhdLastDevid(unit: IvrsUnit): number {
  let last = 0;
  const rid = (b: string) => parseBdf(b)?.rid ?? 0;
  for (const e of unit.entries) {
    if (e.type === "select") last = Math.max(last, rid(e.bdf));
    else if (e.type === "range") last = Math.max(last, rid(e.end));
    else if (e.type === "alias") last = Math.max(last, rid(e.bdf), rid(e.alias));
    else last = 0xffff;
  }
  return last;
}

/**
 * An AMD IOMMU.
 * @linux struct amd_iommu
 */
export class AmdIommu extends IommuDevice {
  readonly machine: Machine;
  readonly core: IommuCore;
  readonly pdev: Device;
  readonly base: number;
  /** @linux amd_iommu.index */
  readonly index: number;
  /** EFR halves. @linux amd_iommu.features */
  efrLo = 0;
  efrHi = 0;
  /** EFR2 halves. @linux amd_iommu.features2 */
  efr2Lo = 0;
  efr2Hi = 0;
  /** Device table: physical address and entries. @linux amd_iommu_pci_seg.dev_table / dev_table_size */
  devTablePa = -1;
  devTableEntries = 0;
  /** Command buffer, event log, PPR log, completion-wait semaphore. @linux amd_iommu.cmd_buf, evt_buf, ppr_log, cmd_sem */
  cmdBufPa = -1;
  evtBufPa = -1;
  pprLogPa = -1;
  cmdSemPa = -1;
  /** @linux amd_iommu.cmd_sem_val */
  cmdSemVal = 0;
  /** @linux amd_iommu.ctrl (shadow of the control register) */
  ctrl = 0;
  /** Commands queued (statistics, tests). */
  commandsIssued = 0;
  /** Events read from the log, oldest first. */
  readonly events: AmdEvent[] = [];
  /** Page requests read from the PPR log. */
  readonly pprs: AmdPprEntry[] = [];
  /** @linux amd_iommu.iopf_queue */
  iopfQueue: IopfQueue | undefined;
  sink: AmdIommuSink | undefined;
  /** Devices by DeviceID. @linux the rlookup table entries of this IOMMU (dev_data by DeviceID) */
  readonly devDataById = new Map<number, unknown>();
  private readonly ring = new HwRing(LOG_LEN_SHIFT, false);
  private cmdTail = 0;
  private irqLines: IommuIrqLines<IrqName> | undefined;
  /** @linux the PPR interrupt's thread */
  private readonly pprIrq: IommuThreadedIrq;

  constructor(
    core: IommuCore,
    pdev: Device,
    index: number,
    readonly unit: IvrsUnit,
    readonly options: AmdIommuOptions,
  ) {
    const mmio = iommuMmioResource(pdev);
    super({ dev: pdev, name: `ivhd${index}` });
    this.machine = core.machine;
    this.pprIrq = new IommuThreadedIrq(
      this.machine.scheduler,
      () => `irq/${this.name}-ppr`,
      () => this.pollPpr(),
    );
    this.core = core;
    this.pdev = pdev;
    this.base = mmio.start;
    this.index = index;
  }

  /** @linux readl */
  readl(off: number): number {
    return this.machine.mmio.read32(this.base + off) >>> 0;
  }

  /** @linux writel */
  writel(off: number, v: number): void {
    this.machine.mmio.write32(this.base + off, v >>> 0);
  }

  /** 64-bit register write, low half first. @linux writeq / memcpy_toio of a 64-bit register */
  writeq(off: number, lo: number, hi: number): void {
    this.writel(off, lo);
    this.writel(off + 4, hi);
  }

  private allocPages(order: number, site: string): number {
    const pa = this.machine.pages.allocPages(order, site);
    this.machine.memory.fill(pa, 4096 * 2 ** order, 0);
    return pa;
  }

  private freePages(pa: number, order: number): void {
    if (pa >= 0) this.machine.pages.freePages(pa, order);
  }

  /** @linux check_feature(FEATURE_PPR) */
  get pprSup(): boolean {
    return (this.efrLo & FEATURE.PPR) !== 0;
  }

  /** @linux check_feature(FEATURE_GT) */
  get gtSup(): boolean {
    return (this.efrLo & FEATURE.GT) !== 0;
  }

  /** PASID width from PASmax. @linux amd_iommu_max_pasid (PASMAX + 1 bits) */
  get pasidBits(): number {
    return this.gtSup ? (this.efrHi & 0x1f) + 1 : 0;
  }

  /** GCR3 levels − 1 the unit supports. @linux amd_iommu_max_glx_val (FEATURE_GLX) */
  get maxGlx(): number {
    return (this.efrLo >>> FEATURE.GLX_SHIFT) & 3;
  }

  /** EFR.GATS = 1: 5-level guest (v2) tables. @linux FEATURE_GATS == GUEST_PGTABLE_5_LEVEL */
  get gats5(): boolean {
    return ((this.efrLo >>> FEATURE.GATS_SHIFT) & 3) === 1;
  }

  /** @linux check_feature(FEATURE_GIOSUP) */
  get gioSup(): boolean {
    return (this.efrHi & FEATURE.GIOSUP_HI) !== 0;
  }

  /** Host dirty bits. @linux amd_iommu_hd_support (FEATURE_HDSUP) */
  get hdSup(): boolean {
    return (this.efrHi & FEATURE.HDSUP_HI) !== 0;
  }

  /** @linux check_feature2(FEATURE_GCR3TRPMODE) */
  get gcr3TrpMode(): boolean {
    return (this.efr2Lo & FEATURE2.GCR3TRPMODE) !== 0;
  }

  /** Host page-table levels the unit supports (4 + HATS). @linux amd_iommu_hpt_level */
  get hostLevels(): number {
    return 4 + ((this.efrLo >>> FEATURE.HATS_SHIFT) & 3);
  }

  private ctrlBit(bit: number, on: boolean): void {
    const mask = 2 ** bit;
    const lo = bit < 32;
    if (on) this.ctrl |= lo ? mask : 0;
    else if (lo) this.ctrl &= ~mask;
    this.writel(MMIO.CONTROL, this.ctrl);
  }

  // --- bring-up -------------------------------------------------------------------------------------------------

  /**
   * Read the features, allocate the device table, command buffer, logs and semaphore, program them and enable
   * the IOMMU, then invalidate every cache.
   * @linux init_iommu_one (features), alloc_dev_table / alloc_command_buffer / alloc_event_buffer / alloc_ppr_log,
   * early_enable_iommu (iommu_disable, iommu_set_device_table, iommu_enable_command_buffer,
   * iommu_enable_event_buffer, iommu_enable_gt, iommu_enable_ppr_log, iommu_enable), amd_iommu_flush_all_caches
   */
  init(): void {
    this.efrLo = this.readl(MMIO.EXT_FEATURES);
    this.efrHi = this.readl(MMIO.EXT_FEATURES + 4);
    this.efr2Lo = this.readl(MMIO.EXT_FEATURES2);
    this.efr2Hi = this.readl(MMIO.EXT_FEATURES2 + 4);
    this.maxPasids = 2 ** this.pasidBits;
    // One DTE per DeviceID up to the last one the IVHD names, in a power-of-two number of pages.
    const bytes = (ivhdLastDevid(this.unit) + 1) * DEV_TABLE_ENTRY_SIZE;
    let order = 0;
    while (4096 * 2 ** order < bytes) order++;
    this.devTablePa = this.allocPages(order, "amd_iommu_dev_table");
    this.devTableEntries = (4096 * 2 ** order) / DEV_TABLE_ENTRY_SIZE;
    this.cmdBufPa = this.allocPages(1, "amd_iommu_cmd_buf");
    this.evtBufPa = this.allocPages(1, "amd_iommu_evt_buf");
    if (this.pprSup) this.pprLogPa = this.allocPages(1, "amd_iommu_ppr_log");
    this.cmdSemPa = this.allocPages(0, "amd_iommu_cmd_sem");
    // Linux writes V=1 into every DTE (translation blocked until a domain attaches).
    for (let d = 0; d < this.devTableEntries; d++) this.machine.memory.write32(this.devTablePa + d * 32, 1);

    this.ctrl = 0;
    this.writel(MMIO.CONTROL, 0);
    this.ctrlBit(CONTROL.COHERENT_EN, true);
    this.writeq(
      MMIO.DEV_TABLE,
      ((this.devTablePa % 2 ** 32) | (2 ** order - 1)) >>> 0,
      Math.floor(this.devTablePa / 2 ** 32),
    );
    const len = LOG_LEN_SHIFT << 24;
    this.writeq(MMIO.CMD_BUF, this.cmdBufPa % 2 ** 32, (Math.floor(this.cmdBufPa / 2 ** 32) | len) >>> 0);
    this.writeq(MMIO.CMD_HEAD, 0, 0);
    this.writeq(MMIO.CMD_TAIL, 0, 0);
    this.cmdTail = 0;
    this.ctrlBit(CONTROL.CMDBUF_EN, true);
    this.writeq(MMIO.EVT_BUF, this.evtBufPa % 2 ** 32, (Math.floor(this.evtBufPa / 2 ** 32) | len) >>> 0);
    this.writeq(MMIO.EVT_HEAD, 0, 0);
    this.writeq(MMIO.EVT_TAIL, 0, 0);
    this.ctrlBit(CONTROL.EVT_LOG_EN, true);
    this.ctrlBit(CONTROL.EVT_INT_EN, true);
    if (this.gtSup) this.ctrlBit(CONTROL.GT_EN, true);
    if (this.pprLogPa >= 0) {
      this.writeq(MMIO.PPR_LOG, this.pprLogPa % 2 ** 32, (Math.floor(this.pprLogPa / 2 ** 32) | len) >>> 0);
      this.writeq(MMIO.PPR_HEAD, 0, 0);
      this.writeq(MMIO.PPR_TAIL, 0, 0);
      this.ctrlBit(CONTROL.PPRLOG_EN, true);
      this.ctrlBit(CONTROL.PPR_EN, true);
      this.ctrlBit(CONTROL.PPRINT_EN, true);
    }
    this.setupIrqs();
    this.ctrlBit(CONTROL.IOMMU_EN, true);
    this.flushAllCaches();
  }

  /** Disable and free everything. @linux the reverse of init (disable_iommus, free_iommu_one) */
  async teardown(): Promise<void> {
    if (this.devTablePa < 0) return;
    this.ctrl = 0;
    this.writel(MMIO.CONTROL, 0);
    for (const l of ["event", "ppr"] as const) this.irqLines?.connectIrq(l, undefined);
    this.irqLines = undefined;
    await this.pprIrq.synchronize();
    let order = 0;
    while (4096 * 2 ** order < this.devTableEntries * DEV_TABLE_ENTRY_SIZE) order++;
    this.freePages(this.devTablePa, order);
    this.freePages(this.cmdBufPa, 1);
    this.freePages(this.evtBufPa, 1);
    this.freePages(this.pprLogPa, 1);
    this.freePages(this.cmdSemPa, 0);
    this.devTablePa = this.cmdBufPa = this.evtBufPa = this.pprLogPa = this.cmdSemPa = -1;
  }

  // --- commands -------------------------------------------------------------------------------------------------

  /**
   * Queue one command: wait for room (the head register is the hardware's progress), copy it at the tail, and
   * move the tail register.
   * @linux __iommu_queue_command_sync / iommu_queue_command
   */
  queueCommand(cmd: IommuCmd): void {
    if (this.cmdBufPa < 0) throw kerr("ENODEV", `${this.name}: command buffer not set up`);
    const r = this.ring;
    const head = () => this.readl(MMIO.CMD_HEAD) / 16;
    pollHwProgress(
      head(),
      head,
      () => r.freeSlots(this.cmdTail, head()) > 1,
      POLL_LIMIT,
      () => `${this.name}: command buffer full`,
    );
    const at = this.cmdBufPa + this.cmdTail * 16;
    for (let i = 0; i < 4; i++) this.machine.memory.write32(at + 4 * i, cmd[i]! >>> 0);
    this.cmdTail = r.advance(this.cmdTail, 1);
    this.commandsIssued++;
    this.writeq(MMIO.CMD_TAIL, this.cmdTail * 16, 0);
  }

  /**
   * COMPLETION_WAIT storing a new semaphore value, and wait for it: every command before it has completed.
   * ETIMEDOUT when the hardware stops making progress (a stopped command buffer).
   * @linux iommu_completion_wait + wait_on_sem
   */
  completionWait(): void {
    const val = ++this.cmdSemVal >>> 0;
    this.queueCommand(buildCompletionWait(this.cmdSemPa, val));
    const mem = this.machine.memory;
    pollHwProgress(
      this.readl(MMIO.CMD_HEAD),
      () => this.readl(MMIO.CMD_HEAD),
      () => mem.read32(this.cmdSemPa) >>> 0 === val,
      POLL_LIMIT,
      () => {
        this.machine.diag.printk("err", `${this.name}: completion-wait loop timed out`);
        return `${this.name}: completion wait timed out`;
      },
    );
  }

  /** INVALIDATE_DEVTAB_ENTRY (no wait). @linux iommu_flush_dte */
  flushDte(devid: number): void {
    this.queueCommand(buildInvDte(devid));
  }

  /** Invalidate every cache: INVALIDATE_IOMMU_ALL when supported, else every DTE. @linux amd_iommu_flush_all_caches */
  flushAllCaches(): void {
    if (this.efrLo & FEATURE.IA) this.queueCommand(buildInvAll());
    else for (let d = 0; d < this.devTableEntries; d++) this.flushDte(d);
    this.completionWait();
  }

  // --- device table ---------------------------------------------------------------------------------------------

  /** Address of the DTE of `devid`. */
  dteAddr(devid: number): number {
    if (devid >= this.devTableEntries)
      throw kerr("EINVAL", `${this.name}: DeviceID 0x${devid.toString(16)} beyond the device table`);
    return this.devTablePa + devid * DEV_TABLE_ENTRY_SIZE;
  }

  /**
   * Write the 256-bit DTE of `devid` in a safe order: each 128-bit half is one store (the cmpxchg128 Linux uses);
   * the upper half (interrupt and GPT fields) first when the entry gains guest translation or becomes valid, the
   * lower half (V, TV, Mode, root, DomainID, GCR3) first when it loses it, so the hardware never sees a lower half
   * that points into an upper half not written yet.
   * @linux update_dte256 (write_dte_upper128 / write_dte_lower128)
   */
  writeDte(devid: number, words: readonly number[]): void {
    const at = this.dteAddr(devid);
    const mem = this.machine.memory;
    const oldGv = (mem.read32(at + 4) >>> 23) & 1;
    const newGv = (words[1]! >>> 23) & 1;
    const half = (off: number) => {
      if (off === 0 && this.machine.mutant("amd:half-written-entry")) return; // test-only mutant: lower 128 never stored
      const b = new Uint8Array(16);
      const v = new DataView(b.buffer);
      for (let i = 0; i < 4; i++) v.setUint32(4 * i, words[off + i]! >>> 0, true);
      mem.writeBytes(at + off * 4, b);
    };
    if (newGv >= oldGv) {
      half(4);
      half(0);
    } else {
      half(0);
      half(4);
    }
  }

  /** The raw DTE words of `devid` (for tests and dumps). */
  readDte(devid: number): number[] {
    const at = this.dteAddr(devid);
    return Array.from({ length: 8 }, (_, i) => this.machine.memory.read32(at + 4 * i) >>> 0);
  }

  // --- interrupts and logs --------------------------------------------------------------------------------------

  private setupIrqs(): void {
    const line = this.machine.hw.get(this.pdev.name);
    if (!isIommuIrqLines<IrqName>(line)) return;
    this.irqLines = line;
    line.connectIrq("event", () => this.pollEvents());
    if (this.pprLogPa >= 0) line.connectIrq("ppr", () => this.pprIrq.raise());
  }

  /**
   * Read every event between head and tail, zero each consumed entry, move the head, clear the interrupt (and an
   * overflow, which Linux reports and clears).
   * @linux amd_iommu_poll_events / iommu_poll_events + iommu_print_event
   */
  pollEvents(): void {
    const w = new Uint32Array(4);
    const mem = this.machine.memory;
    let head = this.readl(MMIO.EVT_HEAD);
    const tail = this.readl(MMIO.EVT_TAIL);
    while (head !== tail) {
      const at = this.evtBufPa + head;
      for (let i = 0; i < 4; i++) w[i] = mem.read32(at + 4 * i);
      const ev = decodeEvent(w);
      mem.fill(at, 16, 0);
      this.events.push(ev);
      this.sink?.handleEvent(this, ev);
      head = (head + 16) % LOG_BYTES;
    }
    this.writeq(MMIO.EVT_HEAD, head, 0);
    const st = this.readl(MMIO.STATUS);
    if (st & STATUS.EVT_OVERFLOW) this.machine.diag.printk("err", `${this.name}: event log overflow`, this.pdev.name);
    this.writel(MMIO.STATUS, st & (STATUS.EVT_INT | STATUS.EVT_OVERFLOW));
  }

  /** Drain every pending page request now. @linux synchronize_irq + amd_iommu_poll_ppr_log */
  async drainPpr(): Promise<void> {
    await this.pprIrq.synchronize();
    if (this.pprLogPa >= 0) await this.pollPpr();
  }

  /** Read the PPR log and hand each request to the driver. @linux amd_iommu_poll_ppr_log */
  async pollPpr(): Promise<void> {
    const w = new Uint32Array(4);
    const mem = this.machine.memory;
    for (;;) {
      let head = this.readl(MMIO.PPR_HEAD);
      const tail = this.readl(MMIO.PPR_TAIL);
      this.writel(MMIO.STATUS, STATUS.PPR_INT);
      if (head === tail) return;
      const at = this.pprLogPa + head;
      for (let i = 0; i < 4; i++) w[i] = mem.read32(at + 4 * i);
      mem.fill(at, 16, 0);
      head = (head + 16) % LOG_BYTES;
      this.writeq(MMIO.PPR_HEAD, head, 0);
      const req = decodePpr(w);
      this.pprs.push(req);
      await this.sink?.handlePpr(this, req);
    }
  }
}
