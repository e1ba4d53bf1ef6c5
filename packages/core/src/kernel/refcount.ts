import type { Diagnostics } from "./diagnostics.js";

/**
 * The value a misused `refcount_t` is pinned at: INT_MIN / 2 as a signed 32-bit int (0xc0000000). Far from both
 * zero and overflow, so a saturated counter never reaches zero again and its object is leaked, not freed.
 * @linux REFCOUNT_SATURATED
 */
export const REFCOUNT_SATURATED = -0x40000000;

/**
 * The largest value a well-behaved counter may hold.
 * @linux REFCOUNT_MAX
 */
export const REFCOUNT_MAX = 0x7fffffff;

/**
 * Why a refcount saturated; each maps to the kernel's message.
 * @linux enum refcount_saturation_type
 */
export type RefcountSaturation = "add-not-zero-ovf" | "add-ovf" | "add-uaf" | "sub-uaf" | "dec-leak";

/**
 * The kernel's text for each saturation type.
 * @linux refcount_warn_saturate
 */
export const REFCOUNT_MESSAGES: Readonly<Record<RefcountSaturation, string>> = {
  "add-not-zero-ovf": "refcount_t: saturated; leaking memory.",
  "add-ovf": "refcount_t: saturated; leaking memory.",
  "add-uaf": "refcount_t: addition on 0; use-after-free.",
  "sub-uaf": "refcount_t: underflow; use-after-free.",
  "dec-leak": "refcount_t: decrement hit 0; leaking memory.",
};

/**
 * A saturating reference counter with the exact checks of `refcount_t`: addition on zero, underflow and overflow
 * pin the counter at {@link REFCOUNT_SATURATED} and record a `refcount` diagnostic whose culprit is the counter's
 * name. Unlike the kernel's `WARN_ONCE`, every event is recorded, so each misused object is named. All operations
 * are synchronous (atomic context).
 * @linux refcount_t (include/linux/refcount.h, lib/refcount.c)
 */
export class Refcount {
  private refs: number;

  /**
   * @param diag where misuse is reported.
   * @param name names the counter (and its object) in diagnostics.
   * @param initial the starting count.
   * @linux REFCOUNT_INIT
   */
  constructor(
    private readonly diag: Diagnostics,
    readonly name: string,
    initial = 1,
  ) {
    this.refs = initial | 0;
  }

  /**
   * Set the counter, without any check.
   * @linux refcount_set
   */
  set(n: number): void {
    this.refs = n | 0;
  }

  /**
   * The current value, as a signed int (negative once saturated).
   * @linux refcount_read
   */
  read(): number {
    return this.refs;
  }

  /** Whether misuse has pinned the counter at {@link REFCOUNT_SATURATED} (any negative value). */
  get saturated(): boolean {
    return this.refs < 0;
  }

  /**
   * Add `n` unless the counter is zero; returns whether it was non-zero. Overflow saturates.
   * @linux refcount_add_not_zero
   */
  addNotZero(n: number): boolean {
    const old = this.refs;
    if (old === 0) return false;
    const sum = (old + n) | 0;
    this.refs = sum;
    if (old < 0 || sum < 0) this.warnSaturate("add-not-zero-ovf");
    return true;
  }

  /**
   * Take a reference unless the counter is zero (the object is being freed); returns whether it was taken.
   * @linux refcount_inc_not_zero
   */
  incNotZero(): boolean {
    return this.addNotZero(1);
  }

  /**
   * Add `n`. Adding to zero is a use-after-free; overflow saturates.
   * @linux refcount_add
   */
  add(n: number): void {
    const old = this.refs;
    const sum = (old + n) | 0;
    this.refs = sum;
    if (old === 0) this.warnSaturate("add-uaf");
    else if (old < 0 || sum < 0) this.warnSaturate("add-ovf");
  }

  /**
   * Take a reference. Incrementing from zero is a use-after-free; overflow saturates.
   * @linux refcount_inc
   */
  inc(): void {
    this.add(1);
  }

  /**
   * Subtract `n`; returns true when the counter hit exactly zero (the caller frees). Underflow saturates.
   * @linux refcount_sub_and_test
   */
  subAndTest(n: number): boolean {
    const old = this.refs;
    const res = (old - n) | 0;
    this.refs = res;
    if (old > 0 && old === n) return true;
    if (old <= 0 || res < 0) this.warnSaturate("sub-uaf");
    return false;
  }

  /**
   * Drop a reference; returns true when it was the last one (the caller frees). Underflow saturates.
   * @linux refcount_dec_and_test
   */
  decAndTest(): boolean {
    return this.subAndTest(1);
  }

  /**
   * Drop a reference that is known not to be the last. Reaching zero here means the object is leaked
   * ("decrement hit 0"), and the counter saturates.
   * @linux refcount_dec
   */
  dec(): void {
    const old = this.refs;
    this.refs = (old - 1) | 0;
    if (old <= 1) this.warnSaturate("dec-leak");
  }

  /**
   * Drop the reference only when it is the last one (1 -> 0); returns whether it did. Never warns.
   * @linux refcount_dec_if_one
   */
  decIfOne(): boolean {
    if (this.refs !== 1) return false;
    this.refs = 0;
    return true;
  }

  /**
   * Drop a reference unless it is the last one; returns false when the count was 1 (left unchanged).
   * @linux refcount_dec_not_one
   */
  decNotOne(): boolean {
    const old = this.refs;
    if (old === REFCOUNT_SATURATED) return true;
    if (old === 1) return false;
    if (old === 0) {
      // The kernel warns and leaves the counter alone here (an unsigned wrap it refuses to store).
      this.diag.report("refcount", REFCOUNT_MESSAGES["sub-uaf"], { culprit: this.name, skipFrames: 1 });
      return true;
    }
    this.refs = (old - 1) | 0;
    return true;
  }

  /**
   * Pin the counter at {@link REFCOUNT_SATURATED} and record the kernel's message with this counter as culprit.
   * @linux refcount_warn_saturate
   */
  private warnSaturate(t: RefcountSaturation): void {
    this.refs = REFCOUNT_SATURATED;
    this.diag.report("refcount", REFCOUNT_MESSAGES[t], { culprit: this.name, skipFrames: 1 });
  }
}
