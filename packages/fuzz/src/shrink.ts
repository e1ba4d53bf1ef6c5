/**
 * Replay and shrinking. A program replays exactly (same machine seed, same calls, references resolved the same
 * way); the shrinker cuts a failing program down to the calls the failure needs (everything after the failing
 * call first, then halves, quarters, … single calls), then simplifies what is left (no fail-nth, object form,
 * literal arguments zeroed), keeping each step only if the same finding still shows.
 * @linux syzkaller prog/minimization.go
 */
import { Execution, type ExecutionOptions, type Finding } from "./executor.js";
import { type Call, isRef, isScratch, type Program } from "./program.js";

/** Run `program` on a fresh machine; resolves to everything it found (teardown included). @linux none (syz-repro: run a program again) */
export async function replay(program: Program, opts: ExecutionOptions = {}): Promise<Finding[]> {
  const ex = await Execution.start({ ...opts, seed: program.seed });
  try {
    for (const c of program.calls) await ex.run(c);
  } finally {
    await ex.finish();
  }
  return ex.findings;
}

/** Options of {@link shrink}. */
export interface ShrinkOptions extends ExecutionOptions {
  /** Most replays to spend (default 400). */
  budget?: number;
}

/** A shrunk program and the finding as its last replay showed it. */
export interface ShrinkResult {
  program: Program;
  finding: Finding;
  replays: number;
}

/**
 * Shrink `program` while it still shows a finding with `signature`. Resolves to the smallest program found and
 * the finding as that program shows it (its `at` index points into the shrunk program).
 * @linux none (syzkaller prog/minimization.go Minimize)
 */
export async function shrink(program: Program, target: Finding, opts: ShrinkOptions = {}): Promise<ShrinkResult> {
  let budget = opts.budget ?? 400;
  let replays = 0;
  let best: Finding | undefined;
  const fails = async (calls: Call[]): Promise<boolean> => {
    if (budget <= 0) return false;
    budget--;
    replays++;
    const found = await replay({ seed: program.seed, calls }, opts);
    const hit = found.find((f) => f.signature === target.signature);
    if (hit) best = hit;
    return hit !== undefined;
  };
  let calls = program.calls;
  if (!(await fails(calls))) return { program, finding: target, replays };
  if (target.at !== undefined && target.kind !== "teardown" && target.at + 1 < calls.length) {
    const cut = calls.slice(0, target.at + 1);
    if (await fails(cut)) calls = cut;
  }
  for (let chunk = Math.max(1, calls.length >> 1); chunk >= 1; chunk >>= 1) {
    for (let i = calls.length - chunk; i >= 0 && budget > 0; i -= chunk) {
      const cand = [...calls.slice(0, i), ...calls.slice(i + chunk)];
      if (cand.length && (await fails(cand))) calls = cand;
    }
    if (chunk === 1) {
      // One more single-call pass: removing one call can make another removable.
      for (let i = calls.length - 1; i >= 0 && budget > 0; i--) {
        const cand = [...calls.slice(0, i), ...calls.slice(i + 1)];
        if (cand.length && (await fails(cand))) calls = cand;
      }
    }
  }
  for (let i = 0; i < calls.length && budget > 0; i++) {
    const rejected = new Set<string>();
    let again = true;
    while (again && budget > 0) {
      again = false;
      for (const simpler of simplifications(calls[i]!)) {
        const key = JSON.stringify(simpler, (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
        if (rejected.has(key)) continue;
        const cand = [...calls.slice(0, i), simpler, ...calls.slice(i + 1)];
        if (await fails(cand)) {
          calls = cand;
          again = true;
          break;
        }
        rejected.add(key);
      }
    }
  }
  // The finding as the final program shows it.
  await fails(calls);
  return { program: { seed: program.seed, calls }, finding: best ?? target, replays };
}

function* simplifications(c: Call): Generator<Call> {
  if (c.failNth) {
    const { failNth: _, ...rest } = c;
    yield rest as Call;
  }
  if (c.op !== "ioctl") return;
  if (c.form !== "object" && c.form !== "int") yield { ...c, form: "object" };
  for (const [k, v] of Object.entries(c.args)) {
    if (isRef(v) || isScratch(v) || v === 0 || v === 0n || k === "size" || k === "argsz") continue;
    yield { ...c, args: { ...c.args, [k]: typeof v === "bigint" ? 0n : 0 } };
  }
}
