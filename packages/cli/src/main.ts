import { readFileSync } from "node:fs";
import { topologyCommand } from "./commands/topology.js";
import { validateCommand } from "./commands/validate.js";
import { type CliIo, EXIT } from "./io.js";

/** A sub-command of `iommu-sim`. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** Longer help: options and examples. */
  help: string;
  run(args: string[], io: CliIo): Promise<number>;
}

const COMMANDS: Command[] = [topologyCommand, validateCommand];

/** The top-level help text listing every command. */
export function helpText(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "iommu-sim — a simulation of the Linux IOMMU subsystem",
    "",
    "Usage: iommu-sim <command> [options]",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Options:",
    "  -h, --help     show this help, or a command's help (iommu-sim <command> --help)",
    "  -V, --version  print the version",
    "",
    "Exit codes: 0 success, 1 a run found a problem, 2 bad usage or a bad platform description.",
    "",
  ].join("\n");
}

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === "-h" || first === "--help" || first === "help") {
    const target = first === "help" ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    io.out(target ? commandHelp(target) : helpText());
    return EXIT.ok;
  }
  if (first === "-V" || first === "--version") {
    io.out(`iommu-sim ${cliVersion()}\n`);
    return EXIT.ok;
  }
  const cmd = COMMANDS.find((c) => c.name === first);
  if (!cmd) {
    io.err(`iommu-sim: unknown command '${first}'\n\n${helpText()}`);
    return EXIT.usage;
  }
  if (rest.includes("-h") || rest.includes("--help")) {
    io.out(commandHelp(cmd));
    return EXIT.ok;
  }
  return cmd.run(rest, io);
}

function commandHelp(c: Command): string {
  return `Usage: iommu-sim ${c.usage}\n\n${c.summary}\n\n${c.help}\n`;
}

/** The version of @iommu-sim/cli, from its package.json (src/ and dist/ both sit one level below it). */
export function cliVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}
