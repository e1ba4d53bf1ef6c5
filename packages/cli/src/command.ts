import type { CliIo } from "./io.js";

/** A sub-command of `iommu-sim`. Register one in commands/index.ts. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** Longer help: options and notes. */
  help: string;
  /** Example invocations (without the `iommu-sim` prefix), shown in help. */
  examples: string[];
  run(args: string[], io: CliIo): Promise<number>;
}
