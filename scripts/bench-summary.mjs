// After `turbo run bench`: gather every package's bench/results.json into bench/results.json at the root and print
// one table of ns/op and the ratio of each case to its named in-run baseline.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const all = [];
for (const pkg of readdirSync("packages")) {
  const f = join("packages", pkg, "bench", "results.json");
  if (!existsSync(f)) continue;
  for (const r of JSON.parse(readFileSync(f, "utf8"))) all.push({ package: pkg, ...r });
}
mkdirSync("bench", { recursive: true });
writeFileSync(join("bench", "results.json"), `${JSON.stringify(all, null, 2)}\n`);
const w = Math.max(10, ...all.map((r) => `${r.package}:${r.name}`.length));
console.log(`\n${"case".padEnd(w)}  ${"ns/op".padStart(12)}  ${"ratio".padStart(8)}  baseline`);
for (const r of all) {
  console.log(
    `${`${r.package}:${r.name}`.padEnd(w)}  ${r.nsPerOp.toFixed(2).padStart(12)}  ${r.ratio.toFixed(3).padStart(8)}  ${r.baseline}`,
  );
}
console.log(
  `\n${all.length} results written to bench/results.json (ratio = ops/s of the case / ops/s of its baseline)`,
);
