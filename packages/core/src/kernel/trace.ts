/**
 * Tracepoints: kernel and hardware events (probe, attach, map, command, fault, object create/destroy) delivered to
 * whoever listens, as flat records of one schema (docs/trace.md). Mirrors include/trace/events/iommu.h and the
 * ftrace ring buffer reduced to what a tool reads.
 *
 * The one rule: zero cost when nobody listens. A call site tests `trace.enabled` (a plain field read) before it
 * builds a record, so a disabled tracepoint allocates nothing and calls nothing:
 *   `if (diag.trace.enabled) diag.trace.emit("iommu:map", { domain: String(d), iova, paddr, size });`
 * One `Tracepoints` per machine (it lives in the machine's `Diagnostics`); nothing is shared between machines.
 */

/** Fields of one trace record besides `seq` and `event`: flat, JSON-serialisable values. */
export type TraceFields = Record<string, string | number | boolean | undefined>;

/** One emitted event: a sequence number (per machine, from 1), the event name (`subsystem:name`) and its fields. */
export interface TraceRecord {
  seq: number;
  event: string;
  fields: TraceFields;
}

/** Receives every record while attached. Runs synchronously at the tracepoint (possibly in atomic context). */
export type TraceSink = (r: TraceRecord) => void;

/**
 * A machine's tracepoints: `enabled` while at least one sink is attached.
 * @linux the tracefs instance: trace_iommu_* tracepoints with their ring buffer
 */
export class Tracepoints {
  /** Whether anyone listens: call sites test it before building a record. @linux trace_*_enabled() */
  enabled = false;
  private seq = 0;
  private readonly sinks: TraceSink[] = [];

  /**
   * Start delivering records to `sink`; returns the function that detaches it.
   * @linux register_trace_* (a probe on the tracepoints)
   */
  attach(sink: TraceSink): () => void {
    this.sinks.push(sink);
    this.enabled = true;
    return () => {
      const i = this.sinks.indexOf(sink);
      if (i >= 0) this.sinks.splice(i, 1);
      this.enabled = this.sinks.length > 0;
    };
  }

  /**
   * Deliver one record. Call only under `if (trace.enabled)`. A sink that throws is detached (a tracer must never
   * break the traced code).
   * @linux trace_<event>()
   */
  emit(event: string, fields: TraceFields): void {
    const r: TraceRecord = { seq: ++this.seq, event, fields };
    for (const s of [...this.sinks]) {
      try {
        s(r);
      } catch {
        const i = this.sinks.indexOf(s);
        if (i >= 0) this.sinks.splice(i, 1);
        this.enabled = this.sinks.length > 0;
      }
    }
  }
}

/**
 * `0x…` for addresses in trace records (JSON numbers lose nothing below 2^53, but people read hex).
 * @linux the `%llx` of the iommu tracepoints' TP_printk
 */
export function traceHex(n: number): string {
  return `0x${n.toString(16)}`;
}
