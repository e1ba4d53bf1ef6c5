import { writeFile } from "node:fs/promises";
import { intOption, listOption, parseCommandArgs, strOption } from "../args.js";
import type { Command } from "../command.js";
import { type CliIo, EXIT, styles } from "../io.js";
import { driverKinds, resolveModules } from "../modules.js";
import { renderReport } from "../report/render.js";
import { DEFAULT_SCENARIO } from "../scenario/default-scenario.js";
import { loadScenarioFile, parseScenario } from "../scenario/load.js";
import { runScenario } from "../scenario/runner.js";
import { formatSummary } from "../scenario/summary.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

const QUIET: CliIo = { out: () => {}, err: () => {} };

/** `iommu-sim run [SCENARIO]`: run a scenario (default: the embedded one) and print a per-IOMMU summary. */
export const runCommand: Command = {
  name: "run",
  summary: "run a scenario (default: a VMM exercising every IOMMU kind) and print what each IOMMU did",
  usage:
    "run [SCENARIO.yaml|.json] [--platform FILE] [--seed N] [--module M]... [--trace FILE] [--report FILE] [--json]",
  help: [
    "Options:",
    "  SCENARIO          a scenario file, YAML or JSON (default: the embedded default scenario; see examples/)",
    "  --platform FILE   a JSON platform description (default: the embedded default platform)",
    "  --seed N          the machine's seed (default: the scenario's, else 1)",
    "  --module M        load a driver or kernel module too: a built-in name, a package name or a .js file",
    "                    exporting a DriverModule/KernelModule (repeatable)",
    "  --trace FILE      write kernel and hardware events as JSON lines (schema: docs/trace.md)",
    "  --report FILE     write a self-contained HTML report (object graphs, translation paths, timeline, counters)",
    "  --json            print the result as JSON instead of progress lines and a table",
    "",
    "Each step prints one line. The run fails (exit 1) when a step fails — the line names the step — or when the",
    "teardown finds a leak, an unexpected warning or a held lock. A bad scenario file exits 2 naming the path and",
    "the problem (steps[3].iova: ...).",
  ].join("\n"),
  examples: [
    "run",
    "run examples/nested-smmuv3.yaml --trace trace.jsonl",
    "run examples/page-requests.yaml --report report.html",
    "run my-scenario.yaml --platform my-platform.json --module ./my-driver.js",
  ],
  run: (args, io) =>
    runGuarded(io, async () => {
      const { values, positional } = parseCommandArgs(args, {
        options: {
          platform: { type: "string" },
          seed: { type: "string" },
          module: { type: "string", multiple: true },
          trace: { type: "string" },
          report: { type: "string" },
          json: { type: "boolean" },
        },
        maxPositional: 1,
      });
      const file = positional[0];
      const scenario = file ? await loadScenarioFile(file) : parseScenario(DEFAULT_SCENARIO, "(default scenario)");
      const modules = await resolveModules(listOption(values.module));
      const platform = await loadPlatformArg(strOption(values.platform), driverKinds(modules));
      const seed = values.seed === undefined ? undefined : intOption("seed", values.seed, 1);
      const json = values.json === true;
      const s = styles(io);
      if (!json) {
        io.out(
          `${s.bold(`iommu-sim run: ${scenario.name}`)}${scenario.description ? ` — ${scenario.description}` : ""}\n`,
        );
        io.out(
          s.dim(
            `platform: ${strOption(values.platform) ?? "embedded default"} (${platform.iommus.map((i) => `${i.name}:${i.kind}`).join(" ")}); ` +
              `modules: ${modules.map((m) => m.name).join(", ")}\n\n`,
          ),
        );
      }
      const r = await runScenario(scenario, {
        platform,
        modules,
        io: json ? QUIET : io,
        ...(seed !== undefined ? { seed } : {}),
      });
      const traceFile = strOption(values.trace);
      if (traceFile) await r.tracer.writeJsonl(traceFile);
      const reportFile = strOption(values.report);
      if (reportFile) await writeFile(reportFile, renderReport(scenario, r));
      if (json) {
        io.out(
          `${JSON.stringify(
            {
              scenario: scenario.name,
              ok: r.ok,
              ...(r.failed ? { failed: r.failed } : {}),
              summary: r.summary,
              trace: r.tracer.counts(),
            },
            null,
            2,
          )}\n`,
        );
      } else {
        io.out(`\n${s.bold("Per IOMMU")}\n${formatSummary(r.summary)}\n\n`);
        if (traceFile) io.out(`trace: ${r.tracer.lines.length} events written to ${traceFile}\n`);
        if (reportFile) io.out(`report: ${reportFile}\n`);
        io.out(
          r.ok
            ? `${s.green("PASS")}: ${scenario.steps.length} steps, machine torn down with nothing leaked\n`
            : `${s.red("FAIL")}: step ${r.failed!.index} (${r.failed!.label})\n`,
        );
      }
      if (!r.ok) {
        io.err(`iommu-sim: step ${r.failed!.index} (${r.failed!.label}) failed: ${r.failed!.message}\n`);
        return EXIT.failure;
      }
      return EXIT.ok;
    }),
};
