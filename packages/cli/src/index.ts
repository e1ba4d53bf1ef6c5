export type { CliIo } from "./io.js";
export { EXIT } from "./io.js";
export { type Command, cliVersion, helpText, main } from "./main.js";
