/**
 * Probe and release: devices behind the IOMMU are probed into groups with a default domain; a device whose IOMMU
 * is not there yet is deferred and probed when it registers; a failure injected at every allocation of a probe
 * unwinds completely; module and device references balance; probe ops run under the probe-device lock.
 * @linux __iommu_probe_device, iommu_device_register's bus walk, the "iommu: fix device leaks" series
 */
import {
  type Device,
  devIommu,
  formatBdf,
  type IommuGroup,
  type IommuOps,
  type Machine,
  type PciInfo,
  parseBdf,
  probeHolder,
} from "@iommu-sim/core";
import { ConformanceError, check } from "../errors.js";
import { bootTarget, type Rig, withRig } from "../rig.js";
import type { ConformanceTarget } from "../target.js";
import type { ConformanceCheck } from "./types.js";

/**
 * Add a device behind the target's IOMMU. With a DT IOMMU, a platform device whose `iommus` names it with `id`
 * (default: the target's first spare ID); with an ACPI IOMMU (no spare IDs), a PCI function hot-added at the
 * target's first spare BDF (`sparePci`), found by the driver through the firmware tables from its requester ID.
 * @linux platform_device_register (of_iommu_configure), or pci_bus_add_device for a hot-plugged function; both
 * reach iommu_probe_device through iommu_bus_notifier
 */
export async function addDeviceBehind(rig: Rig, name: string, id?: number): Promise<Device> {
  const { m, target } = rig;
  const dtId = id ?? target.spareIds[0];
  if (dtId === undefined) {
    const spare = target.sparePci?.[0];
    if (spare === undefined) {
      throw new ConformanceError(`${target.name}: declares neither spareIds nor sparePci; the probe checks need one`);
    }
    return m.driverCore.deviceRegister({ name, bus: pciBus(rig, spare.bus), pci: hotplugPci(rig, spare) });
  }
  const iommu = rig.dev(target.iommu);
  if (!iommu.fwnode) throw new ConformanceError(`${target.iommu} has no fwnode: the probe checks need a DT IOMMU`);
  return m.driverCore.deviceRegister({
    name,
    bus: m.driverCore.busFor("platform")!,
    iommus: [{ fwnode: iommu.fwnode, args: [dtId] }],
  });
}

function pciBus(rig: Rig, name: string) {
  const bus = rig.m.driverCore.busFor(name);
  if (bus?.type !== "pci") throw new ConformanceError(`${rig.target.name}: sparePci names ${name}, not a PCI bus`);
  return bus;
}

/** A plain PCI function (no ATS, PRI, PASID, aliases or ACS of its own) at a spare BDF. */
function hotplugPci(rig: Rig, spare: { bus: string; bdf: string }): PciInfo {
  const bdf = parseBdf(spare.bdf);
  if (bdf === undefined) throw new ConformanceError(`${rig.target.name}: sparePci BDF ${spare.bdf} is malformed`);
  const bus = pciBus(rig, spare.bus);
  const taken = bus.devices.find((d) => d.registered && d.pci?.rid === bdf.rid);
  if (taken) throw new ConformanceError(`${rig.target.name}: sparePci ${spare.bus} ${spare.bdf} is ${taken.name}`);
  return {
    segment: bus.segment,
    busNr: bdf.bus,
    devfn: bdf.devfn,
    rid: bdf.rid,
    bdf: formatBdf(bdf.rid),
    aliases: [],
    ats: false,
    pri: false,
    pasidBits: 0,
    acs: false,
    multifunction: false,
  };
}

/** Why the checks that add a device behind the IOMMU do not apply, or undefined when they do. */
export function noSpareDevice(t: ConformanceTarget): string | undefined {
  return t.spareIds.length === 0 && (t.sparePci?.length ?? 0) === 0
    ? "no spare IDs (DT) or spare PCI functions (ACPI) declared"
    : undefined;
}

function moduleHolds(m: Machine, target: ConformanceTarget, dev: Device): number {
  return m.moduleOwner(target.driver.name)?.holders().get(probeHolder(dev)) ?? 0;
}

const probed: ConformanceCheck = {
  id: "probe/probed",
  title: "every endpoint behind the IOMMU is probed into its own group with a default domain attached",
  applies: () => undefined,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const inst = target.driver.instanceFor(rig.m, target.iommu);
      check(inst !== undefined, `${target.iommu} was not bound by ${target.driver.name}: its platform probe failed`);
      const groups: IommuGroup[] = [];
      for (const name of [target.devices.primary, target.devices.secondary]) {
        const d = rig.dev(name);
        check(devIommu(d)?.iommuDev === inst, `${name}: dev->iommu->iommu_dev is not ${target.iommu} after boot`);
        const g = rig.group(d);
        check(g.defaultDomain !== undefined, `${name}: its group has no default domain`);
        check(g.domain === g.defaultDomain, `${name}: the group's domain is not its default domain after probe`);
        check(
          moduleHolds(rig.m, target, d) === 1,
          `${name}: the core should hold one module reference per probed device`,
        );
        groups.push(g);
      }
      check(groups[0] !== groups[1], "primary and secondary must be in different groups (the target says so)");
    }),
};

const deferred: ConformanceCheck = {
  id: "probe/deferred",
  title: "a device registered while its IOMMU is unbound is probed when the IOMMU binds again",
  applies: noSpareDevice,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const pdev = rig.dev(target.iommu);
      await rig.m.driverCore.deviceReleaseDriver(pdev);
      check(
        devIommu(rig.dev(target.devices.primary)) === undefined,
        "unbinding the IOMMU left its devices probed (iommu_device_unregister must release them)",
      );
      const late = await addDeviceBehind(rig, "testkit-late");
      check(devIommu(late)?.iommuDev === undefined, "a device was probed while its IOMMU was not registered");
      check(late.iommuGroup === undefined, "a deferred device got an IOMMU group");
      await rig.m.driverCore.deviceAttach(pdev);
      const inst = target.driver.instanceFor(rig.m, target.iommu);
      check(inst !== undefined, "rebinding the IOMMU platform device failed");
      check(devIommu(late)?.iommuDev === inst, "the deferred device was not probed when its IOMMU registered");
      check(devIommu(rig.dev(target.devices.primary))?.iommuDev === inst, "the boot devices were not probed again");
      await rig.m.driverCore.deviceUnregister(late);
      check(moduleHolds(rig.m, target, late) === 0, "removing a probed device kept its module reference");
    }),
};

const failNth: ConformanceCheck = {
  id: "probe/fail-nth",
  title: "a failure at every allocation of a device probe unwinds: no pages, groups or module references left",
  applies: noSpareDevice,
  async run({ target }) {
    let n = 1;
    for (; n < 400; n++) {
      const rig = await bootTarget(target);
      try {
        const before = rig.m.pages.allocatedPages;
        rig.m.faults.failNth(n);
        const d = await addDeviceBehind(rig, "testkit-fi");
        const consumed = rig.m.faults.nthConsumed;
        const sites = [...rig.m.faults.failedSites].join(", ");
        rig.m.faults.reset();
        // The core WARNs when an injected failure hits the first attach of a default domain (Linux's WARN_ON in
        // __iommu_group_set_domain_internal for IOMMU_SET_DOMAIN_MUST_SUCCEED); that is the injection's doing.
        if (consumed) rig.m.diag.acknowledge({ kind: "warning", message: /failed/ });
        if (consumed && devIommu(d)?.iommuDev === undefined) {
          const where = `probe failing at allocation ${n} (${sites})`;
          check(d.iommuGroup === undefined, `${where} left the device in a group`);
          check(moduleHolds(rig.m, target, d) === 0, `${where} kept the module reference taken for probe`);
          check(
            rig.m.pages.allocatedPages === before,
            () => `${where} leaked ${rig.m.pages.allocatedPages - before} page(s)`,
          );
        }
        await rig.m.driverCore.deviceUnregister(d);
        check(rig.m.pages.allocatedPages === before, `probe with allocation ${n} failed, then removal, leaked pages`);
        check(
          moduleHolds(rig.m, target, d) === 0,
          `probe with allocation ${n} failed, then removal, kept a module ref`,
        );
        await rig.teardown();
        if (!consumed) break;
      } catch (e) {
        await rig.teardown().catch(() => {});
        throw e;
      }
    }
    check(n < 400, "a device probe made more than 400 allocations");
  },
};

/** Device references per endpoint, to compare across a probe/release cycle. */
function deviceRefs(rig: Rig): string {
  const { primary, secondary } = rig.target.devices;
  return [primary, secondary].map((n) => `${n}=${rig.dev(n).kref.read()}`).join(" ");
}

const iommuFailNth: ConformanceCheck = {
  id: "probe/iommu-fail-nth",
  title:
    "a failure at every allocation of the IOMMU's probe (and the device probes it runs) unwinds: unbinding after it " +
    "leaves no pages, module or device references, and a clean bind still probes every device",
  applies: () => undefined,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const { m } = rig;
      const pdev = rig.dev(target.iommu);
      const owner = m.moduleOwner(target.driver.name);
      check(owner !== undefined, "the driver module is not loaded");
      await m.driverCore.deviceReleaseDriver(pdev);
      const pages = m.pages.allocatedPages;
      const refs = owner.refcnt;
      const devRefs = deviceRefs(rig);
      let n = 1;
      for (; n < 3000; n++) {
        m.faults.failNth(n);
        let failed = "";
        try {
          await m.driverCore.deviceAttach(pdev);
        } catch (e) {
          failed = `, probe threw ${(e as Error).message}`;
        }
        const consumed = m.faults.nthConsumed;
        const sites = [...m.faults.failedSites].join(", ");
        m.faults.reset();
        // An injected failure may WARN where Linux WARNs (a default domain that must attach); not a leak.
        if (consumed) m.diag.acknowledge({ kind: "warning", message: /./ });
        const where = `IOMMU probe failing at allocation ${n} (${sites || "none"}${failed})`;
        // Whatever bound, unbinding must give everything back.
        await m.driverCore.deviceReleaseDriver(pdev);
        check(target.driver.instanceFor(m, target.iommu) === undefined, `${where}: an instance survived the unbind`);
        check(m.pages.allocatedPages === pages, () => `${where} leaked ${m.pages.allocatedPages - pages} page(s)`);
        check(owner.refcnt === refs, () => `${where}: module references ${owner.refcnt}, want ${refs}`);
        check(deviceRefs(rig) === devRefs, () => `${where}: device references ${deviceRefs(rig)}, want ${devRefs}`);
        const left = devIommu(rig.dev(target.devices.primary));
        check(left === undefined, `${where}: ${target.devices.primary} kept dev->iommu after the IOMMU left`);
        if (!consumed) break;
      }
      check(n < 3000, "an IOMMU probe made more than 3000 allocations");
      // After the sweep a clean bind works as at boot.
      await m.driverCore.deviceAttach(pdev);
      const inst = target.driver.instanceFor(m, target.iommu);
      check(inst !== undefined, `rebinding ${target.iommu} after the failure sweep failed`);
      for (const name of [target.devices.primary, target.devices.secondary]) {
        check(devIommu(rig.dev(name))?.iommuDev === inst, `${name} was not probed by the clean bind after the sweep`);
        check(rig.group(rig.dev(name)).defaultDomain !== undefined, `${name} has no default domain after the sweep`);
      }
    }),
};

const moduleRefs: ConformanceCheck = {
  id: "probe/module-refs",
  title: "module references follow probed devices: the module unloads once the IOMMU is unbound",
  applies: () => undefined,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const owner = rig.m.moduleOwner(target.driver.name);
      check(owner !== undefined, "the driver module is not loaded");
      const unload = await rig.m.modules.unload(target.driver.name).then(
        () => "unloaded",
        (e: { code?: string }) => e.code,
      );
      check(unload === "EBUSY", `unloading the driver with probed devices gave ${unload}, not EBUSY`);
      for (const pdev of rig.m.driverCore.devices()) {
        if (target.driver.instanceFor(rig.m, pdev.name)) await rig.m.driverCore.deviceReleaseDriver(pdev);
      }
      const left = [...owner.holders()].map(([h, c]) => `${h} x${c}`).join(", ");
      check(owner.refcnt === 0, `after unbinding every IOMMU the module is still held: ${left}`);
      await rig.m.modules.unload(target.driver.name);
      check(rig.dev(target.devices.primary).iommu === undefined, "a device kept dev->iommu after its driver left");
    }),
};

const PROBE_OPS = ["ofXlate", "probeDevice", "probeDeviceFwspec", "deviceGroup"] as const;

const probeLock: ConformanceCheck = {
  id: "probe/lock",
  title: "of_xlate, probe_device and device_group are called with the probe-device lock held",
  applies: noSpareDevice,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const ops = target.driver.driverFor(rig.m)?.ops as IommuOps;
      check(ops !== undefined, "the driver module built no driver");
      const { getIommuCore } = await import("@iommu-sim/core");
      const core = getIommuCore(rig.m);
      const seen: string[] = [];
      const bad: string[] = [];
      const saved = new Map<string, unknown>();
      for (const name of PROBE_OPS) {
        const fn = ops[name];
        if (typeof fn !== "function") continue;
        saved.set(name, fn);
        (ops as Record<string, unknown>)[name] = (...args: unknown[]) => {
          seen.push(name);
          if (core.probeLock.owner !== rig.m.scheduler.current()) bad.push(name);
          return (fn as (...a: unknown[]) => unknown).apply(ops, args);
        };
      }
      try {
        const d = await addDeviceBehind(rig, "testkit-lock");
        await rig.m.driverCore.deviceUnregister(d);
      } finally {
        for (const [name, fn] of saved) (ops as Record<string, unknown>)[name] = fn;
      }
      check(seen.length > 0, "no probe op was called for a new device");
      check(bad.length === 0, `called without the probe-device lock (iommu_probe_device_lock): ${bad.join(", ")}`);
    }),
};

/** The probe and release checks. */
export const probeChecks: readonly ConformanceCheck[] = [
  probed,
  deferred,
  failNth,
  iommuFailNth,
  moduleRefs,
  probeLock,
];
