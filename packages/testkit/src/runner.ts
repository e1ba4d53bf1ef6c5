/**
 * The programmatic runner: every check against every target, outside vitest, producing the check × driver table
 * with each failure's diagnostic and replay seed. The CLI's `iommu-sim conformance` prints it.
 */
import { pathToFileURL } from "node:url";
import { ConformanceError } from "./errors.js";
import { planConformance, runPlanned } from "./run-check.js";
import type { ConformanceOptions, ConformanceTarget } from "./target.js";
import { amdTarget } from "./targets/amd.js";
import { mockTarget } from "./targets/mock.js";
import { smmuv3Target } from "./targets/smmuv3.js";
import { vtdTarget } from "./targets/vtd.js";

/** The outcome of one check on one driver. */
export interface ConformanceResult {
  driver: string;
  check: string;
  status: "pass" | "fail" | "n/a";
  /** Why it does not apply (n/a) or what failed (fail). */
  detail?: string;
  /** The seed that replays a random check (pass it as `seed` / IOMMU_SIM_SEED). */
  seed: number;
  ms: number;
}

/** Everything one run produced. */
export interface ConformanceReport {
  drivers: string[];
  checks: string[];
  results: ConformanceResult[];
  passed: number;
  failed: number;
  na: number;
  ms: number;
}

/** A progress event: a check is starting, or finished with its result. */
export type ConformanceProgress =
  | { kind: "start"; driver: string; check: string; index: number; total: number }
  | { kind: "done"; result: ConformanceResult; index: number; total: number };

/** Options of {@link runConformance}. */
export interface RunConformanceOptions extends ConformanceOptions {
  /** Targets to run: target objects, or names of the shipped targets / module paths (see {@link resolveTarget}). */
  drivers?: readonly (ConformanceTarget | string)[];
  onProgress?(e: ConformanceProgress): void;
}

/** The shipped targets by name. */
export const conformanceTargets: Readonly<Record<string, () => ConformanceTarget>> = {
  mock: mockTarget,
  smmuv3: smmuv3Target,
  vtd: vtdTarget,
  amd: amdTarget,
};

function isTarget(v: unknown): v is ConformanceTarget {
  return typeof v === "object" && v !== null && "driver" in v && "caps" in v && "name" in v;
}

/**
 * A target by name ("mock", "smmuv3") or module path: the module's `conformanceTarget` export or its default export,
 * either a target or a function returning one. Throws with the known names when nothing matches.
 * @linux modprobe's lookup of a module by name or path
 */
export async function resolveTarget(spec: string | ConformanceTarget): Promise<ConformanceTarget> {
  if (typeof spec !== "string") return spec;
  const named = conformanceTargets[spec];
  if (named) return named();
  if (!/[./\\]/.test(spec)) {
    throw new ConformanceError(`unknown driver "${spec}" (known: ${Object.keys(conformanceTargets).join(", ")})`);
  }
  const mod = (await import(pathToFileURL(spec).href)) as Record<string, unknown>;
  for (const v of [mod.conformanceTarget, mod.default]) {
    const t = typeof v === "function" ? (v as () => unknown)() : v;
    if (isTarget(t)) return t;
  }
  throw new ConformanceError(`${spec} exports no conformanceTarget (nor a default target)`);
}

/**
 * Run the conformance checks against each driver; never throws for a failing check (it is a "fail" row).
 * @linux running a kselftest suite over several kernels and collecting TAP
 */
export async function runConformance(opts: RunConformanceOptions = {}): Promise<ConformanceReport> {
  const t0 = Date.now();
  const targets = await Promise.all((opts.drivers ?? Object.keys(conformanceTargets)).map(resolveTarget));
  const plans = targets.map((t) => ({ t, plan: planConformance(t, opts) }));
  const total = plans.reduce((n, p) => n + p.plan.length, 0);
  const results: ConformanceResult[] = [];
  let index = 0;
  for (const { t, plan } of plans) {
    for (const p of plan) {
      opts.onProgress?.({ kind: "start", driver: t.name, check: p.check.id, index, total });
      const start = Date.now();
      let r: ConformanceResult;
      if (p.na !== undefined) {
        r = { driver: t.name, check: p.check.id, status: "n/a", detail: p.na, seed: p.seed, ms: 0 };
      } else {
        try {
          await runPlanned(t, p, opts);
          r = { driver: t.name, check: p.check.id, status: "pass", seed: p.seed, ms: Date.now() - start };
        } catch (e) {
          const detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
          r = { driver: t.name, check: p.check.id, status: "fail", detail, seed: p.seed, ms: Date.now() - start };
        }
      }
      results.push(r);
      opts.onProgress?.({ kind: "done", result: r, index, total });
      index++;
    }
  }
  const checks = orderChecks([...new Set(results.map((r) => r.check))]);
  const count = (s: ConformanceResult["status"]) => results.filter((r) => r.status === s).length;
  return {
    drivers: targets.map((t) => t.name),
    checks,
    results,
    passed: count("pass"),
    failed: count("fail"),
    na: count("n/a"),
    ms: Date.now() - t0,
  };
}

const AREAS = ["probe", "domains", "mapping", "invalidation", "faults", "iommufd", "concurrency", "isolation"];

/** Report order: by area, mapping checks by page size, otherwise first seen. */
function orderChecks(ids: string[]): string[] {
  const key = (id: string): [number, number, number] => {
    const area = AREAS.indexOf(id.split("/")[0]!);
    const size = /three-way-(0x[0-9a-f]+)$/.exec(id);
    return [area < 0 ? AREAS.length : area, size ? Number(size[1]) : 0, ids.indexOf(id)];
  };
  return [...ids].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
}

/**
 * The report as a text table (check × driver: pass / FAIL / n/a), then each failure with its diagnostic and seed.
 * @linux the kselftest summary lines
 */
export function formatConformanceReport(report: ConformanceReport): string {
  const w = Math.max(5, ...report.checks.map((c) => c.length));
  const cols = report.drivers.map((d) => Math.max(6, d.length));
  const cell = (s: string, n: number) => s.padEnd(n);
  const lines = [
    [cell("check", w), ...report.drivers.map((d, i) => cell(d, cols[i]!))].join("  "),
    ["-".repeat(w), ...cols.map((n) => "-".repeat(n))].join("  "),
  ];
  for (const c of report.checks) {
    const row = report.drivers.map((d, i) => {
      const r = report.results.find((x) => x.check === c && x.driver === d);
      return cell(r ? (r.status === "fail" ? "FAIL" : r.status) : "", cols[i]!);
    });
    lines.push([cell(c, w), ...row].join("  ").trimEnd());
  }
  lines.push("");
  for (const r of report.results.filter((x) => x.status === "fail")) {
    lines.push(`FAIL ${r.driver} ${r.check} (seed ${r.seed}):`, `  ${r.detail?.replaceAll("\n", "\n  ")}`);
  }
  lines.push(
    `${report.passed} passed, ${report.failed} failed, ${report.na} n/a (${report.drivers.length} driver(s), ` +
      `${(report.ms / 1000).toFixed(1)} s)`,
  );
  return `${lines.join("\n")}\n`;
}
