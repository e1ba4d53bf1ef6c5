/**
 * The CLI's trace sink: every record of the machine's tracepoints, tagged with the scenario step that was running,
 * kept in memory (for the timeline and the report) and written as JSON lines by `--trace FILE` (schema:
 * docs/trace.md).
 */
import { writeFile } from "node:fs/promises";
import type { Machine, TraceRecord } from "@iommu-sim/core";

/** One line of a trace file: `seq`, `event`, `step`, then the event's own fields. */
export type TraceLine = { seq: number; event: string; step: number } & Record<string, unknown>;

/** Collects trace records from one machine. */
export class Tracer {
  readonly lines: TraceLine[] = [];
  private detach: (() => void) | undefined;

  constructor(private readonly stepOf: () => number) {}

  /** Start collecting the machine's events. */
  attach(m: Machine): void {
    this.detach = m.diag.trace.attach((r: TraceRecord) => {
      this.lines.push({ seq: r.seq, event: r.event, step: this.stepOf(), ...r.fields });
    });
  }

  /** Stop collecting. */
  stop(): void {
    this.detach?.();
    this.detach = undefined;
  }

  /** Count of records per event name. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const l of this.lines) out[l.event] = (out[l.event] ?? 0) + 1;
    return out;
  }

  /** Write every record as one JSON object per line. */
  async writeJsonl(file: string): Promise<void> {
    await writeFile(file, this.lines.map((l) => JSON.stringify(l)).join("\n") + (this.lines.length ? "\n" : ""));
  }
}
