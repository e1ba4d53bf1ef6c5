import type { Command } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import { type CliIo, EXIT } from "./io.js";
import { cliVersion } from "./version.js";

export type { Command } from "./command.js";

/** The top-level help text listing every command with an example. */
export function helpText(commands: readonly Command[] = COMMANDS): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "iommu-sim — a simulation of the Linux IOMMU subsystem",
    "",
    "Usage: iommu-sim <command> [options]",
    "",
    "Commands:",
    ...commands.flatMap((c) => [
      `  ${c.name.padEnd(width)}  ${c.summary}`,
      `  ${"".padEnd(width)}    e.g. iommu-sim ${c.examples[0] ?? c.name}`,
    ]),
    "",
    "Options:",
    "  -h, --help     show this help, or a command's help (iommu-sim <command> --help, iommu-sim help <command>)",
    "  -V, --version  print the version",
    "",
    "Output is coloured only on a terminal, never with NO_COLOR set.",
    "Exit codes: 0 success, 1 a run found a problem, 2 bad usage or a bad platform/scenario file.",
    "",
  ].join("\n");
}

/** One command's help: usage, summary, options, examples. */
export function commandHelp(c: Command): string {
  return [
    `Usage: iommu-sim ${c.usage}`,
    "",
    c.summary,
    "",
    c.help,
    "",
    "Examples:",
    ...c.examples.map((e) => `  iommu-sim ${e}`),
    "",
  ].join("\n");
}

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === "-h" || first === "--help") {
    io.out(helpText());
    return first === undefined ? EXIT.usage : EXIT.ok;
  }
  if (first === "help") {
    if (rest.length === 0) {
      io.out(helpText());
      return EXIT.ok;
    }
    const target = COMMANDS.find((c) => c.name === rest[0]);
    if (!target || rest.length > 1) {
      io.err(`iommu-sim: no such command '${rest.join(" ")}'\n\n${helpText()}`);
      return EXIT.usage;
    }
    io.out(commandHelp(target));
    return EXIT.ok;
  }
  if (first === "-V" || first === "--version") {
    if (rest.length > 0) {
      io.err(`iommu-sim: unexpected argument: ${rest.join(" ")}\n`);
      return EXIT.usage;
    }
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
