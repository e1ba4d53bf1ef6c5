import { defineProject } from "vitest/config";

// Tests run against the TypeScript sources of this package and of the packages it drives (the "iommu-sim:source"
// export condition), for client and SSR resolution alike, so no build is needed first.
export default defineProject({
  resolve: { conditions: ["iommu-sim:source"] },
  ssr: { resolve: { conditions: ["iommu-sim:source"] } },
  test: { name: "fuzz", include: ["test/**/*.test.ts"] },
});
