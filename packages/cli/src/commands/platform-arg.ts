import { readFile } from "node:fs/promises";
import { defaultPlatform, type PlatformDescription, PlatformError, parsePlatformText } from "@iommu-sim/core";
import { UsageError } from "../args.js";
import { BUILTIN_MODULES, driverKinds } from "../modules.js";

/**
 * Load the platform named by `--platform FILE`, or the embedded default. A file that is not JSON or fails the
 * schema throws `PlatformError` naming the file (exit code 2); a missing file throws `UsageError`. `validate` and
 * `topology` both load through here, with the kinds of the drivers the CLI loads (`kinds`: by default the
 * built-in drivers'; `run` and `topology` add those of `--module` drivers), so they accept the same files.
 */
export async function loadPlatformArg(
  file: string | true | undefined,
  kinds: Iterable<string> = driverKinds(BUILTIN_MODULES),
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
    return parsePlatformText(text, { kinds });
  } catch (e) {
    if (e instanceof PlatformError) throw new PlatformError(e.issues, file);
    throw e;
  }
}
