import { createMachine, describeTopology, formatTopology } from "@iommu-sim/core";
import { parseArgs } from "../args.js";
import { EXIT } from "../io.js";
import type { Command } from "../main.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

/** `iommu-sim topology`: build a machine and print its IOMMUs, buses, devices and DMA routes. */
export const topologyCommand: Command = {
  name: "topology",
  summary: "build a machine from a platform description and print its IOMMUs, buses, devices and routes",
  usage: "topology [--platform FILE] [--json] [--seed N]",
  help: [
    "Options:",
    "  --platform FILE  a JSON platform description (default: the embedded default platform)",
    "  --json           print the topology as JSON",
    "  --seed N         the machine's seed (default 1)",
    "",
    "The machine is created, booted and torn down; a leak or unexpected warning at teardown is an error (exit 1).",
  ].join("\n"),
  run: (args, io) =>
    runGuarded(io, async () => {
      const { options } = parseArgs(args, ["platform", "seed"], ["json"]);
      const platform = await loadPlatformArg(options.get("platform"));
      const seed = Number(options.get("seed") ?? 1);
      const m = await createMachine({ platform, seed });
      await m.boot();
      const topo = describeTopology(m.driverCore, m.dma);
      io.out(options.has("json") ? `${JSON.stringify(topo, null, 2)}\n` : formatTopology(topo));
      await m.teardown();
      return EXIT.ok;
    }),
};
