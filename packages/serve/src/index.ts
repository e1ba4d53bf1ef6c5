/**
 * @iommu-sim/serve: serve a simulated machine to unmodified C programs (LD_PRELOAD shim in native/).
 */
export * from "./client-memory.js";
export * from "./protocol.js";
export * from "./server.js";
export * from "./session.js";
