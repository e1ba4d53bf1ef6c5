/**
 * A fuzz campaign: generate programs (fresh ones, or mutations of a corpus of programs that reached a new
 * ioctl/errno pair), run each on a fresh machine with its checks, and for every new finding shrink the program and
 * write a vitest reproducer. Counts calls, the errno distribution per ioctl and the coverage of ioctls and error
 * paths. Known findings (the allow-list) are counted, not reported as failures.
 * @linux syzkaller's syz-manager fuzzing loop, corpus and crash triage
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { avoidOptions, KNOWN_FINDINGS, type KnownFinding, knownFinding } from "./allowlist.js";
import { callName, Execution, type ExecutionOptions, type Finding } from "./executor.js";
import { type GenContext, type GenOptions, generate, mutateCall, prologue } from "./generator.js";
import { runLoadCase } from "./load.js";
import { supportsIntegerPointer } from "./machine.js";
import { type Call, type Program, programToJson } from "./program.js";
import { reproducerFile } from "./reproducer.js";
import { Rng } from "./rng.js";
import { seedPrograms } from "./seeds.js";
import { replay, shrink } from "./shrink.js";
import { IOCTL_SPECS } from "./spec.js";

/** Options of {@link runCampaign}. */
export interface CampaignOptions {
  seed?: number;
  /** Stop after this many calls. */
  calls?: number;
  /** Stop after this many wall-clock seconds (campaigns only; a test bounds by calls). */
  seconds?: number;
  /** Calls per program (default 48). */
  programLength?: number;
  /** Where to write reproducers (default none: findings are only returned). */
  out?: string;
  /** Also shrink and write a reproducer of the first occurrence of each allow-listed finding here. */
  knownOut?: string;
  /** Known findings (default {@link KNOWN_FINDINGS}). */
  allow?: readonly KnownFinding[];
  /** Generator options (the allow-list's `avoid` options win). */
  gen?: GenOptions;
  /** Per-call checks and test hooks. */
  exec?: ExecutionOptions;
  /** Replays to spend shrinking each new finding (default 300; 0 keeps programs as found). */
  shrinkBudget?: number;
  /** Start the corpus with the seed programs (default true). */
  seeds?: boolean;
  /** Stop once this many new findings are in (tests). */
  stopAfterFindings?: number;
  /** Run the multi-process load case every this many programs (default 40; 0 never). */
  loadEvery?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** A new (not allow-listed) finding with its shrunk program. */
export interface ReportedFinding {
  finding: Finding;
  program: Program;
  originalLength: number;
  /** Path of the reproducer, when written. */
  reproducer?: string;
  /** How many programs showed it. */
  count: number;
}

/** What a campaign did and found. */
export interface CampaignReport {
  seed: number;
  calls: number;
  programs: number;
  seconds: number;
  /** errno name (or `0`) → count, per call name. */
  errnos: Map<string, Map<string, number>>;
  /** New findings, by signature. */
  findings: ReportedFinding[];
  /** Allow-listed findings seen: entry name → count. */
  known: Map<string, number>;
  /** Spec names never issued (should be empty in any real campaign). */
  uncovered: string[];
  /** Whether integer user pointers reach the kernel (probed at the start). */
  uptr: boolean | undefined;
  corpus: number;
  /** Runs of the multi-process load case (its operations count as calls). */
  loadRuns: number;
  /** Slow calls that were not slow again on replay (a loaded machine, not the kernel). */
  unconfirmedSlow: number;
}

function bump(m: Map<string, Map<string, number>>, name: string, errno: string): boolean {
  let e = m.get(name);
  if (!e) m.set(name, (e = new Map()));
  const n = e.get(errno) ?? 0;
  e.set(errno, n + 1);
  return n === 0;
}

/**
 * Run one program: generated from `seed`, or `base` mutated. Stops after the first finding (the program is then
 * torn down and its teardown checked too).
 * @linux none (syz-fuzzer: generate or mutate, then execute one program)
 */
export async function runOne(
  seed: number,
  opts: { length: number; gen: GenOptions; exec: ExecutionOptions; base?: Program; allow?: readonly KnownFinding[] },
): Promise<{ program: Program; ex: Execution }> {
  const rng = new Rng(seed);
  const ex = await Execution.start({ ...opts.exec, seed });
  let id = 1 + Math.max(0, ...(opts.base?.calls.map((c) => c.id) ?? []));
  const ctx: GenContext = { ex, rng, nextId: () => id++, opts: opts.gen };
  const runAll = async (calls: Call[]): Promise<boolean> => {
    for (const c of calls) {
      const o = await ex.run(c);
      // A new finding ends the program (shrinking starts from there); a known one does not.
      if (o.findings.some((f) => !knownFinding(f, opts.allow ?? []))) return false;
    }
    return true;
  };
  try {
    let going = true;
    if (opts.base) {
      for (const c of opts.base.calls) {
        if (!going || ex.executed.length >= opts.length) break;
        const x = rng.float();
        if (x < 0.08) continue;
        if (x < 0.16) going = await runAll(generate(ctx));
        else if (x < 0.22) {
          // Issue an earlier ioctl again with one argument re-drawn (A -> B, then B -> A).
          const prev = ex.executed.filter((e) => e.op === "ioctl");
          if (prev.length) going = await runAll([mutateCall(ctx, { ...rng.pick(prev), id: ctx.nextId() })]);
        }
        if (going) going = await runAll([x < 0.3 ? mutateCall(ctx, c) : c]);
      }
    } else going = await runAll(prologue(ctx));
    while (going && ex.executed.length < opts.length) going = await runAll(generate(ctx));
  } finally {
    await ex.finish();
  }
  return { program: { seed, calls: ex.executed }, ex };
}

/**
 * Run a campaign until `calls` or `seconds` is reached.
 * @linux none: syz-manager
 */
export async function runCampaign(opts: CampaignOptions = {}): Promise<CampaignReport> {
  const seed = opts.seed ?? 1;
  const rng = new Rng(seed);
  const allow = opts.allow ?? KNOWN_FINDINGS;
  const report: CampaignReport = {
    seed,
    calls: 0,
    programs: 0,
    seconds: 0,
    errnos: new Map(),
    findings: [],
    known: new Map(),
    uncovered: [],
    uptr: undefined,
    corpus: 0,
    loadRuns: 0,
    unconfirmedSlow: 0,
  };
  const gen: GenOptions = { hugeLengths: true, hugeSizes: true, ...opts.gen, ...avoidOptions(allow) };
  if (gen.uptr === undefined) {
    report.uptr = await probeIntegerPointers();
    // Unsupported: still sent now and then (the refusal is itself a finding), else as bytes.
    gen.uptr = report.uptr;
  }
  const exec = opts.exec ?? {};
  const length = opts.programLength ?? 48;
  const maxCalls = opts.calls ?? (opts.seconds ? Number.POSITIVE_INFINITY : 10_000);
  const deadline = opts.seconds ? performance.now() + opts.seconds * 1000 : Number.POSITIVE_INFINITY;
  const start = performance.now();
  const bySig = new Map<string, ReportedFinding>();
  const seeds: Program[] = opts.seeds === false ? [] : seedPrograms();
  const corpus: Program[] = [...seeds];
  let lastLog = start;
  const stopAt = opts.stopAfterFindings ?? Number.POSITIVE_INFINITY;
  while (report.calls < maxCalls && performance.now() < deadline && report.findings.length < stopAt) {
    const pseed = rng.fork();
    // Mutate a corpus program 40% of the time; a third of those start from a seed program, which a grown corpus
    // would otherwise dilute.
    const from = seeds.length && rng.chance(0.33) ? seeds : corpus;
    const base = from.length && rng.chance(0.4) ? rng.pick(from) : undefined;
    const { program, ex } = await runOne(pseed, { length, gen, exec, allow, ...(base ? { base } : {}) });
    report.programs++;
    report.calls += ex.executed.length;
    let fresh = false;
    ex.executed.forEach((c, i) => {
      if (bump(report.errnos, callName(c), String(ex.outcomes[i]!.errno))) fresh = true;
    });
    if (fresh && corpus.length < 500) corpus.push(program);
    for (const f of ex.findings) {
      const k = knownFinding(f, allow);
      if (k) {
        const n = report.known.get(k.name) ?? 0;
        report.known.set(k.name, n + 1);
        if (n === 0 && opts.knownOut) {
          // A reproducer of each known finding, to check its fix with (and to empty the allow-list by).
          const s = await shrink(program, f, { ...exec, budget: f.kind === "slow" ? 30 : 150 });
          const path = writeReproducer(opts.knownOut, s.program, s.finding);
          opts.log?.(`known finding ${k.name} (${k.issue}): shrunk to ${s.program.calls.length} calls: ${path}`);
        }
        continue;
      }
      const seen = bySig.get(f.signature);
      if (seen) {
        seen.count++;
        continue;
      }
      if (f.kind === "slow" && !(await replay(program, exec)).some((x) => x.signature === f.signature)) {
        // Wall-clock time on a shared machine: a call that is not slow again on replay was the machine, not the
        // kernel.
        report.unconfirmedSlow++;
        continue;
      }
      opts.log?.(`new finding: ${f.signature} (program of ${program.calls.length} calls, seed ${pseed})`);
      // A slow call costs its time on every replay: shrink those with a small budget.
      const budget = Math.min(opts.shrinkBudget ?? 300, f.kind === "slow" ? 30 : Number.POSITIVE_INFINITY);
      const shrunk = budget > 0 ? await shrink(program, f, { ...exec, budget }) : { program, finding: f };
      const rf: ReportedFinding = {
        finding: shrunk.finding,
        program: shrunk.program,
        originalLength: program.calls.length,
        count: 1,
      };
      if (opts.out) rf.reproducer = writeReproducer(opts.out, rf.program, rf.finding);
      opts.log?.(`  shrunk to ${rf.program.calls.length} calls${rf.reproducer ? `: ${rf.reproducer}` : ""}`);
      bySig.set(f.signature, rf);
      report.findings.push(rf);
    }
    const every = opts.loadEvery ?? 40;
    if (every > 0 && report.programs % every === 0) {
      const lr = await runLoadCase(rng.fork());
      report.loadRuns++;
      report.calls += lr.ops;
      for (const f of lr.findings) {
        if (knownFinding(f, allow)) continue;
        const seen = bySig.get(f.signature);
        if (seen) seen.count++;
        else {
          opts.log?.(`new finding in the load case (seed ${lr.seed}, ${lr.schedule}): ${f.signature}`);
          const rf: ReportedFinding = {
            finding: f,
            program: { seed: lr.seed, calls: [] },
            originalLength: 0,
            count: 1,
          };
          bySig.set(f.signature, rf);
          report.findings.push(rf);
        }
      }
    }
    const now = performance.now();
    if (opts.log && now - lastLog > 10_000) {
      lastLog = now;
      const s = (now - start) / 1000;
      opts.log(`${report.calls} calls, ${report.programs} programs, ${Math.round(report.calls / s)} calls/s`);
    }
  }
  report.seconds = (performance.now() - start) / 1000;
  report.corpus = corpus.length;
  report.uncovered = IOCTL_SPECS.map((s) => s.name).filter((n) => !report.errnos.has(n));
  return report;
}

/** Whether this build's `p.ioctl` takes integer user pointers (a throwaway machine answers). @linux none (a probe of the ioctl argument forms) */
export async function probeIntegerPointers(): Promise<boolean> {
  const ex = await Execution.start({});
  try {
    const p = ex.procs.get(0)!;
    const fd = await p.open("/dev/iommu");
    return await supportsIntegerPointer(p, fd, ex.scratch.get(0)!);
  } finally {
    await ex.finish();
  }
}

/** A file name for a finding: its kind and call plus a short hash of the signature. @linux none (syz-manager crash directory naming) */
export function findingFileName(f: Finding): string {
  let h = 2166136261;
  for (let i = 0; i < f.signature.length; i++) h = Math.imul(h ^ f.signature.charCodeAt(i), 16777619) >>> 0;
  const call = (f.callName ?? "teardown").replace(/[^A-Za-z0-9_]/g, "");
  return `${f.kind}-${call}-${h.toString(16).padStart(8, "0")}`;
}

/** Write `program` as `<out>/<name>.test.ts` (the reproducer) and `<name>.json` (for --replay); returns the .ts path. @linux none (syz-repro output: prog2c) */
export function writeReproducer(out: string, program: Program, finding: Finding): string {
  mkdirSync(out, { recursive: true });
  const name = findingFileName(finding);
  const json = join(out, `${name}.json`);
  writeFileSync(json, programToJson(program));
  const ts = join(out, `${name}.test.ts`);
  writeFileSync(ts, reproducerFile(program, finding, { jsonName: json }));
  return ts;
}

/** The campaign report as text: totals, coverage, errno distribution per call, known and new findings. @linux none (syz-manager stats page) */
export function formatReport(r: CampaignReport): string {
  const lines: string[] = [];
  const rate = r.seconds > 0 ? Math.round(r.calls / r.seconds) : 0;
  lines.push(
    `fuzz: seed ${r.seed}: ${r.calls} calls in ${r.programs} programs, ${r.seconds.toFixed(1)} s (${rate} calls/s)`,
  );
  const names = IOCTL_SPECS.map((s) => s.name);
  const covered = names.filter((n) => r.errnos.has(n));
  let paths = 0;
  for (const n of names) paths += [...(r.errnos.get(n)?.keys() ?? [])].filter((e) => e !== "0").length;
  lines.push(`load case: ${r.loadRuns} runs (3 processes on one iommufd, random scheduler, checked against the model)`);
  lines.push(`coverage: ${covered.length}/${names.length} ioctls issued; ${paths} distinct (ioctl, errno) error paths`);
  if (r.uncovered.length) lines.push(`  never issued: ${r.uncovered.join(", ")}`);
  lines.push(
    `integer user pointers: ${r.uptr === undefined ? "not tried" : r.uptr ? "supported" : "refused (sent as bytes)"}`,
  );
  const total = new Map<string, number>();
  for (const e of r.errnos.values()) for (const [k, v] of e) total.set(k, (total.get(k) ?? 0) + v);
  lines.push(
    `errno distribution: ${[...total.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k === "0" ? "ok" : k} ${v}`)
      .join(", ")}`,
  );
  lines.push("per call (errno: count):");
  for (const [n, e] of [...r.errnos.entries()].sort()) {
    const parts = [...e.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k === "0" ? "ok" : k}:${v}`);
    lines.push(`  ${n.padEnd(36)} ${parts.join(" ")}`);
  }
  lines.push(`known findings (allow-listed): ${r.known.size ? "" : "none"}`);
  for (const [k, v] of r.known) lines.push(`  ${k}: ${v}`);
  if (r.unconfirmedSlow)
    lines.push(`slow calls not slow again on replay (machine load, ignored): ${r.unconfirmedSlow}`);
  lines.push(`new findings: ${r.findings.length}`);
  for (const f of r.findings) {
    lines.push(`  ${f.finding.signature}`);
    lines.push(
      `    seen ${f.count}x; shrunk ${f.originalLength} -> ${f.program.calls.length} calls${f.reproducer ? `; ${f.reproducer}` : ""}`,
    );
  }
  return lines.join("\n");
}
