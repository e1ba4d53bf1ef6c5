/** Helpers for a driver package's own tests: booting its machines, a domain for a test, the strict-mode sequence. */
export * from "./boot.js";
export * from "./strict-sequence.js";
