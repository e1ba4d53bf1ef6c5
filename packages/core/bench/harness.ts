/**
 * A tiny dependency-free benchmark harness shared by the packages' `bench/` scripts (copy it or import it
 * relatively).
 *
 * Each case is a function that performs `ops` operations per call (put the loop inside the function so call overhead
 * does not dominate). Rounds are interleaved across cases (case A, case B, case A, ...) so drift of a shared, noisy
 * machine hits every case alike; the figure reported is the median of the rounds. Every case is compared with the
 * suite's named baseline, measured in the same process and run. Results are printed as a table and appended to a
 * `results.json` array of `{ name, opsPerSec, nsPerOp, baseline, ratio }`.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** One benchmarked function. */
export interface BenchCase {
  name: string;
  /** Runs `ops` operations. Return a value depending on the work so the optimiser cannot drop it. */
  fn: () => unknown;
  /** Operations performed by one call of `fn`. */
  ops: number;
  /** Runs once before the timed rounds (allocation, warming). Not timed. */
  setup?: () => void;
  /**
   * The least `ratio` (baseline ns / case ns) that meets the performance target set for this case, e.g. 0.5 for
   * "at most 2x the baseline's cost". Copied to the result; absent when the case has no target.
   */
  target?: number;
}

/** A suite of cases compared with one baseline. */
export interface BenchSuite {
  /** Suite name, prefixed to each case name in the results ("memory/read32"). */
  name: string;
  /** Name of the case the others are compared with. */
  baseline: string;
  cases: BenchCase[];
  /** Timed rounds per case (median taken); at least 5. Default 7. */
  rounds?: number;
  /** Untimed warm-up calls per case. Default 2. */
  warmup?: number;
  /** Where to append results; default `results.json` beside this harness. `false` to not write. */
  resultsFile?: string | false;
}

/** One line of `results.json`. */
export interface BenchResult {
  name: string;
  opsPerSec: number;
  nsPerOp: number;
  baseline: string;
  /** opsPerSec of this case divided by the baseline's (1 for the baseline; > 1 is faster). */
  ratio: number;
  /** Each round's ns/op, for judging noise. */
  roundsNsPerOp: number[];
  date: string;
  /** The least `ratio` that meets this case's target (see {@link BenchCase.target}); absent without a target. */
  target?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

let sink: unknown;

/** Time one call of `fn`, in nanoseconds. */
function timeOnce(fn: () => unknown): number {
  const t0 = process.hrtime.bigint();
  sink = fn();
  const t1 = process.hrtime.bigint();
  return Number(t1 - t0);
}

function fmt(n: number, digits = 2): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(digits)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(digits)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(digits)}k`;
  return n.toFixed(digits);
}

/** Run a suite, print its table and append its results; returns the results. */
export function runBench(suite: BenchSuite): BenchResult[] {
  const rounds = Math.max(5, suite.rounds ?? 7);
  const warmup = suite.warmup ?? 2;
  if (!suite.cases.some((c) => c.name === suite.baseline)) {
    throw new Error(`bench ${suite.name}: baseline "${suite.baseline}" is not one of its cases`);
  }
  for (const c of suite.cases) {
    c.setup?.();
    for (let i = 0; i < warmup; i++) sink = c.fn();
  }
  const times = new Map<string, number[]>(suite.cases.map((c) => [c.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const c of suite.cases) times.get(c.name)!.push(timeOnce(c.fn) / c.ops);
  }
  const date = new Date().toISOString();
  const baseNs = median(times.get(suite.baseline)!);
  const results: BenchResult[] = suite.cases.map((c) => {
    const per = times.get(c.name)!;
    const nsPerOp = median(per);
    const r: BenchResult = {
      name: `${suite.name}/${c.name}`,
      opsPerSec: 1e9 / nsPerOp,
      nsPerOp,
      baseline: `${suite.name}/${suite.baseline}`,
      ratio: baseNs / nsPerOp,
      roundsNsPerOp: per.map((x) => Math.round(x * 1000) / 1000),
      date,
    };
    if (c.target !== undefined) r.target = c.target;
    return r;
  });

  const rows = results.map((r) => [
    r.name,
    r.nsPerOp.toFixed(2),
    fmt(r.opsPerSec),
    r.ratio.toFixed(3),
    r.target === undefined ? "" : `>= ${r.target.toFixed(3)} ${r.ratio >= r.target ? "met" : "MISSED"}`,
  ]);
  const head = ["name", "ns/op", "ops/s", `ratio vs ${suite.baseline}`, "target"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(`\n${suite.name} (median of ${rounds} rounds)`);
  console.log(line(head));
  for (const row of rows) console.log(line(row));
  if (sink === Symbol.for("never")) console.log(sink);

  if (suite.resultsFile !== false) appendResults(suite.resultsFile ?? defaultResultsFile(), results);
  return results;
}

function defaultResultsFile(): string {
  return fileURLToPath(new URL("./results.json", import.meta.url));
}

/** Append results to a JSON array file, creating it when missing. */
export function appendResults(file: string, results: (BenchResult | BenchCountResult)[]): void {
  let all: unknown[] = [];
  if (existsSync(file)) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
      if (Array.isArray(parsed)) all = parsed;
    } catch {
      // A corrupt file is replaced rather than failing the run.
    }
  }
  all.push(...results);
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
}

/** A counted quantity with a bound (not a timing): e.g. the commands one 1 GiB unmap issues, at most 4. */
export interface BenchCount {
  /** Row name, e.g. "amd-driver/commands per 1GiB unmap". */
  name: string;
  /** What was counted. */
  count: number;
  /** The most that meets the target. */
  max: number;
  /** What is counted, for the printed line ("commands"). */
  unit: string;
  /** Where to append the row; default `results.json` beside this harness. `false` to not write. */
  resultsFile?: string | false;
}

/** One line of `results.json` for a {@link BenchCount}. */
export interface BenchCountResult {
  name: string;
  count: number;
  maxCount: number;
  unit: string;
  date: string;
}

/**
 * Print a counted row with its target and whether it is met, and append it to the results (bench-summary shows it
 * beside the timed rows). Returns whether the target is met.
 */
export function recordCount(c: BenchCount): boolean {
  const met = c.count <= c.max;
  console.log(`\n${c.name}: ${c.count} ${c.unit}   target <= ${c.max}   ${met ? "met" : "MISSED"}`);
  const row: BenchCountResult = {
    name: c.name,
    count: c.count,
    maxCount: c.max,
    unit: c.unit,
    date: new Date().toISOString(),
  };
  if (c.resultsFile !== false) appendResults(c.resultsFile ?? defaultResultsFile(), [row]);
  return met;
}
