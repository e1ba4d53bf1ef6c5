/** The generic IO page-table engine and its core formats. */

export type {
  IoPageTableOptions,
  PgtableAllocator,
  PgtableMemory,
  PtDirtyFn,
  PtDumpFn,
  PtWalkFn,
} from "./engine.js";
export {
  IoPageTable,
  PgtableMapError,
  PT_ENTRY_EMPTY,
  PT_ENTRY_OA,
  PT_ENTRY_TABLE,
} from "./engine.js";
export { MOCK_HUGE_PAGE_SHIFT, MOCK_PAGE_SHIFT, MOCK_PTE, mockFormat } from "./fmt/mock.js";
export { X86_64, x86_64Format } from "./fmt/x86-64.js";
export { type X86RadixFormatBase, x86RadixFormatBase } from "./fmt/x86-radix.js";
export type { PageTableFormat, PtContigSpec, PtDirtySpec, PtGeometry, PtPartialUnmap } from "./format.js";
export { defaultGeometry } from "./format.js";
export type { GatherPageFreer } from "./gather.js";
export { IommuIotlbGather, IotlbGather } from "./gather.js";
export type { PgsizeChoice } from "./pgsize.js";
export { pgsizeFor } from "./pgsize.js";
export * from "./prot.js";
