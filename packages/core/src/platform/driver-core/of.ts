/**
 * Device-tree ID mapping: how a PCI requester ID becomes an IOMMU stream ID through a host bridge's `iommu-map`.
 */
import type { FwNode } from "./fwnode.js";

/**
 * One `iommu-map` entry: RIDs [ridBase, ridBase + length) map to IDs [sidBase, ...) on `fwnode`'s IOMMU.
 * `ridMask` is the `iommu-map-mask` applied to the RID first (all ones when absent). Linux has one mask per node;
 * here each entry may carry its own (entries of one node normally agree).
 * @linux the iommu-map / iommu-map-mask properties (Documentation/devicetree/bindings/pci/pci-iommu.txt)
 */
export interface IommuMapEntry {
  ridBase: number;
  fwnode: FwNode;
  sidBase: number;
  length: number;
  ridMask?: number;
}

/** A mapped ID and the IOMMU node it belongs to. @linux the id_out and target outputs of of_map_id */
export interface MappedId {
  fwnode: FwNode;
  id: number;
  /** Index of the matching map entry. */
  entry: number;
}

/**
 * Map `id` through `map`: the first entry whose range holds the masked ID gives `masked - ridBase + sidBase` on its
 * IOMMU. With `target` given, only entries pointing at that node are considered. Undefined when nothing matches: in
 * Linux the ID then bypasses translation and `of_iommu` finds no IOMMU for the device.
 * @linux of_map_id
 */
export function ofMapId(map: readonly IommuMapEntry[], id: number, target?: FwNode): MappedId | undefined {
  for (let i = 0; i < map.length; i++) {
    const e = map[i]!;
    const masked = ((e.ridMask ?? 0xffffffff) & id) >>> 0;
    if (masked < e.ridBase || masked >= e.ridBase + e.length) continue;
    if (target && e.fwnode !== target) continue;
    return { fwnode: e.fwnode, id: (masked - e.ridBase + e.sidBase) >>> 0, entry: i };
  }
  return undefined;
}
