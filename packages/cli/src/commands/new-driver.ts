/**
 * `iommu-sim new-driver NAME [--dir DIR]`: generate a driver package from drivers-mock's structure that builds and
 * passes the conformance suite as generated (see docs/writing-a-driver.md). Parses its own arguments.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { scaffoldDriver } from "@iommu-sim/testkit/runner";
import type { Command } from "../command.js";
import { EXIT } from "../io.js";

/** The `new-driver` command. */
export const newDriverCommand: Command = {
  name: "new-driver",
  summary: "generate a new driver package from drivers-mock that passes the conformance suite",
  usage: "new-driver NAME [--dir DIR]",
  help: [
    "NAME: lowercase letters and digits (e.g. acme). The package goes to DIR, by default packages/drivers-NAME",
    "inside the iommu-sim repository, or ./drivers-NAME elsewhere. Then: npm install, npm run build, and",
    "npx vitest run in the package runs the conformance suite. docs/writing-a-driver.md walks through the rest.",
  ].join("\n"),
  examples: ["new-driver acme", "new-driver acme --dir ../drivers-acme"],
  async run(args, io) {
    let name: string | undefined;
    let dir: string | undefined;
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      if (a === "--dir") dir = args[++i];
      else if (a.startsWith("--dir=")) dir = a.slice(6);
      else if (!a.startsWith("-") && name === undefined) name = a;
      else {
        io.err(`iommu-sim new-driver: unexpected argument '${a}'\n`);
        return EXIT.usage;
      }
    }
    if (!name) {
      io.err("iommu-sim new-driver: a driver NAME is required\n");
      return EXIT.usage;
    }
    const inRepo = existsSync("tsconfig.base.json") && existsSync(join("packages", "core"));
    const out = resolve(dir ?? (inRepo ? join("packages", `drivers-${name}`) : `drivers-${name}`));
    try {
      const files = await scaffoldDriver(name, { dir: out });
      io.out(`created ${out} (${files.length} files)\nnext: npm install && npm run build && npx vitest run ${out}\n`);
      return EXIT.ok;
    } catch (e) {
      io.err(`iommu-sim new-driver: ${(e as Error).message}\n`);
      return EXIT.usage;
    }
  },
};
