/**
 * Writes a program as a ready-to-run vitest file: a readable sequence of `p.ioctl(…)` calls on a fresh fuzz
 * machine, each wrapped in `sys()` (a KernelError is an answer, anything else a bug), ending with
 * `m.teardown()`, which fails on any WARN, leak or held lock. The file fails while the bug is there and passes once
 * it is fixed, so it can become a regression test as it stands. The body is plain JavaScript, so the fuzzer's own
 * tests can run it without a compiler.
 * @linux syzkaller's prog2c (C reproducers)
 */
import { DEFAULT_BLOCK_BOUND_NS, type Finding, SCRATCH_SIZE } from "./executor.js";
import { type Call, isRef, isScratch, type Program, type Ref, type Val } from "./program.js";
import { SPEC_BY_NAME } from "./spec.js";

function lit(v: number | bigint): string {
  if (typeof v === "bigint") return v > 0xffffn ? `0x${v.toString(16)}n` : `${v}n`;
  return v > 0xffff ? `0x${v.toString(16)}` : String(v);
}

/** Names the body uses besides the constants of the specs. */
export const REPRODUCER_HELPERS = ["sys", "u32", "s32", "u64", "hex", "ioctlBytes", "ioctlUptr"] as const;

interface Emitter {
  byId: Map<number, Call>;
  imports: { iommufd: Set<string>; selftest: Set<string> };
}

function procVar(proc: number): string {
  return `p${proc}`;
}

function refExpr(e: Emitter, r: Ref): { expr: string; big: boolean } {
  const c = e.byId.get(r.$ref);
  let expr: string;
  let big: boolean;
  if (!c) return { expr: "0", big: false };
  if (c.op === "ioctl") {
    const t = SPEC_BY_NAME.get(c.name)?.struct?.fields.find((f) => f.name === r.field)?.type;
    expr = r.field === "value" ? `v${c.id}` : `r${c.id}.${r.field}`;
    big = t === "u64" || t === "s64";
  } else if (c.op === "mmap" && r.field === "length") {
    expr = String(c.length);
    big = false;
  } else {
    expr = `v${c.id}`;
    big = c.op === "mmap";
  }
  if (r.add) expr = `(${expr} + ${big ? `${BigInt(r.add)}n` : r.add})`;
  return { expr, big };
}

function valExpr(e: Emitter, v: Val, as: "u32" | "s32" | "u64" | "u8" | "u16"): string {
  if (isRef(v)) {
    const { expr } = refExpr(e, v);
    if (as === "u8") return `(u32(${expr}) & 0xff)`;
    if (as === "u16") return `(u32(${expr}) & 0xffff)`;
    return `${as}(${expr})`;
  }
  if (isScratch(v)) return v.$scratch ? `scratch + ${lit(BigInt(v.$scratch))}` : "scratch";
  if (typeof v === "bigint" || typeof v === "number") {
    if (as === "u64") return lit(BigInt.asUintN(64, BigInt(v)));
    if (as === "s32") return String(typeof v === "bigint" ? Number(BigInt.asIntN(32, v)) : Number(v) | 0);
    const n = typeof v === "bigint" ? Number(BigInt.asUintN(32, v)) : Number(v) >>> 0;
    return lit(as === "u8" ? n & 0xff : as === "u16" ? n & 0xffff : n);
  }
  return JSON.stringify(v);
}

function ioctlLines(e: Emitter, c: Extract<Call, { op: "ioctl" }>): string[] {
  const spec = SPEC_BY_NAME.get(c.name);
  if (!spec) return [`// unknown ioctl ${c.name}`];
  const p = procVar(c.proc);
  const fd = valExpr(e, c.fd, "s32");
  const isTest = c.name.startsWith("IOMMU_TEST_OP_");
  const cmdName = isTest ? "IOMMU_TEST_CMD" : c.name;
  (isTest ? e.imports.selftest : e.imports.iommufd).add(cmdName);
  if (!spec.struct) {
    return [`await sys(() => ${p}.ioctl(${fd}, ${cmdName}, ${valExpr(e, c.args.arg ?? 0, "s32")}));`];
  }
  const fields: string[] = [];
  for (const [k, v] of Object.entries(spec.fixed ?? {})) {
    if (k === "op" && isTest) {
      e.imports.selftest.add(c.name);
      fields.push(`op: ${c.name}`);
    } else fields.push(`${k}: ${lit(v)}`);
  }
  for (const [k, v] of Object.entries(c.args)) {
    const t = spec.struct.fields.find((f) => f.name === k)?.type;
    if (t === undefined) continue;
    const as =
      t === "u64" || t === "s64" ? "u64" : t === "s32" ? "s32" : t === "u8" ? "u8" : t === "u16" ? "u16" : "u32";
    fields.push(`${k}: ${valExpr(e, v, as)}`);
  }
  const r = `r${c.id}`;
  const lines = [`const ${r} = { ${fields.join(", ")} };`];
  const sname = spec.structName ?? "";
  if (c.form === "object") lines.push(`await sys(() => ${p}.ioctl(${fd}, ${cmdName}, ${r}));`);
  else {
    (sname === "iommu_test_cmd" ? e.imports.selftest : e.imports.iommufd).add(sname);
    if (c.form === "bytes") lines.push(`await sys(() => ioctlBytes(${p}, ${fd}, ${cmdName}, ${sname}, ${r}));`);
    else lines.push(`await sys(() => ioctlUptr(${p}, ${fd}, ${cmdName}, ${sname}, ${r}, scratch));`);
  }
  return lines;
}

function callLines(e: Emitter, c: Call): string[] {
  const p = procVar(c.proc);
  switch (c.op) {
    case "open":
      return [`const v${c.id} = await sys(() => ${p}.open(${JSON.stringify(c.path)}), 0);`];
    case "close":
      return [`await sys(() => ${p}.close(${valExpr(e, c.fd, "s32")}));`];
    case "mmap": {
      const o: string[] = [];
      if (c.fd !== undefined) o.push(`fd: ${valExpr(e, c.fd, "s32")}`, "shared: true");
      else if (c.shared) o.push("shared: true");
      return [
        `const v${c.id} = await sys(() => ${p}.mmap(${c.length}${o.length ? `, { ${o.join(", ")} }` : ""}), 0n);`,
      ];
    }
    case "munmap":
      return [`await sys(() => ${p}.munmap(${valExpr(e, c.va, "u64")}, ${valExpr(e, c.length, "u64")}));`];
    case "memfd":
      return [`const v${c.id} = await sys(() => ${p}.memfdCreate("fuzz", ${c.size}), 0);`];
    case "fork":
      return [`const p${c.id} = ${p}.fork();`];
    case "exit":
      return [`await ${p}.exit();`];
    case "read":
      return [`await sys(() => ${p}.read(${valExpr(e, c.fd, "s32")}, ${c.length}));`];
    case "write":
      return [`await sys(() => ${p}.write(${valExpr(e, c.fd, "s32")}, hex("${c.data}")));`];
    case "poke":
      return [`await sys(() => ${p}.writeMemory(${valExpr(e, c.va, "u64")}, hex("${c.data}")));`];
    case "ioctl":
      return ioctlLines(e, c);
  }
}

/** The reproducer's body: plain JavaScript over `m` (a booted fuzz machine), the helpers and the uAPI constants. @linux none (syzkaller prog2c) */
export function reproducerBody(program: Program, finding?: Finding): { body: string; imports: Emitter["imports"] } {
  const e: Emitter = {
    byId: new Map(program.calls.map((c) => [c.id, c])),
    imports: { iommufd: new Set(), selftest: new Set() },
  };
  const out = ["const p0 = m.spawnProcess();", `const scratch = p0.mmap(${SCRATCH_SIZE});`];
  program.calls.forEach((c, i) => {
    const lines = callLines(e, c);
    const blocked = finding?.kind === "blocked" && finding.at === i;
    if (finding && finding.at === i) {
      out.push(`// The finding shows here: ${finding.kind}`);
      if (finding.kind === "slow") {
        out.push("// (wall-clock time: this test shows the slow call but cannot fail on time; time it by hand)");
      }
    }
    if (blocked) out.push(`const t${c.id} = m.scheduler.now();`);
    if (c.failNth) out.push(`m.faults.failNth(${c.failNth});`);
    out.push(...lines);
    if (c.failNth) out.push("m.faults.reset();");
    if (blocked) {
      out.push(
        `if (m.scheduler.now() - t${c.id} > ${DEFAULT_BLOCK_BOUND_NS}) throw new Error("the call slept too long");`,
      );
    }
  });
  out.push("await m.teardown();");
  return { body: out.join("\n"), imports: e.imports };
}

/**
 * The reproducer file: imports, then one vitest test that boots the machine the program ran on and runs the body.
 * @linux none (syzkaller prog2c)
 */
export function reproducerFile(program: Program, finding: Finding, opts: { jsonName?: string } = {}): string {
  const { body, imports } = reproducerBody(program, finding);
  const sorted = (s: Set<string>) => [...s].sort();
  const head = [
    "// A reproducer written by `npm run fuzz` (@iommu-sim/fuzz). It fails while the bug is there.",
    `// Finding: ${finding.signature}`,
    ...finding.message
      .split("\n")
      .slice(0, 6)
      .map((l) => `//   ${l}`),
    ...(opts.jsonName ? [`// Replay the program: npm run fuzz -- --replay ${opts.jsonName}`] : []),
    "// Run: npx vitest run -c packages/fuzz/vitest.findings.config.ts <this file>",
    'import { bootFuzzMachine, hex, ioctlBytes, ioctlUptr, s32, sys, u32, u64 } from "@iommu-sim/fuzz";',
  ];
  if (imports.iommufd.size) head.push(`import { ${sorted(imports.iommufd).join(", ")} } from "@iommu-sim/iommufd";`);
  if (imports.selftest.size) head.push(`import { ${sorted(imports.selftest).join(", ")} } from "@iommu-sim/selftest";`);
  // Spelled with a variable so this file's built output does not read as importing the test runner.
  const q = '"';
  head.push(`import { it } from ${q}vitest${q};`, "");
  const title = `fuzz: ${finding.signature}`.replace(/[`\\$]/g, "");
  const indented = body
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
  return `${head.join("\n")}
it(${JSON.stringify(title)}, async () => {
  const m = await bootFuzzMachine({ seed: ${program.seed} });
  // Silence "unused" for helpers this program does not need.
  void [hex, ioctlBytes, ioctlUptr, s32, sys, u32, u64];
${indented}
});
`;
}
