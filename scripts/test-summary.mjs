// Reads vitest's JSON report and prints the closing line CI reads: "N passed, N failed".
// Exits non-zero when the report is missing, a test failed, or no test ran.
import { existsSync, readFileSync } from "node:fs";

const file = process.argv[2] ?? "test-results.json";
if (!existsSync(file)) {
  console.log(`no test report at ${file}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
const r = JSON.parse(readFileSync(file, "utf8"));
const passed = r.numPassedTests ?? 0;
const failed = (r.numFailedTests ?? 0) + (r.numFailedTestSuites ?? 0);
const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
for (const suite of r.testResults ?? []) {
  if (suite.status === "failed" && (suite.assertionResults ?? []).every((a) => a.status !== "failed")) {
    console.log(`suite failed to run: ${suite.name}: ${(suite.message ?? "").split("\n")[0]}`);
  }
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
