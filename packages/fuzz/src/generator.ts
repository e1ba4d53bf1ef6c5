/**
 * Generation and mutation of calls, aware of the objects a program has really made: an ID argument is most often a
 * reference to an earlier call's out field of the right kind (an IOAS for `ioas_id`), sometimes one of another kind,
 * a stale one, or a boundary value; lengths, IOVAs and VAs likewise come from earlier mmaps and maps, or from the
 * edges (0, page-1, 2^52, 2^64-1, huge sizes). A fraction of calls arm fail-nth.
 * @linux syzkaller prog/generation.go, prog/mutation.go, prog/rand.go (resources, special ints)
 */
import { MOCK_APERTURE_START } from "@iommu-sim/drivers-mock";
import type { Execution, PoolEntry } from "./executor.js";
import { bytesToHex } from "./executor.js";
import { type Call, cloneCall, type IoctlForm, isRef, type Ref, type Val } from "./program.js";
import type { Rng } from "./rng.js";
import { type FieldGen, IOCTL_SPECS, type IoctlSpec, type ResourceKind } from "./spec.js";

const PAGE = 4096;
/** Lengths at the edges. Values between 2^33 and 2^46 are added by {@link GenOptions.hugeLengths}. */
export const BOUNDARY_LENGTHS: readonly bigint[] = [
  0n,
  1n,
  4095n,
  4097n,
  8191n,
  1n << 21n,
  1n << 31n,
  1n << 32n,
  1n << 52n,
  0xf_ffff_ffff_f000n,
  0xffff_ffff_ffff_f000n,
  0xffff_ffff_ffff_ffffn,
];
/** Multi-terabyte lengths a model without sparse pinning would try to allocate for. */
export const HUGE_LENGTHS: readonly bigint[] = [1n << 34n, 1n << 36n];
const BOUNDARY_IOVAS: readonly bigint[] = [
  0n,
  4096n,
  1n << 32n,
  1n << 52n,
  1n << 53n,
  0xffff_ffff_ffff_f000n,
  0xffff_ffff_ffff_ffffn,
];
const BOUNDARY_U32: readonly number[] = [0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
const PASIDS: readonly number[] = [0, 1, 2, 3, 1024, (1 << 20) - 1, 1 << 20, 0xffff_ffff];

/** Options of the generator. */
export interface GenOptions {
  /** Fraction of calls that arm fail-nth. */
  failNthRate?: number;
  /** Whether integer user pointers may be generated. */
  uptr?: boolean;
  /** Offer the multi-terabyte lengths of {@link HUGE_LENGTHS}. */
  hugeLengths?: boolean;
  /** Offer object-form sizes far past the struct (64 MiB). */
  hugeSizes?: boolean;
}

/** Everything the generator reads: the run so far and a source of ids. */
export interface GenContext {
  ex: Execution;
  rng: Rng;
  nextId: () => number;
  opts: GenOptions;
}

function pickRes(ctx: GenContext, kinds: readonly ResourceKind[], proc: number): PoolEntry | undefined {
  const all: PoolEntry[] = [];
  for (const k of kinds) for (const e of ctx.ex.resources(k)) if (e.proc === proc || e.proc === 0) all.push(e);
  if (all.length === 0) return undefined;
  // Recent resources are more interesting (syzkaller biases the same way).
  const r = ctx.rng;
  return r.chance(0.5) ? all[all.length - 1 - r.int(Math.min(3, all.length))] : r.pick(all);
}

const ID_KINDS: readonly ResourceKind[] = ["ioas", "hwpt", "dev", "viommu", "vdev", "fault", "veventq", "hwq"];

function genId(ctx: GenContext, of: readonly ResourceKind[], proc: number): Val {
  const r = ctx.rng;
  const x = r.float();
  if (x < 0.82) {
    const e = pickRes(ctx, of, proc);
    if (e) return r.chance(0.03) ? { ...e.ref, add: r.pick([1, -1]) } : e.ref;
  }
  if (x < 0.9) {
    const e = pickRes(ctx, ID_KINDS, proc);
    if (e) return e.ref;
  }
  return r.chance(0.5) ? r.range(0, 8) : r.pick(BOUNDARY_U32);
}

function genFd(ctx: GenContext, of: readonly ResourceKind[], proc: number): Val {
  const r = ctx.rng;
  if (r.chance(0.96)) {
    const e = pickRes(ctx, of, proc);
    if (e) return e.ref;
    const any = pickRes(ctx, ["fd_iommufd", "fd_vfio", "fd_access", "fd_fault", "fd_veventq", "fd_memfd"], proc);
    if (any) return any.ref;
  }
  return r.pick([-1, 0, 1, 2, 3, 1000, 0x7fff_ffff]);
}

function genLen(ctx: GenContext, proc: number, hint?: Ref): Val {
  const r = ctx.rng;
  // The length of the mapping or map call this call's VA or IOVA came from: what user space usually passes.
  if (hint && r.chance(0.5)) return { $ref: hint.$ref, field: "length" };
  const x = r.float();
  if (x < 0.6) return BigInt(PAGE * r.range(1, 16));
  if (x < 0.75) {
    const e = pickRes(ctx, ["va"], proc);
    if (e) return { $ref: e.ref.$ref, field: "length" };
  }
  if (ctx.opts.hugeLengths && r.chance(0.1)) return r.pick(HUGE_LENGTHS);
  return r.pick(BOUNDARY_LENGTHS);
}

function genIova(ctx: GenContext, proc: number): Val {
  const r = ctx.rng;
  const x = r.float();
  if (x < 0.5) {
    const e = pickRes(ctx, ["iova"], proc);
    if (e) return r.chance(0.8) ? e.ref : { ...e.ref, add: PAGE * r.range(1, 4) };
  }
  if (x < 0.85) return BigInt(MOCK_APERTURE_START + PAGE * r.int(64));
  return r.pick(BOUNDARY_IOVAS);
}

function genVa(ctx: GenContext, proc: number): Val {
  const r = ctx.rng;
  if (r.chance(0.85)) {
    const e = pickRes(ctx, ["va"], proc);
    if (e) return r.chance(0.8) ? e.ref : { ...e.ref, add: r.pick([PAGE, 2 * PAGE, 1, PAGE - 1]) };
  }
  return r.pick<Val>([0n, 1n, 4096n, 1n << 47n, 0xffff_ffff_ffff_ffffn, { $scratch: 2 * PAGE }]);
}

function genU32(r: Rng): number {
  return r.chance(0.5) ? r.int(16) : r.chance(0.5) ? r.pick(BOUNDARY_U32) : r.u32();
}

function genFlags(r: Rng, bits: number): number {
  // Mostly every known bit or a random subset of them; sometimes an unknown bit, as user space gets wrong.
  const x = r.float();
  let f = 0;
  if (x < 0.35) f = bits;
  else for (let b = 0; b < 32; b++) if (bits & (1 << b) && r.chance(0.5)) f |= 1 << b;
  if (x > 0.96) f |= 1 << r.int(32);
  return f >>> 0;
}

function genSize(ctx: GenContext, spec: IoctlSpec, form: IoctlForm): Val {
  const r = ctx.rng;
  const full = spec.struct?.size ?? 0;
  const x = r.float();
  if (x < 0.85) return form === "object" ? (r.chance(0.8) ? 0 : full) : full;
  const odd = [full - 1, full - 4, full + 8, 4, 8, 16, full + 1];
  // 64 MiB: far past any struct, and a size a model that allocates by `size` takes most of a second over.
  if (form === "object" && ctx.opts.hugeSizes && r.chance(0.1)) return 0x400_0000;
  return Math.max(0, r.pick(odd));
}

function genField(
  ctx: GenContext,
  g: FieldGen,
  spec: IoctlSpec,
  form: IoctlForm,
  proc: number,
  pre: Call[],
  hint: { len?: Ref } = {},
): Val {
  const r = ctx.rng;
  switch (g.k) {
    case "size":
      return genSize(ctx, spec, form);
    case "argsz": {
      const full = spec.struct?.size ?? 0;
      return r.chance(0.9) ? full : r.pick([0, full - 1, full + 4, 4]);
    }
    case "id":
      return genId(ctx, g.of, proc);
    case "fd":
      return genFd(ctx, g.of, proc);
    case "flags":
      return genFlags(r, g.bits);
    case "enum":
      return r.chance(0.92) ? r.pick(g.values) : genU32(r);
    case "zero":
      return r.chance(0.97) ? 0 : r.pick([1, 0x80, 0xffff_ffff]);
    case "out":
      return r.chance(0.95) ? 0 : genU32(r);
    case "va": {
      const v = genVa(ctx, proc);
      if (isRef(v) && !v.add) hint.len = v;
      return v;
    }
    case "len":
      return genLen(ctx, proc, hint.len);
    case "iova": {
      const v = genIova(ctx, proc);
      if (isRef(v) && !v.add) hint.len = v;
      return v;
    }
    case "u32":
      return genU32(r);
    case "u64":
      return r.chance(0.5) ? BigInt(r.int(16)) : r.u64();
    case "pasid":
      return r.chance(0.7) ? r.int(4) : r.pick(PASIDS);
    case "small":
      return r.chance(0.95) ? r.range(0, g.max) : genU32(r);
    case "ptr": {
      if (r.chance(0.1)) return r.pick<Val>([0n, 1n, 0xffff_ffff_ffff_ffffn]);
      const off = PAGE + 64 * r.int(8);
      if (g.bytes > 0) {
        const b = new Uint8Array(g.bytes);
        for (let i = 0; i < b.length; i += 4) {
          // Mostly small numbers, as real structures hold (IOVAs, flags, counts).
          const v = r.chance(0.5) ? 0 : r.chance(0.7) ? r.int(8) : r.u32();
          new DataView(b.buffer).setUint32(i, v >>> 0, true);
        }
        if (g.bytes >= 16 && r.chance(0.5)) {
          // An IOVA range { start, last } in the aperture.
          const dv = new DataView(b.buffer);
          const s = BigInt(MOCK_APERTURE_START + PAGE * r.int(32));
          dv.setBigUint64(0, s, true);
          dv.setBigUint64(8, s + BigInt(PAGE * r.range(1, 64)) - 1n, true);
        }
        pre.push({ id: ctx.nextId(), proc, op: "poke", va: { $scratch: off }, data: bytesToHex(b) });
      }
      return { $scratch: off };
    }
  }
}

function pickSpec(r: Rng): IoctlSpec {
  let total = 0;
  for (const s of IOCTL_SPECS) total += s.weight;
  let x = r.float() * total;
  for (const s of IOCTL_SPECS) {
    x -= s.weight;
    if (x < 0) return s;
  }
  return IOCTL_SPECS[0]!;
}

function pickProc(ctx: GenContext): number {
  const live = [...ctx.ex.procs.entries()].filter(([, p]) => !p.exited).map(([id]) => id);
  if (live.length === 0) return 0;
  return ctx.rng.chance(0.8) && live.includes(0) ? 0 : ctx.rng.pick(live);
}

/** A fresh ioctl call of `spec` (with the pokes its pointers need first). @linux none (syzkaller prog/generation.go generateCall) */
export function genIoctl(ctx: GenContext, spec: IoctlSpec, proc: number): Call[] {
  const r = ctx.rng;
  const pre: Call[] = [];
  let form: IoctlForm = "int";
  if (spec.struct) form = r.weighted({ object: 6, bytes: 2, uptr: ctx.opts.uptr === false ? 0.05 : 2 });
  const args: Record<string, Val> = {};
  if (spec.intArgs) args.arg = r.chance(0.9) ? r.pick(spec.intArgs) : genU32(r);
  const hint: { len?: Ref } = {};
  const fields = spec.presets && r.chance(0.5) ? { ...spec.fields, ...r.pick(spec.presets) } : spec.fields;
  for (const [k, g] of Object.entries(fields)) args[k] = genField(ctx, g, spec, form, proc, pre, hint);
  const call: Call = {
    id: ctx.nextId(),
    proc,
    op: "ioctl",
    fd: genFd(ctx, [spec.on], proc),
    name: spec.name,
    form,
    args,
  };
  if (r.chance(ctx.opts.failNthRate ?? 0.05)) call.failNth = r.range(1, 12);
  return [...pre, call];
}

/** Generate the next call or calls of a program, given what it has made so far. @linux none (syzkaller prog/generation.go) */
export function generate(ctx: GenContext): Call[] {
  const r = ctx.rng;
  const proc = pickProc(ctx);
  const base = { id: 0, proc };
  const kind = r.weighted({
    ioctl: 82,
    mmap: 4,
    munmap: 1.5,
    memfd: 1.5,
    open: 3,
    close: 2,
    fork: 0.7,
    exit: 0.3,
    read: 2.5,
    write: 2.5,
  });
  const withId = (c: Call): Call[] => [{ ...c, id: ctx.nextId() }];
  switch (kind) {
    case "ioctl":
      return genIoctl(ctx, pickSpec(r), proc);
    case "mmap":
      if (r.chance(0.2)) {
        const memfd = pickRes(ctx, ["fd_memfd"], proc);
        if (memfd) return withId({ ...base, op: "mmap", length: PAGE * r.range(1, 8), fd: memfd.ref });
      }
      return withId({ ...base, op: "mmap", length: PAGE * r.pick([1, 2, 4, 16, 64]), shared: r.chance(0.3) });
    case "munmap":
      return withId({ ...base, op: "munmap", va: genVa(ctx, proc), length: genLen(ctx, proc) });
    case "memfd":
      return withId({ ...base, op: "memfd", size: PAGE * r.pick([0, 1, 4, 16]) });
    case "open": {
      const paths = ["/dev/iommu", ...ctx.ex.m.chrdevs.paths().filter((p) => p.startsWith("/dev/vfio/devices/"))];
      return withId({ ...base, op: "open", path: r.chance(0.4) ? "/dev/iommu" : r.pick(paths) });
    }
    case "close":
      return withId({
        ...base,
        op: "close",
        fd: genFd(
          ctx,
          r.pick<ResourceKind[]>([["fd_iommufd"], ["fd_vfio"], ["fd_access"], ["fd_fault", "fd_veventq"]]),
          proc,
        ),
      });
    case "fork":
      return withId({ ...base, op: "fork" });
    case "exit":
      return proc === 0 ? withId({ ...base, op: "fork" }) : withId({ ...base, op: "exit" });
    case "read":
      return withId({
        ...base,
        op: "read",
        fd: genFd(ctx, ["fd_fault", "fd_veventq"], proc),
        length: r.pick([0, 4, 12, 48, 96, 4096]),
      });
    case "write": {
      const b = new Uint8Array(r.pick([8, 16, 4, 0]));
      const dv = new DataView(b.buffer);
      for (let i = 0; i + 8 <= b.length; i += 8) {
        dv.setUint32(i, r.chance(0.7) ? r.int(4) : r.u32(), true);
        dv.setUint32(i + 4, r.chance(0.8) ? r.int(2) : r.u32(), true);
      }
      return withId({ ...base, op: "write", fd: genFd(ctx, ["fd_fault", "fd_veventq"], proc), data: bytesToHex(b) });
    }
  }
}

/** The calls every program starts with: /dev/iommu open in process 0. @linux none (syzkaller: openat$iommufd first) */
export function prologue(ctx: GenContext): Call[] {
  return [{ id: ctx.nextId(), proc: 0, op: "open", path: "/dev/iommu" }];
}

/**
 * Mutate a call of a previous program before running it again: re-draw one argument, retarget a reference, flip
 * the call form, toggle fail-nth. The call keeps its id, so later references to it still hold.
 * @linux none (syzkaller prog/mutation.go mutateArg)
 */
export function mutateCall(ctx: GenContext, c: Call): Call {
  const r = ctx.rng;
  const m = cloneCall(c);
  if (r.chance(0.15)) {
    if (m.failNth) delete m.failNth;
    else m.failNth = r.range(1, 12);
    return m;
  }
  if (m.op !== "ioctl") return m;
  const spec = IOCTL_SPECS.find((s) => s.name === m.name);
  if (!spec) return m;
  const keys = Object.keys(spec.fields);
  if (keys.length === 0 || r.chance(0.1)) {
    if (spec.struct) m.form = r.pick<IoctlForm>(["object", "bytes", ctx.opts.uptr === false ? "bytes" : "uptr"]);
    return m;
  }
  // Flags decide which path a call takes: re-draw them more often than other fields.
  const flagKeys = keys.filter((k) => spec.fields[k]!.k === "flags");
  const k = flagKeys.length && r.chance(0.3) ? r.pick(flagKeys) : r.pick(keys);
  const cur = m.args[k];
  if (isRef(cur) && r.chance(0.3)) {
    m.args[k] = { ...cur, add: r.pick([0, 1, -1, PAGE]) };
    return m;
  }
  const pre: Call[] = [];
  m.args[k] = genField(ctx, spec.fields[k]!, spec, m.form, m.proc, pre);
  return m;
}
