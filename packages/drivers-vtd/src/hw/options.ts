/**
 * The VT-d model's implementation parameters, from the platform description's `options` for a "vtd" IOMMU: what
 * CAP and ECAP advertise, and the cache geometry (IMPLEMENTATION DEFINED). Unknown keys are ignored.
 * @linux none: the platform description → VT-d capability registers (what intel_iommu reads from CAP/ECAP)
 */

import type { Replacement } from "@iommu-sim/core";
import { optionBool, optionNumber } from "@iommu-sim/core";

/**
 * What a platform description may set for a VT-d unit.
 * @linux none: the capability bits of a VT-d unit (CAP/ECAP)
 */
export interface VtdOptions {
  /** ECAP.SMTS: scalable-mode translation. Default true. */
  scalableMode?: boolean;
  /** ECAP.FLTS: first-stage translation (scalable mode only). Default true. */
  firstStage?: boolean;
  /** ECAP.SLTS: second-stage translation in scalable mode. Default true. */
  secondStage?: boolean;
  /** ECAP.NEST: nested translation. Default true. */
  nesting?: boolean;
  /** CAP.CM: caching mode (not-present entries may be cached; a virtual IOMMU). Default false. */
  cachingMode?: boolean;
  /** Second-stage levels supported (CAP.SAGAW). Default [3, 4]. */
  sagaw?: number[];
  /** CAP.ND as bits of domain ID (4 + 2·ND). Default 16. */
  domainIdBits?: number;
  /** ECAP.PSS + 1: PASID width (0 = no PASID support). Default 20. */
  pasidBits?: number;
  /** ECAP.PRS: page requests. Default true. */
  pri?: boolean;
  /** ECAP.DT: device TLBs (ATS). Default true. */
  ats?: boolean;
  /** ECAP.SLADS: second-stage accessed/dirty. Default true. */
  dirty?: boolean;
  /** ECAP.PT: pass-through. Default true. */
  passThrough?: boolean;
  /** CAP.FL5LP: 5-level first-stage paging. Default false. */
  fl5lp?: boolean;
  /** CAP.FL1GP: 1 GiB first-stage pages. Default true. */
  fl1gp?: boolean;
  /** CAP.SLLPS: second-stage large pages (bit 0 = 2 MiB, bit 1 = 1 GiB). Default 3. */
  sllps?: number;
  /** CAP.PSI: page-selective invalidation. Default true. */
  psi?: boolean;
  /** CAP.MAMV: largest address mask value of a page-selective invalidation. Default 18 (1 GiB). */
  mamv?: number;
  /** CAP.NFR + 1: number of fault recording registers. Default 8. */
  faultRecords?: number;
  /** ECAP.QI: queued invalidation. Default true. */
  qi?: boolean;
  /** CAP.RWBF: required write-buffer flushing. Default false. */
  rwbf?: boolean;
  /** ECAP.C: page walks are coherent. Default true. */
  coherent?: boolean;
  /** MGAW, bits of the largest guest address. Default 48 (57 with 5-level first stage or 5-level SAGAW). */
  mgaw?: number;
  /** Cache geometry. */
  tlbEntries?: number;
  tlbWays?: number;
  contextEntries?: number;
  pasidEntries?: number;
  cacheWays?: number;
  pagingCacheEntries?: number;
  replacement?: Replacement;
  /** Strict mode: re-check every cache hit against memory and report stale entries as warnings. Default false. */
  strict?: boolean;
  /**
   * Descriptors the unit processes per IQT write and per IQH read (each poll of IQH is a slice of time in which
   * the unit makes progress). 0: only `step()` processes (a stuck unit). Default: all.
   */
  qiBatch?: number;
}

/**
 * Options with every default applied.
 * @linux none: the model's resolved configuration
 */
export type ResolvedVtdOptions = Required<VtdOptions>;

/**
 * Resolve platform options (unknown keys ignored, wrong types replaced by defaults).
 * @linux none: platform description → VT-d implementation parameters
 */
export function resolveVtdOptions(o: Record<string, unknown>): ResolvedVtdOptions {
  const sagaw = Array.isArray(o.sagaw)
    ? (o.sagaw as unknown[]).filter((l): l is number => l === 3 || l === 4 || l === 5)
    : [3, 4];
  const fl5lp = optionBool(o, "fl5lp", false);
  const batch = o.qiBatch;
  const rep = o.replacement === "lru" ? "lru" : "round-robin";
  return {
    scalableMode: optionBool(o, "scalableMode", true),
    firstStage: optionBool(o, "firstStage", true),
    secondStage: optionBool(o, "secondStage", true),
    nesting: optionBool(o, "nesting", true),
    cachingMode: optionBool(o, "cachingMode", false),
    sagaw: sagaw.length > 0 ? sagaw : [4],
    domainIdBits: Math.max(4, Math.min(16, Math.trunc(optionNumber(o, "domainIdBits", 16)))),
    pasidBits: Math.max(0, Math.min(20, Math.trunc(optionNumber(o, "pasidBits", 20)))),
    pri: optionBool(o, "pri", true),
    ats: optionBool(o, "ats", true),
    dirty: optionBool(o, "dirty", true),
    passThrough: optionBool(o, "passThrough", true),
    fl5lp,
    fl1gp: optionBool(o, "fl1gp", true),
    sllps: Math.trunc(optionNumber(o, "sllps", 3)) & 3,
    psi: optionBool(o, "psi", true),
    mamv: Math.max(0, Math.min(63, Math.trunc(optionNumber(o, "mamv", 18)))),
    faultRecords: Math.max(1, Math.min(256, Math.trunc(optionNumber(o, "faultRecords", 8)))),
    qi: optionBool(o, "qi", true),
    rwbf: optionBool(o, "rwbf", false),
    coherent: optionBool(o, "coherent", true),
    mgaw: Math.max(39, Math.min(57, Math.trunc(optionNumber(o, "mgaw", fl5lp || sagaw.includes(5) ? 57 : 48)))),
    tlbEntries: Math.max(1, optionNumber(o, "tlbEntries", 256)),
    tlbWays: Math.max(1, optionNumber(o, "tlbWays", 4)),
    contextEntries: Math.max(1, optionNumber(o, "contextEntries", 64)),
    pasidEntries: Math.max(1, optionNumber(o, "pasidEntries", 64)),
    cacheWays: Math.max(1, optionNumber(o, "cacheWays", 4)),
    pagingCacheEntries: Math.max(1, optionNumber(o, "pagingCacheEntries", 64)),
    replacement: rep,
    strict: optionBool(o, "strict", false),
    qiBatch: typeof batch === "number" && batch >= 0 ? batch : Number.POSITIVE_INFINITY,
  };
}
