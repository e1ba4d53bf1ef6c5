/** Helpers shared by the vendor packages' benchmarks. */
export * from "./driver-domain.js";
export * from "./mock-model.js";
