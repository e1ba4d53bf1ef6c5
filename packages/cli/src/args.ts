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

/**
 * Parse arguments against the options a command knows. `valued` options take the next argument (or `--x=v`).
 */
export function parseArgs(args: string[], valued: string[], flags: string[]): ParsedArgs {
  const options = new Map<string, string | true>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (valued.includes(name)) {
      const v = eq >= 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) throw new UsageError(`option --${name} needs a value`);
      options.set(name, v);
    } else if (flags.includes(name) && eq < 0) {
      options.set(name, true);
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  return { options, positional };
}
