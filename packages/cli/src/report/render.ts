import type { RunResult } from "../scenario/runner.js";
import type { Scenario } from "../scenario/schema.js";

/** A self-contained HTML page about a run. */
export function renderReport(sc: Scenario, r: RunResult): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${sc.name}</title></head><body><h1>${sc.name}</h1><p>${r.ok ? "PASS" : "FAIL"}</p></body></html>`;
}
