import type { Diagnostic, Diagnostics } from "./diagnostics.js";

/**
 * What a {@link RefTracker} needs from a reference-counted object: its name, its count and who holds it.
 * @linux struct ref_tracker_dir (the per-object side of lib/ref_tracker.c)
 */
export interface TrackedRef {
  readonly name: string;
  read(): number;
  holders(): ReadonlyMap<string, number>;
}

/**
 * Render "name still held by: a(1), b(2)"; the raw count is added when it disagrees with the holder tags (an
 * unbalanced put or a saturated counter).
 * @linux ref_tracker_dir_print
 */
export function describeHolders(name: string, count: number, holders: ReadonlyMap<string, number>): string {
  const parts: string[] = [];
  let sum = 0;
  for (const [h, n] of holders) {
    parts.push(`${h}(${n})`);
    sum += n;
  }
  const who = parts.length > 0 ? parts.join(", ") : "no recorded holder";
  return `${name} still held by: ${who}${sum === count ? "" : ` [refcount ${count}]`}`;
}

/**
 * One per machine: every tracked reference-counted object registers itself while its count is non-zero, so
 * teardown can name each object still referenced and who holds it.
 * @linux ref_tracker (lib/ref_tracker.c), ref_tracker_dir_exit
 */
export class RefTracker {
  private readonly live = new Set<TrackedRef>();
  private installed = false;

  constructor(private readonly diag: Diagnostics) {}

  /**
   * Start tracking `obj` (idempotent).
   * @linux ref_tracker_alloc
   */
  track(obj: TrackedRef): void {
    this.live.add(obj);
  }

  /**
   * Stop tracking `obj` (idempotent).
   * @linux ref_tracker_free
   */
  untrack(obj: TrackedRef): void {
    this.live.delete(obj);
  }

  /** Number of objects currently tracked. */
  get size(): number {
    return this.live.size;
  }

  /**
   * One line per live object that is still referenced: "device nic0 still held by: iommu_probe(1), test(2)".
   * @linux ref_tracker_dir_print
   */
  leaks(): string[] {
    const out: string[] = [];
    for (const obj of this.live) {
      const n = obj.read();
      if (n !== 0) out.push(describeHolders(obj.name, n, obj.holders()));
    }
    return out;
  }

  /**
   * Register the "references" teardown check with the machine's diagnostics (idempotent): each object still
   * referenced becomes a `leak` diagnostic whose culprit is the object's name and whose message lists its holders.
   * @linux ref_tracker_dir_exit
   */
  install(): void {
    if (this.installed) return;
    this.installed = true;
    this.diag.addTeardownCheck("references", () => this.check());
  }

  private check(): Diagnostic[] {
    const out: Diagnostic[] = [];
    for (const obj of this.live) {
      const n = obj.read();
      if (n === 0) continue;
      out.push(this.diag.report("leak", describeHolders(obj.name, n, obj.holders()), { culprit: obj.name }));
    }
    return out;
  }
}
