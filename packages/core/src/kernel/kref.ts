import type { Diagnostics } from "./diagnostics.js";
import type { RefTracker, TrackedRef } from "./ref-tracker.js";
import { Refcount } from "./refcount.js";

/**
 * Options of {@link Kref}.
 * @linux kref_init
 */
export interface KrefOptions {
  /** Holder tag of the initial reference (default `"owner"`). */
  initialHolder?: string;
}

/**
 * A reference count with a release callback, on top of {@link Refcount} (so misuse saturates and is reported).
 * Each reference carries a holder tag, counted per holder, so a leak report names who still holds the object and
 * a put by a holder that holds nothing is reported as an unbalanced put. The initial reference belongs to the
 * holder `"owner"` unless {@link KrefOptions.initialHolder} says otherwise.
 * @linux struct kref (include/linux/kref.h)
 */
export class Kref implements TrackedRef {
  private readonly refs: Refcount;
  private readonly held = new Map<string, number>();

  /**
   * @param diag where misuse is reported.
   * @param name names the object in diagnostics and leak reports (e.g. "device nic0").
   * @param release called once, when the last reference is put.
   * @param tracker the machine's tracker; the object is tracked while its count is non-zero.
   * @linux kref_init
   */
  constructor(
    private readonly diag: Diagnostics,
    readonly name: string,
    private readonly release: () => void,
    private readonly tracker?: RefTracker,
    opts: KrefOptions = {},
  ) {
    this.refs = new Refcount(diag, name, 1);
    this.held.set(opts.initialHolder ?? "owner", 1);
    tracker?.track(this);
  }

  /**
   * Take a reference for `holder`. Getting a released object is reported as addition on 0.
   * @linux kref_get
   */
  get(holder = "anon"): void {
    this.refs.inc();
    this.hold(holder);
    this.retrack();
  }

  /**
   * Take a reference for `holder` unless the object is already being released; returns whether it did.
   * @linux kref_get_unless_zero
   */
  getUnlessZero(holder = "anon"): boolean {
    if (!this.refs.incNotZero()) return false;
    this.hold(holder);
    this.retrack();
    return true;
  }

  /**
   * Drop `holder`'s reference; calls `release` and returns true when it was the last one. A put by a holder that
   * holds no reference is reported (kind `refcount`, culprit the holder) and then carried out as the kernel would.
   * @linux kref_put
   */
  put(holder = "anon"): boolean {
    const mine = this.held.get(holder) ?? 0;
    if (mine === 0) {
      this.diag.report("refcount", `unbalanced put of ${this.name} by ${holder}, which holds no reference`, {
        culprit: holder,
        skipFrames: 1,
      });
    } else if (mine === 1) {
      this.held.delete(holder);
    } else {
      this.held.set(holder, mine - 1);
    }
    if (!this.refs.decAndTest()) {
      this.retrack();
      return false;
    }
    this.held.clear();
    this.tracker?.untrack(this);
    this.release();
    return true;
  }

  /**
   * The current count.
   * @linux kref_read
   */
  read(): number {
    return this.refs.read();
  }

  /** References per holder tag, in the order holders first took one. */
  holders(): ReadonlyMap<string, number> {
    return this.held;
  }

  private hold(holder: string): void {
    this.held.set(holder, (this.held.get(holder) ?? 0) + 1);
  }

  private retrack(): void {
    if (!this.tracker) return;
    if (this.refs.read() !== 0) this.tracker.track(this);
    else this.tracker.untrack(this);
  }
}
