/** Helpers shared by the vendor packages' benchmarks. */
export * from "./driver-domain.js";
