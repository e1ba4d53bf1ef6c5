#!/usr/bin/env node
// `npm start`: build quietly (tsc -b, incremental: a no-op when nothing changed; its output is shown only when the
// build fails), then run `iommu-sim run` with the arguments given (`npm start -- --report r.html`), so that the
// terminal shows the program's own output and nothing else.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
const build = spawnSync(process.execPath, [tsc, "-b"], { cwd: root, encoding: "utf8" });
if (build.status !== 0) {
  process.stderr.write(`build failed:\n${build.stdout}${build.stderr}`);
  process.exit(build.status ?? 1);
}
const run = spawnSync(process.execPath, [join(root, "packages/cli/dist/bin.js"), "run", ...process.argv.slice(2)], {
  cwd: root,
  stdio: "inherit",
});
process.exit(run.status ?? 1);
