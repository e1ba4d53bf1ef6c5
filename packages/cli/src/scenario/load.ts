/**
 * Reading a scenario file: JSON (`.json`) or YAML (anything else), then the schema. Every problem names its path
 * (`steps[3].iova`) and what is wrong, all at once, in one {@link ScenarioError} (exit code 2).
 */
import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { UsageError } from "../args.js";
import { type Scenario, scenarioSchema, stepSchemas } from "./schema.js";

/** One problem in a scenario file. */
export interface ScenarioIssue {
  /** Where: `steps[2].device`, or `(root)`. */
  path: string;
  message: string;
}

/** A scenario file that is not valid: its name and every issue. */
export class ScenarioError extends Error {
  constructor(
    readonly file: string,
    readonly issues: ScenarioIssue[],
  ) {
    super(`invalid scenario ${file}:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`);
    this.name = "ScenarioError";
  }
}

function pathString(path: readonly PropertyKey[]): string {
  let s = "";
  for (const k of path) s += typeof k === "number" ? `[${k}]` : s === "" ? String(k) : `.${String(k)}`;
  return s === "" ? "(root)" : s;
}

const KINDS = stepSchemas.map((s) => s.shape.do.value);

function issueMessage(i: z.core.$ZodIssue, input: unknown): string {
  if (i.code === "invalid_union" && i.path.at(-1) === "do") {
    const v = valueAt(input, i.path);
    return `unknown step kind ${JSON.stringify(v)} (one of: ${KINDS.join(", ")})`;
  }
  if (i.code === "invalid_union" && i.path.length >= 2 && i.path[0] === "steps") {
    return `a step needs "do": one of ${KINDS.join(", ")}`;
  }
  if (i.code === "invalid_type" && valueAt(input, i.path) === undefined) return `missing (expected ${i.expected})`;
  if (i.code === "unrecognized_keys") return `unknown field${i.keys.length > 1 ? "s" : ""} ${i.keys.join(", ")}`;
  const v = valueAt(input, i.path);
  return v === undefined ? i.message : `${i.message} (got ${JSON.stringify(v)})`;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const k of path) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** Check parsed JSON/YAML against the schema; `file` names it in errors. */
export function parseScenario(input: unknown, file = "(scenario)"): Scenario {
  const r = scenarioSchema.safeParse(input);
  if (r.success) return r.data;
  throw new ScenarioError(
    file,
    r.error.issues.map((i) => ({ path: pathString(i.path), message: issueMessage(i, input) })),
  );
}

/** Parse a scenario's text: JSON when the file ends in `.json`, YAML otherwise (YAML 1.2 reads JSON too). */
export function parseScenarioText(text: string, file: string): Scenario {
  let data: unknown;
  try {
    data = file.endsWith(".json") ? JSON.parse(text) : parseYaml(text, { prettyErrors: true });
  } catch (e) {
    throw new ScenarioError(file, [
      {
        path: "(root)",
        message: `not valid ${file.endsWith(".json") ? "JSON" : "YAML"}: ${(e as Error).message.split("\n")[0]}`,
      },
    ]);
  }
  return parseScenario(data, file);
}

/** Read and parse a scenario file. A missing file is a usage error. */
export async function loadScenarioFile(file: string): Promise<Scenario> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read scenario file ${file}: ${(e as Error).message}`);
  }
  return parseScenarioText(text, file);
}
