import { PhysicalMemory } from "../src/platform/memory.js";
import { PageAllocator } from "../src/platform/page-alloc.js";
import { Diagnostics } from "../src/kernel/diagnostics.js";
import { FaultInjector } from "../src/kernel/fault-inject.js";
const MiB = 2 ** 20;
const pmem = new PhysicalMemory({ size: 256 * MiB });
const a0 = new PageAllocator(pmem, { recordFreeStacks: false });
const a1 = new PageAllocator(new PhysicalMemory({ size: 64 * MiB }));
const diag = new Diagnostics(); const faults = new FaultInjector();
const a2 = new PageAllocator(new PhysicalMemory({ size: 64 * MiB, faults, diag }), { faults, diag, recordFreeStacks: true }).install();
const N = 20000;
const cases: [string, () => void][] = [
  ["zero+poison", () => { for (let i = 0; i < N; i++) { pmem.fill(0x100000, 4096, 0); pmem.fill(0x100000, 4096, 0x6b); } }],
  ["nostacks", () => { for (let i = 0; i < N; i++) a0.freePages(a0.allocPages(0, "b"), 0); }],
  ["stacks", () => { for (let i = 0; i < N; i++) a1.freePages(a1.allocPages(0, "b"), 0); }],
  ["machine-like", () => { for (let i = 0; i < N; i++) a2.freePages(a2.allocPages(0, "b"), 0); }],
];
const res = new Map<string, number[]>();
for (let r = 0; r < 9; r++) for (const [n, f] of cases) { const t0 = process.hrtime.bigint(); f(); const ns = Number(process.hrtime.bigint() - t0) / N; if (r > 1) (res.get(n) ?? res.set(n, []).get(n)!).push(ns); }
const med = (x: number[]) => x.sort((a, b) => a - b)[x.length >> 1]!;
const base = med(res.get("zero+poison")!);
for (const [n, v] of res) console.log(n.padEnd(14), med(v).toFixed(0), "ns", (med(v) / base).toFixed(2) + "x");
