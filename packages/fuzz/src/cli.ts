#!/usr/bin/env node
/**
 * `npm run fuzz`: run a campaign and print its report, or replay a saved program.
 *
 *   npm run fuzz -- [--seconds N] [--calls N] [--seed S] [--out DIR] [--length N] [--slow-ms MS]
 *                   [--no-allow] [--no-shrink] [--known-out DIR] [--replay FILE [--shrink]]
 *
 * Exits 1 when the campaign found something not on the allow-list (or the replayed program still fails).
 * @linux none: syz-manager / syz-repro
 */
import { readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Machine } from "@iommu-sim/core";
import { KNOWN_FINDINGS } from "./allowlist.js";
import { formatReport, runCampaign, writeReproducer } from "./campaign.js";
import { programFromJson } from "./program.js";
import { replay, shrink } from "./shrink.js";

/** Parsed command line. */
export interface FuzzArgs {
  seconds?: number;
  calls?: number;
  seed: number;
  out: string;
  length?: number;
  slowMs?: number;
  allow: boolean;
  shrink: boolean;
  replay?: string;
  knownOut?: string;
}

/** Parse the command line. @linux none (command line) */
export function parseFuzzArgs(argv: readonly string[]): FuzzArgs {
  const a: FuzzArgs = { seed: Date.now() % 1_000_000, out: "fuzz-findings", allow: true, shrink: true };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    const n = (): number => {
      const x = Number(v());
      if (!Number.isFinite(x) || x < 0) throw new Error(`${k} needs a non-negative number`);
      return x;
    };
    if (k === "--seconds") a.seconds = n();
    else if (k === "--calls") a.calls = n();
    else if (k === "--seed") a.seed = n();
    else if (k === "--out") a.out = v();
    else if (k === "--length") a.length = n();
    else if (k === "--slow-ms") a.slowMs = n();
    else if (k === "--replay") a.replay = v();
    else if (k === "--known-out") a.knownOut = v();
    else if (k === "--no-allow") a.allow = false;
    else if (k === "--no-shrink") a.shrink = false;
    else if (k === "--shrink") a.shrink = true;
    else if (k === "--help" || k === "-h") throw new Error("help");
    else throw new Error(`unknown option ${k}`);
  }
  return a;
}

const USAGE = `usage: npm run fuzz -- [--seconds N] [--calls N] [--seed S] [--out DIR] [--length N] [--slow-ms MS]
                     [--no-allow] [--no-shrink] [--known-out DIR] [--replay FILE]
Without --seconds or --calls a campaign runs 10000 calls.`;

/** The command; resolves to the exit code. @linux none (syz-manager / syz-repro entry) */
export async function fuzzMain(
  argv: readonly string[],
  log: (s: string) => void = console.log,
  /** Test hook: run on every fresh machine (plants a bug). */
  setup?: (m: Machine) => void,
): Promise<number> {
  let args: FuzzArgs;
  try {
    args = parseFuzzArgs(argv);
  } catch (e) {
    const msg = (e as Error).message;
    log(msg === "help" ? USAGE : `${msg}\n${USAGE}`);
    return msg === "help" ? 0 : 2;
  }
  const exec = { slowMs: args.slowMs ?? 1000, ...(setup ? { setup } : {}) };
  if (args.replay) {
    const program = programFromJson(readFileSync(args.replay, "utf8"));
    const found = await replay(program, exec);
    log(`replay of ${args.replay}: ${program.calls.length} calls, ${found.length} finding(s)`);
    for (const f of found)
      log(`  ${f.signature}${f.at !== undefined ? ` (call ${f.at})` : ""}\n    ${f.message.split("\n")[0]}`);
    const first = found[0];
    if (first && args.shrink) {
      const s = await shrink(program, first, exec);
      const path = writeReproducer(args.out, s.program, s.finding);
      log(`shrunk to ${s.program.calls.length} calls in ${s.replays} replays: ${path}`);
    }
    return found.length ? 1 : 0;
  }
  const report = await runCampaign({
    seed: args.seed,
    ...(args.calls !== undefined ? { calls: args.calls } : {}),
    ...(args.seconds !== undefined ? { seconds: args.seconds } : {}),
    ...(args.length !== undefined ? { programLength: args.length } : {}),
    out: args.out,
    ...(args.knownOut ? { knownOut: args.knownOut } : {}),
    allow: args.allow ? KNOWN_FINDINGS : [],
    shrinkBudget: args.shrink ? 300 : 0,
    exec,
    log,
  });
  log(formatReport(report));
  return report.findings.length ? 1 : 0;
}

/** Whether this module is the program being run (also through the `iommu-sim-fuzz` bin symlink). */
function isMain(): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  fuzzMain(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(e);
      process.exit(70);
    },
  );
}
