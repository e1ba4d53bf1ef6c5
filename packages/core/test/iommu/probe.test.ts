import { describe, expect, it } from "vitest";
import { devIommu, devIommuFwspecGet, devIommuPrivGet } from "../../src/iommu/dev-iommu.js";
import { getIommuCore } from "../../src/iommu/iommu-core.js";
import { iommuProbeDevice, probeHolder } from "../../src/iommu/probe.js";
import type { KernelError } from "../../src/kernel/errno.js";
import { moduleRefcount } from "../../src/kernel/module.js";
import { LockAssertionError } from "../../src/kernel/sched/errors.js";
import { createMachine, type Machine } from "../../src/machine/machine.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import { parsePlatform } from "../../src/platform/description.js";
import type { Device } from "../../src/platform/driver-core/device.js";
import { type FakeFailPoint, fakeIommuDriver, lookupHolder } from "../support/fake-iommu.js";

function dev(m: Machine, name: string): Device {
  const d = m.driverCore.deviceFor(name);
  if (!d) throw new Error(`no device ${name}`);
  return d;
}

/** Whether `name` was probed by an IOMMU driver. */
function probed(m: Machine, name: string): boolean {
  return devIommu(dev(m, name))?.iommuDev !== undefined && dev(m, name).iommuGroup !== undefined;
}

/** A small DT platform: two mock IOMMUs, a device with two IDs on mock0, one on mock1, a PCI bus mapped to mock1. */
function smallPlatform() {
  return parsePlatform({
    iommus: [
      { name: "mock0", kind: "mock", mmio: { base: "0x09000000", size: "4KiB" } },
      { name: "mock1", kind: "mock", mmio: { base: "0x09010000", size: "4KiB" } },
    ],
    buses: [
      { name: "platform", type: "platform" },
      {
        name: "pci0",
        type: "pci",
        segment: 0,
        acs: true,
        iommuMap: [{ ridBase: 0, iommu: "mock1", sidBase: "0x100", length: "0x100" }],
      },
    ],
    devices: [
      {
        name: "dma0",
        bus: "platform",
        iommus: [
          { iommu: "mock0", args: [1] },
          { iommu: "mock0", args: [3] },
        ],
      },
      { name: "dma1", bus: "platform", iommus: [{ iommu: "mock1", args: [5] }] },
      { name: "nic0", bus: "pci0", bdf: "00:01.0", aliases: ["00:01.1"] },
      { name: "uart0", bus: "platform" },
    ],
  });
}

describe("DT probing", () => {
  it("probes devices through iommus and iommu-map, with fwspec IDs, module references and links", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    expect(probed(m, "dma0")).toBe(true);
    expect(devIommuFwspecGet(dev(m, "dma0"))?.ids).toEqual([1, 3]);
    expect(devIommuFwspecGet(dev(m, "dma1"))?.ids).toEqual([5]);
    // A PCI function: its RID and its DMA alias through the host bridge's iommu-map.
    expect(devIommuFwspecGet(dev(m, "nic0"))?.ids).toEqual([0x108, 0x109]);
    expect(devIommuPrivGet(dev(m, "nic0"))).toEqual({ ids: [0x108, 0x109] });
    expect(dev(m, "uart0").iommu).toBeUndefined();
    expect(devIommu(dev(m, "dma0"))?.maxPasids).toBe(0);
    expect(devIommu(dev(m, "nic0"))?.iommuDev).toBe(st.instances.get("mock1"));
    expect([...st.instances.get("mock0")!.devices].map(String)).toEqual(["dma0"]);
    expect([...st.instances.get("mock1")!.devices].map(String).sort()).toEqual(["dma1", "nic0"]);
    // One module reference per probed device, tagged with the device.
    expect(moduleRefcount(st.owner)).toBe(3);
    expect(st.owner.holders().get(probeHolder(dev(m, "dma0")))).toBe(1);
    // The lookup-style driver put every busFindDeviceByNode reference.
    expect(dev(m, "mock0").kref.holders().has(lookupHolder())).toBe(false);
    expect(st.log).toContain("finalize dma0");
    await m.teardown();
  });

  it("defers a device whose IOMMU has not registered and probes it when it does", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    // Take mock1 away, then let it come back only after a deferred probe.
    await m.driverCore.deviceReleaseDriver(dev(m, "mock1"));
    expect(dev(m, "dma1").iommu).toBeUndefined();
    st.deferProbe.add("mock1");
    await m.driverCore.deviceAttach(dev(m, "mock1"));
    expect(m.driverCore.deferred).toContain(dev(m, "mock1"));

    // The IOMMU is described but not registered: EPROBE_DEFER, and nothing is left on the device.
    const core = getIommuCore(m);
    await expect(iommuProbeDevice(core, dev(m, "dma1"))).rejects.toMatchObject({ code: "EPROBE_DEFER" });
    expect(dev(m, "dma1").iommu).toBeUndefined();

    // An endpoint driver binding to dma1 is deferred by the dma_configure hook.
    const bound: string[] = [];
    await m.driverCore.registerDriver({
      name: "dma-engine",
      busType: "platform",
      match: (d) => d.name === "dma1",
      async probe(d) {
        bound.push(d.name);
      },
    });
    expect(bound).toEqual([]);
    expect(m.driverCore.deferred).toContain(dev(m, "dma1"));

    // The IOMMU's driver finally binds: registration probes dma1, and the deferred endpoint driver binds after.
    st.deferProbe.clear();
    await m.driverCore.retryDeferred();
    expect(probed(m, "dma1")).toBe(true);
    expect(devIommuFwspecGet(dev(m, "dma1"))?.ids).toEqual([5]);
    expect(bound).toEqual(["dma1"]);
    expect(m.diag.ofKind("warning")).toEqual([]);
    await m.teardown();
  });

  it("probes hot-added devices from the bus notifier and releases them on removal", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    const node = m.driverCore.firmware.iommus.get("mock0")!.fwnode;
    const hot = await m.driverCore.deviceRegister({
      name: "hot0",
      bus: m.driverCore.busFor("platform")!,
      iommus: [{ fwnode: node, args: [9] }],
    });
    expect(probed(m, "hot0")).toBe(true);
    expect(devIommuFwspecGet(hot)?.ids).toEqual([9]);
    expect(moduleRefcount(st.owner)).toBe(4);
    await m.driverCore.deviceUnregister(hot);
    expect(hot.iommu).toBeUndefined();
    expect(moduleRefcount(st.owner)).toBe(3);
    expect(st.log).toContain("release hot0");
    await m.teardown();
  });

  it("supports the probeDeviceFwspec style: the core passes the instance", async () => {
    const fake = fakeIommuDriver({ style: "fwspec" });
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    expect(st.log).toContain("probe_device_fwspec dma0 mock0");
    expect(st.log).toContain("probe_device_fwspec nic0 mock1");
    expect(devIommu(dev(m, "nic0"))?.iommuDev).toBe(st.instances.get("mock1"));
    expect(devIommuPrivGet(dev(m, "dma0"))).toEqual({ ids: [1, 3] });
    await m.teardown();
  });
});

describe("unwinding", () => {
  const failPoints: FakeFailPoint[] = ["ofXlate", "probeDevice", "deviceGroup"];
  for (const point of failPoints) {
    it(`a driver failing in ${point} leaves nothing behind`, async () => {
      const fake = fakeIommuDriver();
      const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
      await m.boot();
      const st = fake.state(m);
      const node = m.driverCore.firmware.iommus.get("mock0")!.fwnode;
      st.failAt.add(point);
      const hot = await m.driverCore.deviceRegister({
        name: "hot0",
        bus: m.driverCore.busFor("platform")!,
        iommus: [{ fwnode: node, args: [9] }],
      });
      expect(hot.iommu).toBeUndefined();
      expect(hot.iommuGroup).toBeUndefined();
      expect(moduleRefcount(st.owner)).toBe(3);
      // As in Linux, iommu_init_device ignores the firmware configuration's error: no fwspec means ENODEV.
      const code = point === "ofXlate" ? "ENODEV" : "EIO";
      await expect(iommuProbeDevice(getIommuCore(m), hot)).rejects.toMatchObject({ code });
      expect(hot.iommu).toBeUndefined();
      // release_device only after a successful probe_device.
      expect(st.log.includes("release hot0")).toBe(point === "deviceGroup");
      expect([...st.instances.get("mock0")!.devices].map(String)).toEqual(["dma0"]);
      st.failAt.clear();
      await iommuProbeDevice(getIommuCore(m), hot);
      expect(probed(m, "hot0")).toBe(true);
      await m.teardown();
    });
  }

  it("fails the Nth allocation of every probe path and always unwinds cleanly", async () => {
    const sites = /^(dev_iommu_get|iommu_fwspec_init|iommu_fwspec_add_ids|iommu_device_link|iommu_group_alloc)/;
    let n = 1;
    const outcomes: string[] = [];
    for (; n < 200; n++) {
      const fake = fakeIommuDriver();
      const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
      m.faults.failNth(n, sites);
      await m.boot();
      const consumed = m.faults.nthConsumed;
      for (const d of m.driverCore.devices()) {
        const p = devIommu(d);
        // Either fully probed or nothing at all (no half-initialised dev_iommu, no stray fwspec).
        expect(p === undefined || (p.iommuDev !== undefined && d.iommuGroup !== undefined)).toBe(true);
      }
      outcomes.push(`${n}:${m.faults.failedSites.join(",")}`);
      await m.teardown();
      if (!consumed) break;
    }
    expect(n).toBeGreaterThan(4);
    expect(outcomes.at(-1)).toBe(`${n}:`);
    expect(outcomes.some((o) => o.includes("dev_iommu_get"))).toBe(true);
    expect(outcomes.some((o) => o.includes("iommu_fwspec_init"))).toBe(true);
    expect(outcomes.some((o) => o.includes("iommu_fwspec_add_ids"))).toBe(true);
    expect(outcomes.some((o) => o.includes("iommu_device_link"))).toBe(true);
  });

  it("fails the probe with EINVAL when the driver module is going away, before calling the driver", async () => {
    const fake = fakeIommuDriver({ style: "acpi", compatible: ["vtd", "amd"] });
    const m = await createMachine({ platform: defaultPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    const pci1 = m.driverCore.busFor("pci1")!;
    const pci = {
      segment: 1,
      busNr: 2,
      devfn: 0,
      rid: 0x200,
      bdf: "02:00.0",
      aliases: [],
      ats: false,
      pri: false,
      pasidBits: 0,
      acs: false,
      multifunction: false,
    };
    st.owner.state = "going"; // rmmod in progress
    const hot = await m.driverCore.deviceRegister({ name: "hot-pci", bus: pci1, pci });
    expect(hot.iommu).toBeUndefined();
    await expect(iommuProbeDevice(getIommuCore(m), hot)).rejects.toMatchObject({ code: "EINVAL" });
    expect(st.log.some((l) => l.includes("hot-pci"))).toBe(false);
    expect(hot.iommu).toBeUndefined();
    st.owner.state = "live";
    await iommuProbeDevice(getIommuCore(m), hot);
    expect(devIommu(hot)?.iommuDev?.name).toBe("vtd0");
    await m.teardown();
  });
});

describe("module references", () => {
  it("refuses to unload the driver module while devices are probed, allows it after they are released", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    await expect(m.modules.unload(fake.name)).rejects.toMatchObject({ code: "EBUSY" });
    // Unbinding an IOMMU unregisters it, which releases its devices and their module references.
    await m.driverCore.deviceReleaseDriver(dev(m, "mock0"));
    expect(dev(m, "dma0").iommu).toBeUndefined();
    expect(moduleRefcount(st.owner)).toBe(2);
    await expect(m.modules.unload(fake.name)).rejects.toMatchObject({ code: "EBUSY" });
    await m.driverCore.deviceReleaseDriver(dev(m, "mock1"));
    expect(moduleRefcount(st.owner)).toBe(0);
    await m.modules.unload(fake.name);
    expect(m.modules.get(fake.name)).toBeUndefined();
    await m.teardown();
  });

  it("iommuDeviceUnregister releases the devices while the instance is still registered", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    await m.driverCore.deviceReleaseDriver(dev(m, "mock1"));
    const tail = st.log.slice(st.log.indexOf("release dma1"));
    expect(tail).toEqual(["release dma1", "release nic0", "unregistered mock1"]);
    expect(getIommuCore(m).iommuDevices.map(String)).toEqual(["mock0"]);
    await m.teardown();
  });

  it("reports a driver that leaks the busFindDeviceByNode reference, naming the holder", async () => {
    const fake = fakeIommuDriver({ leakLookupRef: true });
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    expect(dev(m, "mock0").kref.holders().get(lookupHolder())).toBe(1);
    const found = await m.diag.expectWarning({ kind: "leak", message: lookupHolder() }, () => m.teardown());
    expect(found.map((d) => d.message).join("\n")).toMatch(
      /device mock0 still held by: .*fake-iommu:probe_device\(1\)/,
    );
    expect(found.map((d) => d.message).join("\n")).toMatch(
      /device mock1 still held by: .*fake-iommu:probe_device\(2\)/,
    );
  });
});

describe("probe-device lock", () => {
  it("catches an op called without the probe-device lock", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    const node = m.driverCore.firmware.iommus.get("mock0")!.fwnode;
    await m.diag.expectWarning({ kind: "lock-assert", message: "iommu_probe_device_lock" }, async () => {
      await expect(st.ops.ofXlate!(dev(m, "dma0"), { fwnode: node, args: [7] })).rejects.toBeInstanceOf(
        LockAssertionError,
      );
    });
    // The fwspec was not touched.
    expect(devIommuFwspecGet(dev(m, "dma0"))?.ids).toEqual([1, 3]);
    await m.teardown();
  });

  it("holds the lock across ofXlate, probeDevice and deviceGroup", async () => {
    const fake = fakeIommuDriver();
    const m = await createMachine({ platform: smallPlatform(), modules: [fake] });
    await m.boot();
    // Every op of the fake asserts the lock; a clean boot means none ran without it.
    expect(m.diag.ofKind("lock-assert")).toEqual([]);
    expect(getIommuCore(m).probeLock.isLocked()).toBe(false);
    await m.teardown();
  });
});

describe("ACPI probing", () => {
  it("offers DMAR/IVRS-covered devices to the first driver registered without a firmware node", async () => {
    const fake = fakeIommuDriver({ style: "acpi", compatible: ["vtd", "amd"] });
    const m = await createMachine({ platform: defaultPlatform(), modules: [fake] });
    await m.boot();
    const st = fake.state(m);
    const core = getIommuCore(m);
    expect(core.iommuDevices.map((i) => [i.name, i.fwnode])).toEqual([
      ["vtd0", undefined],
      ["amd0", undefined],
    ]);
    for (const name of ["xhci0", "sata0", "nvme0"]) {
      expect(devIommu(dev(m, name))?.iommuDev?.name).toBe("vtd0");
      expect(devIommuFwspecGet(dev(m, name))).toBeUndefined();
    }
    for (const name of ["amd-nic0", "amd-gpu0", "amd-legacy0"]) {
      expect(devIommu(dev(m, name))?.iommuDev?.name).toBe("amd0");
    }
    // The IVRS alias entry gives amd-legacy0 its bridge's requester ID.
    expect(devIommuPrivGet(dev(m, "amd-legacy0"))).toEqual({ requesterId: 0x0010 });
    expect(devIommu(dev(m, "nvme0"))?.maxPasids).toBe(1 << 20);
    // Devices behind the SMMU (DT iommu-map) or no IOMMU are not offered to it.
    for (const name of ["nic0", "gpu0", "uart0", "mock-dev0"]) {
      expect(dev(m, name).iommu).toBeUndefined();
      expect(st.log.some((l) => l.startsWith(`probe_device ${name} `))).toBe(false);
    }
    await m.teardown();
  });

  it("DT devices of an unloaded driver stay unprobed (EPROBE_DEFER) beside ACPI devices", async () => {
    const fake = fakeIommuDriver({ style: "acpi", compatible: ["vtd", "amd"] });
    const m = await createMachine({ platform: defaultPlatform(), modules: [fake] });
    await m.boot();
    const err = await iommuProbeDevice(getIommuCore(m), dev(m, "nic0")).catch((e: KernelError) => e);
    expect(err).toMatchObject({ code: "EPROBE_DEFER" });
    expect(dev(m, "nic0").iommu).toBeUndefined();
    await m.teardown();
  });
});
