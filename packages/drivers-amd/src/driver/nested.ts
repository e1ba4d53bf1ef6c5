/**
 * Nested translation: the guest DTE a VMM passes for a nested HWPT on an AMD vIOMMU, its validation, the guest to
 * host domain ID map that keeps the IOTLB tags of different guest domains apart, and the DTE fields a nested
 * attach takes from the guest (GV, PPR, GLX, GIOV, the GCR3 root pointer pieces, the guest paging mode) on top of
 * the nest parent's v1 table.
 * @linux drivers/iommu/amd/nested.c (validate_gdte_nested, gdom_info_load_or_alloc_locked,
 * amd_iommu_alloc_domain_nested, set_dte_nested, nested_domain_free)
 */
import { kerr } from "@iommu-sim/core";
import type { AmdViommu, GuestDomainMapping } from "./domain.js";
import { DTE_W, dteGet, dteSet, GUEST_PGTABLE } from "./regs.js";

/**
 * Check a guest DTE as Linux does before building a nested domain: EINVAL for a non-zero Mode or host table
 * root, V and GV with a zero GCR3 root pointer, a guest paging mode other than 4/5 levels, GLX 3; EOPNOTSUPP for
 * 5-level guest tables when the host runs 4-level v2 tables.
 * @linux validate_gdte_nested
 */
export function validateGdteNested(g: readonly number[], gpt5: boolean): void {
  const gpt = dteGet(g, DTE_W.GPT_LEVEL);
  const hostRoot = ((g[0]! & 0xfffff000) >>> 0) + (g[1]! & 0xfffff);
  if (dteGet(g, DTE_W.MODE) !== 0 || hostRoot !== 0) throw kerr("EINVAL", "amd: guest DTE sets Mode or the host root");
  const gcr3 = dteGet(g, DTE_W.GCR3_14_12) + dteGet(g, DTE_W.GCR3_30_15) + dteGet(g, DTE_W.GCR3_51_31);
  if ((g[0]! & 1) === 1 && dteGet(g, DTE_W.GV) === 1 && gcr3 === 0) {
    throw kerr("EINVAL", "amd: guest DTE has GV without a GCR3 table");
  }
  if (gpt !== GUEST_PGTABLE.L4 && gpt !== GUEST_PGTABLE.L5) throw kerr("EINVAL", "amd: guest paging mode");
  if (dteGet(g, DTE_W.GLX) === 3) throw kerr("EINVAL", "amd: GLX 3 is reserved");
  if (gpt === GUEST_PGTABLE.L5 && !gpt5) throw kerr("EOPNOTSUPP", "amd: 5-level guest tables");
}

/** The guest domain ID of a guest DTE. @linux FIELD_GET(DTE_DOMID_MASK, gdte.dte[1]) */
export function gdteDomainId(g: readonly number[]): number {
  return dteGet(g, DTE_W.DOMID);
}

/**
 * The host domain ID for guest domain `gdomId` in `viommu`: the existing mapping gains a user, or a new one takes
 * an ID from `allocId` (ENOSPC when none is left).
 * @linux amd_iommu_alloc_domain_nested (gdom_info_load_or_alloc_locked, refcount_inc_not_zero, amd_iommu_pdom_id_alloc)
 */
export function gdomGet(viommu: AmdViommu, gdomId: number, allocId: () => number): GuestDomainMapping {
  const cur = viommu.gdomids.get(gdomId);
  if (cur) {
    cur.users++;
    return cur;
  }
  let hdomId: number;
  try {
    hdomId = allocId();
  } catch {
    throw kerr("ENOSPC", "amd: no host domain ID for the guest domain");
  }
  const info = { hdomId, users: 1 };
  viommu.gdomids.set(gdomId, info);
  return info;
}

/**
 * Drop a nested domain's use of its mapping; the last user frees the host domain ID through `freeId`.
 * @linux nested_domain_free
 */
export function gdomPut(viommu: AmdViommu, gdomId: number, info: GuestDomainMapping, freeId: (id: number) => void) {
  if (--info.users > 0) return;
  viommu.gdomids.delete(gdomId);
  freeId(info.hdomId);
}

/**
 * Copy the guest's part into a DTE already holding the parent's v1 fields: GV, then PPR, GLX, GIOV and the GCR3
 * root pointer pieces from the guest DTE, and the guest paging mode.
 * @linux set_dte_nested
 */
export function dteApplyGuest(w: number[], g: readonly number[]): void {
  dteSet(w, DTE_W.GV, 1);
  for (const f of [DTE_W.PPR, DTE_W.GLX, DTE_W.GIOV, DTE_W.GCR3_14_12, DTE_W.GCR3_30_15, DTE_W.GCR3_51_31]) {
    if (dteGet(g, f)) dteSet(w, f, dteGet(g, f));
  }
  dteSet(w, DTE_W.GPT_LEVEL, dteGet(g, DTE_W.GPT_LEVEL));
}
