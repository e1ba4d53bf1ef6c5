import type { Command } from "../command.js";
import { inspectCommand } from "./inspect.js";
import { runCommand } from "./run.js";
import { topologyCommand } from "./topology.js";
import { validateCommand } from "./validate.js";

/** Every command, in the order help lists them. A new command: one import and one entry here. */
export const COMMANDS: readonly Command[] = [runCommand, inspectCommand, topologyCommand, validateCommand];
