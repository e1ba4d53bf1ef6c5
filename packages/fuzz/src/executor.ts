/**
 * Runs a program call by call on a fresh machine and checks each call: only a KernelError with a valid errno may
 * escape, no call may sleep past a virtual-time bound, no WARN or other diagnostic may come from user input, and
 * the machine must tear down clean at the end. Results of calls (IDs, fds, VAs) are kept by call id so later calls'
 * {@link Ref}s resolve, and the resources they produced are offered to the generator.
 * @linux syzkaller's executor with KASAN/lockdep/WARN detection, one VM per program
 */
import { errnoName, KernelError, type Machine, type Process, type UapiStruct } from "@iommu-sim/core";
import { bootFuzzMachine, type FuzzMachineOptions, ioctlBytes, ioctlUptr, s32, u32, u64 } from "./machine.js";
import { type Call, isRef, isScratch, type Ref, type Val } from "./program.js";
import { type IoctlSpec, type ResourceKind, SPEC_BY_NAME } from "./spec.js";

/** Bytes of scratch memory each process maps at start (struct bodies and the blobs pointers point to). */
export const SCRATCH_SIZE = 4 * 4096;
/** Offset in the scratch pages where an integer-pointer ioctl's struct is written. */
export const UPTR_OFFSET = 0;
/** Default bound on the virtual time one call may take (ns). Linux's longest wait here is 60 s (destroy_wait). */
export const DEFAULT_BLOCK_BOUND_NS = 10 * 1e9;

/** What went wrong. */
export type FindingKind = "exception" | "bad-errno" | "warning" | "blocked" | "teardown" | "model" | "slow";

/** A problem one program exposed. */
export interface Finding {
  kind: FindingKind;
  /** Stable identity for deduplication and the allow-list: kind, call name and the message without numbers. */
  signature: string;
  message: string;
  /** Index in the executed program of the call that showed it (absent for teardown). */
  at?: number;
  callName?: string;
  /** The argument form of that call (`uptr` findings of an unsupported form are told apart). */
  form?: string;
}

/** Outcome of one call. */
export interface CallOutcome {
  /** `0` on success, else the errno name; `"skipped"` when the call could not be issued (dead process). */
  errno: string | 0;
  findings: Finding[];
}

/** Options of an {@link Execution}. */
export interface ExecutionOptions extends FuzzMachineOptions {
  /** Virtual-time bound per call (ns). */
  blockBoundNs?: number;
  /** Report calls slower than this many wall-clock ms (campaigns only; tests leave it unset). */
  slowMs?: number;
  /** Run on each fresh machine after boot (tests plant a bug with it to prove finding, shrinking and replay). */
  setup?: (m: Machine) => void;
}

/** A resource in the pool: which call produced it and under which field. */
export interface PoolEntry {
  ref: Ref;
  proc: number;
}

/** Normalize a message into a signature part: numbers and hex go, so one bug has one signature. @linux none (syzkaller crash title extraction) */
export function normalizeMessage(msg: string): string {
  const first = msg.split("\n")[0] ?? "";
  return first
    .replace(/0x[0-9a-f]+/gi, "N")
    .replace(/\d+/g, "N")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 160);
}

function fieldType(struct: UapiStruct<object> | undefined, name: string): string | undefined {
  return struct?.fields.find((f) => f.name === name)?.type;
}

/** Which fd kind a path opens. @linux none (syzkaller resource kinds of openat) */
export function fdKindOfPath(path: string): ResourceKind | undefined {
  if (path === "/dev/iommu") return "fd_iommufd";
  if (path.startsWith("/dev/vfio/devices/")) return "fd_vfio";
  return undefined;
}

/**
 * One program's run: a fresh machine, processes, results by call id, the resource pool, and the findings.
 * @linux none: the fuzzer's executor
 */
export class Execution {
  readonly procs = new Map<number, Process>();
  readonly scratch = new Map<number, bigint>();
  readonly results = new Map<number, Record<string, unknown>>();
  readonly pool = new Map<ResourceKind, PoolEntry[]>();
  /** Calls run so far, in order. */
  readonly executed: Call[] = [];
  readonly outcomes: CallOutcome[] = [];
  readonly findings: Finding[] = [];
  /** Slowest call so far (wall-clock ms). */
  maxCallMs = 0;
  private finished = false;

  private constructor(
    readonly m: Machine,
    readonly opts: ExecutionOptions,
  ) {}

  /** Boot the machine and start process 0 with its scratch pages. */
  static async start(opts: ExecutionOptions = {}): Promise<Execution> {
    const m = await bootFuzzMachine(opts);
    opts.setup?.(m);
    const ex = new Execution(m, opts);
    const p0 = m.spawnProcess();
    ex.procs.set(0, p0);
    ex.scratch.set(0, p0.mmap(SCRATCH_SIZE));
    return ex;
  }

  /** Resources of `kind`, optionally only those usable by process `proc`. */
  resources(kind: ResourceKind): PoolEntry[] {
    return this.pool.get(kind) ?? [];
  }

  private produce(kind: ResourceKind, ref: Ref, proc: number): void {
    let l = this.pool.get(kind);
    if (!l) this.pool.set(kind, (l = []));
    l.push({ ref, proc });
  }

  /** The value of an argument now: a literal, or an earlier result (0 when that call is gone or failed). */
  resolve(v: Val, proc: number): unknown {
    if (isRef(v)) {
      const r = this.results.get(v.$ref)?.[v.field];
      if (r === undefined) return 0;
      if (typeof r === "bigint") return r + BigInt(v.add ?? 0);
      if (typeof r === "number") return r + (v.add ?? 0);
      return r;
    }
    if (isScratch(v)) return (this.scratch.get(proc) ?? this.scratch.get(0) ?? 0n) + BigInt(v.$scratch);
    if (Array.isArray(v)) return v.map((x) => this.resolve(x, proc));
    return v;
  }

  private num(v: Val, proc: number): number {
    return s32(this.resolve(v, proc));
  }

  private big(v: Val, proc: number): bigint {
    return u64(this.resolve(v, proc));
  }

  /** Build the struct object of an ioctl call with every field coerced to its ABI type. */
  buildArg(spec: IoctlSpec, call: Extract<Call, { op: "ioctl" }>): Record<string, unknown> {
    const obj: Record<string, unknown> = { ...(spec.fixed ?? {}) };
    for (const [k, v] of Object.entries(call.args)) {
      const t = fieldType(spec.struct, k);
      const r = this.resolve(v, call.proc);
      if (t === "u64" || t === "s64") obj[k] = u64(r);
      else if (t === "s32") obj[k] = s32(r);
      else if (t === "u8") obj[k] = u32(r) & 0xff;
      else if (t === "u16") obj[k] = u32(r) & 0xffff;
      else if (t !== undefined) obj[k] = u32(r);
    }
    return obj;
  }

  /** Run one call, check it, record what it produced. */
  async run(call: Call): Promise<CallOutcome> {
    const m = this.m;
    const outcome: CallOutcome = { errno: 0, findings: [] };
    const p = this.procs.get(call.proc);
    this.executed.push(call);
    this.outcomes.push(outcome);
    if (!p || p.exited) {
      outcome.errno = "skipped";
      return outcome;
    }
    const name = callName(call);
    const diagBefore = m.diag.records.length;
    const t0 = m.scheduler.now();
    const w0 = performance.now();
    if (call.failNth) m.faults.failNth(call.failNth);
    try {
      const produced = await this.issue(call, p);
      if (produced) this.results.set(call.id, produced);
    } catch (e) {
      if (e instanceof KernelError) {
        outcome.errno = e.code;
        if (process.env.FUZZ_DEBUG) console.log(name, e.message);
        if (errnoName(e.errno) !== e.code || e.errno <= 0 || e.errno >= 512) {
          outcome.findings.push(this.finding("bad-errno", name, `errno ${e.errno} (${e.code}) reached user space`));
        }
      } else {
        const err = e as Error;
        const ctor = err?.constructor?.name ?? typeof e;
        outcome.errno = "EXCEPTION";
        outcome.findings.push(this.finding("exception", name, `${ctor}: ${err?.message ?? String(e)}`));
      }
    } finally {
      if (call.failNth) m.faults.reset();
    }
    const ms = performance.now() - w0;
    if (ms > this.maxCallMs) this.maxCallMs = ms;
    if (this.opts.slowMs !== undefined && ms > this.opts.slowMs) {
      outcome.findings.push(this.finding("slow", name, `call took ${Math.round(ms)} ms of wall-clock time`));
    }
    const dt = m.scheduler.now() - t0;
    if (dt > (this.opts.blockBoundNs ?? DEFAULT_BLOCK_BOUND_NS)) {
      outcome.findings.push(this.finding("blocked", name, `call slept ${dt / 1e9} s of virtual time`));
    }
    for (let i = diagBefore; i < m.diag.records.length; i++) {
      const d = m.diag.records[i]!;
      if (d.expected) continue;
      // Acknowledge it so teardown reports only what comes later; the finding already names it.
      d.expected = true;
      outcome.findings.push(this.finding("warning", name, `${d.kind}: ${d.message}`));
    }
    for (const f of outcome.findings) {
      f.at = this.executed.length - 1;
      if (call.op === "ioctl") f.form = call.form;
    }
    this.findings.push(...outcome.findings);
    return outcome;
  }

  private finding(kind: FindingKind, callName: string, message: string): Finding {
    return { kind, signature: `${kind}:${callName}:${normalizeMessage(message)}`, message, callName };
  }

  /** Issue the call; resolves to what it produced (by field) for later refs. */
  private async issue(call: Call, p: Process): Promise<Record<string, unknown> | undefined> {
    switch (call.op) {
      case "open": {
        const fd = await p.open(call.path);
        const kind = fdKindOfPath(call.path);
        if (kind) this.produce(kind, { $ref: call.id, field: "value" }, call.proc);
        return { value: fd };
      }
      case "close":
        await p.close(this.num(call.fd, call.proc));
        return undefined;
      case "mmap": {
        const va = p.mmap(call.length, {
          ...(call.shared ? { shared: true } : {}),
          ...(call.fd !== undefined ? { fd: this.num(call.fd, call.proc), shared: true } : {}),
        });
        this.produce("va", { $ref: call.id, field: "value" }, call.proc);
        return { value: va, length: call.length };
      }
      case "munmap":
        p.munmap(this.big(call.va, call.proc), this.big(call.length, call.proc));
        return undefined;
      case "memfd": {
        const fd = p.memfdCreate("fuzz", call.size);
        this.produce("fd_memfd", { $ref: call.id, field: "value" }, call.proc);
        return { value: fd };
      }
      case "fork": {
        const child = p.fork();
        this.procs.set(call.id, child);
        this.scratch.set(call.id, this.scratch.get(call.proc) ?? 0n);
        return { value: child.pid };
      }
      case "exit":
        await p.exit();
        return undefined;
      case "read": {
        const b = await p.read(this.num(call.fd, call.proc), call.length);
        return { value: b.byteLength };
      }
      case "write": {
        const n = await p.write(this.num(call.fd, call.proc), hexToBytes(call.data));
        return { value: n };
      }
      case "poke":
        p.writeMemory(this.big(call.va, call.proc), hexToBytes(call.data));
        return undefined;
      case "ioctl":
        return this.issueIoctl(call, p);
    }
  }

  private async issueIoctl(call: Extract<Call, { op: "ioctl" }>, p: Process) {
    const spec = SPEC_BY_NAME.get(call.name);
    if (!spec) throw new Error(`unknown ioctl spec ${call.name}`);
    const fd = this.num(call.fd, call.proc);
    if (!spec.struct || call.form === "int") {
      const r = await p.ioctl(fd, spec.cmd, this.num(call.args.arg ?? 0, call.proc) as never);
      return { value: r };
    }
    const obj = this.buildArg(spec, call);
    // The struct is the call's result whether or not it fails (the kernel may copy some of it back first), as it
    // is in a reproducer, where later calls read `rN.field`.
    this.results.set(call.id, obj);
    if (call.form === "object") await p.ioctl(fd, spec.cmd, obj);
    else if (call.form === "bytes") await ioctlBytes(p, fd, spec.cmd, spec.struct, obj);
    else await ioctlUptr(p, fd, spec.cmd, spec.struct, obj, (this.scratch.get(call.proc) ?? 0n) + BigInt(UPTR_OFFSET));
    const out = obj;
    for (const [field, kind] of Object.entries(spec.outs ?? {})) {
      const v = out[field];
      if (v !== undefined && v !== 0 && v !== 0n) this.produce(kind, { $ref: call.id, field }, call.proc);
    }
    return out;
  }

  /** Tear the machine down (every process exits first) and report what it found. Idempotent. */
  async finish(): Promise<Finding[]> {
    if (this.finished) return [];
    this.finished = true;
    const out: Finding[] = [];
    try {
      await this.m.teardown();
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      // The first diagnostic line names the problem; the header line only counts them.
      const lines = msg.split("\n").filter((l) => l.trim() && !/unexpected diagnostic|teardown found problems/.test(l));
      out.push({
        kind: "teardown",
        signature: `teardown:${normalizeMessage(teardownHeadline(lines[0] ?? msg))}`,
        message: msg.slice(0, 4000),
      });
    }
    this.findings.push(...out);
    return out;
  }
}

/** `[leak] what (culprit: who) — task main` as `leak: what`. @linux none (syzkaller report parsing) */
export function teardownHeadline(line: string): string {
  const m = /^\s*\[([\w-]+)\]\s*(.*?)(\s+\(culprit:.*?\))?(\s+— task .*)?$/.exec(line);
  return m ? `${m[1]}: ${m[2]}` : line;
}

/** The name a call is counted and reported under. @linux none (syzkaller call names) */
export function callName(c: Call): string {
  return c.op === "ioctl" ? c.name : c.op;
}

/** Decode a hex string. @linux none (syzkaller data arguments) */
export function hexToBytes(h: string): Uint8Array {
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Encode bytes as hex. @linux none (syzkaller data arguments) */
export function bytesToHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}
