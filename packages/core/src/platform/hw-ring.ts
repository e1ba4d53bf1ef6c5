/**
 * The circular queues IOMMU drivers and hardware share in memory (SMMUv3 command/event/PRI queues, VT-d
 * invalidation and page-request queues, AMD command buffer and logs): index arithmetic on a power-of-two ring, and
 * the driver's bounded poll for hardware progress.
 *
 * Two conventions exist. With a wrap bit (SMMUv3), an index carries one extra bit above the entry index that flips
 * on every lap, so a ring can be completely full. Without one (VT-d, AMD), head and tail are plain indexes and one
 * slot stays empty: head === tail means empty, tail + 1 === head means full.
 * @linux arm-smmu-v3.c queue_* helpers (Q_IDX, Q_WRP, queue_full, queue_has_space, queue_inc_prod_n); dmar.c
 * qi_submit_sync's free_head / free_tail / free_cnt; amd iommu.c's CMD_BUFFER head/tail
 */
import { kerr } from "../kernel/errno.js";

/**
 * Index arithmetic of one ring of `2^maxNShift` entries, with or without a wrap bit.
 * @linux struct arm_smmu_ll_queue (wrap-bit rings); struct q_inval's free_head/free_tail (rings without)
 */
export class HwRing {
  /** Mask of the entry index. */
  readonly idxMask: number;
  /** The wrap bit (0 when the ring has none). */
  readonly wrpBit: number;
  /** Number of entries. */
  readonly size: number;

  constructor(
    /** log2 entries. @linux arm_smmu_ll_queue.max_n_shift */
    readonly maxNShift: number,
    /** Whether indexes carry a wrap bit. */
    readonly wrap: boolean,
  ) {
    this.size = 2 ** maxNShift;
    this.idxMask = this.size - 1;
    this.wrpBit = wrap ? this.size : 0;
  }

  /** Entry index of `p`. @linux Q_IDX */
  idx(p: number): number {
    return p & this.idxMask;
  }

  /** Wrap bit of `p` (0 without wrap bits). @linux Q_WRP */
  wrp(p: number): number {
    return p & this.wrpBit;
  }

  /** Whether a ring with producer `prod` and consumer `cons` is full. @linux queue_full */
  isFull(prod: number, cons: number): boolean {
    if (this.wrap) return this.idx(prod) === this.idx(cons) && this.wrp(prod) !== this.wrp(cons);
    return this.idx(prod + 1) === this.idx(cons);
  }

  /** Whether the ring is empty. @linux queue_empty */
  isEmpty(prod: number, cons: number): boolean {
    return this.idx(prod) === this.idx(cons) && this.wrp(prod) === this.wrp(cons);
  }

  /** Entries the producer may still add. @linux queue_has_space / qi->free_cnt */
  freeSlots(prod: number, cons: number): number {
    const p = this.idx(prod);
    const c = this.idx(cons);
    if (this.wrap) return this.wrp(prod) === this.wrp(cons) ? this.size - (p - c) : c - p;
    return this.size - 1 - ((p - c + this.size) & this.idxMask);
  }

  /** Entries waiting for the consumer. */
  used(prod: number, cons: number): number {
    return this.wrap
      ? this.size - this.freeSlots(prod, cons)
      : (this.idx(prod) - this.idx(cons) + this.size) & this.idxMask;
  }

  /** `p` advanced by `n` (index and wrap bit; bits above them are the caller's). @linux queue_inc_prod_n */
  advance(p: number, n: number): number {
    const m = this.wrpBit | this.idxMask;
    return (p & ~m) | ((p + n) & m);
  }

  /** Whether the entry at `idx` has been consumed once the consumer index is `cons`. @linux queue_consumed */
  consumed(prod: number, cons: number, idx: number): boolean {
    if (this.wrap) {
      return (
        (this.wrp(cons) === this.wrp(idx) && this.idx(cons) > this.idx(idx)) ||
        (this.wrp(cons) !== this.wrp(idx) && this.idx(cons) <= this.idx(idx))
      );
    }
    // Without a wrap bit: consumed when idx is no longer in [cons, prod).
    const i = this.idx(idx);
    const c = this.idx(cons);
    const pr = this.idx(prod);
    return c <= pr ? !(i >= c && i < pr) : !(i >= c || i < pr);
  }
}

/**
 * Poll the hardware until `done()`: `poll()` re-reads its progress register (and, in the simulation, gives it a
 * slice of time) and returns the observed progress value, compared with the previous one (`from` before the first
 * poll). Gives up with ETIMEDOUT after `limit` consecutive polls
 * that saw no progress, calling `onTimeout` first (the driver logs or warns there). A slow unit is waited for; a
 * stopped one is reported instead of hanging.
 * @linux readl_relaxed_poll_timeout-style loops: arm_smmu_cmdq_poll_until_not_full / _until_consumed, qi_submit_sync's
 * wait on the wait descriptor's status, the AMD wait_on_sem loop
 */
export function pollHwProgress(
  from: number,
  poll: () => number,
  done: () => boolean,
  limit: number,
  onTimeout: () => string,
): void {
  let idle = 0;
  let last = from;
  while (!done()) {
    const now = poll();
    if (done()) return;
    if (now !== last) {
      last = now;
      idle = 0;
    } else if (++idle >= limit) {
      throw kerr("ETIMEDOUT", onTimeout());
    }
  }
}
