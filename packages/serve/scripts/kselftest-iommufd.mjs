#!/usr/bin/env node
// Build the kernel's iommufd selftest from a kernel tree the developer points at (nothing is fetched), run it
// unmodified through the preload shim against `startServer()` (the mock driver), and report each test's TAP result.
//
//   npm run kselftest -w @iommu-sim/serve -- --kernel-tree ~/linux [--out DIR] [--json FILE] [--keep] [-- -f iommufd]
//
// Arguments after a lone `--` go to the harness (its -f/-F/-v/-V/-t/-T/-r filters). docs/kselftest-results.md says
// what passes, what fails and why. Exit status: 0 when the selftest ran to its end and the machine tore down clean,
// whatever the per-test results; 2 when it could not be built or run; 3 when the server's teardown found leaks.
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, "..");

/** The tree's files the build needs, relative to the tree's root. */
export const KERNEL_FILES = [
  "tools/testing/selftests/iommu/iommufd.c",
  "tools/testing/selftests/iommu/iommufd_utils.h",
  "tools/testing/selftests/kselftest_harness.h",
  "tools/testing/selftests/kselftest.h",
  "drivers/iommu/iommufd/iommufd_test.h",
  "include/uapi/linux/iommufd.h",
];

/**
 * Compile `tools/testing/selftests/iommu/<program>.c` of `tree` into `out`. The uAPI headers come from the tree:
 * its installed headers (`usr/include`, after `make headers`) when present, otherwise copies of
 * include/uapi/linux/{iommufd,vfio}.h in a private include directory, so the rest of the tree's uapi (linux/types.h
 * and friends) does not shadow the C library's. Returns the executable's path.
 */
export function buildSelftest(tree, out, program = "iommufd", cc = process.env.CC ?? "cc") {
  for (const f of KERNEL_FILES) {
    if (!existsSync(join(tree, f))) throw new Error(`${tree} is not a kernel tree with the iommufd selftest: no ${f}`);
  }
  const src = join(tree, "tools/testing/selftests/iommu", `${program}.c`);
  if (!existsSync(src)) throw new Error(`no ${src}`);
  const inc = join(out, "include");
  mkdirSync(join(inc, "linux"), { recursive: true });
  const args = ["-Wall", "-O2", "-Wno-unused-function", "-D_GNU_SOURCE"];
  if (existsSync(join(tree, "usr/include/linux/iommufd.h"))) {
    args.push("-isystem", join(tree, "usr/include"));
  } else {
    for (const h of ["iommufd.h", "vfio.h"]) {
      const from = join(tree, "include/uapi/linux", h);
      if (existsSync(from)) copyFileSync(from, join(inc, "linux", h));
    }
    args.push("-I", inc);
  }
  const exe = join(out, program);
  const libs = readFileSync(src, "utf8").includes("<sys/capability.h>") ? ["-lcap"] : [];
  execFileSync(cc, [...args, "-o", exe, src, ...libs, "-lpthread"], { stdio: ["ignore", "inherit", "inherit"] });
  return exe;
}

/** Build the preload shim into `out` and return its path. */
export function buildShim(out, cc = process.env.CC ?? "cc") {
  const so = join(out, "libiommu-shim.so");
  const src = join(pkg, "native", "iommu-shim.c");
  execFileSync(cc, ["-O2", "-Wall", "-shared", "-fPIC", "-o", so, src, "-ldl", "-lpthread"], { stdio: "inherit" });
  return so;
}

/**
 * Parse the harness's TAP output: one entry per `ok`/`not ok` line, with the `#` diagnostics the harness printed
 * for that test (its failed EXPECT/ASSERT lines) as the reason.
 */
export function parseTap(text) {
  const tests = [];
  let plan = 0;
  let notes = [];
  for (const line of text.split("\n")) {
    const p = /^1\.\.(\d+)/.exec(line);
    if (p) {
      plan = Number(p[1]);
      continue;
    }
    const m = /^(not ok|ok) (\d+) (\S+)(?: #\s*(SKIP|XFAIL|XPASS)?\s*(.*))?$/.exec(line);
    if (m) {
      const directive = m[4];
      const status =
        m[1] === "not ok" ? "fail" : directive === "SKIP" ? "skip" : directive === "XFAIL" ? "xfail" : "pass";
      const reason = [m[5] ?? "", ...notes].map((s) => s.trim()).filter((s) => s !== "");
      tests.push({ n: Number(m[2]), name: m[3], status, reason: reason.join("; ") });
      notes = [];
      continue;
    }
    if (line.startsWith("# ") && !/^#\s+(RUN|OK|FAIL|SKIP)\s/.test(line) && !line.startsWith("# Starting")) {
      notes.push(line.slice(2));
    }
  }
  const count = (s) => tests.filter((t) => t.status === s).length;
  return { plan, tests, pass: count("pass"), fail: count("fail"), skip: count("skip"), xfail: count("xfail") };
}

/**
 * Build and run the selftest against a fresh server; resolves to the parsed results, the raw output, the client
 * reports (leaks, warnings per forked test process) and the server's teardown result.
 */
export async function runKselftest({ tree, out, program = "iommufd", harnessArgs = [], timeoutMs = 3_600_000, log }) {
  const { startServer } = await import(pathToFileURL(join(pkg, "dist", "index.js")).href);
  const exe = buildSelftest(tree, out, program);
  const shim = buildShim(out);
  const server = await startServer({ socket: join(out, "sim.sock") });
  let output = "";
  const code = await new Promise((resolveRun) => {
    const child = spawn(exe, harnessArgs, {
      cwd: out,
      env: { ...process.env, LD_PRELOAD: shim, IOMMU_SIM_SOCKET: server.socket },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const take = (d) => {
      output += d;
      log?.(String(d));
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("exit", (c, sig) => {
      clearTimeout(timer);
      resolveRun(c ?? (sig ? 128 : 1));
    });
  });
  const teardown = await server.close();
  return { exitCode: code, output, results: parseTap(output), reports: server.reports, teardown };
}

function usage() {
  return "usage: kselftest-iommufd.mjs --kernel-tree PATH [--program iommufd] [--out DIR] [--json FILE] [--keep] [-- harness args]";
}

async function main(argv) {
  const dd = argv.indexOf("--");
  const own = dd < 0 ? argv : argv.slice(0, dd);
  const harnessArgs = dd < 0 ? [] : argv.slice(dd + 1);
  const opt = (name) => {
    const i = own.indexOf(name);
    return i < 0 ? undefined : own[i + 1];
  };
  const tree = opt("--kernel-tree") ?? process.env.IOMMU_SIM_KERNEL_TREE;
  if (!tree) {
    console.error(usage());
    return 2;
  }
  const out = opt("--out") ?? mkdtempSync(join(tmpdir(), "iommu-sim-kselftest-"));
  mkdirSync(out, { recursive: true });
  let run;
  try {
    run = await runKselftest({
      tree: resolve(tree),
      out,
      program: opt("--program") ?? "iommufd",
      harnessArgs,
      log: (s) => process.stdout.write(s),
    });
  } catch (e) {
    console.error(`kselftest: ${e instanceof Error ? e.message : String(e)}`);
    return 2;
  }
  const { results, teardown, reports } = run;
  console.log(`\n${results.pass} passed, ${results.fail} failed, ${results.skip} skipped (plan ${results.plan})`);
  for (const t of results.tests.filter((x) => x.status === "fail")) console.log(`  FAIL ${t.name}: ${t.reason}`);
  const warned = reports.filter((r) => r.warnings.length > 0 || r.leaks.length > 0);
  for (const r of warned) console.log(`  client ${r.clientPid}: ${[...r.leaks, ...r.warnings].join("; ")}`);
  console.log(`server teardown: ${teardown.exitStatus === 0 ? "clean" : teardown.report}`);
  const json = opt("--json");
  if (json) writeFileSync(json, `${JSON.stringify({ ...results, teardown, reports }, null, 2)}\n`);
  if (!own.includes("--keep") && !opt("--out")) rmSync(out, { recursive: true, force: true });
  if (results.tests.length === 0) return 2;
  return teardown.exitStatus === 0 ? 0 : 3;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((c) => process.exit(c));
}
