/**
 * The three SMMUv3 queues as the driver drives them: circular buffers in memory with producer/consumer indexes
 * (index + wrap bit + overflow flag) mirrored in PROD/CONS registers; the command builder; and command issue with
 * CMD_SYNC completion and the queue-full wait.
 * @linux arm-smmu-v3.c: struct arm_smmu_queue / arm_smmu_ll_queue, queue_* helpers, arm_smmu_cmdq_build_cmd,
 * arm_smmu_cmdq_issue_cmdlist, arm_smmu_cmdq_poll_until_sync, arm_smmu_cmdq_skip_err
 */
import { HwRing, kerr, type PhysicalMemory, pollHwProgress } from "@iommu-sim/core";
import { CMD, CMD_VAL, CMDQ_OP, GERROR, get32, prep32, Q_REG, SMMU_REG } from "./regs.js";

const TWO_32 = 4294967296;

/** Register access the queues need (the SMMU's MMIO window). */
export interface SmmuRegs {
  readl(off: number): number;
  writel(off: number, v: number): void;
}

/**
 * One queue: memory, entry size, the driver's copy of PROD and CONS. The index arithmetic (index, wrap bit) is
 * core's {@link HwRing}; SMMUv3 adds the overflow flag above the wrap bit.
 * @linux struct arm_smmu_queue + struct arm_smmu_ll_queue
 */
export class ArmSmmuQueue {
  /** Driver's producer index (with wrap and overflow bits). @linux arm_smmu_ll_queue.prod */
  prod = 0;
  /** Driver's consumer index. @linux arm_smmu_ll_queue.cons */
  cons = 0;
  /** Words of one entry. */
  readonly entWords: number;
  readonly idxMask: number;
  readonly wrpBit: number;
  /** The ring's index arithmetic. */
  readonly ring: HwRing;

  constructor(
    readonly name: string,
    /** Physical base of the ring. @linux arm_smmu_queue.base_dma */
    readonly basePa: number,
    /** Page order of the ring's allocation. */
    readonly order: number,
    /** log2 entries. @linux arm_smmu_ll_queue.max_n_shift */
    readonly maxNShift: number,
    readonly entBytes: number,
    /** Register offsets of PROD and CONS. @linux arm_smmu_queue.prod_reg / cons_reg */
    readonly prodReg: number,
    readonly consReg: number,
  ) {
    this.entWords = entBytes >>> 2;
    this.ring = new HwRing(maxNShift, true);
    this.idxMask = this.ring.idxMask;
    this.wrpBit = this.ring.wrpBit;
  }

  /** @linux Q_IDX */
  idx(p: number): number {
    return this.ring.idx(p);
  }

  /** @linux Q_WRP */
  wrp(p: number): number {
    return this.ring.wrp(p);
  }

  /** Physical address of the entry at index `p`. @linux Q_ENT */
  entPa(p: number): number {
    return this.basePa + this.idx(p) * this.entBytes;
  }

  /** @linux queue_full */
  full(): boolean {
    return this.ring.isFull(this.prod, this.cons);
  }

  /** @linux queue_empty */
  empty(): boolean {
    return this.ring.isEmpty(this.prod, this.cons);
  }

  /** Free slots. @linux queue_has_space */
  space(): number {
    return this.ring.freeSlots(this.prod, this.cons);
  }

  /** `p` advanced by `n`, keeping the overflow flag. @linux queue_inc_prod_n */
  inc(p: number, n: number): number {
    return ((p & Q_REG.OVF) | this.ring.advance(p & (this.wrpBit | this.idxMask), n)) >>> 0;
  }

  /** Whether the entry at `idx` has been consumed by hardware CONS `cons`. @linux queue_consumed */
  consumed(cons: number, idx: number): boolean {
    return this.ring.consumed(this.prod, cons, idx);
  }
}

/**
 * A command before encoding; one object is reused per caller so the hot path allocates nothing.
 * @linux struct arm_smmu_cmdq_ent
 */
export interface CmdEnt {
  opcode: number;
  substreamValid: boolean;
  sid: number;
  ssid: number;
  leaf: boolean;
  /** CFGI_ALL range. */
  range: number;
  asid: number;
  vmid: number;
  num: number;
  scale: number;
  tg: number;
  ttl: number;
  addr: number;
  /** ATC_INV size (log2 of 4 KiB pages) and global bit. */
  atcSize: number;
  global: boolean;
  grpid: number;
  resp: number;
  stag: number;
}

/** A zeroed command. */
export function newCmdEnt(opcode = 0): CmdEnt {
  return {
    opcode,
    substreamValid: false,
    sid: 0,
    ssid: 0,
    leaf: false,
    range: 0,
    asid: 0,
    vmid: 0,
    num: 0,
    scale: 0,
    tg: 0,
    ttl: 0,
    addr: 0,
    atcSize: 0,
    global: false,
    grpid: 0,
    resp: 0,
    stag: 0,
  };
}

/**
 * Encode a command into four 32-bit words (dword0 lo/hi, dword1 lo/hi). Throws EINVAL for an unknown opcode
 * (Linux: -ENOENT and the command is dropped with a warning).
 * @linux arm_smmu_cmdq_build_cmd
 */
export function buildCmd(ent: CmdEnt, w: Uint32Array): void {
  const op = ent.opcode;
  let w0 = prep32(CMD.OP, op);
  let w1 = 0;
  let w2 = 0;
  let w3 = 0;
  const addrLo = (ent.addr % TWO_32) & 0xfffff000;
  const addrHi = Math.floor(ent.addr / TWO_32);
  switch (op) {
    case CMDQ_OP.TLBI_EL2_ALL:
    case CMDQ_OP.TLBI_NSNH_ALL:
      break;
    case CMDQ_OP.PREFETCH_CFG:
      w1 = ent.sid;
      break;
    case CMDQ_OP.CFGI_CD:
      w0 |= prep32(CMD.CFGI_SSID, ent.ssid);
      w1 = ent.sid;
      w2 = prep32(CMD.CFGI_LEAF, ent.leaf ? 1 : 0);
      break;
    case CMDQ_OP.CFGI_STE:
      w1 = ent.sid;
      w2 = prep32(CMD.CFGI_LEAF, ent.leaf ? 1 : 0);
      break;
    case CMDQ_OP.CFGI_CD_ALL:
      w1 = ent.sid;
      break;
    case CMDQ_OP.CFGI_ALL:
      // CFGI_STE_RANGE covering every StreamID.
      w2 = prep32(CMD.CFGI_RANGE, CMD_VAL.CFGI_ALL_RANGE);
      break;
    case CMDQ_OP.TLBI_NH_VA:
    case CMDQ_OP.TLBI_EL2_VA:
      if (op === CMDQ_OP.TLBI_NH_VA) w1 = prep32(CMD.TLBI_VMID, ent.vmid);
      w0 |= prep32(CMD.TLBI_NUM, ent.num) | prep32(CMD.TLBI_SCALE, ent.scale);
      w1 |= prep32(CMD.TLBI_ASID, ent.asid);
      w2 =
        prep32(CMD.TLBI_LEAF, ent.leaf ? 1 : 0) | prep32(CMD.TLBI_TTL, ent.ttl) | prep32(CMD.TLBI_TG, ent.tg) | addrLo;
      w3 = addrHi >>> 0;
      break;
    case CMDQ_OP.TLBI_S2_IPA:
      w0 |= prep32(CMD.TLBI_NUM, ent.num) | prep32(CMD.TLBI_SCALE, ent.scale);
      w1 = prep32(CMD.TLBI_VMID, ent.vmid);
      w2 =
        prep32(CMD.TLBI_LEAF, ent.leaf ? 1 : 0) | prep32(CMD.TLBI_TTL, ent.ttl) | prep32(CMD.TLBI_TG, ent.tg) | addrLo;
      w3 = addrHi & 0xfffff;
      break;
    case CMDQ_OP.TLBI_NH_ASID:
    case CMDQ_OP.TLBI_NH_ALL:
    case CMDQ_OP.TLBI_S12_VMALL:
      w1 = prep32(CMD.TLBI_VMID, ent.vmid) | (op === CMDQ_OP.TLBI_NH_ASID ? prep32(CMD.TLBI_ASID, ent.asid) : 0);
      break;
    case CMDQ_OP.TLBI_EL2_ASID:
      w1 = prep32(CMD.TLBI_ASID, ent.asid);
      break;
    case CMDQ_OP.ATC_INV:
      w0 |= prep32(CMD.SSV, ent.substreamValid ? 1 : 0) | prep32(CMD.ATC_GLOBAL, ent.global ? 1 : 0);
      w0 |= prep32(CMD.ATC_SSID, ent.ssid);
      w1 = ent.sid;
      w2 = prep32(CMD.ATC_SIZE, ent.atcSize) | addrLo;
      w3 = addrHi >>> 0;
      break;
    case CMDQ_OP.PRI_RESP:
      w0 |= prep32(CMD.SSV, ent.substreamValid ? 1 : 0) | prep32(CMD.PRI_SSID, ent.ssid);
      w1 = ent.sid;
      w2 = prep32(CMD.PRI_GRPID, ent.grpid) | prep32(CMD.PRI_RESP, ent.resp);
      break;
    case CMDQ_OP.RESUME:
      w0 |= prep32(CMD.RESUME_RESP, ent.resp);
      w1 = ent.sid;
      w2 = prep32(CMD.RESUME_STAG, ent.stag);
      break;
    case CMDQ_OP.CMD_SYNC:
      w0 |=
        prep32(CMD.SYNC_CS, CMD_VAL.SYNC_CS_SEV) |
        prep32(CMD.SYNC_MSH, CMD_VAL.SH_ISH) |
        prep32(CMD.SYNC_MSIATTR, CMD_VAL.MSIATTR_OIWB);
      break;
    default:
      throw kerr("EINVAL", `arm-smmu-v3: unknown command opcode 0x${op.toString(16)}`);
  }
  w[0] = w0 >>> 0;
  w[1] = w1 >>> 0;
  w[2] = w2 >>> 0;
  w[3] = w3 >>> 0;
}

/**
 * How many consecutive polls of CONS without progress the driver makes before giving up. Each CONS read is a slice
 * of time in which the SMMU makes progress (the model's `cmdqBatch`), so this bounds the wait on an SMMU that
 * stopped consuming rather than on a slow one.
 * @linux ARM_SMMU_POLL_TIMEOUT_US
 */
const POLL_LIMIT = 64;

/** Something that reports and acknowledges global errors (the SMMU device). */
export interface GerrorSink {
  /** Handle pending GERROR bits; returns true when something was handled. @linux arm_smmu_gerror_handler */
  handleGerror(): boolean;
  /** Record a WARN. */
  warn(message: string): void;
}

/**
 * The command queue: a ring plus the encoding scratch and the issue path. Single producer (the simulation has
 * one CPU running at a time), so the lock-free owner/reservation protocol of Linux reduces to: wait for space,
 * write the entries, publish PROD, and for a sync poll CONS until it passes the CMD_SYNC.
 * @linux struct arm_smmu_cmdq, arm_smmu_cmdq_issue_cmdlist
 */
export class ArmSmmuCmdq {
  private readonly words = new Uint32Array(4);
  private readonly syncEnt = newCmdEnt(CMDQ_OP.CMD_SYNC);
  /** Commands written so far (for tests and statistics). */
  issued = 0;

  constructor(
    readonly q: ArmSmmuQueue,
    private readonly regs: SmmuRegs,
    private readonly memory: PhysicalMemory,
    private readonly gerr: GerrorSink,
  ) {}

  private writeEntry(ent: CmdEnt): void {
    buildCmd(ent, this.words);
    const pa = this.q.entPa(this.q.prod);
    const w = this.words;
    this.memory.write32(pa, w[0]!);
    this.memory.write32(pa + 4, w[1]!);
    this.memory.write32(pa + 8, w[2]!);
    this.memory.write32(pa + 12, w[3]!);
    this.q.prod = this.q.inc(this.q.prod, 1);
    this.issued++;
  }

  /** Refresh CONS from the register, handling a command error the hardware reported. @linux queue_sync_cons_in */
  private syncConsIn(): void {
    const cons = this.regs.readl(this.q.consReg);
    this.q.cons = cons & (this.q.wrpBit | this.q.idxMask | Q_REG.OVF);
    if (get32(cons, Q_REG.CMDQ_CONS_ERR) !== 0 || this.gerrorPending()) this.gerr.handleGerror();
  }

  private gerrorPending(): boolean {
    const active = (this.regs.readl(SMMU_REG.GERROR) ^ this.regs.readl(SMMU_REG.GERRORN)) & GERROR.ERR_MASK;
    return (active & prep32(GERROR.CMDQ_ERR, 1)) !== 0;
  }

  /**
   * Wait until `n` slots are free: re-read CONS while the queue lacks space. A CONS that stays put for
   * {@link POLL_LIMIT} polls logs "CMDQ timeout" and fails with ETIMEDOUT (Linux logs and keeps spinning; the
   * simulation reports the stuck SMMU instead of hanging).
   * @linux arm_smmu_cmdq_issue_cmdlist's `while (!queue_has_space(&llq, n + sync))` around
   * arm_smmu_cmdq_poll_until_not_full
   */
  private waitSpace(n: number): void {
    pollHwProgress(
      this.q.cons,
      () => {
        this.syncConsIn();
        return this.q.cons;
      },
      () => this.q.space() >= n,
      POLL_LIMIT,
      () => {
        this.gerr.warn(
          `${this.q.name}: CMDQ timeout at prod 0x${this.q.prod.toString(16)} cons 0x${this.q.cons.toString(16)} (need ${n} slots)`,
        );
        return `${this.q.name}: command queue full`;
      },
    );
  }

  /**
   * Issue `count` commands from `ents` (and a CMD_SYNC after them when `sync`), then wait for the sync.
   * @linux arm_smmu_cmdq_issue_cmdlist
   */
  issue(ents: readonly CmdEnt[], count: number, sync: boolean): void {
    const cap = this.q.idxMask + 1;
    let i = 0;
    // Batches larger than the ring go in chunks, each waiting for room.
    while (i < count) {
      const n = Math.min(count - i, cap - 1);
      this.waitSpace(n + (sync && i + n === count ? 1 : 0));
      for (let k = 0; k < n; k++) this.writeEntry(ents[i + k]!);
      i += n;
      if (i < count) this.regs.writel(this.q.prodReg, this.q.prod);
    }
    let syncIdx = -1;
    if (sync) {
      this.waitSpace(1);
      syncIdx = this.q.prod;
      this.writeEntry(this.syncEnt);
    }
    this.regs.writel(this.q.prodReg, this.q.prod);
    if (sync) this.pollUntilSync(syncIdx);
  }

  /**
   * Issue `count` already-encoded commands (four 32-bit words each, as a guest built them and the vIOMMU rewrote
   * them), then a CMD_SYNC when `sync`, and wait for it.
   * @linux arm_smmu_cmdq_issue_cmdlist (with the u64 cmds of arm_vsmmu_cache_invalidate)
   */
  issueRaw(words: Uint32Array, count: number, sync: boolean): void {
    const cap = this.q.idxMask + 1;
    let i = 0;
    while (i < count) {
      const n = Math.min(count - i, cap - 1);
      this.waitSpace(n + (sync && i + n === count ? 1 : 0));
      for (let k = 0; k < n; k++) {
        const pa = this.q.entPa(this.q.prod);
        const at = 4 * (i + k);
        for (let j = 0; j < 4; j++) this.memory.write32(pa + 4 * j, words[at + j]!);
        this.q.prod = this.q.inc(this.q.prod, 1);
        this.issued++;
      }
      i += n;
      if (i < count) this.regs.writel(this.q.prodReg, this.q.prod);
    }
    let syncIdx = -1;
    if (sync) {
      this.waitSpace(1);
      syncIdx = this.q.prod;
      this.writeEntry(this.syncEnt);
    }
    this.regs.writel(this.q.prodReg, this.q.prod);
    if (sync) this.pollUntilSync(syncIdx);
  }

  /** Issue one command, optionally followed by a CMD_SYNC. @linux arm_smmu_cmdq_issue_cmd(_with_sync) */
  issueOne(ent: CmdEnt, sync: boolean): void {
    this.issue([ent], 1, sync);
  }

  /**
   * Wait until the hardware has consumed the CMD_SYNC at `syncIdx`; ETIMEDOUT after {@link POLL_LIMIT} polls
   * without progress.
   * @linux __arm_smmu_cmdq_poll_until_consumed
   */
  private pollUntilSync(syncIdx: number): void {
    let synced = false;
    pollHwProgress(
      this.q.cons,
      () => {
        this.syncConsIn();
        synced = this.q.consumed(this.q.cons, syncIdx);
        return this.q.cons;
      },
      () => synced,
      POLL_LIMIT,
      () => {
        this.gerr.warn(
          `${this.q.name}: CMD_SYNC timeout at 0x${syncIdx.toString(16)} [hwprod 0x${this.q.prod.toString(16)}, hwcons 0x${this.q.cons.toString(16)}]`,
        );
        return `${this.q.name}: CMD_SYNC timeout`;
      },
    );
  }

  /**
   * Skip past a command the hardware refused: rewrite it as a CMD_SYNC so consumption can resume.
   * @linux arm_smmu_cmdq_skip_err
   */
  skipErr(): string {
    const cons = this.regs.readl(this.q.consReg);
    const err = get32(cons, Q_REG.CMDQ_CONS_ERR);
    const pa = this.q.entPa(cons);
    const bad = `${this.memory.read32(pa + 4).toString(16)}_${this.memory.read32(pa).toString(16)}`;
    if (err === Q_REG.CERROR_ILL || err === Q_REG.CERROR_ABT || err === Q_REG.CERROR_ATC_INV_SYNC) {
      buildCmd(this.syncEnt, this.words);
      for (let k = 0; k < 4; k++) this.memory.write32(pa + 4 * k, this.words[k]!);
    }
    return `CMDQ error ${err} on command ${bad} at cons 0x${cons.toString(16)}`;
  }
}
