/**
 * Argument parsing for every command, on Node's maintained `util.parseArgs` (strict: unknown options and, unless a
 * command takes them, positional arguments are errors). Typed readers reject malformed values (`--seed abc`).
 */
import { parseArgs as nodeParseArgs } from "node:util";

/** Parsed `--name value` / `--flag` options and positional arguments. */
export interface ParsedArgs {
  options: Map<string, string | true>;
  positional: string[];
}

/** Thrown for bad usage; the CLI prints it and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** One option a command accepts. */
export interface OptionSpec {
  /** Takes a value (`--platform FILE`) or is a flag (`--json`). */
  type: "string" | "boolean";
  /** One-letter alias (`-o`). */
  short?: string;
  /** May be given several times (`--module a --module b`). */
  multiple?: boolean;
}

/** What a command accepts: its options and how many positional arguments. */
export interface ArgSpec {
  options: Record<string, OptionSpec>;
  /** Maximum number of positional arguments (default 0). */
  maxPositional?: number;
}

/** The result of {@link parseCommandArgs}: option values by name, and positionals. */
export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positional: string[];
}

/**
 * Parse `args` against `spec` with `util.parseArgs` (strict). Unknown options, a missing option value and extra
 * positional arguments throw {@link UsageError}.
 */
export function parseCommandArgs(args: string[], spec: ArgSpec): Parsed {
  let r: ReturnType<typeof nodeParseArgs>;
  try {
    r = nodeParseArgs({ args, options: spec.options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(cleanMessage((e as Error).message));
  }
  const max = spec.maxPositional ?? 0;
  if (r.positionals.length > max) {
    const extra = r.positionals.slice(max).join(" ");
    throw new UsageError(max === 0 ? `unexpected argument: ${extra}` : `too many arguments: ${extra}`);
  }
  return { values: r.values as Parsed["values"], positional: r.positionals };
}

function cleanMessage(m: string): string {
  // Node's messages carry a hint about `--` that does not apply to our commands.
  return m
    .replace(/\. To specify a positional argument starting with a '-'.*$/s, "")
    .replace(/^Unknown option '(.*)'$/, "unknown option $1")
    .replace(/^Option '(.*?)' argument missing$/, "option $1 needs a value");
}

/**
 * Parse arguments against the options a command knows (the older helper, kept for commands written against it).
 * `valued` options take the next argument (or `--x=v`); positional arguments are returned for the command to check.
 */
export function parseArgs(args: string[], valued: string[], flags: string[]): ParsedArgs {
  const options: ArgSpec["options"] = {};
  for (const v of valued) options[v] = { type: "string" };
  for (const f of flags) options[f] = { type: "boolean" };
  const r = parseCommandArgs(args, { options, maxPositional: Number.POSITIVE_INFINITY });
  const out = new Map<string, string | true>();
  for (const [k, v] of Object.entries(r.values)) {
    if (typeof v === "string") out.set(k, v);
    else if (v === true) out.set(k, true);
  }
  return { options: out, positional: r.positional };
}

/** An integer option value (`--seed 7`, `--seed 0x10`), or `dflt` when absent; anything else is a usage error. */
export function intOption(name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "string" || !/^(0x[0-9a-f]+|\d+)$/i.test(v.trim())) {
    throw new UsageError(`option --${name} needs a non-negative integer (got ${JSON.stringify(v)})`);
  }
  const n = Number(v.trim());
  if (!Number.isSafeInteger(n)) throw new UsageError(`option --${name} is out of range (got ${v})`);
  return n;
}

/** A string option value, or undefined. */
export function strOption(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** A repeatable string option's values. */
export function listOption(v: unknown): string[] {
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === "string");
  return typeof v === "string" ? [v] : [];
}
