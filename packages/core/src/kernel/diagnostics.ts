/**
 * The machine's record of everything that went wrong without crashing: WARN_ON splats, use-after-free, refcount
 * misuse, leaks found at teardown, lock problems. Tests fail on any record they did not expect.
 */
import { Tracepoints } from "./trace.js";

/** What kind of problem a diagnostic reports. */
export type DiagnosticKind =
  | "warning"
  | "use-after-free"
  | "double-free"
  | "refcount"
  | "leak"
  | "lock-held"
  | "lock-assert"
  | "lock-inversion"
  | "deadlock"
  | "rcu";

/** A stack captured elsewhere that explains a diagnostic (where an object was freed, the other lock order). */
export interface RelatedSite {
  label: string;
  task?: string;
  stack: string;
}

/** One recorded problem. */
export interface Diagnostic {
  kind: DiagnosticKind;
  message: string;
  /** The task that was running when the problem was detected. */
  task: string;
  stack: string;
  /** Who is to blame, when known: a holder tag, a lock class, an allocation site. */
  culprit?: string;
  related: RelatedSite[];
  /** Set when a test declared it with `expectWarning`. */
  expected: boolean;
}

/** What `expectWarning` matches: a message pattern, or a kind and/or message. */
export type DiagnosticMatch =
  | RegExp
  | string
  | { kind?: DiagnosticKind; message?: RegExp | string; culprit?: RegExp | string };

/** Options of {@link Diagnostics.report}. */
export interface ReportOptions {
  culprit?: string;
  related?: RelatedSite[];
  /** Skip this many extra frames of the captured stack. */
  skipFrames?: number;
}

/**
 * A kernel log line (printk): not a bug report, so it does not fail a test, but kept where a test or a user can see
 * it (`m.diag.kernelLog`).
 * @linux printk / dev_printk
 */
export interface KernelLogLine {
  /** @linux KERN_WARNING, KERN_ERR, KERN_INFO */
  level: "err" | "warn" | "info";
  /** The device the line is about (dev_printk's prefix), if any. */
  dev?: string;
  message: string;
  /** The task that logged it. */
  task: string;
  /** Virtual time in nanoseconds. */
  time: number;
}

/** Ratelimit defaults: at most this many lines per interval and call site. @linux DEFAULT_RATELIMIT_BURST */
export const DEFAULT_RATELIMIT_BURST = 10;
/** @linux DEFAULT_RATELIMIT_INTERVAL (5 * HZ), in nanoseconds */
export const DEFAULT_RATELIMIT_INTERVAL_NS = 5_000_000_000;

/** The state of one ratelimited call site. @linux struct ratelimit_state */
interface RatelimitState {
  begin: number;
  printed: number;
  missed: number;
}

/** Thrown by `expectWarning` when the provoked diagnostic did not happen. */
export class MissingDiagnosticError extends Error {
  constructor(match: DiagnosticMatch, seen: Diagnostic[]) {
    super(
      `expected a diagnostic matching ${describeMatch(match)}, but ${
        seen.length === 0 ? "none was recorded" : `only saw:\n${seen.map(formatDiagnostic).join("\n")}`
      }`,
    );
    this.name = "MissingDiagnosticError";
  }
}

function describeMatch(m: DiagnosticMatch): string {
  if (typeof m === "string" || m instanceof RegExp) return String(m);
  return JSON.stringify({ kind: m.kind, message: m.message?.toString(), culprit: m.culprit?.toString() });
}

function matchText(pattern: RegExp | string | undefined, text: string | undefined): boolean {
  if (pattern === undefined) return true;
  if (text === undefined) return false;
  return typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
}

function matches(d: Diagnostic, m: DiagnosticMatch): boolean {
  if (typeof m === "string" || m instanceof RegExp) return matchText(m, d.message);
  return (
    (m.kind === undefined || m.kind === d.kind) && matchText(m.message, d.message) && matchText(m.culprit, d.culprit)
  );
}

/** Capture the current stack without the first `skip` frames below the caller. */
export function captureStack(skip = 0): string {
  const s = new Error().stack ?? "";
  const lines = s.split("\n");
  // lines[0] is "Error", lines[1] is captureStack itself.
  return lines
    .slice(2 + skip)
    .map((l) => l.trim())
    .join("\n");
}

/** Render one diagnostic for a report: kind, message, culprit, task and the stacks. */
export function formatDiagnostic(d: Diagnostic): string {
  const head = `[${d.kind}] ${d.message}${d.culprit ? ` (culprit: ${d.culprit})` : ""} — task ${d.task}`;
  const stack = d.stack ? `\n    ${d.stack.split("\n").slice(0, 8).join("\n    ")}` : "";
  const rel = d.related
    .map(
      (r) =>
        `\n  ${r.label}${r.task ? ` (task ${r.task})` : ""}:\n    ${r.stack.split("\n").slice(0, 8).join("\n    ")}`,
    )
    .join("");
  return head + stack + rel;
}

/**
 * The machine's diagnostics log.
 * @linux WARN_ON, the KASAN/refcount/lockdep reports and kmemleak, gathered in one place
 */
export class Diagnostics {
  /** Every diagnostic recorded, in order. */
  readonly records: Diagnostic[] = [];
  /** The machine's tracepoints (disabled until a sink attaches). @linux tracefs */
  readonly trace = new Tracepoints();
  /** Names the running task; the scheduler installs its own. */
  currentTask: () => string = () => "main";
  /**
   * Whether `kfree` / `kfree_rcu` capture the freeing stack, shown by later use-after-free and double-free reports
   * (a capture costs about a microsecond; it is rendered only when a report shows it). On for a standalone log;
   * machines take it from `createMachine({ trackFreeStacks })` (off by default). A use-after-free or double-free
   * report turns it on, so the next one names where the object was freed.
   */
  captureFreeStacks = true;
  /** Virtual time in nanoseconds; the scheduler installs its clock. */
  currentTime: () => number = () => 0;
  /** The kernel log (dmesg): lines that report something without being a bug. @linux the printk ring buffer */
  readonly kernelLog: KernelLogLine[] = [];
  private readonly ratelimits = new Map<string, RatelimitState>();
  /** Checks run at teardown; each returns leak descriptions (empty when clean). */
  private readonly teardownChecks: { name: string; check: () => Diagnostic[] | string[] }[] = [];
  private expecting: DiagnosticMatch[] = [];

  /** Record a diagnostic and return it. */
  report(kind: DiagnosticKind, message: string, opts: ReportOptions = {}): Diagnostic {
    const d: Diagnostic = {
      kind,
      message,
      task: this.currentTask(),
      stack: captureStack(1 + (opts.skipFrames ?? 0)),
      related: opts.related ?? [],
      expected: false,
    };
    if (opts.culprit !== undefined) d.culprit = opts.culprit;
    const idx = this.expecting.findIndex((m) => matches(d, m));
    if (idx >= 0) d.expected = true;
    this.records.push(d);
    return d;
  }

  /**
   * Append a line to the kernel log.
   * @linux dev_printk / printk
   */
  printk(level: KernelLogLine["level"], message: string, dev?: string): void {
    const line: KernelLogLine = { level, message, task: this.currentTask(), time: this.currentTime() };
    if (dev !== undefined) line.dev = dev;
    this.kernelLog.push(line);
  }

  /**
   * Log a line unless its call site (`site`) already logged {@link DEFAULT_RATELIMIT_BURST} lines in the current
   * {@link DEFAULT_RATELIMIT_INTERVAL_NS} of virtual time; when a new interval starts after suppressed lines, a
   * "callbacks suppressed" line says how many. Returns whether the line was logged.
   * @linux dev_warn_ratelimited / __ratelimit (___ratelimit)
   */
  printkRatelimited(site: string, level: KernelLogLine["level"], message: string, dev?: string): boolean {
    const now = this.currentTime();
    let rs = this.ratelimits.get(site);
    if (rs === undefined) {
      rs = { begin: now, printed: 0, missed: 0 };
      this.ratelimits.set(site, rs);
    }
    if (now - rs.begin > DEFAULT_RATELIMIT_INTERVAL_NS) {
      if (rs.missed) this.printk("warn", `${site}: ${rs.missed} callbacks suppressed`);
      rs.begin = now;
      rs.printed = 0;
      rs.missed = 0;
    }
    if (rs.printed < DEFAULT_RATELIMIT_BURST) {
      rs.printed++;
      this.printk(level, message, dev);
      return true;
    }
    rs.missed++;
    return false;
  }

  /**
   * Record a warning when `condition` holds, and return the condition.
   * @linux WARN_ON
   */
  warnOn(condition: boolean, message = "WARN_ON"): boolean {
    if (condition) this.report("warning", message, { skipFrames: 1 });
    return condition;
  }

  /**
   * Record a warning once per distinct message.
   * @linux WARN_ON_ONCE
   */
  warnOnOnce(condition: boolean, message = "WARN_ON_ONCE"): boolean {
    if (condition && !this.records.some((r) => r.kind === "warning" && r.message === message)) {
      this.report("warning", message, { skipFrames: 1 });
    }
    return condition;
  }

  /**
   * Run `fn`, which provokes a diagnostic on purpose; the matching records are marked expected and returned.
   * Throws {@link MissingDiagnosticError} when nothing matching was recorded.
   */
  async expectWarning(match: DiagnosticMatch, fn: () => unknown | Promise<unknown>): Promise<Diagnostic[]> {
    const start = this.records.length;
    this.expecting.push(match);
    try {
      await fn();
    } finally {
      this.expecting.splice(this.expecting.indexOf(match), 1);
    }
    return this.claim(match, start);
  }

  /** Synchronous form of {@link expectWarning}. */
  expectWarningSync(match: DiagnosticMatch, fn: () => unknown): Diagnostic[] {
    const start = this.records.length;
    this.expecting.push(match);
    try {
      fn();
    } finally {
      this.expecting.splice(this.expecting.indexOf(match), 1);
    }
    return this.claim(match, start);
  }

  /** Mark already-recorded diagnostics matching `match` as expected; returns them. */
  acknowledge(match: DiagnosticMatch): Diagnostic[] {
    return this.claim(match, 0, false);
  }

  private claim(match: DiagnosticMatch, start: number, mustExist = true): Diagnostic[] {
    const fresh = this.records.slice(start);
    const hit = fresh.filter((d) => matches(d, match));
    if (hit.length === 0 && mustExist) throw new MissingDiagnosticError(match, fresh);
    for (const d of hit) d.expected = true;
    return hit;
  }

  /** Diagnostics no test declared. */
  unexpected(): Diagnostic[] {
    return this.records.filter((d) => !d.expected);
  }

  /** Diagnostics of one kind. */
  ofKind(kind: DiagnosticKind): Diagnostic[] {
    return this.records.filter((d) => d.kind === kind);
  }

  /**
   * Register a check that runs at teardown (leaked references, pages, held locks). A check returns diagnostics or
   * plain leak descriptions, which are recorded as `leak` diagnostics.
   */
  addTeardownCheck(name: string, check: () => Diagnostic[] | string[]): void {
    this.teardownChecks.push({ name, check });
  }

  /** Run every teardown check, recording what they find. */
  runTeardownChecks(): void {
    for (const { name, check } of this.teardownChecks) {
      for (const r of check()) {
        if (typeof r === "string") this.report("leak", r, { culprit: name });
        else if (!this.records.includes(r)) this.records.push(r);
      }
    }
  }

  /** A readable report of every unexpected diagnostic, or `undefined` when there is none. */
  formatReport(): string | undefined {
    const bad = this.unexpected();
    if (bad.length === 0) return undefined;
    return `${bad.length} unexpected diagnostic(s):\n${bad.map(formatDiagnostic).join("\n\n")}`;
  }
}
