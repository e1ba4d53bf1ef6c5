import { PlatformError, TeardownError } from "@iommu-sim/core";
import { UsageError } from "../args.js";
import { type CliIo, EXIT } from "../io.js";
import { ScenarioError } from "../scenario/load.js";

/**
 * Run a command body, turning usage, platform and scenario-file errors into exit code 2 with a readable message, and
 * a machine whose teardown found problems into exit code 1 with its report.
 */
export async function runGuarded(io: CliIo, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`iommu-sim: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof ScenarioError) {
      io.err(`iommu-sim: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof PlatformError) {
      io.err(`iommu-sim: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof TeardownError) {
      // The kernel WARNed, leaked or held a lock: the report (with the WARN sites) is the result, not a crash.
      io.err(`iommu-sim: ${e.message}\n`);
      return EXIT.failure;
    }
    throw e;
  }
}
