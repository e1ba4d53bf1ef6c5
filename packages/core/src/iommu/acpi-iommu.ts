/**
 * The ACPI path from a device to its IOMMU. VT-d (DMAR) and AMD-Vi (IVRS) describe which PCI functions each unit
 * translates without giving devices a fwspec: such devices are offered to the first IOMMU registered without a
 * firmware node, whose driver finds its own instance (its DRHD / IVHD) in `probeDevice`.
 */
import { kerr } from "../kernel/errno.js";
import { type DmarUnit, dmarFindMatchedUnit, type IvrsUnit, ivrsLookup } from "../platform/driver-core/acpi.js";
import type { Device } from "../platform/driver-core/device.js";
import { devIommu } from "./dev-iommu.js";
import type { IommuCore } from "./iommu-core.js";

/**
 * The ACPI unit translating a PCI function: a DMAR DRHD or an IVRS IVHD, with the requester ID its DMA carries
 * there (an IVRS alias entry substitutes another ID).
 * @linux the result of dmar_find_matched_drhd_unit / rlookup_amd_iommu
 */
export type AcpiIommuUnit =
  | { table: "dmar"; unit: DmarUnit; requesterId: number }
  | { table: "ivrs"; unit: IvrsUnit; requesterId: number };

/**
 * The DRHD or IVHD covering `dev` (a PCI function), or undefined. Drivers of the ACPI style call it from
 * `probeDevice` to find their own instance (`unit.iommu` is the IOMMU's name, `unit.fwnode` its node).
 * @linux dmar_find_matched_drhd_unit (device_lookup_iommu) / rlookup_amd_iommu
 */
export function acpiIommuUnitFor(core: IommuCore, dev: Device): AcpiIommuUnit | undefined {
  const pci = dev.pci;
  if (!pci) return undefined;
  const fw = core.driverCore.firmware;
  const drhd = dmarFindMatchedUnit(fw.dmar, pci.segment, pci.rid);
  if (drhd) return { table: "dmar", unit: drhd, requesterId: pci.rid };
  const ivhd = ivrsLookup(fw.ivrs, pci.segment, pci.rid);
  if (ivhd) return { table: "ivrs", unit: ivhd.unit, requesterId: ivhd.requesterId };
  return undefined;
}

/**
 * Whether a DMAR or IVRS table covers `dev`, i.e. whether the core offers it to a driver registered without a
 * firmware node.
 * @linux the device scopes probe_device implementations of intel-iommu / amd-iommu check
 */
export function acpiIommuCovers(core: IommuCore, dev: Device): boolean {
  return acpiIommuUnitFor(core, dev) !== undefined;
}

/**
 * The ACPI firmware configuration of a device's IOMMU, under the probe-device lock: nothing to do when it has a
 * fwspec. IORT and VIOT, the ACPI tables that give devices a fwspec, are not modelled, so otherwise ENODEV: DMAR/IVRS
 * devices need no fwspec (see {@link acpiIommuCovers}).
 * @linux acpi_iommu_configure_id
 */
export async function acpiIommuConfigureId(core: IommuCore, dev: Device): Promise<void> {
  await core.probeLock.lock();
  try {
    if (devIommu(dev)?.fwspec) return;
  } finally {
    core.probeLock.unlock();
  }
  throw kerr("ENODEV", `${dev.name}: no IORT/VIOT entry`);
}
