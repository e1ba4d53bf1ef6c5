/**
 * A printable view of the platform: IOMMUs, buses, devices and how each device's DMA is routed.
 */
import type { DmaMechanism, DmaRouter } from "./dma.js";
import type { DriverCore } from "./driver-core/core.js";

/** One IOMMU instance in a {@link Topology}. @linux struct iommu_device as seen in /sys/class/iommu */
export interface TopologyIommu {
  name: string;
  kind: string;
  mmioBase: number;
  mmioSize: number;
  fwnode: string;
  /** Whether a hardware model exists for it (its kind is registered). */
  model: boolean;
  /** The driver bound to its platform device, if any. */
  driver: string | undefined;
}

/** One bus in a {@link Topology}. @linux struct bus_type / pci_host_bridge as seen in /sys/bus */
export interface TopologyBus {
  name: string;
  type: string;
  segment: number | undefined;
  acs: boolean | undefined;
  devices: number;
}

/** One endpoint device in a {@link Topology}. @linux struct device as seen in /sys/devices */
export interface TopologyDevice {
  name: string;
  bus: string;
  /** `"BB:DD.F"` for PCI devices. */
  bdf: string | undefined;
  iommu: string | undefined;
  mechanism: DmaMechanism;
  /** Stream/requester ID the IOMMU sees; undefined without an IOMMU. */
  requesterId: number | undefined;
  driver: string | undefined;
  /** IOMMU group number, once the iommu core has probed the device. */
  group?: number;
  /** Type of the domain attached to its group (`DMA`, `IDENTITY`, `BLOCKED`, ...). */
  domain?: string;
}

/** A plain-object description of a machine's platform. @linux the sysfs view of devices and IOMMUs */
export interface Topology {
  iommus: TopologyIommu[];
  buses: TopologyBus[];
  devices: TopologyDevice[];
}

/**
 * Describe the platform as plain data: IOMMUs (kind, MMIO, fwnode, model present, bound driver), buses, and every
 * endpoint with its bus address and DMA route.
 * @linux what /sys/kernel/iommu_groups, /sys/bus/*\/devices and the boot log tell about the topology
 */
export function describeTopology(core: DriverCore, router: DmaRouter): Topology {
  const iommus: TopologyIommu[] = [...core.firmware.iommus.values()].map((io) => ({
    name: io.name,
    kind: io.kind,
    mmioBase: io.mmio.base,
    mmioSize: io.mmio.size,
    fwnode: io.fwnode.path,
    model: router.modelFor(io.name) !== undefined,
    driver: core.deviceFor(io.name)?.driver?.name,
  }));
  const buses: TopologyBus[] = [...core.buses.values()].map((b) => ({
    name: b.name,
    type: b.type,
    segment: b.type === "pci" ? b.segment : undefined,
    acs: b.type === "pci" ? b.acs : undefined,
    devices: b.devices.length,
  }));
  const devices: TopologyDevice[] = core
    .devices()
    .filter((d) => !core.firmware.iommus.has(d.name))
    .map((d) => {
      const r = router.routeFor(d);
      return {
        name: d.name,
        bus: d.bus.name,
        bdf: d.pci?.bdf,
        iommu: r.iommu,
        mechanism: r.mechanism,
        requesterId: r.mechanism === "none" ? undefined : r.requesterId,
        driver: d.driver?.name,
      };
    });
  return { iommus, buses, devices };
}

const hex = (n: number) => `0x${n.toString(16)}`;

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) {
    for (let i = 0; i < r.length; i++) widths[i] = Math.max(widths[i] ?? 0, r[i]!.length);
  }
  return rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
}

/**
 * Render a {@link Topology} as aligned text tables.
 * @linux the boot log's IOMMU and device lines, as one report
 */
export function formatTopology(t: Topology): string {
  const out: string[] = ["IOMMUs:"];
  out.push(
    ...table([
      ["  name", "kind", "mmio", "fwnode", "model", "driver"],
      ...t.iommus.map((i) => [
        `  ${i.name}`,
        i.kind,
        `${hex(i.mmioBase)}+${hex(i.mmioSize)}`,
        i.fwnode,
        i.model ? "yes" : "no",
        i.driver ?? "-",
      ]),
    ]),
  );
  out.push("Buses:");
  out.push(
    ...table([
      ["  name", "type", "segment", "acs", "devices"],
      ...t.buses.map((b) => [
        `  ${b.name}`,
        b.type,
        b.segment === undefined ? "-" : String(b.segment),
        b.acs === undefined ? "-" : b.acs ? "yes" : "no",
        String(b.devices),
      ]),
    ]),
  );
  out.push("Devices:");
  out.push(
    ...table([
      ["  name", "bus", "bdf", "iommu", "id", "via", "group", "domain", "driver"],
      ...t.devices.map((d) => [
        `  ${d.name}`,
        d.bus,
        d.bdf ?? "-",
        d.iommu ?? "-",
        d.requesterId === undefined ? "-" : hex(d.requesterId),
        d.mechanism,
        d.group === undefined ? "-" : String(d.group),
        d.domain ?? "-",
        d.driver ?? "-",
      ]),
    ]),
  );
  return out.join("\n");
}
