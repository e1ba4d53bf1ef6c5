import { defineProject } from "vitest/config";

export default defineProject({
  resolve: { conditions: ["iommu-sim:source"] },
  ssr: { resolve: { conditions: ["iommu-sim:source"] } },
  test: { name: "core", include: ["test/**/*.test.ts"] },
});
