/**
 * What a paging domain backed by one of core's page tables takes from its table: the page sizes the table can map
 * and an aperture that is exactly the table's input range, enforced.
 * @linux the domain setup of generic_pt's pt_iommu_init (pgsize_bitmap and geometry from the table)
 */
import type { IoPageTable } from "../pgtable/engine.js";
import type { IommuDomainGeometry } from "./types.js";

/**
 * The aperture of a domain translating through `pt`: IOVA 0 up to the last address of its input range, enforced.
 * @linux pt_iommu_init setting domain->geometry (aperture_start, aperture_end, force_aperture)
 */
export function ptDomainGeometry(pt: IoPageTable): IommuDomainGeometry {
  return { apertureStart: 0, apertureEnd: 2 ** pt.ias - 1, forceAperture: true };
}

/**
 * The page sizes and aperture of a paging domain translating through `pt`, to spread into its init.
 * @linux pt_iommu_init setting domain->pgsize_bitmap and domain->geometry
 */
export function ptDomainInit(pt: IoPageTable): { pgsizeBitmap: number; geometry: IommuDomainGeometry } {
  return { pgsizeBitmap: pt.pgsizeBitmap, geometry: ptDomainGeometry(pt) };
}
