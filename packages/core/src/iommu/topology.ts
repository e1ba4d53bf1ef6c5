import type { Machine } from "../machine/machine.js";
import { describeTopology, type Topology } from "../platform/topology.js";
import type { IommuGroup } from "./group.js";
import { IOMMU_DOMAIN } from "./types.js";

const DOMAIN_NAMES = new Map<number, string>(Object.entries(IOMMU_DOMAIN).map(([k, v]) => [v, k]));

/**
 * The machine's topology with what the iommu core knows: each probed device's group number and the type of the
 * domain its group is attached to.
 * @linux /sys/kernel/iommu_groups/<n>/devices and /sys/kernel/iommu_groups/<n>/type
 */
export function describeIommuTopology(m: Machine): Topology {
  const t = describeTopology(m.driverCore, m.dma);
  for (const d of t.devices) {
    const group = m.driverCore.deviceFor(d.name)?.iommuGroup as IommuGroup | undefined;
    if (!group) continue;
    d.group = group.id;
    const type = group.domain?.type;
    if (type !== undefined) d.domain = DOMAIN_NAMES.get(type) ?? `0x${type.toString(16)}`;
  }
  return t;
}
