import type { Command } from "../command.js";
import { conformanceCommand } from "./conformance.js";
import { inspectCommand } from "./inspect.js";
import { newDriverCommand } from "./new-driver.js";
import { runCommand } from "./run.js";
import { serveCommand } from "./serve.js";
import { topologyCommand } from "./topology.js";
import { validateCommand } from "./validate.js";

/** Every command, in the order help lists them. A new command: one import and one entry here. */
export const COMMANDS: readonly Command[] = [
  runCommand,
  inspectCommand,
  topologyCommand,
  validateCommand,
  conformanceCommand,
  newDriverCommand,
  serveCommand,
];
