/**
 * PCI helpers the IOMMU core's grouping and probe use: DMA aliases and ACS isolation.
 *
 * The topology is flat: each PCI bus instance is a host bridge whose endpoints sit behind root ports. The bus's
 * `acs` flag says whether those ports enforce ACS (isolating endpoints from each other); a function's own `acs`
 * matters only for multi-function devices, whose functions may otherwise talk peer-to-peer.
 */
import type { Device } from "./device.js";

/** ACS Source Validation. @linux PCI_ACS_SV */
export const PCI_ACS_SV = 0x0001;
/** ACS Translation Blocking. @linux PCI_ACS_TB */
export const PCI_ACS_TB = 0x0002;
/** ACS P2P Request Redirect. @linux PCI_ACS_RR */
export const PCI_ACS_RR = 0x0004;
/** ACS P2P Completion Redirect. @linux PCI_ACS_CR */
export const PCI_ACS_CR = 0x0008;
/** ACS Upstream Forwarding. @linux PCI_ACS_UF */
export const PCI_ACS_UF = 0x0010;
/** The controls the IOMMU core requires for isolation. @linux REQ_ACS_FLAGS (drivers/iommu/iommu.c) */
export const REQ_ACS_FLAGS = PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF;

/**
 * Call `fn` with each requester ID `pdev`'s DMA may carry: its own RID first, then its DMA aliases, stopping at
 * the first non-zero return, which is returned. Throws for a non-PCI device.
 * @linux pci_for_each_dma_alias
 */
export function pciForEachDmaAlias(pdev: Device, fn: (pdev: Device, alias: number) => number): number {
  const pci = pdev.pci;
  if (!pci) throw new TypeError(`${pdev.name} is not a PCI device`);
  let ret = fn(pdev, pci.rid);
  if (ret) return ret;
  for (const a of pci.aliases) {
    ret = fn(pdev, a);
    if (ret) return ret;
  }
  return 0;
}

/**
 * Whether `pdev` itself provides the ACS controls in `flags`. A single-function endpoint needs none (it has no peer
 * to reach inside the device); a multi-function device needs its own ACS capability.
 * @linux pci_acs_enabled
 */
export function pciAcsEnabled(pdev: Device, _flags: number = REQ_ACS_FLAGS): boolean {
  const pci = pdev.pci;
  if (!pci) return false;
  if (!pci.multifunction) return true;
  return pci.acs;
}

/**
 * Whether ACS is enabled on every port from `start` up to `end` (the root when undefined). In the flat topology the
 * only port above an endpoint is its root port, whose ACS is the bus's `acs` flag.
 * @linux pci_acs_path_enabled
 */
export function pciAcsPathEnabled(start: Device, _end: Device | undefined, _flags: number = REQ_ACS_FLAGS): boolean {
  if (!start.pci) return false;
  return start.bus.acs;
}

/**
 * The other registered functions of `pdev`'s slot (same bus number and device number), in add order.
 * @linux pci_get_slot over PCI_DEVFN(PCI_SLOT(devfn), fn)
 */
export function pciSlotFunctions(pdev: Device): Device[] {
  const pci = pdev.pci;
  if (!pci) return [];
  return pdev.bus.devices.filter(
    (d) => d !== pdev && d.registered && d.pci?.busNr === pci.busNr && d.pci.devfn >> 3 === pci.devfn >> 3,
  );
}

/**
 * The registered PCI device on `pdev`'s segment with requester ID `rid`, if any (not referenced).
 * @linux pci_get_domain_bus_and_slot
 */
export function pciDeviceByRid(pdev: Device, rid: number): Device | undefined {
  return pdev.bus.devices.find((d) => d.registered && d.pci?.rid === rid);
}
