/**
 * Extra fields on a benchmark row after its suite ran (the harness writes the timings and the ratio `target`): the
 * driver bench records the descriptors one 1 GiB unmap issued and the most it may issue.
 */
import { readFileSync, writeFileSync } from "node:fs";

/** Annotate the entry named `name` in `file` with `fields`. */
export function annotate(file: string, name: string, fields: Record<string, number | string>): void {
  const all = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>[];
  for (let i = all.length - 1; i >= 0; i--) {
    if (all[i]!.name === name) {
      Object.assign(all[i]!, fields);
      break;
    }
  }
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
}
