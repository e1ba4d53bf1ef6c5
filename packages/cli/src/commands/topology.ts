import { createMachine, describeIommuTopology, formatTopology } from "@iommu-sim/core";
import { parseArgs } from "../args.js";
import { EXIT } from "../io.js";
import type { Command } from "../main.js";
import { DRIVERS, driverModules } from "./drivers.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

/** `iommu-sim topology`: build a machine and print its IOMMUs, buses, devices and DMA routes. */
export const topologyCommand: Command = {
  name: "topology",
  summary: "build a machine from a platform description and print its IOMMUs, buses, devices and routes",
  usage: "topology [--platform FILE] [--json] [--seed N] [--no-drivers]",
  help: [
    "Options:",
    "  --platform FILE  a JSON platform description (default: the embedded default platform)",
    "  --json           print the topology as JSON",
    "  --seed N         the machine's seed (default 1)",
    `  --no-drivers     boot without IOMMU drivers (default: load ${DRIVERS.map((d) => d.kind).join(", ")})`,
    "",
    "The machine is created, booted (its IOMMU drivers probe every device: groups and default domains are shown) and",
    "torn down; a leak or unexpected warning at teardown is an error (exit 1).",
  ].join("\n"),
  run: (args, io) =>
    runGuarded(io, async () => {
      const { options } = parseArgs(args, ["platform", "seed"], ["json", "no-drivers"]);
      const platform = await loadPlatformArg(options.get("platform"));
      const seed = Number(options.get("seed") ?? 1);
      const m = await createMachine({ platform, seed, modules: driverModules(options.has("no-drivers")) });
      await m.boot();
      const topo = describeIommuTopology(m);
      io.out(options.has("json") ? `${JSON.stringify(topo, null, 2)}\n` : formatTopology(topo));
      await m.teardown();
      return EXIT.ok;
    }),
};
