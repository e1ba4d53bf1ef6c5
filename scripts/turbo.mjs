#!/usr/bin/env node
// Run turbo quietly: telemetry and the update notifier off (this project's setting, whatever the user's global turbo
// config says), and turbo's own output (banner, task logs, summary) shown only when the run fails.
// `node scripts/turbo.mjs --stream run bench` passes the output through as it comes (for tasks whose output is the
// point, like benchmarks). Exits with turbo's exit code.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const args = process.argv.slice(2);
const stream = args[0] === "--stream";
if (stream) args.shift();

const require = createRequire(import.meta.url);
const bin = join(dirname(require.resolve("turbo/package.json")), "bin", "turbo");
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1", TURBO_NO_UPDATE_NOTIFIER: "1" };
const child = spawn(process.execPath, [bin, ...args, ...(stream ? [] : ["--output-logs=errors-only"])], {
  env,
  stdio: stream ? "inherit" : ["inherit", "pipe", "pipe"],
});
const chunks = [];
child.stdout?.on("data", (c) => chunks.push([process.stdout, c]));
child.stderr?.on("data", (c) => chunks.push([process.stderr, c]));
child.on("close", (code, signal) => {
  const status = code ?? (signal ? 1 : 0);
  if (status !== 0) for (const [to, c] of chunks) to.write(c);
  process.exitCode = status;
});
