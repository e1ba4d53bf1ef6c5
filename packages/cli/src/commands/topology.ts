import { createMachine, describeIommuTopology, formatTopology } from "@iommu-sim/core";
import { intOption, listOption, parseCommandArgs, strOption } from "../args.js";
import type { Command } from "../command.js";
import { EXIT } from "../io.js";
import { BUILTIN_MODULES, builtinDrivers, driverKinds, resolveModules } from "../modules.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

/** `iommu-sim topology`: build a machine and print its IOMMUs, buses, devices and DMA routes. */
export const topologyCommand: Command = {
  name: "topology",
  summary: "build a machine from a platform description and print its IOMMUs, buses, devices and routes",
  usage: "topology [--platform FILE] [--json] [--seed N] [--module M]... [--no-drivers]",
  help: [
    "Options:",
    "  --platform FILE  a JSON platform description (default: the embedded default platform)",
    "  --json           print the topology as JSON",
    "  --seed N         the machine's seed (default 1)",
    "  --module M       load a driver or kernel module too: a built-in name, a package name or a .js file (repeatable)",
    `  --no-drivers     boot without the built-in modules (default: ${builtinDrivers()
      .map((d) => `${d.name} for ${d.compatible.join("/")}`)
      .join(", ")})`,
    "",
    "The machine is created, booted (its IOMMU drivers probe every device: groups and default domains are shown) and",
    "torn down; a leak or unexpected warning at teardown is an error (exit 1).",
  ].join("\n"),
  examples: ["topology", "topology --json --platform my-platform.json", "topology --module ./my-driver.js"],
  run: (args, io) =>
    runGuarded(io, async () => {
      const { values } = parseCommandArgs(args, {
        options: {
          platform: { type: "string" },
          seed: { type: "string" },
          module: { type: "string", multiple: true },
          json: { type: "boolean" },
          "no-drivers": { type: "boolean" },
        },
      });
      const seed = intOption("seed", values.seed, 1);
      const modules = await resolveModules(listOption(values.module), { noBuiltins: values["no-drivers"] === true });
      const platform = await loadPlatformArg(strOption(values.platform), driverKinds([...BUILTIN_MODULES, ...modules]));
      const m = await createMachine({ platform, seed, modules });
      await m.boot();
      const topo = describeIommuTopology(m);
      io.out(values.json === true ? `${JSON.stringify(topo, null, 2)}\n` : formatTopology(topo));
      await m.teardown();
      return EXIT.ok;
    }),
};
