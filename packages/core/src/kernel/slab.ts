import type { Diagnostics } from "./diagnostics.js";

/** Where and by whom an object was freed. */
export interface FreeSite {
  task: string;
  stack: string;
}

/** What a free site shows when its stack was not captured. @linux none: simulation message */
export const FREE_STACK_NOT_RECORDED =
  "(free stack not recorded: createMachine({ trackFreeStacks: true }) or diag.captureFreeStacks records it)";

/**
 * A free site whose stack is captured unformatted and rendered when first read: V8 walks the frames at capture
 * (cheap) and formats them (source maps and all, the expensive part) only when `.stack` is read by a report.
 */
class FreeRecord implements FreeSite {
  private where: Error | string | undefined;
  constructor(
    public task: string,
    where: Error | undefined,
  ) {
    this.where = where;
  }

  get stack(): string {
    const w = this.where;
    if (w === undefined) return FREE_STACK_NOT_RECORDED;
    if (typeof w === "string") return w;
    // Frame 0 is the line "Error", frame 1 the function that captured it (kfree): the caller follows.
    const s = renderFrames(w, 2);
    this.where = s;
    return s;
  }

  set stack(s: string) {
    this.where = s;
  }
}

/** The frames of a captured `Error` from line `from` on, one per line. */
function renderFrames(e: Error, from: number): string {
  return (e.stack ?? "")
    .split("\n")
    .slice(from)
    .map((l) => l.trim())
    .join("\n");
}

/**
 * The stack of the caller's caller, captured unformatted when `diag.captureFreeStacks` is on, as a value for
 * {@link setFreeStack}: what `kfree_rcu` records at its call so the deferred free names it.
 * @linux kasan_save_free_info (the free track a KASAN report prints)
 */
export function captureFreeSite(diag: Diagnostics): { task: string; where: Error | undefined } {
  return { task: diag.currentTask(), where: diag.captureFreeStacks ? new Error() : undefined };
}

/**
 * Point an object's free site at a site captured earlier by {@link captureFreeSite} (its caller's frames).
 * @linux kasan_save_free_info
 */
export function setFreeStack(obj: object, site: { task: string; where: Error | undefined }): void {
  const f = (obj as Tracked)[FREED];
  if (f === undefined) return;
  f.task = site.task;
  f.stack = site.where ? renderFrames(site.where, 3) : FREE_STACK_NOT_RECORDED;
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
    diag.captureFreeStacks = true;
    return;
  }
  (obj as Tracked)[FREED] = new FreeRecord(diag.currentTask(), diag.captureFreeStacks ? new Error() : undefined);
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
  diag.captureFreeStacks = true;
  return false;
}

function describe(obj: object): string {
  const named = obj as { name?: unknown; constructor?: { name?: string } };
  const cls = named.constructor?.name ?? "object";
  return typeof named.name === "string" ? `${cls} ${named.name}` : cls;
}
