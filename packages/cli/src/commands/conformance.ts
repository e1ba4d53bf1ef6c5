/**
 * `iommu-sim conformance [--driver NAME|PATH]... [--only PREFIX]... [--seed N] [--json]`: run the testkit's
 * conformance checks against the drivers and print the check × driver table (or the JSON report), with progress on
 * stderr. Exits 1 when any check fails. Parses its own arguments so it stands alone beside the CLI's parser.
 */
import {
  conformanceTargets,
  formatConformanceReport,
  type RunConformanceOptions,
  runConformance,
} from "@iommu-sim/testkit/runner";
import type { Command } from "../command.js";
import { EXIT } from "../io.js";

interface ConformanceArgs {
  drivers: string[];
  only: string[];
  json: boolean;
  seed?: number;
}

function parseConformanceArgs(args: string[]): ConformanceArgs | string {
  const out: ConformanceArgs = { drivers: [], only: [], json: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const [flag, inline] =
      a.startsWith("--") && a.includes("=")
        ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)]
        : [a, undefined];
    const value = () => inline ?? args[++i];
    if (flag === "--json") out.json = true;
    else if (flag === "--driver" || flag === "-d") {
      const v = value();
      if (!v) return "--driver needs a name or a module path";
      out.drivers.push(...v.split(","));
    } else if (flag === "--only") {
      const v = value();
      if (!v) return "--only needs a check id prefix";
      out.only.push(v);
    } else if (flag === "--seed") {
      const v = Number(value());
      if (!Number.isSafeInteger(v) || v <= 0) return "--seed needs a positive integer";
      out.seed = v;
    } else return `unknown argument '${a}'`;
  }
  return out;
}

/** The `conformance` command. */
export const conformanceCommand: Command = {
  name: "conformance",
  summary: "run the conformance suite against drivers and print the check x driver table",
  usage: "conformance [--driver mock|smmuv3|PATH]... [--only PREFIX]... [--seed N] [--json]",
  help: [
    "Options:",
    `  --driver NAME|PATH  a shipped driver (${Object.keys(conformanceTargets).join(", ")}) or a module exporting`,
    "                      `conformanceTarget`; repeat or comma-separate; default: every shipped driver",
    "  --only PREFIX       only checks whose id starts with PREFIX (e.g. mapping/, domains/transitions)",
    "  --seed N            seed of the random checks (a failure prints the seed that replays it)",
    "  --json              print the report as JSON instead of the table",
    "",
    "Exits 0 when every applicable check passes, 1 when one fails, 2 on bad usage.",
  ].join("\n"),
  examples: [
    "conformance",
    "conformance --driver smmuv3 --only isolation/ --seed 1234",
    "conformance --driver ./dist/conformance-target.js --json",
  ],
  async run(args, io) {
    const parsed = parseConformanceArgs(args);
    if (typeof parsed === "string") {
      io.err(`iommu-sim conformance: ${parsed}\n`);
      return EXIT.usage;
    }
    const opts: RunConformanceOptions = {
      onProgress: (e) => {
        if (e.kind === "done") {
          const r = e.result;
          io.err(`[${e.index + 1}/${e.total}] ${r.driver} ${r.check}: ${r.status}${r.ms ? ` (${r.ms} ms)` : ""}\n`);
        }
      },
    };
    if (parsed.drivers.length) opts.drivers = parsed.drivers;
    if (parsed.only.length) opts.only = parsed.only;
    if (parsed.seed !== undefined) opts.seed = parsed.seed;
    let report: Awaited<ReturnType<typeof runConformance>>;
    try {
      report = await runConformance(opts);
    } catch (e) {
      io.err(`iommu-sim conformance: ${(e as Error).message}\n`);
      return EXIT.usage;
    }
    io.out(parsed.json ? `${JSON.stringify(report, null, 2)}\n` : formatConformanceReport(report));
    return report.failed > 0 ? EXIT.failure : EXIT.ok;
  },
};
