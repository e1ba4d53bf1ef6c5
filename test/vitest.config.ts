import { defineProject } from "vitest/config";

// Repository-level tests: the README/docs code blocks, package manifests and tarballs, the docs build.
export default defineProject({
  resolve: { conditions: ["iommu-sim:source"] },
  ssr: { resolve: { conditions: ["iommu-sim:source"] } },
  test: {
    name: "repo",
    include: ["**/*.test.ts"],
    exclude: [".doc-blocks/**", "**/node_modules/**"],
    // The README programs print what they show; the test checks they run and tear down clean.
    onConsoleLog: () => false,
  },
});
