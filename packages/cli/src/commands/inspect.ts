import { parseSize } from "@iommu-sim/core";
import { intOption, listOption, parseCommandArgs, strOption, UsageError } from "../args.js";
import type { Command } from "../command.js";
import { EXIT } from "../io.js";
import { resolveModules } from "../modules.js";
import { DEFAULT_SCENARIO } from "../scenario/default-scenario.js";
import { loadScenarioFile, parseScenario } from "../scenario/load.js";
import { runScenario } from "../scenario/runner.js";
import type { Step } from "../scenario/schema.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

const QUIET = { out: () => {}, err: () => {} };

/**
 * `iommu-sim inspect --device NAME --iova ADDR`: set the machine up with a scenario (default: the default
 * scenario up to its first snapshot, everything live) and decode the device's translation from raw memory.
 */
export const inspectCommand: Command = {
  name: "inspect",
  summary:
    "decode a device's translation path from raw memory: STE/CD, root/context/PASID entry or device entry, each table level, result",
  usage: "inspect --device NAME --iova ADDR [--pasid N] [--scenario FILE] [--at LABEL] [--platform FILE] [--json]",
  help: [
    "Options:",
    "  --device NAME     the endpoint device (e.g. mock-dev0, smmu-dma0, xhci0, amd-nic0)",
    "  --iova ADDR       the input address (hex or decimal)",
    "  --pasid N         a PASID / SubstreamID (default: none)",
    "  --scenario FILE   the scenario that sets the machine up (default: the embedded default scenario)",
    "  --at LABEL        stop the scenario at its snapshot step LABEL (default: its first snapshot)",
    "  --platform FILE   a JSON platform description; --module M adds a module (repeatable)",
    "  --json            print the decoded levels as JSON",
    "",
    "Every structure is read from simulated memory and registers the way a debugger reads them: the raw 64-bit",
    "words, the decoded fields, then the output address or the fault.",
  ].join("\n"),
  examples: [
    "inspect --device smmu-dma0 --iova 0x10000010",
    "inspect --device amd-nic0 --iova 0x30000200",
    "inspect --device mock-dev0 --iova 0x1000040 --json",
    "inspect --device xhci0 --iova 0x20000100",
    "inspect --device mock-dev0 --iova 0x1000040 --scenario examples/basic-mock.yaml --at mapped",
  ],
  run: (args, io) =>
    runGuarded(io, async () => {
      const { values } = parseCommandArgs(args, {
        options: {
          device: { type: "string" },
          iova: { type: "string" },
          pasid: { type: "string" },
          scenario: { type: "string" },
          at: { type: "string" },
          platform: { type: "string" },
          module: { type: "string", multiple: true },
          json: { type: "boolean" },
        },
      });
      const device = strOption(values.device);
      if (!device) throw new UsageError("inspect needs --device NAME");
      const iova = parseSize(strOption(values.iova));
      if (iova === undefined)
        throw new UsageError(`inspect needs --iova ADDR (got ${JSON.stringify(values.iova ?? null)})`);
      const pasid = values.pasid === undefined ? undefined : intOption("pasid", values.pasid, 0);
      const file = strOption(values.scenario);
      const sc = file ? await loadScenarioFile(file) : parseScenario(DEFAULT_SCENARIO, "(default scenario)");
      const at = strOption(values.at);
      const cut = sc.steps.findIndex((s) => s.do === "snapshot" && (at === undefined || s.label === at));
      if (at !== undefined && cut < 0) throw new UsageError(`the scenario has no snapshot step labelled "${at}"`);
      const probe: Step = { do: "inspect", device, iova, ...(pasid !== undefined ? { pasid } : {}) };
      const steps: Step[] = [
        ...(cut >= 0 ? sc.steps.slice(0, cut) : sc.steps.filter((s) => s.do !== "teardown")),
        probe,
      ];
      const modules = await resolveModules(listOption(values.module));
      const r = await runScenario(
        { ...sc, steps },
        {
          platform: await loadPlatformArg(strOption(values.platform), modules),
          modules,
          io: QUIET,
        },
      );
      // The probe is the last step of the cut scenario (the scenario's own inspect steps come before it).
      const insp = r.ctx.inspections.find((i) => i.step === steps.length);
      if (!insp) {
        io.err(
          `iommu-sim: ${r.failed ? `step ${r.failed.index} (${r.failed.label}) failed: ${r.failed.message}` : "nothing inspected"}\n`,
        );
        return EXIT.failure;
      }
      io.out(values.json === true ? `${JSON.stringify(insp.data, null, 2)}\n` : `${insp.text}\n`);
      return r.ok ? EXIT.ok : EXIT.failure;
    }),
};
