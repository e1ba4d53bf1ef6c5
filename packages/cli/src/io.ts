/** Where a command writes: injectable so tests capture the output. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** Whether stdout is a terminal (progress display, colour). Default false. */
  isTTY?: boolean;
  /** The environment (`NO_COLOR`). Default: none. */
  env?: Record<string, string | undefined>;
}

/** Exit codes of the `iommu-sim` command. */
export const EXIT = {
  ok: 0,
  /** A run found a problem (a failed scenario, a diagnostic). */
  failure: 1,
  /** Bad usage, a bad platform description or a bad scenario file. */
  usage: 2,
} as const;

/** Colour only on a terminal and never with `NO_COLOR` set (https://no-color.org). */
export function useColor(io: CliIo): boolean {
  const noColor = io.env?.NO_COLOR;
  return io.isTTY === true && (noColor === undefined || noColor === "");
}

/** ANSI styles that are identity functions when colour is off. */
export interface Styles {
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

/** The styles for `io`: ANSI escapes on a colour terminal, plain text otherwise. */
export function styles(io: CliIo): Styles {
  const on = useColor(io);
  const wrap = (open: number, close: number) => (s: string) => (on ? `\u001b[${open}m${s}\u001b[${close}m` : s);
  return {
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    cyan: wrap(36, 39),
  };
}
