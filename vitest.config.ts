import { defineConfig } from "vitest/config";

// One run over every package. Packages resolve each other through the "source" export condition, so tests
// exercise the TypeScript sources (one instance of each class) while `tsc -b` type-checks the same code.
export default defineConfig({
  resolve: { conditions: ["iommu-sim:source"] },
  ssr: { resolve: { conditions: ["iommu-sim:source"] } },
  test: {
    projects: ["packages/*", "test"],
  },
});
