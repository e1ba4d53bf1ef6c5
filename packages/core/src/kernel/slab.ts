import { captureStack, type Diagnostics } from "./diagnostics.js";

/** Where and by whom an object was freed. */
export interface FreeSite {
  task: string;
  stack: string;
}

const FREED = Symbol("iommu-sim.freed");

/**
 * An object whose lifetime is tracked: once freed, any access through a checked path (`assertLive`,
 * `rcuDereference`, a tracked handle) is reported as a use-after-free naming where it was freed.
 * Any object may be tracked; the mark lives on a symbol property.
 */
export interface Tracked {
  [FREED]?: FreeSite;
}

/** The free site of a tracked object, or `undefined` while it is live. */
export function freedAt(obj: object): FreeSite | undefined {
  return (obj as Tracked)[FREED];
}

/**
 * Free a tracked object: later checked accesses report use-after-free, a second free reports a double free.
 * @linux kfree
 */
export function kfree(diag: Diagnostics, obj: object, what = describe(obj)): void {
  const prev = freedAt(obj);
  if (prev) {
    diag.report("double-free", `double free of ${what}`, {
      culprit: what,
      related: [{ label: "first freed at", task: prev.task, stack: prev.stack }],
      skipFrames: 1,
    });
    return;
  }
  (obj as Tracked)[FREED] = { task: diag.currentTask(), stack: captureStack(1) };
}

/**
 * Check that `obj` has not been freed; report a use-after-free (with the free site) and return false otherwise.
 * @linux the KASAN check on a slab access
 */
export function assertLive(diag: Diagnostics, obj: object, what = describe(obj)): boolean {
  const f = freedAt(obj);
  if (!f) return true;
  diag.report("use-after-free", `use-after-free of ${what}`, {
    culprit: what,
    related: [{ label: "freed at", task: f.task, stack: f.stack }],
    skipFrames: 1,
  });
  return false;
}

function describe(obj: object): string {
  const named = obj as { name?: unknown; constructor?: { name?: string } };
  const cls = named.constructor?.name ?? "object";
  return typeof named.name === "string" ? `${cls} ${named.name}` : cls;
}
