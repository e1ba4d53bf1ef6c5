/**
 * A translation path decoded from raw memory and registers, the way a developer reads it with a debugger: each
 * structure the hardware walks (stream table entry, context descriptor, PASID entry, device-table entry, each
 * page-table level) with its address, raw value and decoded fields, then the output address or the fault. Vendor
 * hardware packages export decoders that build one; tools (`iommu-sim inspect`) print it.
 */

/** One structure or table level of a walk. */
export interface TranslationLevel {
  /** What it is: `STE`, `CD`, `L1 table`, `L3 page`, `context`, ... */
  name: string;
  /** Physical address it was read from. */
  address: number;
  /** Raw little-endian 64-bit words as hex strings (`0x…`). */
  raw: string[];
  /** Decoded fields by name. */
  fields: Record<string, string | number | boolean>;
}

/** Where the walk ended. */
export interface TranslationResult {
  /** Output physical address, when translated. */
  pa?: number;
  /** Size of the page or block that maps it. */
  size?: number;
  /** Permissions: `r`, `w`, `x` letters. */
  perm?: string;
  /** Why it does not translate, when it does not. */
  fault?: string;
}

/**
 * A decoded translation for one requester (stream/requester ID, PASID) and input address.
 * @linux what a debugger session over the IOMMU's tables shows (no kernel function: a developer's tool)
 */
export interface TranslationPath {
  iommu: string;
  kind: string;
  requesterId: number;
  /** -1 without PASID/SSID. */
  pasid: number;
  iova: number;
  levels: TranslationLevel[];
  result: TranslationResult;
}

/**
 * Decode the path of (`requesterId`, `pasid`, `iova`) on one IOMMU instance by reading registers (MMIO at `mmioBase`
 * through `readReg`) and memory only.
 */
export type TranslationDecoder = (args: {
  memory: import("./memory.js").PhysicalMemory;
  readReg: (offset: number) => number;
  requesterId: number;
  pasid: number;
  iova: number;
}) => Omit<TranslationPath, "iommu" | "kind" | "requesterId" | "pasid" | "iova">;

/**
 * `0x…` of a 64-bit value read as two 32-bit halves (no bigint on the caller's side).
 * @linux none: how a debugger prints a raw descriptor word
 */
export function hex64(lo: number, hi: number): string {
  return `0x${((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)).toString(16).padStart(16, "0")}`;
}

/**
 * The `n` 32-bit words of a descriptor at `pa`, read for a decoder (no side effect); a word outside memory (or a
 * negative `pa`) reads 0, as a decoder shows a descriptor it cannot fetch.
 * @linux none: what a debugger dumps of a table entry
 */
export function descriptorWords(mem: import("./memory.js").PhysicalMemory, pa: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(pa >= 0 && pa + 4 * i + 4 <= mem.size ? mem.read32(pa + 4 * i) >>> 0 : 0);
  return out;
}

/**
 * The words of a descriptor (low word first) as its 64-bit values, `0x…` each: a {@link TranslationLevel}'s `raw`.
 * @linux none: how a debugger prints a raw descriptor
 */
export function rawQwords(w: readonly number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < w.length; i += 2) out.push(hex64(w[i]!, w[i + 1]!));
  return out;
}
