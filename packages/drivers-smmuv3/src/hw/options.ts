/**
 * The SMMUv3 model's feature and cache options, as the platform description gives them (`iommus[].options`), with
 * their defaults. Features are reported to the driver through the ID registers.
 */
import { optionBool, optionChoice, optionNumber } from "@iommu-sim/core";
import type { Replacement } from "./caches.js";

/**
 * Options of an SMMUv3 instance (platform description `options`).
 * @linux the SMMU_IDR0..5 feature fields a real SMMUv3 implementation fixes, and its cache geometry
 */
export interface Smmuv3Options {
  /** Translation stages implemented. Default "s1s2". */
  stages?: "s1" | "s2" | "s1s2";
  /** Nested (Config = 0b111) configurations accepted when both stages exist. Default true. */
  nesting?: boolean;
  /** StreamID bits (IDR1.SIDSIZE). Default 16. */
  sidBits?: number;
  /** SubstreamID bits (IDR1.SSIDSIZE). Default 20. */
  ssidBits?: number;
  /** Output address size in bits (IDR5.OAS). Default 48. */
  oas?: number;
  /** Hardware translation-table update (IDR0.HTTU). Default "hd" (or "ha" when `dirty` is false). */
  httu?: "none" | "ha" | "hd";
  /** Shorthand of the common schema: false = no dirty-state update. */
  dirty?: boolean;
  /** Broadcast TLB maintenance (IDR0.BTM). Default false. */
  btm?: boolean;
  /** 16-bit VMIDs / ASIDs. Default true. */
  vmid16?: boolean;
  asid16?: boolean;
  /** ATS and PRI (IDR0.ATS / IDR0.PRI). Default true. */
  ats?: boolean;
  pri?: boolean;
  /** Stall fault model supported (IDR0.STALL_MODEL = 0 rather than 1). Default false. */
  stall?: boolean;
  /** EL2 / E2H stream worlds (IDR0.HYP). Default true. */
  hyp?: boolean;
  /** 2-level stream tables (IDR0.ST_LEVEL) and CD tables (IDR0.CD2L). Default true. */
  twoLevelStreamTable?: boolean;
  cd2l?: boolean;
  /** Coherent table walks and queue accesses (IDR0.COHACC). Default true. */
  coherent?: boolean;
  /** MSIs (IDR0.MSI). Default true. */
  msi?: boolean;
  /** Range invalidation (IDR3.RIL). Default true. */
  ril?: boolean;
  /** Supported granules in bytes (IDR5.GRAN4K/16K/64K). Default [4096, 16384, 65536]. */
  granules?: number[];
  /** log2 of the largest queue sizes (IDR1.CMDQS / EVENTQS / PRIQS). Defaults 8 / 7 / 7. */
  cmdqSizeLog2?: number;
  evtqSizeLog2?: number;
  priqSizeLog2?: number;
  /** Cache geometry (entries, ways) and replacement. Defaults: TLB 256×4, config 64×4, walk cache 64×4, round-robin. */
  tlbEntries?: number;
  tlbWays?: number;
  cfgEntries?: number;
  cfgWays?: number;
  walkCacheEntries?: number;
  walkCacheWays?: number;
  /**
   * Stage-2 translations cached for nested stage-1 table fetches (IPA granule → PA, tagged by VMID). Default 32
   * entries, 4 ways.
   */
  s2WalkTlbEntries?: number;
  s2WalkTlbWays?: number;
  replacement?: Replacement;
  /** Strict mode: re-check every cache hit against memory and report stale entries as warnings. Default false. */
  strict?: boolean;
  /**
   * Commands the SMMU consumes per CMDQ_PROD write and per CMDQ_CONS read: each poll of CONS is a slice of time in
   * which the SMMU makes progress, so a driver waiting on a full queue (or a CMD_SYNC) sees CONS advance by up to
   * this many commands per read. 0: only `step()` consumes (a stuck SMMU). Default: all.
   */
  cmdqBatch?: number;
}

/**
 * Options with every default applied.
 * @linux none: the model's resolved configuration
 */
export type ResolvedSmmuv3Options = Required<Omit<Smmuv3Options, "dirty">>;

/**
 * Resolve platform options (unknown keys ignored, wrong types replaced by defaults).
 * @linux none: platform description → SMMU implementation parameters
 */
export function resolveSmmuv3Options(o: Record<string, unknown>): ResolvedSmmuv3Options {
  const granules = Array.isArray(o.granules)
    ? (o.granules as unknown[]).filter((g): g is number => g === 4096 || g === 16384 || g === 65536)
    : [4096, 16384, 65536];
  const dirty = optionBool(o, "dirty", true);
  const clampQ = (k: string, d: number) => Math.max(1, Math.min(19, Math.trunc(optionNumber(o, k, d))));
  const batch = o.cmdqBatch;
  return {
    stages: optionChoice(o, "stages", ["s1", "s2", "s1s2"] as const, "s1s2"),
    nesting: optionBool(o, "nesting", true),
    sidBits: Math.max(0, Math.min(32, Math.trunc(optionNumber(o, "sidBits", 16)))),
    ssidBits: Math.max(0, Math.min(20, Math.trunc(optionNumber(o, "ssidBits", 20)))),
    oas: Math.max(32, Math.min(52, Math.trunc(optionNumber(o, "oas", 48)))),
    httu: optionChoice(o, "httu", ["none", "ha", "hd"] as const, dirty ? "hd" : "ha"),
    btm: optionBool(o, "btm", false),
    vmid16: optionBool(o, "vmid16", true),
    asid16: optionBool(o, "asid16", true),
    ats: optionBool(o, "ats", true),
    pri: optionBool(o, "pri", true),
    stall: optionBool(o, "stall", false),
    hyp: optionBool(o, "hyp", true),
    twoLevelStreamTable: optionBool(o, "twoLevelStreamTable", true),
    cd2l: optionBool(o, "cd2l", true),
    coherent: optionBool(o, "coherent", true),
    msi: optionBool(o, "msi", true),
    ril: optionBool(o, "ril", true),
    granules: granules.length > 0 ? granules : [4096],
    cmdqSizeLog2: clampQ("cmdqSizeLog2", 8),
    evtqSizeLog2: clampQ("evtqSizeLog2", 7),
    priqSizeLog2: clampQ("priqSizeLog2", 7),
    tlbEntries: Math.max(1, optionNumber(o, "tlbEntries", 256)),
    tlbWays: Math.max(1, optionNumber(o, "tlbWays", 4)),
    cfgEntries: Math.max(1, optionNumber(o, "cfgEntries", 64)),
    cfgWays: Math.max(1, optionNumber(o, "cfgWays", 4)),
    walkCacheEntries: Math.max(1, optionNumber(o, "walkCacheEntries", 64)),
    walkCacheWays: Math.max(1, optionNumber(o, "walkCacheWays", 4)),
    s2WalkTlbEntries: Math.max(1, optionNumber(o, "s2WalkTlbEntries", 32)),
    s2WalkTlbWays: Math.max(1, optionNumber(o, "s2WalkTlbWays", 4)),
    replacement: optionChoice(o, "replacement", ["round-robin", "lru"] as const, "round-robin"),
    strict: optionBool(o, "strict", false),
    cmdqBatch: typeof batch === "number" && batch >= 0 ? batch : Number.POSITIVE_INFINITY,
  };
}
