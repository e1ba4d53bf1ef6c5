/**
 * The device-tree path from a device to its IOMMU: the `iommus` property of a platform device's node, or the PCI
 * host bridge's `iommu-map` for each requester ID of a PCI function, each turned into a fwspec by the IOMMU
 * driver's `ofXlate`.
 */
import { kerr } from "../kernel/errno.js";
import { modulePut, tryModuleGet } from "../kernel/module.js";
import type { Device, OfPhandleArgs } from "../platform/driver-core/device.js";
import { type IommuMapEntry, ofMapId } from "../platform/driver-core/of.js";
import { pciForEachDmaAlias } from "../platform/driver-core/pci.js";
import { devIommu, devIommuFree } from "./dev-iommu.js";
import { iommuFwspecFree, iommuFwspecInit } from "./fwspec.js";
import type { IommuCore } from "./iommu-core.js";
import { iommuOpsFromFwnode } from "./iommu-device.js";
import { iommuProbeDevice } from "./probe.js";

/**
 * Whether firmware describes `dev`'s IOMMU linkage in the device tree: a platform device (its node may have
 * `iommus`), or a PCI function whose host bridge has an `iommu-map`.
 * @linux dev->of_node (of_dma_configure rather than acpi_dma_configure)
 */
export function ofIommuUsesDt(dev: Device): boolean {
  return dev.bus.type === "platform" || dev.bus.iommuMap.length > 0;
}

/**
 * Translate one specifier: give the device a fwspec on the named IOMMU (EPROBE_DEFER while its driver has not
 * registered), then pin the driver's module (ENODEV if it is going away or has no `ofXlate`) and let `ofXlate` add
 * the IDs. Runs under the probe-device lock. Every node counts as available (descriptions have no `status`).
 * @linux of_iommu_xlate
 */
export async function ofIommuXlate(core: IommuCore, dev: Device, spec: OfPhandleArgs): Promise<void> {
  iommuFwspecInit(core, dev, spec.fwnode);
  const ops = iommuOpsFromFwnode(core, spec.fwnode);
  const holder = `of_iommu_xlate(${dev.name})`;
  if (!ops?.ofXlate || !tryModuleGet(ops.owner, holder)) {
    throw kerr("ENODEV", `no of_xlate for ${dev.name} on ${spec.fwnode.path}`);
  }
  try {
    await ops.ofXlate(dev, spec);
  } finally {
    modulePut(ops.owner, holder, core.diag);
  }
}

/**
 * Map requester ID `id` through an `iommu-map` and translate the result; ENODEV when no entry matches (the ID
 * bypasses translation).
 * @linux of_iommu_configure_dev_id
 */
export async function ofIommuConfigureDevId(
  core: IommuCore,
  dev: Device,
  map: readonly IommuMapEntry[],
  id: number,
): Promise<void> {
  const m = ofMapId(map, id);
  if (!m) throw kerr("ENODEV", `${dev.name}: id 0x${id.toString(16)} is not in the iommu-map`);
  await ofIommuXlate(core, dev, { fwnode: m.fwnode, args: [m.id] });
}

/**
 * Translate every `iommus` entry of a platform device's node, stopping at the first error; ENODEV without any.
 * @linux of_iommu_configure_dev
 */
export async function ofIommuConfigureDev(core: IommuCore, dev: Device): Promise<void> {
  if (dev.of.iommus.length === 0) throw kerr("ENODEV", `${dev.name} has no iommus property`);
  for (const spec of dev.of.iommus) await ofIommuXlate(core, dev, spec);
}

/**
 * Configure a PCI function: each requester ID its DMA may carry (its own, then its DMA aliases) through the host
 * bridge's `iommu-map`, stopping at the first error.
 * @linux the pci_for_each_dma_alias(of_pci_iommu_init) walk of of_iommu_configure
 */
async function ofPciIommuConfigure(core: IommuCore, dev: Device): Promise<void> {
  const rids: number[] = [];
  pciForEachDmaAlias(dev, (_pdev, alias) => {
    rids.push(alias);
    return 0;
  });
  for (const rid of rids) await ofIommuConfigureDevId(core, dev, dev.bus.iommuMap, rid);
}

/**
 * Give a DT-described device its fwspec, under the probe-device lock: nothing if it has one already; otherwise
 * translate its `iommus` (platform) or `iommu-map` entries (PCI). On failure the fwspec is freed, and a `dev_iommu`
 * this call allocated too. When called outside iommu probing (the device had no `dev_iommu`, i.e. at driver bind)
 * and it succeeded, the device is probed now.
 * @linux of_iommu_configure
 */
export async function ofIommuConfigure(core: IommuCore, dev: Device): Promise<void> {
  let err: unknown;
  let devIommuPresent = false;
  await core.probeLock.lock();
  try {
    if (devIommu(dev)?.fwspec) return;
    devIommuPresent = dev.iommu !== undefined;
    try {
      if (dev.pci) await ofPciIommuConfigure(core, dev);
      else await ofIommuConfigureDev(core, dev);
    } catch (e) {
      err = e;
      if (devIommuPresent) iommuFwspecFree(core, dev);
      else if (dev.iommu !== undefined) devIommuFree(core, dev);
    }
  } finally {
    core.probeLock.unlock();
  }
  if (err !== undefined) throw err;
  if (!devIommuPresent) await iommuProbeDevice(core, dev);
}
