export { type ArgSpec, type OptionSpec, type Parsed, parseCommandArgs, UsageError } from "./args.js";
export type { Command } from "./command.js";
export { COMMANDS } from "./commands/index.js";
export { formatPath, type InspectedPath, inspectTranslation } from "./inspect/inspect.js";
export type { CliIo } from "./io.js";
export { EXIT, useColor } from "./io.js";
export { commandHelp, helpText, main } from "./main.js";
export { BUILTIN_MODULES, loadModuleArg, resolveModules } from "./modules.js";
export {
  type BoundDevice,
  type GraphEdge,
  type GraphNode,
  type GraphSnapshot,
  type InspectionRecord,
  type NamedObject,
  type Region,
  RunContext,
  StepError,
  type TimelineEvent,
} from "./scenario/context.js";
export { DEFAULT_SCENARIO } from "./scenario/default-scenario.js";
export { parseScenario, parseScenarioText, ScenarioError, type ScenarioIssue } from "./scenario/load.js";
export { type FailedStep, type RunOptions, type RunResult, runScenario, type StepRecord } from "./scenario/runner.js";
export { type Scenario, type Step, scenarioSchema, stepSchema } from "./scenario/schema.js";
export { type IommuSummary, summarize } from "./scenario/summary.js";
export { type TraceLine, Tracer } from "./trace-writer.js";
export { cliVersion } from "./version.js";
