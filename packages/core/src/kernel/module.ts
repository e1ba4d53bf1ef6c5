import type { Diagnostic, Diagnostics } from "./diagnostics.js";
import { KernelError } from "./errno.js";
import { describeHolders } from "./ref-tracker.js";

/**
 * Lifecycle of a module. A module built outside a registry starts `live` (like code whose owner is already loaded);
 * `ModuleRegistry.load` moves it through `coming` to `live`, `unload` through `going` to `gone`.
 * @linux enum module_state
 */
export type ModuleState = "coming" | "live" | "going" | "gone";

/**
 * Init and exit hooks of a module.
 * @linux module_init, module_exit
 */
export interface ModuleHooks {
  /** @linux module_init */
  init?(): Promise<void>;
  /** @linux module_exit */
  exit?(): Promise<void>;
}

/**
 * A loadable module: what `owner` fields point at. Code that calls into a module's ops pins it with
 * {@link tryModuleGet} so it cannot be unloaded underneath; each reference carries a holder tag for leak reports.
 * @linux struct module
 */
export class Module {
  /** Lifecycle state. */
  state: ModuleState = "live";
  private refs = 0;
  private readonly held = new Map<string, number>();

  /**
   * @param name the module's name.
   * @param diag where misuse is reported before a registry loads it (a registry sets its own on load).
   */
  constructor(
    readonly name: string,
    diag?: Diagnostics,
  ) {
    this.diag = diag;
  }

  /**
   * The reference count.
   * @linux module_refcount
   */
  get refcnt(): number {
    return this.refs;
  }

  /** References per holder tag. */
  holders(): ReadonlyMap<string, number> {
    return this.held;
  }

  /** @internal used by {@link tryModuleGet}. */
  _get(holder: string): void {
    this.refs++;
    this.held.set(holder, (this.held.get(holder) ?? 0) + 1);
  }

  /**
   * @internal used by {@link modulePut}; returns "underflow" when the count was 0 (left at 0), "unbalanced" when
   * `holder` held nothing (the count still drops), or "ok".
   */
  _put(holder: string): "ok" | "underflow" | "unbalanced" {
    if (this.refs <= 0) return "underflow";
    this.refs--;
    const mine = this.held.get(holder) ?? 0;
    if (mine === 0) return "unbalanced";
    if (mine === 1) this.held.delete(holder);
    else this.held.set(holder, mine - 1);
    return "ok";
  }

  /** Diagnostics of the machine whose registry loaded this module. */
  diag: Diagnostics | undefined;

  /** @internal reset for a fresh load by a registry. */
  _resetForLoad(diag: Diagnostics): void {
    this.state = "coming";
    this.diag = diag;
  }
}

/**
 * Pin `mod` for `holder`; returns false when it is being unloaded or gone. `undefined` is built-in code: always
 * succeeds. A `coming` module can be pinned, as in Linux (only `going` refuses).
 * @linux try_module_get
 */
export function tryModuleGet(mod: Module | undefined, holder = "anon"): boolean {
  if (mod === undefined) return true;
  if (mod.state === "going" || mod.state === "gone") return false;
  mod._get(holder);
  return true;
}

/**
 * Drop `holder`'s pin on `mod` (no-op for built-in code). A put on a module with no references is a `refcount`
 * diagnostic (the count stays at 0, as `atomic_dec_if_positive` leaves it); a put by a holder that held nothing is
 * reported as unbalanced. Both name the module as culprit. Reporting needs `diag`, normally given by the registry
 * that loaded the module; without either, the misuse throws.
 * @linux module_put
 */
export function modulePut(mod: Module | undefined, holder = "anon", diag?: Diagnostics): void {
  if (mod === undefined) return;
  const r = mod._put(holder);
  if (r === "ok") return;
  const d = diag ?? mod.diag;
  const msg =
    r === "underflow"
      ? `module_put: refcount underflow of module ${mod.name} (put by ${holder})`
      : `module_put: unbalanced put of module ${mod.name} by ${holder}, which holds no reference`;
  if (d) d.report("refcount", msg, { culprit: mod.name, skipFrames: 1 });
  else throw new Error(msg);
}

/**
 * The number of references held on `mod` (0 for built-in code).
 * @linux module_refcount
 */
export function moduleRefcount(mod: Module | undefined): number {
  return mod === undefined ? 0 : mod.refcnt;
}

/**
 * The machine's loaded modules. Loading runs `init` (state coming -> live; a throwing init leaves the module
 * gone); unloading refuses with EBUSY while the module is referenced, then runs `exit`. At teardown it reports
 * every module still referenced, with its holders.
 * @linux kernel/module/main.c (load_module, do_init_module, delete_module)
 */
export class ModuleRegistry {
  private readonly loaded = new Map<string, { mod: Module; hooks: ModuleHooks }>();
  /** Every module this registry ever loaded, so references to unloaded modules are caught too. */
  private readonly seen = new Set<Module>();

  constructor(private readonly diag: Diagnostics) {
    diag.addTeardownCheck("modules", () => this.check());
  }

  /**
   * Load `mod`: EEXIST when a module of that name is loaded. Runs `init` in state `coming`; on success the module
   * is `live`, otherwise it is `gone`, unregistered, and the error is rethrown.
   * @linux load_module, do_init_module
   */
  async load(mod: Module, hooks: ModuleHooks = {}): Promise<void> {
    if (this.loaded.has(mod.name)) throw new KernelError("EEXIST", `module ${mod.name} is already loaded`);
    if (mod.state === "coming" || mod.state === "going") {
      throw new KernelError("EBUSY", `module ${mod.name} is ${mod.state}`);
    }
    mod._resetForLoad(this.diag);
    this.seen.add(mod);
    this.loaded.set(mod.name, { mod, hooks });
    try {
      await hooks.init?.();
    } catch (e) {
      mod.state = "gone";
      this.loaded.delete(mod.name);
      throw e;
    }
    mod.state = "live";
  }

  /**
   * Unload the module called `name`: ENOENT when none is loaded, EBUSY while it is referenced or not live. Moves
   * it to `going`, runs `exit`, then `gone`. An exit hook that throws is recorded as a warning (exit cannot fail).
   * @linux delete_module (which returns EWOULDBLOCK for a referenced module; this simulation says EBUSY)
   */
  async unload(name: string): Promise<void> {
    const slot = this.loaded.get(name);
    if (!slot) throw new KernelError("ENOENT", `module ${name} is not loaded`);
    const { mod, hooks } = slot;
    if (mod.state !== "live") throw new KernelError("EBUSY", `module ${name} is ${mod.state}`);
    if (mod.refcnt > 0) {
      throw new KernelError("EBUSY", `module ${name} is in use (refcnt ${mod.refcnt})`);
    }
    mod.state = "going";
    try {
      await hooks.exit?.();
    } catch (e) {
      this.diag.report("warning", `module ${name}: exit hook threw: ${e instanceof Error ? e.message : String(e)}`, {
        culprit: name,
      });
    }
    mod.state = "gone";
    this.loaded.delete(name);
  }

  /**
   * Unload every module, last loaded first; returns the names that stayed loaded (EBUSY or failing).
   * @linux the module unload at shutdown
   */
  async unloadAll(): Promise<string[]> {
    const stuck: string[] = [];
    for (const name of [...this.loaded.keys()].reverse()) {
      try {
        await this.unload(name);
      } catch {
        stuck.push(name);
      }
    }
    return stuck;
  }

  /**
   * The loaded module called `name`.
   * @linux find_module
   */
  get(name: string): Module | undefined {
    return this.loaded.get(name)?.mod;
  }

  /**
   * Loaded modules in load order.
   * @linux /proc/modules
   */
  list(): Module[] {
    return [...this.loaded.values()].map((s) => s.mod);
  }

  private check(): Diagnostic[] {
    const out: Diagnostic[] = [];
    for (const mod of this.seen) {
      if (mod.refcnt === 0) continue;
      const msg = `module ${describeHolders(mod.name, mod.refcnt, mod.holders())} (refcnt ${mod.refcnt})`;
      out.push(this.diag.report("leak", msg, { culprit: mod.name }));
    }
    return out;
  }
}
