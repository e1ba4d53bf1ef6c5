/**
 * Detects a second copy of @iommu-sim/core in one process. Packages built on core (drivers, iommufd) register
 * their drivers, object types and ioctls with the classes and DI tokens of the copy they import; a machine made by
 * another copy never sees them, and boot later fails with ENODEV ("no IOMMU driver") without saying why. Every copy
 * records itself in one process-wide registry when it loads, and `createMachine` refuses to run when two differ.
 */
import { readFileSync } from "node:fs";

/** One loaded copy: its version and the file it was loaded from. */
export interface CoreCopy {
  version: string;
  /** The URL of this copy's module file (`…/node_modules/@iommu-sim/core/dist/machine/copies.js`). */
  url: string;
}

const REGISTRY = Symbol.for("@iommu-sim/core.copies");
type Registry = Map<string, CoreCopy>;

function ownVersion(): string {
  try {
    // src/machine/ and dist/machine/ are both two levels below the package root.
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

const self: CoreCopy = { version: ownVersion(), url: import.meta.url };
const g = globalThis as unknown as Record<symbol, Registry | undefined>;
const registry: Registry = g[REGISTRY] ?? new Map();
g[REGISTRY] = registry;
// Keyed by URL: the same file evaluated again (a test runner resetting its module cache) is the same copy.
registry.set(self.url, self);

/**
 * Thrown by `createMachine` when more than one copy of @iommu-sim/core is loaded in the process.
 * @linux none: the simulation's packaging check (a kernel is one image)
 */
export class DuplicateCoreError extends Error {
  constructor(readonly copies: readonly CoreCopy[]) {
    super(
      [
        `${copies.length} copies of @iommu-sim/core are loaded in this process:`,
        ...copies.map((c) => `  ${c.version} from ${c.url}`),
        "Drivers and iommufd register with the copy they import, so a machine made by another copy would not see",
        "them (boot would fail with ENODEV: no IOMMU driver). Install a single copy: give every @iommu-sim package",
        "the same version of @iommu-sim/core (`npm ls @iommu-sim/core` shows who pulls which; `npm dedupe` merges).",
      ].join("\n"),
    );
    this.name = "DuplicateCoreError";
  }
}

/**
 * The copies of @iommu-sim/core loaded in this process (this one included).
 * @linux none
 */
export function loadedCoreCopies(): CoreCopy[] {
  return [...registry.values()];
}

/**
 * Throw {@link DuplicateCoreError} when another copy of @iommu-sim/core is loaded besides this one.
 * @linux none
 */
export function assertSingleCoreCopy(): void {
  if (registry.size > 1) throw new DuplicateCoreError(loadedCoreCopies());
}
