/**
 * Finding kernel modules: the built-in ones by name, others by package name or file path (`--module
 * ./my-driver.js`). A module file exports a `DriverModule` or `KernelModule` (default export or any named export
 * that has the shape); the CLI never hard-codes which IOMMU kinds exist.
 */
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { DriverModule, KernelModule } from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import { armSmmuV3Driver } from "@iommu-sim/drivers-smmuv3";
import { intelIommuDriver } from "@iommu-sim/drivers-vtd";
import { iommufdModule } from "@iommu-sim/iommufd";
import { UsageError } from "./args.js";

/** The modules shipped with the CLI, by module name: the IOMMU drivers of every landed kind, then iommufd. */
export const BUILTIN_MODULES: readonly KernelModule[] = [
  mockIommuDriver,
  armSmmuV3Driver,
  intelIommuDriver,
  iommufdModule,
];

/** Whether `m` is an IOMMU driver module (it names the platform kinds it binds to). */
export function isDriverModule(m: KernelModule): m is DriverModule {
  return (
    Array.isArray((m as Partial<DriverModule>).compatible) && typeof (m as DriverModule).instanceFor === "function"
  );
}

function isKernelModule(v: unknown): v is KernelModule {
  if (typeof v !== "object" || v === null) return false;
  const m = v as Partial<KernelModule>;
  return (
    typeof m.name === "string" &&
    (m.init === undefined || typeof m.init === "function") &&
    (m.init !== undefined || m.register !== undefined || m.hardware !== undefined)
  );
}

/** The IOMMU kinds `modules` ship hardware models for (what a platform file may name besides the known kinds). */
export function driverKinds(modules: readonly KernelModule[]): string[] {
  return [...new Set(modules.flatMap((m) => (m.hardware ?? []).map((h) => h.kind)))];
}

/** The IOMMU driver modules among the built-ins. */
export function builtinDrivers(): DriverModule[] {
  return BUILTIN_MODULES.filter(isDriverModule);
}

/**
 * Load one `--module` argument: a built-in module's name (`mock-iommu`, `arm-smmu-v3`, `iommufd`), a file path
 * (anything starting with `.` or `/`, or ending in `.js`/`.mjs`) or a package name, whose exports are searched for
 * kernel modules (the default export first). Throws {@link UsageError} when nothing loads or nothing fits.
 */
export async function loadModuleArg(spec: string, cwd = process.cwd()): Promise<KernelModule[]> {
  const builtin = BUILTIN_MODULES.find((m) => m.name === spec);
  if (builtin) return [builtin];
  const isPath = spec.startsWith(".") || isAbsolute(spec) || /\.(c|m)?js$/.test(spec);
  const target = isPath ? pathToFileURL(resolve(cwd, spec)).href : spec;
  let ns: Record<string, unknown>;
  try {
    ns = (await import(target)) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`cannot load module ${spec}: ${(e as Error).message.split("\n")[0]}`);
  }
  const found: KernelModule[] = [];
  const candidates = [
    ns.default,
    ...Object.entries(ns)
      .filter(([k]) => k !== "default")
      .map(([, v]) => v),
  ];
  for (const v of candidates) if (isKernelModule(v) && !found.includes(v)) found.push(v);
  if (found.length === 0) {
    throw new UsageError(`${spec} exports no DriverModule or KernelModule (a value with a name and an init)`);
  }
  // A package that exports several modules: its default export alone when it has one.
  return isKernelModule(ns.default) ? [ns.default] : found;
}

/**
 * The modules a machine loads: the built-ins (unless `noBuiltins`), then each `--module` in order; a module named
 * twice is loaded once (the later spelling wins its place only when not built in).
 */
export async function resolveModules(
  specs: readonly string[],
  opts: { noBuiltins?: boolean } = {},
): Promise<KernelModule[]> {
  const out: KernelModule[] = opts.noBuiltins ? [] : [...BUILTIN_MODULES];
  for (const s of specs) {
    for (const m of await loadModuleArg(s)) {
      if (out.some((o) => o.name === m.name)) {
        if (out.includes(m)) continue;
        throw new UsageError(`module ${m.name} (from ${s}) has the name of a module already loaded`);
      }
      out.push(m);
    }
  }
  // Drivers before the modules that use them (iommufd binds devices the drivers probed).
  return [...out.filter(isDriverModule), ...out.filter((m) => !isDriverModule(m))];
}
