import { defineConfig } from "vitest/config";

// Runs the reproducers `npm run fuzz` writes (fuzz-findings/ at the repository root by default; pass `--dir` for
// another folder). They resolve the packages' TypeScript sources, as the packages' own tests do.
export default defineConfig({
  root: "../..",
  resolve: { conditions: ["iommu-sim:source"] },
  ssr: { resolve: { conditions: ["iommu-sim:source"] } },
  test: { include: ["**/*.test.ts"], dir: "fuzz-findings", exclude: ["**/node_modules/**"] },
});
