/**
 * Mutation check: proof the suite has teeth. Each deliberate bug a driver offers is switched on alone (through the
 * machine's test-only mutant hook) and the suite must fail; a mutant it does not catch is a hole in the suite.
 */
import { planConformance, runPlanned } from "./run-check.js";
import type { ConformanceOptions, ConformanceTarget } from "./target.js";

/**
 * Mutants of the shared kernel code a target runs on, offered to every target whose claimed capabilities reach them:
 * iommufd's vDEVICE tombstone for targets claiming a vIOMMU.
 * @linux iommufd_device_remove_vdev's iommufd_object_tombstone_user
 */
export function sharedMutants(target: ConformanceTarget): string[] {
  return target.caps.iommufd && target.caps.viommu ? ["iommufd:missing-tombstone"] : [];
}

/** Every mutant the mutation run switches on for `target`: its own, then the shared ones that apply. */
export function targetMutants(target: ConformanceTarget): string[] {
  return [...(target.mutants ?? []), ...sharedMutants(target)];
}

/** One mutant's outcome. */
export interface MutantResult {
  driver: string;
  mutant: string;
  caught: boolean;
  /** The first check that failed, and its message. */
  by?: string;
  detail?: string;
  ms: number;
}

/**
 * Run the suite once per mutant the target offers, with that mutant alone switched on, stopping at the first
 * failing check. Checks run in the suite's order (cheap probe and domain checks first).
 * @linux mutation testing of a driver against its kselftests
 */
export async function runMutants(
  target: ConformanceTarget,
  opts: ConformanceOptions & { onMutant?(r: MutantResult): void } = {},
): Promise<MutantResult[]> {
  const out: MutantResult[] = [];
  for (const mutant of targetMutants(target)) {
    const t0 = Date.now();
    const mutated: ConformanceTarget = { ...target, enabledMutants: [mutant] };
    let r: MutantResult = { driver: target.name, mutant, caught: false, ms: 0 };
    for (const p of planConformance(mutated, opts)) {
      if (p.na !== undefined) continue;
      try {
        await runPlanned(mutated, p, opts);
      } catch (e) {
        const detail =
          e instanceof Error
            ? e.message
                .split("\n")
                .filter((l) => l.trim())
                .slice(0, 2)
                .join(" ")
                .trim()
            : String(e);
        r = { ...r, caught: true, by: p.check.id, detail };
        break;
      }
    }
    r.ms = Date.now() - t0;
    out.push(r);
    opts.onMutant?.(r);
  }
  return out;
}

/** One line per mutant, a "driver: caught/total" line per driver, then the total. */
export function formatMutantReport(results: readonly MutantResult[]): string {
  const lines = results.map((r) =>
    `${r.caught ? "caught " : "MISSED "} ${r.driver.padEnd(8)} ${r.mutant.padEnd(32)} ${r.caught ? `by ${r.by}: ${r.detail}` : ""}`.trimEnd(),
  );
  const drivers = [...new Set(results.map((r) => r.driver))];
  for (const d of drivers) {
    const mine = results.filter((r) => r.driver === d);
    lines.push(`${d}: ${mine.filter((r) => r.caught).length}/${mine.length} mutants caught`);
  }
  const caught = results.filter((r) => r.caught).length;
  lines.push(`${caught}/${results.length} mutants caught`);
  return `${lines.join("\n")}\n`;
}
