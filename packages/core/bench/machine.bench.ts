/**
 * Creating, booting and tearing down a default machine (no driver modules). Reported as ms per machine, median of
 * ROUNDS runs; the baseline is building the same platform description alone (parse + validate), so the ratio shows
 * what the machine itself costs on top of reading its firmware description.
 */
import { createMachine } from "../src/machine/machine.js";
import { defaultPlatform, defaultPlatformInput } from "../src/platform/default-platform.js";
import { parsePlatform } from "../src/platform/description.js";
import { appendResults, type BenchResult } from "./harness.js";

const ROUNDS = 21;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

async function timeAsync(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0);
}

const platform = defaultPlatform();
const parse: number[] = [];
const machine: number[] = [];
for (let i = 0; i < 3; i++) {
  const m = await createMachine({ platform });
  await m.boot();
  await m.teardown();
}
for (let i = 0; i < ROUNDS; i++) {
  parse.push(await timeAsync(() => parsePlatform(defaultPlatformInput())));
  machine.push(
    await timeAsync(async () => {
      const m = await createMachine({ platform });
      await m.boot();
      await m.teardown();
    }),
  );
}
const base = median(parse);
const mach = median(machine);
const date = new Date().toISOString();
const results: BenchResult[] = [
  {
    name: "machine/parse-default-platform",
    opsPerSec: 1e9 / base,
    nsPerOp: base,
    baseline: "machine/parse-default-platform",
    ratio: 1,
    roundsNsPerOp: parse,
    date,
  },
  {
    name: "machine/create+boot+teardown-default",
    opsPerSec: 1e9 / mach,
    nsPerOp: mach,
    baseline: "machine/parse-default-platform",
    ratio: base / mach,
    roundsNsPerOp: machine,
    date,
  },
];
console.log(`machine: parse default platform ${(base / 1e6).toFixed(3)} ms (baseline)`);
console.log(
  `machine: create + boot + teardown of the default machine ${(mach / 1e6).toFixed(3)} ms ` +
    `(median of ${ROUNDS}; target well under 50 ms; ${(mach / base).toFixed(1)}x the parse alone)`,
);
appendResults(new URL("./results.json", import.meta.url).pathname, results);
