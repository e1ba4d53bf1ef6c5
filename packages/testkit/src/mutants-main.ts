/**
 * `npm run conformance:mutants`: every shipped driver's mutants, one at a time; prints caught/total and exits 1
 * when one is missed.
 */
import { formatMutantReport, type MutantResult, runMutants } from "./mutants.js";
import { conformanceTargets } from "./runner.js";

const all: MutantResult[] = [];
for (const make of Object.values(conformanceTargets)) {
  const results = await runMutants(make(), {
    onMutant: (r) => process.stderr.write(`${r.driver} ${r.mutant}: ${r.caught ? "caught" : "MISSED"} (${r.ms} ms)\n`),
  });
  all.push(...results);
}
process.stdout.write(formatMutantReport(all));
process.exitCode = all.every((r) => r.caught) ? 0 : 1;
