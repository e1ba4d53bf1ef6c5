import { defineProject } from "vitest/config";

// Tests run against the TypeScript sources of the packages (the "iommu-sim:source" export condition).
export default defineProject({
  resolve: { conditions: ["iommu-sim:source"] },
  ssr: { resolve: { conditions: ["iommu-sim:source"] } },
  test: { name: "testkit", include: ["test/**/*.test.ts"] },
});
