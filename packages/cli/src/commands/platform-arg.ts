import { readFile } from "node:fs/promises";
import { defaultPlatform, type PlatformDescription, PlatformError, parsePlatform } from "@iommu-sim/core";
import { UsageError } from "../args.js";

/**
 * Load the platform named by `--platform FILE`, or the embedded default. A file that is not JSON or fails the
 * schema throws `PlatformError` (exit code 2); a missing file throws `UsageError`.
 */
export async function loadPlatformArg(file: string | true | undefined): Promise<PlatformDescription> {
  if (file === undefined) return defaultPlatform();
  if (file === true) throw new UsageError("option --platform needs a file");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read platform file ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new PlatformError([
      { path: "(root)", message: `${file} is not valid JSON: ${(e as Error).message}`, value: undefined },
    ]);
  }
  return parsePlatform(json);
}
