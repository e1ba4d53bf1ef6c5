import { parseArgs, UsageError } from "../args.js";
import type { Command } from "../command.js";
import { EXIT } from "../io.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

/** `iommu-sim validate FILE`: check a platform description against the schema. */
export const validateCommand: Command = {
  name: "validate",
  summary: "check a JSON platform description against the schema (errors name the path and value)",
  usage: "validate FILE",
  help: "Exits 0 when the description is valid and 2 with every schema error otherwise.",
  examples: ["validate my-platform.json"],
  run: (args, io) =>
    runGuarded(io, async () => {
      const { positional } = parseArgs(args, [], []);
      const file = positional[0];
      if (file === undefined || positional.length > 1) throw new UsageError("validate takes exactly one FILE");
      const p = await loadPlatformArg(file);
      io.out(`${file}: valid (${p.iommus.length} IOMMUs, ${p.buses.length} buses, ${p.devices.length} devices)\n`);
      return EXIT.ok;
    }),
};
