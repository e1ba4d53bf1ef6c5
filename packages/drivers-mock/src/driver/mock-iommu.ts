/**
 * One mock IOMMU as its driver sees it: the register window, the device table and fault queue it allocated, the
 * masters (probed devices) by stream ID, and the low-level programming helpers (context entries, invalidation
 * commands, page responses, the fault-queue thread). Everything reaches the hardware through MMIO registers and
 * memory; the layouts come from the spec tables of `../spec/fields.ts` (the driver's "header file").
 */
import {
  type Device,
  IOMMU_FAULT_PAGE_REQ,
  IOMMU_FAULT_PAGE_REQUEST,
  IOMMU_FAULT_PERM,
  IOMMU_FAULT_READ,
  IOMMU_FAULT_WRITE,
  type IommuCore,
  IommuDevice,
  type IommuDomain,
  type IopfFault,
  type IopfQueue,
  iommuReportDeviceFault,
  iopfQueueAddDevice,
  iopfQueueRemoveDevice,
  KernelError,
  kerr,
  type Machine,
  reportIommuFault,
  type Task,
} from "@iommu-sim/core";
import {
  BASE,
  CR,
  CTX,
  CTX_SIZE,
  FAULT,
  FAULT_RECORD_SIZE,
  FAULT_TYPE,
  fieldGet,
  fieldPrep,
  IDR1,
  INV_CMD,
  INV_OP,
  INV_TAG,
  PASID_DIRENT,
  PASID_LEAF_LG2,
  PRESP_INFO,
  PRESP_PASID,
  REG,
  type RegDef,
  wordOf,
} from "../spec/fields.js";
import { MOCK_DT_LOG2, MOCK_FQ_LOG2 } from "./consts.js";

const TWO_32 = 4294967296;
const PAGE = 4096;

/** Page order of a structure of `bytes`. */
function orderOf(bytes: number): number {
  let o = 0;
  while (PAGE << o < bytes) o++;
  return o;
}

/** The interrupt line a platform gives the driver (the model's `connectIrq`). */
interface IrqLine {
  connectIrq(handler: (() => void) | undefined): void;
}

function isIrqLine(x: unknown): x is IrqLine {
  return typeof (x as { connectIrq?: unknown } | undefined)?.connectIrq === "function";
}

/**
 * A context entry's contents, before encoding.
 * @linux the fields arm_smmu_make_cdtable_ste / make_s2_domain_ste compute, for the mock's entry
 */
export interface MockCtxConfig {
  mode: number;
  levels?: number;
  s1Levels?: number;
  did?: number;
  s1id?: number;
  ttb?: number;
  s1ttb?: number;
  dirty?: boolean;
  pri?: boolean;
  pasidBits?: number;
  pasidDir?: number;
}

/** Put a 4 KiB-aligned address in a lo/hi field pair of a context entry. */
function putAddr(w: Uint32Array, lo: typeof CTX.TTB_LO, hi: typeof CTX.TTB_HI, addr: number): void {
  const l = addr >>> 0;
  w[wordOf(lo)] = (w[wordOf(lo)]! | fieldPrep(lo, l >>> (lo.bit & 31))) >>> 0;
  w[wordOf(hi)] = (w[wordOf(hi)]! | fieldPrep(hi, (addr - l) / TWO_32)) >>> 0;
}

/**
 * Encode a context entry.
 * @linux arm_smmu_write_ste's target computation, for the mock layout
 */
export function encodeCtx(c: MockCtxConfig): Uint32Array {
  const w = new Uint32Array(CTX_SIZE >>> 2);
  w[0] =
    (fieldPrep(CTX.V, 1) |
      fieldPrep(CTX.MODE, c.mode) |
      fieldPrep(CTX.DIRTY, c.dirty ? 1 : 0) |
      fieldPrep(CTX.PRI, c.pri ? 1 : 0) |
      fieldPrep(CTX.PASID_EN, c.pasidDir !== undefined ? 1 : 0) |
      fieldPrep(CTX.LEVELS, c.levels ?? 0) |
      fieldPrep(CTX.S1_LEVELS, c.s1Levels ?? 0) |
      fieldPrep(CTX.PASID_BITS, c.pasidDir !== undefined ? (c.pasidBits ?? 0) : 0)) >>>
    0;
  w[wordOf(CTX.DID)] = (fieldPrep(CTX.DID, c.did ?? 0) | fieldPrep(CTX.S1ID, c.s1id ?? 0)) >>> 0;
  if (c.ttb !== undefined) putAddr(w, CTX.TTB_LO, CTX.TTB_HI, c.ttb);
  if (c.s1ttb !== undefined) putAddr(w, CTX.S1TTB_LO, CTX.S1TTB_HI, c.s1ttb);
  if (c.pasidDir !== undefined) putAddr(w, CTX.PASID_DIR_LO, CTX.PASID_DIR_HI, c.pasidDir);
  return w;
}

/**
 * A translation fault the driver read from the fault queue.
 * @linux the event record arm_smmu_handle_evt decodes (the selftest reports mock faults as vEVENTs)
 */
export interface MockFaultEvent {
  device: string | undefined;
  requesterId: number;
  pasid: number;
  iova: number;
  code: number;
  write: boolean;
}

/**
 * Per-device driver state.
 * @linux struct mock_dev (selftest.c) / struct arm_smmu_master
 */
export class MockMaster {
  /** The domain attached to the RID, as last programmed. */
  domain: IommuDomain | undefined = undefined;
  /** Domains attached at PASIDs. */
  readonly pasids = new Map<number, IommuDomain>();
  /** PASID directory PA and order, allocated on the first PASID attach. */
  pasidDir = -1;
  pasidDirOrder = 0;
  /** PASID leaf tables by directory index. */
  readonly pasidLeaves = new Map<number, number>();
  /** Attachments with a fault handler (IOPF enabled while > 0). @linux mock_dev.iopf_refcount */
  iopfRefs = 0;
  /** The next set_dev_pasid of IOMMU_TEST_PASID_RESERVED fails. @linux mock_dev.pasid_1024_fake_error */
  pasidReservedFakeError = false;

  constructor(
    readonly dev: Device,
    readonly iommu: MockIommu,
    /** Stream IDs from the fwspec. */
    readonly sids: readonly number[],
    /** MOCK_FLAGS_DEVICE_* of the device. @linux mock_dev.flags */
    readonly flags: number,
    /** PASID width the device and the IOMMU both support (0: none). */
    readonly pasidBits: number,
  ) {}
}

/**
 * The mock IOMMU instance.
 * @linux struct mock_iommu_device (selftest.c), shaped like struct arm_smmu_device
 */
export class MockIommu extends IommuDevice {
  readonly machine: Machine;
  readonly core: IommuCore;
  readonly pdev: Device;
  /** Physical base of the register window. */
  readonly mmioBase: number;
  /** PASID width advertised by IDR1. */
  readonly pasidBits: number;
  readonly supportsNesting: boolean;
  readonly supportsDirty: boolean;
  readonly supportsPri: boolean;
  /** Device table PA (-1 until allocated). */
  dtPa = -1;
  /** Fault queue PA (-1 until allocated). */
  fqPa = -1;
  /** Masters by stream ID. */
  readonly masters = new Map<number, MockMaster>();
  /** The IOPF queue of this instance. @linux mock_iommu_iopf_queue */
  iopfQueue: IopfQueue | undefined = undefined;
  /** Translation faults read from the fault queue, oldest first. */
  readonly events: MockFaultEvent[] = [];
  private irqLine: IrqLine | undefined;
  private thread: Task<void> | undefined;

  constructor(core: IommuCore, pdev: Device) {
    const mmio = pdev.resources.find((r) => r.name === "mmio");
    if (!mmio) throw kerr("ENODEV", `${pdev.name}: no MMIO resource`);
    const machine = core.machine;
    const idr1 = machine.mmio.read32(mmio.start + REG.IDR1.offset);
    const pasidBits = fieldGet(idr1, IDR1.PASID_BITS);
    super({ dev: pdev, name: pdev.name, maxPasids: pasidBits > 0 ? 2 ** pasidBits : 0 });
    this.machine = machine;
    this.core = core;
    this.pdev = pdev;
    this.mmioBase = mmio.start;
    this.pasidBits = pasidBits;
    this.supportsNesting = fieldGet(idr1, IDR1.NESTING) !== 0;
    this.supportsDirty = fieldGet(idr1, IDR1.DIRTY) !== 0;
    this.supportsPri = fieldGet(idr1, IDR1.PRI) !== 0;
  }

  /** @linux readl_relaxed(smmu->base + reg) */
  readl(reg: RegDef): number {
    return this.machine.mmio.read32(this.mmioBase + reg.offset);
  }

  /** @linux writel_relaxed(val, smmu->base + reg) */
  writel(reg: RegDef, value: number): void {
    this.machine.mmio.write32(this.mmioBase + reg.offset, value >>> 0);
  }

  /** Number of stream IDs the device table covers. */
  get numSids(): number {
    return 1 << MOCK_DT_LOG2;
  }

  /**
   * Allocate the device table and the fault queue, program the base registers, connect the interrupt and enable
   * translation. On failure everything allocated is freed and the error thrown.
   * @linux arm_smmu_init_structures + arm_smmu_device_reset
   */
  hwInit(): void {
    const pages = this.machine.pages;
    const dtOrder = orderOf(this.numSids * CTX_SIZE);
    const fqOrder = orderOf((1 << MOCK_FQ_LOG2) * FAULT_RECORD_SIZE);
    this.dtPa = pages.allocPages(dtOrder, "mock_iommu_dt");
    try {
      this.fqPa = pages.allocPages(fqOrder, "mock_iommu_fq");
    } catch (e) {
      pages.freePages(this.dtPa, dtOrder);
      this.dtPa = -1;
      throw e;
    }
    this.writel(REG.CR, 0);
    this.writel(REG.DT_BASE_LO, (this.dtPa >>> 0) | fieldPrep(BASE.LOG2SIZE, MOCK_DT_LOG2));
    this.writel(REG.DT_BASE_HI, fieldPrep(BASE.ADDR_HI, Math.floor(this.dtPa / TWO_32)));
    this.writel(REG.FQ_BASE_LO, (this.fqPa >>> 0) | fieldPrep(BASE.LOG2SIZE, MOCK_FQ_LOG2));
    this.writel(REG.FQ_BASE_HI, fieldPrep(BASE.ADDR_HI, Math.floor(this.fqPa / TWO_32)));
    this.writel(REG.FQ_HEAD, 0);
    const line = this.machine.hw.get(this.pdev.name);
    if (isIrqLine(line)) {
      this.irqLine = line;
      line.connectIrq(() => this.irq());
    }
    this.writel(REG.CR, fieldPrep(CR.EN, 1) | fieldPrep(CR.FQEN, 1) | fieldPrep(CR.FQIRQEN, 1));
    this.invalidate(INV_OP.ALL);
  }

  /**
   * Disable translation, disconnect the interrupt, wait for the fault thread, and free the structures.
   * @linux arm_smmu_device_disable + the devm frees of arm_smmu_device_remove
   */
  async hwFini(): Promise<void> {
    this.writel(REG.CR, 0);
    this.irqLine?.connectIrq(undefined);
    this.irqLine = undefined;
    if (this.thread) await this.thread.join();
    const pages = this.machine.pages;
    if (this.fqPa >= 0) pages.freePages(this.fqPa, orderOf((1 << MOCK_FQ_LOG2) * FAULT_RECORD_SIZE));
    if (this.dtPa >= 0) pages.freePages(this.dtPa, orderOf(this.numSids * CTX_SIZE));
    this.fqPa = -1;
    this.dtPa = -1;
  }

  // --- invalidation -------------------------------------------------------------------------------------------

  /**
   * Run one invalidation command (synchronous on this hardware).
   * @linux arm_smmu_cmdq_issue_cmd_with_sync
   */
  invalidate(
    op: number,
    o: { did?: number; s1id?: number; sid?: number; pasid?: number; first?: number; last?: number } = {},
  ): void {
    this.writel(REG.INV_TAG, fieldPrep(INV_TAG.DID, o.did ?? 0) | fieldPrep(INV_TAG.S1ID, o.s1id ?? 0));
    if (o.sid !== undefined) this.writel(REG.INV_RID, o.sid);
    if (o.pasid !== undefined) this.writel(REG.INV_PASID, o.pasid);
    if (op === INV_OP.RANGE) {
      const first = o.first ?? 0;
      const last = o.last ?? 0;
      this.writel(REG.INV_ADDR_LO, first >>> 0);
      this.writel(REG.INV_ADDR_HI, Math.floor(first / TWO_32));
      this.writel(REG.INV_LAST_LO, last >>> 0);
      this.writel(REG.INV_LAST_HI, Math.floor(last / TWO_32));
    }
    this.writel(REG.INV_CMD, fieldPrep(INV_CMD.OP, op));
  }

  // --- context entries ----------------------------------------------------------------------------------------

  /** Write an encoded entry at `pa`, valid word last, as the hardware may fetch it any time. */
  private writeEntry(pa: number, w: Uint32Array): void {
    const mem = this.machine.memory;
    // Test-only mutant "mock:half-written-entry": the first half of the entry (mode, table root) is never stored.
    const stop = this.machine.mutant("mock:half-written-entry") ? w.length >>> 1 : 0;
    for (let i = w.length - 1; i >= stop; i--) mem.write32(pa + 4 * i, w[i]!);
  }

  /**
   * Write the device-table entry of `sid` and invalidate its cached configuration.
   * @linux arm_smmu_write_ste + CFGI_STE
   */
  writeDte(sid: number, c: MockCtxConfig | undefined): void {
    const pa = this.dtPa + sid * CTX_SIZE;
    if (c === undefined) this.writeEntry(pa, new Uint32Array(CTX_SIZE >>> 2));
    else this.writeEntry(pa, encodeCtx(c));
    this.invalidate(INV_OP.DEVICE, { sid });
  }

  /**
   * Make sure `master` has a PASID directory, allocating it. ENOMEM from the page allocator.
   * @linux intel_pasid_alloc_table / arm_smmu_alloc_cd_tables
   */
  ensurePasidDir(master: MockMaster): void {
    if (master.pasidDir >= 0) return;
    const entries = 2 ** Math.max(0, master.pasidBits - PASID_LEAF_LG2);
    master.pasidDirOrder = orderOf(entries * 8);
    master.pasidDir = this.machine.pages.allocPages(master.pasidDirOrder, "mock_pasid_dir");
  }

  /**
   * Write the PASID entry of `pasid` (allocating its leaf table; `undefined` clears it) and invalidate it.
   * @linux intel_pasid_setup_* + pasid_cache_invalidation / arm_smmu_write_cd_entry
   */
  writePasidEntry(master: MockMaster, pasid: number, c: MockCtxConfig | undefined): void {
    const mem = this.machine.memory;
    const di = pasid >>> PASID_LEAF_LG2;
    let leaf = master.pasidLeaves.get(di);
    if (leaf === undefined) {
      if (c === undefined) return;
      leaf = this.machine.pages.allocPages(0, "mock_pasid_leaf");
      master.pasidLeaves.set(di, leaf);
      const de = master.pasidDir + di * 8;
      mem.write32(de + 4, fieldPrep(PASID_DIRENT.ADDR_HI, Math.floor(leaf / TWO_32)));
      mem.write32(de, (fieldPrep(PASID_DIRENT.V, 1) | (leaf >>> 0)) >>> 0);
    }
    const pa = leaf + (pasid & ((1 << PASID_LEAF_LG2) - 1)) * CTX_SIZE;
    this.writeEntry(pa, c === undefined ? new Uint32Array(CTX_SIZE >>> 2) : encodeCtx(c));
    for (const sid of master.sids) this.invalidate(INV_OP.PASID, { sid, pasid });
  }

  /** Free a master's PASID structures. */
  freePasidTables(master: MockMaster): void {
    const pages = this.machine.pages;
    for (const leaf of master.pasidLeaves.values()) pages.freePages(leaf, 0);
    master.pasidLeaves.clear();
    if (master.pasidDir >= 0) pages.freePages(master.pasidDir, master.pasidDirOrder);
    master.pasidDir = -1;
  }

  // --- IOPF ---------------------------------------------------------------------------------------------------

  /**
   * Enable page requests of `master` for an attachment with a fault handler (refcounted).
   * @linux mock_dev_enable_iopf
   */
  async enableIopf(master: MockMaster, domain: IommuDomain): Promise<void> {
    if (domain.iopfHandler === undefined) return;
    if (!this.iopfQueue || !this.supportsPri) throw kerr("ENODEV", `${this.name}: no IOPF queue`);
    if (master.iopfRefs > 0) {
      master.iopfRefs++;
      return;
    }
    await iopfQueueAddDevice(this.iopfQueue, master.dev);
    master.iopfRefs = 1;
  }

  /**
   * Drop an attachment's page-request reference; the last one removes the device from the IOPF queue.
   * @linux mock_dev_disable_iopf
   */
  async disableIopf(master: MockMaster, domain: IommuDomain | undefined): Promise<void> {
    if (domain?.iopfHandler === undefined || master.iopfRefs === 0) return;
    if (--master.iopfRefs > 0) return;
    await this.drainFaultQueue();
    if (this.iopfQueue) await iopfQueueRemoveDevice(this.iopfQueue, master.dev);
  }

  /**
   * Send a page response to a device.
   * @linux the PRI response command of arm_smmu_page_response (CMDQ_OP_PRI_RESP)
   */
  pageResponse(sid: number, pasid: number, grpid: number, code: number): void {
    this.writel(REG.PRESP_RID, sid);
    this.writel(REG.PRESP_PASID, pasid >= 0 ? fieldPrep(PRESP_PASID.PV, 1) | fieldPrep(PRESP_PASID.PASID, pasid) : 0);
    this.writel(REG.PRESP_INFO, fieldPrep(PRESP_INFO.PRGI, grpid) | fieldPrep(PRESP_INFO.CODE, code));
    this.writel(REG.PRESP_SEND, 1);
  }

  // --- fault queue --------------------------------------------------------------------------------------------

  /**
   * The hard IRQ handler: wake the fault thread (atomic context: it only spawns the thread).
   * @linux the primary handler of request_threaded_irq (IRQ_WAKE_THREAD)
   */
  private irq(): void {
    if (this.thread !== undefined) return;
    this.thread = this.machine.scheduler.spawn(`irq/${this.name}-fq`, () => this.faultThread());
  }

  /**
   * Wait until the fault thread has consumed every queued record.
   * @linux synchronize_irq
   */
  async drainFaultQueue(): Promise<void> {
    while (this.thread !== undefined) await this.thread.join();
    if (this.fqPa >= 0 && this.readl(REG.FQ_HEAD) !== this.readl(REG.FQ_TAIL)) await this.faultThread();
  }

  /**
   * The threaded handler: consume records from head to tail; report page requests to io-pgfault and translation
   * faults to the attached domain's handler.
   * @linux arm_smmu_evtq_thread / arm_smmu_priq_thread
   */
  private async faultThread(): Promise<void> {
    try {
      const n = 1 << MOCK_FQ_LOG2;
      const mem = this.machine.memory;
      for (;;) {
        const head = this.readl(REG.FQ_HEAD);
        if (this.fqPa < 0 || head === this.readl(REG.FQ_TAIL)) break;
        const pa = this.fqPa + head * FAULT_RECORD_SIZE;
        const w0 = mem.read32(pa);
        const rid = mem.read32(pa + 4);
        const pv = fieldGet(w0, FAULT.PV) !== 0;
        const pasid = pv ? fieldGet(mem.read32(pa + 8), FAULT.PASID) : -1;
        const prgi = fieldGet(mem.read32(pa + 12), FAULT.PRGI);
        const addr = mem.read32(pa + 16) + fieldGet(mem.read32(pa + 20), FAULT.ADDR_HI) * TWO_32;
        this.writel(REG.FQ_HEAD, (head + 1) & (n - 1));
        const master = this.masters.get(rid);
        if (fieldGet(w0, FAULT.TYPE) === FAULT_TYPE.PAGE_REQUEST) {
          await this.handlePageRequest(master, rid, w0, pasid, prgi, addr);
        } else {
          const write = fieldGet(w0, FAULT.WRITE) !== 0;
          this.events.push({
            device: master?.dev.name,
            requesterId: rid,
            pasid,
            iova: addr,
            code: fieldGet(w0, FAULT.CODE),
            write,
          });
          const domain = master ? (pasid >= 0 ? master.pasids.get(pasid) : master.domain) : undefined;
          if (master && domain)
            reportIommuFault(domain, master.dev, addr, write ? IOMMU_FAULT_WRITE : IOMMU_FAULT_READ);
        }
      }
    } finally {
      this.thread = undefined;
    }
  }

  private async handlePageRequest(
    master: MockMaster | undefined,
    rid: number,
    w0: number,
    pasid: number,
    prgi: number,
    addr: number,
  ): Promise<void> {
    const last = fieldGet(w0, FAULT.LAST) !== 0;
    if (!master || master.iopfRefs === 0) {
      if (last) this.pageResponse(rid, pasid, prgi, 1);
      return;
    }
    let perm = 0;
    if (fieldGet(w0, FAULT.READ)) perm |= IOMMU_FAULT_PERM.READ;
    if (fieldGet(w0, FAULT.WRITE)) perm |= IOMMU_FAULT_PERM.WRITE;
    if (fieldGet(w0, FAULT.EXEC)) perm |= IOMMU_FAULT_PERM.EXEC;
    if (fieldGet(w0, FAULT.PRIV)) perm |= IOMMU_FAULT_PERM.PRIV;
    let flags = 0;
    if (pasid >= 0) flags |= IOMMU_FAULT_PAGE_REQUEST.PASID_VALID | IOMMU_FAULT_PAGE_REQUEST.RESPONSE_NEEDS_PASID;
    if (last) flags |= IOMMU_FAULT_PAGE_REQUEST.LAST_PAGE;
    const evt: IopfFault = {
      fault: { type: IOMMU_FAULT_PAGE_REQ, prm: { flags, pasid: pasid >= 0 ? pasid : 0, grpid: prgi, perm, addr } },
    };
    try {
      await iommuReportDeviceFault(master.dev, evt);
    } catch (e) {
      // Already answered by the core (no handler); nothing else to do, as the kernel only logs it.
      if (!(e instanceof KernelError)) throw e;
    }
  }
}
