/**
 * The x86 firmware tables that bind PCI devices to IOMMUs: the DMAR table's DRHD units (Intel VT-d) and the IVRS
 * table's IVHD blocks (AMD-Vi).
 */
import { type IvrsEntryDesc, ivrsEntryCovers, parseBdf } from "../description.js";
import type { FwNode } from "./fwnode.js";

/**
 * One DRHD: a VT-d unit and the PCI devices it translates — the RIDs in its device scope, or with
 * INCLUDE_PCI_ALL every device of the segment not claimed by another unit's scope.
 * @linux struct dmar_drhd_unit
 */
export interface DmarUnit {
  iommu: string;
  fwnode: FwNode;
  segment: number;
  includePciAll: boolean;
  /** Endpoint RIDs of the device scope. @linux drhd->devices (struct dmar_dev_scope) */
  scope: readonly number[];
}

/**
 * One RMRR: a reserved memory range that the devices of its scope DMA to from firmware on, to be identity-mapped
 * for them (an IOMMU_RESV_DIRECT region).
 * @linux struct dmar_rmrr_unit
 */
export interface DmarRmrr {
  segment: number;
  base: number;
  /** Last byte (inclusive). @linux dmar_rmrr_unit.end_address */
  end: number;
  /** Endpoint RIDs of the device scope. */
  scope: readonly number[];
}

/**
 * One IVHD: an AMD-Vi unit and its device entries.
 * @linux struct ivhd_header with its device entries
 */
export interface IvrsUnit {
  iommu: string;
  fwnode: FwNode;
  segment: number;
  entries: readonly IvrsEntryDesc[];
}

/**
 * The DRHD unit translating the PCI function `rid` on `segment`: explicit scopes first (Linux keeps INCLUDE_PCI_ALL
 * units at the tail of its list), then the segment's INCLUDE_PCI_ALL unit.
 * @linux dmar_find_matched_drhd_unit
 */
export function dmarFindMatchedUnit(units: readonly DmarUnit[], segment: number, rid: number): DmarUnit | undefined {
  for (const u of units) if (u.segment === segment && u.scope.includes(rid)) return u;
  for (const u of units) if (u.segment === segment && u.includePciAll) return u;
  return undefined;
}

/**
 * The IVHD unit handling `rid` on `segment`, and the requester ID its DMA carries (the alias for an alias entry).
 * @linux amd_iommu_rlookup_table / amd_iommu_alias_table, filled by init_iommu_from_acpi
 */
export function ivrsLookup(
  units: readonly IvrsUnit[],
  segment: number,
  rid: number,
): { unit: IvrsUnit; requesterId: number } | undefined {
  for (const u of units) {
    if (u.segment !== segment) continue;
    const r = ivrsEntryCovers(u.entries, rid);
    if (r !== undefined) return { unit: u, requesterId: r };
  }
  return undefined;
}

/** Decode a list of `"BB:DD.F"` strings into RIDs. @linux dmar_parse_dev_scope (PCI path to RID) */
export function bdfsToRids(bdfs: readonly string[]): number[] {
  return bdfs.map((b) => {
    const p = parseBdf(b);
    if (!p) throw new TypeError(`bad PCI address ${b}`);
    return p.rid;
  });
}
