#!/usr/bin/env node
// After `turbo run bench`: gather every package's bench/results.json into bench/results.json at the root (with the
// machine it ran on) and print one table across packages: benchmark, median ns/op, ops/s, baseline, ratio (ops/s of
// the case / ops/s of its in-run baseline), target (the least ratio the case should reach, when it has one), met?.
//   node scripts/bench-summary.mjs             print the table, write bench/results.json
//   node scripts/bench-summary.mjs --markdown  print the table as Markdown (for the README)
//   node scripts/bench-summary.mjs --readme    also replace the table between the bench markers in README.md
//   node scripts/bench-summary.mjs --json      print bench/results.json's content instead of a table
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, platform, release, totalmem } from "node:os";
import { join } from "node:path";

const args = new Set(process.argv.slice(2));
const results = [];
for (const pkg of readdirSync("packages").sort()) {
  const f = join("packages", pkg, "bench", "results.json");
  if (!existsSync(f)) continue;
  for (const r of JSON.parse(readFileSync(f, "utf8"))) results.push({ package: pkg, ...r });
}
if (results.length === 0) {
  console.error("no packages/*/bench/results.json: run `npm run bench` (it runs every package's benchmarks first)");
  process.exit(1);
}
const cpu = cpus();
const machine = {
  cpu: cpu[0]?.model.trim() ?? "unknown",
  cores: cpu.length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  os: `${platform()} ${release()}`,
  node: process.version,
};
const date =
  results
    .map((r) => r.date)
    .sort()
    .at(-1) ?? new Date().toISOString();
mkdirSync("bench", { recursive: true });
writeFileSync(join("bench", "results.json"), `${JSON.stringify({ machine, date, results }, null, 2)}\n`);

function ops(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)}k`;
  return n.toFixed(2);
}
const head = ["benchmark", "median ns/op", "ops/s", "baseline", "ratio", "target", "met?"];
// A counted row (recordCount in packages/core/bench/harness.ts): a count with its bound instead of a timing.
const isCount = (r) => typeof r.count === "number";
const countMet = (r) => r.count <= r.maxCount;
const rows = results.map((r) => {
  if (isCount(r)) {
    return [
      `${r.package}:${r.name}`,
      "",
      "",
      `(${r.unit})`,
      String(r.count),
      `≤ ${r.maxCount}`,
      countMet(r) ? "yes" : "NO",
    ];
  }
  const hasTarget = typeof r.target === "number";
  return [
    `${r.package}:${r.name}`,
    r.nsPerOp.toFixed(2),
    ops(r.opsPerSec),
    r.baseline === r.name ? "(itself)" : r.baseline,
    r.ratio.toFixed(3),
    hasTarget ? `≥ ${r.target}` : "",
    hasTarget ? (r.ratio >= r.target ? "yes" : "NO") : "",
  ];
});
const numeric = new Set([1, 2, 4]);
const where = `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}`;
const withTarget = results.filter((r) => typeof r.target === "number" || isCount(r));
const met = withTarget.filter((r) => (isCount(r) ? countMet(r) : r.ratio >= r.target)).length;
const tail = `${results.length} benchmarks (${met}/${withTarget.length} targets met) on ${where}; ${date.slice(0, 10)}`;

function markdown() {
  const line = (c) => `| ${c.join(" | ")} |`;
  return [line(head), line(head.map((_, i) => (numeric.has(i) ? "---:" : "---"))), ...rows.map(line), "", tail].join(
    "\n",
  );
}
if (args.has("--json")) {
  console.log(JSON.stringify({ machine, date, results }, null, 2));
} else if (args.has("--markdown") || args.has("--readme")) {
  const md = markdown();
  console.log(md);
  if (args.has("--readme")) {
    const readme = readFileSync("README.md", "utf8");
    const re = /(<!-- bench:start -->\n)[\s\S]*?(<!-- bench:end -->)/;
    if (!re.test(readme)) {
      console.error("README.md has no <!-- bench:start --> / <!-- bench:end --> markers");
      process.exit(1);
    }
    writeFileSync("README.md", readme.replace(re, `$1${md}\n$2`));
    console.log("\nREADME.md: benchmark table updated");
  }
} else {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (c) => c.map((v, i) => (numeric.has(i) ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join("  ");
  console.log(`\n${line(head)}`);
  for (const r of rows) console.log(line(r));
  console.log(`\n${tail}\nwritten to bench/results.json (ratio = ops/s of the case / ops/s of its baseline)`);
}
