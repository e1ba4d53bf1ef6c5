/**
 * A small fake IOMMU driver for the probe-path tests: no hardware model, just the driver-facing behaviour. It binds
 * to IOMMU platform devices of its `compatible` kinds and can be configured per test:
 * - `style: "lookup"` (default): `probeDevice` looks its instance up with `busFindDeviceByNode` on the fwspec's
 *   node and puts that reference (unless `leakLookupRef`, the bug fixed upstream in "iommu: fix device leaks");
 * - `style: "fwspec"`: `probeDeviceFwspec` receives the instance from the core;
 * - `style: "acpi"`: instances register without a firmware node and `probeDevice` finds the DRHD/IVHD covering
 *   the device.
 * Failure points (`state(m).failAt`) make an op throw EIO, to exercise the core's unwinding.
 */

import { acpiIommuUnitFor } from "../../src/iommu/acpi-iommu.js";
import { devIommu, devIommuFwspecGet, devIommuPrivSet } from "../../src/iommu/dev-iommu.js";
import { IommuDomain } from "../../src/iommu/domain.js";
import { type DriverModule, defineIommuDriver } from "../../src/iommu/driver-module.js";
import { iommuFwspecAddIds } from "../../src/iommu/fwspec.js";
import { genericDeviceGroup } from "../../src/iommu/group.js";
import type { IommuCore } from "../../src/iommu/iommu-core.js";
import { IommuDevice, iommuDeviceRegister, iommuDeviceUnregister } from "../../src/iommu/iommu-device.js";
import { IOMMU_DOMAIN, type IommuOps } from "../../src/iommu/types.js";
import { kerr } from "../../src/kernel/errno.js";
import type { Module } from "../../src/kernel/module.js";
import type { Machine } from "../../src/machine/machine.js";
import { busFindDeviceByNode } from "../../src/platform/driver-core/bus.js";
import type { Device } from "../../src/platform/driver-core/device.js";

export type FakeStyle = "lookup" | "fwspec" | "acpi";
export type FakeFailPoint = "ofXlate" | "probeDevice" | "deviceGroup" | "platformProbe";

export interface FakeIommuOptions {
  /** Module name; default `fake-iommu`. */
  name?: string;
  /** Platform kinds bound; default `mock` (`["vtd", "amd"]` suits the ACPI style on the default platform). */
  compatible?: string | readonly string[];
  style?: FakeStyle;
  /** Forget to put the `busFindDeviceByNode` reference in `probeDevice`. */
  leakLookupRef?: boolean;
  /** PASIDs of each instance; default 2^20. */
  maxPasids?: number;
}

/** Per-machine state of the fake, for tests to steer and inspect. */
export interface FakeIommuState {
  readonly core: IommuCore;
  readonly ops: IommuOps;
  readonly owner: Module;
  /** What the driver saw, in order. */
  readonly log: string[];
  /** Ops that throw EIO while listed. */
  readonly failAt: Set<FakeFailPoint>;
  /** IOMMU platform devices (by name) whose probe returns EPROBE_DEFER while listed. */
  readonly deferProbe: Set<string>;
  /** Registered instances by IOMMU name. */
  readonly instances: Map<string, IommuDevice>;
}

export interface FakeIommuDriver extends DriverModule {
  /** The fake's state on `m` (after the module loaded). */
  state(m: Machine): FakeIommuState;
}

/** Holder tag of the fake's `busFindDeviceByNode` references. */
export function lookupHolder(name = "fake-iommu"): string {
  return `${name}:probe_device`;
}

export function fakeIommuDriver(opts: FakeIommuOptions = {}): FakeIommuDriver {
  const name = opts.name ?? "fake-iommu";
  const style = opts.style ?? "lookup";
  const holder = lookupHolder(name);
  const states = new WeakMap<Module, FakeIommuState>();

  const mod = defineIommuDriver({
    name,
    compatible: opts.compatible ?? "mock",
    createDriver(ctx, core) {
      const byDev = new Map<Device, IommuDevice>();
      const failAt = new Set<FakeFailPoint>();
      const log: string[] = [];
      const fail = (what: FakeFailPoint) => {
        if (failAt.has(what)) throw kerr("EIO", `fake ${what} failure`);
      };
      const platformBus = () => ctx.machine.driverCore.busFor("platform")!;

      // Static domains only: every device lives on the identity domain (no page tables needed here).
      const identityDomain = new IommuDomain({
        type: IOMMU_DOMAIN.IDENTITY,
        name: `${name} identity`,
        ops: {
          async attachDev(_domain, dev) {
            log.push(`attach ${dev.name} identity`);
          },
        },
      });
      const blockedDomain = new IommuDomain({
        type: IOMMU_DOMAIN.BLOCKED,
        name: `${name} blocked`,
        ops: { async attachDev() {} },
      });
      const ops: IommuOps = {
        owner: ctx.owner,
        identityDomain,
        blockedDomain,
        defDomainType: () => IOMMU_DOMAIN.IDENTITY,
        async ofXlate(dev, args) {
          core.probeLock.assertHeld();
          log.push(`of_xlate ${dev.name} ${args.args.join(",")}`);
          fail("ofXlate");
          iommuFwspecAddIds(core, dev, [args.args[0] ?? 0]);
        },
        releaseDevice(dev) {
          const iommu = devIommu(dev)?.iommuDev;
          log.push(`release ${dev.name}${iommu && !core.iommuDevices.includes(iommu) ? " (unregistered!)" : ""}`);
        },
        async deviceGroup(dev) {
          core.probeLock.assertHeld();
          fail("deviceGroup");
          return genericDeviceGroup(core, dev);
        },
        probeFinalize(dev) {
          log.push(`finalize ${dev.name}`);
        },
      };
      if (style === "fwspec") {
        ops.probeDeviceFwspec = async (dev, iommu) => {
          core.probeLock.assertHeld();
          log.push(`probe_device_fwspec ${dev.name} ${iommu.name}`);
          fail("probeDevice");
          devIommuPrivSet(core, dev, { ids: [...(devIommuFwspecGet(dev)?.ids ?? [])] });
        };
      } else if (style === "acpi") {
        ops.probeDevice = async (dev) => {
          core.probeLock.assertHeld();
          const unit = acpiIommuUnitFor(core, dev);
          const iommu = unit ? st.instances.get(unit.unit.iommu) : undefined;
          if (!unit || !iommu) throw kerr("ENODEV", `${dev.name} is not behind a registered unit`);
          log.push(`probe_device ${dev.name} ${iommu.name} rid=0x${unit.requesterId.toString(16)}`);
          fail("probeDevice");
          devIommuPrivSet(core, dev, { requesterId: unit.requesterId });
          return iommu;
        };
      } else {
        ops.probeDevice = async (dev) => {
          core.probeLock.assertHeld();
          const fwspec = devIommuFwspecGet(dev);
          if (!fwspec) throw kerr("ENODEV", `${dev.name} has no fwspec`);
          const pdev = busFindDeviceByNode(platformBus(), fwspec.iommuFwnode, holder);
          if (!pdev) throw kerr("ENODEV", `no platform device for ${fwspec.iommuFwnode.path}`);
          const iommu = byDev.get(pdev);
          if (!opts.leakLookupRef) pdev.put(holder);
          if (!iommu) throw kerr("ENODEV", `${pdev.name} is not probed`);
          log.push(`probe_device ${dev.name} ${iommu.name}`);
          fail("probeDevice");
          devIommuPrivSet(core, dev, { ids: [...fwspec.ids] });
          return iommu;
        };
      }

      const st: FakeIommuState = {
        core,
        ops,
        owner: ctx.owner,
        log,
        failAt,
        deferProbe: new Set(),
        instances: new Map(),
      };
      states.set(ctx.owner, st);

      return {
        ops,
        async probe(pdev) {
          if (st.deferProbe.has(pdev.name)) throw kerr("EPROBE_DEFER", `${pdev.name} waits`);
          fail("platformProbe");
          const iommu = new IommuDevice({ dev: pdev, maxPasids: opts.maxPasids ?? 1 << 20 });
          byDev.set(pdev, iommu);
          st.instances.set(pdev.name, iommu);
          try {
            await iommuDeviceRegister(core, iommu, ops, style === "acpi" ? undefined : pdev);
          } catch (e) {
            byDev.delete(pdev);
            st.instances.delete(pdev.name);
            throw e;
          }
          log.push(`registered ${iommu.name}`);
          return iommu;
        },
        async remove(pdev, iommu) {
          await iommuDeviceUnregister(core, iommu);
          log.push(`unregistered ${iommu.name}`);
          byDev.delete(pdev);
          st.instances.delete(pdev.name);
        },
      };
    },
  });

  return Object.assign(mod, {
    state(m: Machine): FakeIommuState {
      const owner = m.moduleOwner(name);
      const st = owner ? states.get(owner) : undefined;
      if (!st) throw new Error(`${name} is not loaded on this machine`);
      return st;
    },
  });
}
