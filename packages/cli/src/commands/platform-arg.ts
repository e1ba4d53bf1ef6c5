import { readFile } from "node:fs/promises";
import {
  defaultPlatform,
  type KernelModule,
  type PlatformDescription,
  PlatformError,
  parsePlatformText,
} from "@iommu-sim/core";
import { UsageError } from "../args.js";
import { BUILTIN_MODULES, driverKinds } from "../modules.js";

/**
 * Load the platform named by `--platform FILE`, or the embedded default. A file that is not JSON or fails the
 * schema throws `PlatformError` naming the file (exit code 2); a missing file throws `UsageError`. `validate`,
 * `topology`, `run` and `inspect` all load through here with the modules they boot (by default the built-in ones;
 * `--module` adds others): the kinds those modules ship models for, and what their drivers require of the IOMMUs
 * they drive (`platformRules`), so a file `validate` accepts boots, and one it refuses would not.
 */
export async function loadPlatformArg(
  file: string | true | undefined,
  modules: readonly KernelModule[] = BUILTIN_MODULES,
): Promise<PlatformDescription> {
  if (file === undefined) return defaultPlatform();
  if (file === true) throw new UsageError("option --platform needs a file");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read platform file ${file}: ${(e as Error).message}`);
  }
  try {
    return parsePlatformText(text, {
      kinds: driverKinds(modules),
      rules: modules.flatMap((m) => m.platformRules ?? []),
    });
  } catch (e) {
    if (e instanceof PlatformError) throw new PlatformError(e.issues, file);
    throw e;
  }
}
