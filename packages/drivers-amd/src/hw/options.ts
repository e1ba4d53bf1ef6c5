/**
 * The AMD-Vi model's implementation parameters, from the platform description's `options` for an "amd" IOMMU:
 * what the Extended Feature Register advertises, and the cache geometry (IMPLEMENTATION DEFINED). Unknown keys are
 * ignored here (the platform schema rejects them).
 * @linux none: the platform description → AMD-Vi EFR bits (what amd_iommu reads from MMIO_EXT_FEATURES)
 */

import type { Replacement } from "@iommu-sim/core";
import { optionBool, optionNumber } from "@iommu-sim/core";

/**
 * What a platform description may set for an AMD-Vi unit.
 * @linux none: the feature bits of an AMD IOMMU (EFR / EFR2)
 */
export interface AmdOptions {
  /** EFR.GTSup: guest (v2) translation with GCR3 tables. Default true. */
  v2?: boolean;
  /** Alias of `v2` (EFR.GTSup); either false turns it off. */
  guestTranslation?: boolean;
  /** EFR.PPRSup: peripheral page requests. Default true. */
  ppr?: boolean;
  /** EFR.PASmax + 1: PASID width. Default 16. */
  pasidBits?: number;
  /** Largest host (v1) paging mode: EFR.HATS = levels - 4. Default 6. */
  hostLevels?: number;
  /** Domain ID width (the DTE field has 16 bits). Default 16. */
  domainIdBits?: number;
  /** EFR.HASup/HDSup: host access/dirty bits. Default true. */
  dirty?: boolean;
  /** IOTLB geometry. */
  tlbEntries?: number;
  tlbWays?: number;
  /** Device-table-entry cache geometry (ways: `tlbWays`). */
  dteEntries?: number;
  /** Page-directory-cache geometry (ways: `tlbWays`). */
  pdcEntries?: number;
  replacement?: Replacement;
  /** Strict mode: re-check every cache hit against memory and report stale entries as warnings. Default false. */
  strict?: boolean;
}

/**
 * Options with every default applied.
 * @linux none: the model's resolved configuration
 */
export type ResolvedAmdOptions = Required<Omit<AmdOptions, "guestTranslation">>;

/**
 * Resolve platform options (unknown keys ignored, wrong types replaced by defaults).
 * @linux none: platform description → AMD-Vi implementation parameters
 */
export function resolveAmdOptions(o: Record<string, unknown>): ResolvedAmdOptions {
  return {
    v2: optionBool(o, "v2", true) && optionBool(o, "guestTranslation", true),
    ppr: optionBool(o, "ppr", true),
    pasidBits: Math.max(0, Math.min(20, Math.trunc(optionNumber(o, "pasidBits", 16)))),
    hostLevels: Math.max(4, Math.min(6, Math.trunc(optionNumber(o, "hostLevels", 6)))),
    domainIdBits: Math.max(4, Math.min(16, Math.trunc(optionNumber(o, "domainIdBits", 16)))),
    dirty: optionBool(o, "dirty", true),
    tlbEntries: Math.max(1, Math.trunc(optionNumber(o, "tlbEntries", 256))),
    tlbWays: Math.max(1, Math.trunc(optionNumber(o, "tlbWays", 4))),
    dteEntries: Math.max(1, Math.trunc(optionNumber(o, "dteEntries", 64))),
    pdcEntries: Math.max(1, Math.trunc(optionNumber(o, "pdcEntries", 64))),
    replacement: o.replacement === "lru" ? "lru" : "round-robin",
    strict: optionBool(o, "strict", false),
  };
}
