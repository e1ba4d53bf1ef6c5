/**
 * Progress of a run: on a terminal, the running step on one line that is rewritten (a spinner-less status line)
 * and each finished step printed once; otherwise (a pipe, CI, a test) plain lines only, one per finished step.
 */
import { type CliIo, styles } from "./io.js";

/** Reports the steps of a run as they go. */
export class Progress {
  private readonly s;
  private pending = false;

  constructor(
    private readonly io: CliIo,
    private readonly total: number,
  ) {
    this.s = styles(io);
  }

  private prefix(i: number): string {
    const w = String(this.total).length;
    return this.s.dim(`[${String(i + 1).padStart(w)}/${this.total}]`);
  }

  /** A step starts (shown only on a terminal). */
  start(i: number, label: string): void {
    if (!this.io.isTTY) return;
    this.io.out(`\r\u001b[2K${this.prefix(i)} ${label} …`);
    this.pending = true;
  }

  /** What the running step is doing now (a terminal only). */
  status(i: number, label: string, text: string): void {
    if (!this.io.isTTY) return;
    this.io.out(`\r\u001b[2K${this.prefix(i)} ${label} … ${this.s.dim(text)}`);
    this.pending = true;
  }

  private clear(): void {
    if (this.pending) this.io.out("\r\u001b[2K");
    this.pending = false;
  }

  /** A step finished. */
  ok(i: number, label: string, detail: string | undefined): void {
    this.clear();
    this.io.out(`${this.prefix(i)} ${this.s.green("ok")}   ${this.s.bold(label)}${detail ? `: ${detail}` : ""}\n`);
  }

  /** A step failed. */
  fail(i: number, label: string, why: string): void {
    this.clear();
    this.io.out(`${this.prefix(i)} ${this.s.red("FAIL")} ${this.s.bold(label)}: ${why}\n`);
  }
}
