/**
 * Running a scenario: each step in order, with progress; a step that fails (or does not fail with the errno it
 * `expect`s) stops the run and is named in the result. The machine is always torn down and checked, by the
 * scenario's own teardown step or after the last step; a leak or warning there fails the run.
 */
import { KernelError, type KernelModule, type PlatformDescription } from "@iommu-sim/core";
import type { CliIo } from "../io.js";
import { Progress } from "../progress.js";
import { Tracer } from "../trace-writer.js";
import { errnoOf, RunContext } from "./context.js";
import type { Scenario, Step } from "./schema.js";
import { STEPS } from "./steps/index.js";
import type { StepRunner } from "./steps/types.js";
import { type IommuSummary, summarize } from "./summary.js";

/** What {@link runScenario} needs. */
export interface RunOptions {
  platform: PlatformDescription;
  modules: readonly KernelModule[];
  /** Overrides the scenario's seed. */
  seed?: number;
  io: CliIo;
  /** Called right before the teardown step runs, with the live machine (tests check it against the run). */
  beforeTeardown?: (ctx: RunContext) => void | Promise<void>;
}

/** The step that stopped a run. */
export interface FailedStep {
  /** 1-based. */
  index: number;
  label: string;
  message: string;
}

/** One step as it ran. */
export interface StepRecord {
  /** 1-based. */
  index: number;
  label: string;
  ok: boolean;
  detail: string;
}

/** The outcome of a run. */
export interface RunResult {
  ok: boolean;
  /** Every step that ran, in order (the failing one last). */
  steps: StepRecord[];
  failed?: FailedStep;
  summary: IommuSummary[];
  ctx: RunContext;
  tracer: Tracer;
}

/** How a step is shown: its `name`, or its kind and main argument. */
export function stepLabel(s: Step): string {
  if (s.name) return s.name;
  const r = s as Record<string, unknown>;
  const arg = r.device ?? r.object ?? r.as ?? r.queue ?? r.fd ?? r.guest ?? r.label;
  return arg === undefined ? s.do : `${s.do} ${String(arg)}`;
}

function describeError(e: unknown): string {
  if (e instanceof KernelError) return e.message;
  if (e instanceof Error)
    return e.name === "StepError" || e.name === "TeardownError" ? e.message : `${e.name}: ${e.message}`;
  return String(e);
}

async function runOne(ctx: RunContext, s: Step): Promise<string | undefined> {
  const run = STEPS[s.do] as StepRunner<typeof s.do>;
  if (!s.expect) return run(ctx, s as never);
  let detail: string | undefined;
  try {
    detail = await run(ctx, s as never);
  } catch (e) {
    if (errnoOf(e) === s.expect) return `failed with ${s.expect}, as expected`;
    throw e;
  }
  throw new Error(`expected ${s.expect}, but it succeeded${detail ? ` (${detail})` : ""}`);
}

/** Run `sc`; resolves whether it passed, the failing step if not, and the per-IOMMU summary. */
export async function runScenario(sc: Scenario, opts: RunOptions): Promise<RunResult> {
  let ctx: RunContext | undefined;
  const tracer = new Tracer(() => (ctx ? ctx.stepIndex + 1 : 0));
  ctx = new RunContext(opts.platform, opts.modules, opts.seed ?? sc.seed ?? 1, tracer);
  const steps: Step[] = [...sc.steps];
  const implicitTeardown = !steps.some((s) => s.do === "teardown");
  if (implicitTeardown) steps.push({ do: "teardown", name: "teardown (implicit)" });
  const progress = new Progress(opts.io, steps.length);
  let failed: FailedStep | undefined;
  const log: StepRecord[] = [];
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]!;
    const label = stepLabel(s);
    ctx.stepIndex = i;
    progress.start(i, label);
    ctx.status = (text) => progress.status(i, label, text);
    try {
      if (s.do === "teardown" && ctx.machine && !ctx.tornDown) await opts.beforeTeardown?.(ctx);
      const detail = await runOne(ctx, s);
      progress.ok(i, label, detail);
      log.push({ index: i + 1, label, ok: true, detail: detail ?? "" });
    } catch (e) {
      const message = describeError(e);
      progress.fail(i, label, message);
      log.push({ index: i + 1, label, ok: false, detail: message });
      failed = { index: i + 1, label, message };
      break;
    }
  }
  if (failed && ctx.machine && !ctx.tornDown) {
    // The run stopped: free the machine without judging it (the failing step is the report).
    ctx.tornDown = true;
    tracer.stop();
    await ctx.machine.teardown().catch(() => undefined);
  }
  const summary = ctx.machine ? summarize(ctx.machine) : [];
  return { ok: failed === undefined, steps: log, ...(failed ? { failed } : {}), summary, ctx, tracer };
}
