import type { RunContext } from "../context.js";
import type { Step, StepKind } from "../schema.js";

/** The parsed step of kind `K`. */
export type StepOf<K extends StepKind> = Extract<Step, { do: K }>;

/** Runs one step; resolves to a one-line detail of what happened (shown after the step's label). */
export type StepRunner<K extends StepKind> = (ctx: RunContext, step: StepOf<K>) => Promise<string | undefined>;

/** A runner for every step kind. */
export type StepTable = { [K in StepKind]: StepRunner<K> };

export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
