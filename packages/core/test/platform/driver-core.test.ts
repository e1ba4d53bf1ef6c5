import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { kerr } from "../../src/kernel/errno.js";
import { RefTracker } from "../../src/kernel/ref-tracker.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import {
  BUS_NOTIFY_NAMES,
  Bus,
  BusNotify,
  busFindDeviceByNode,
  type Device,
  type DeviceDriver,
  DriverCore,
  FwNode,
  NOTIFY_OK,
  NOTIFY_STOP,
  type NotifierBlock,
  ofMapId,
  pciAcsEnabled,
  pciAcsPathEnabled,
  pciForEachDmaAlias,
  pciSlotFunctions,
} from "../../src/platform/driver-core/index.js";

function machine() {
  const diag = new Diagnostics();
  const refs = new RefTracker(diag);
  refs.install();
  const core = new DriverCore({ diag, refs });
  return { diag, refs, core };
}

/** Record every bus event as "EVENT dev". */
function recorder(log: string[], tag = ""): NotifierBlock<Device> {
  return {
    notifierCall(action, dev) {
      log.push(`${tag}${BUS_NOTIFY_NAMES[action]} ${dev.name}`);
      return NOTIFY_OK;
    },
  };
}

function driver(
  name: string,
  compatible: string[],
  log: string[],
  probe?: (dev: Device) => Promise<void>,
): DeviceDriver {
  return {
    name,
    busType: "platform",
    compatible,
    async probe(dev) {
      log.push(`probe ${name} ${dev.name}`);
      if (probe) await probe(dev);
    },
    async remove(dev) {
      log.push(`remove ${name} ${dev.name}`);
    },
  };
}

describe("device add/remove", () => {
  it("fires bus notifiers in order, by priority", async () => {
    const { core, diag } = machine();
    const bus = core.busRegister(new Bus({ name: "platform", type: "platform" }));
    const log: string[] = [];
    bus.notifier.register(recorder(log, "lo:"));
    bus.notifier.register({ ...recorder(log, "hi:"), priority: 10 });
    const dev = await core.deviceRegister({ name: "d0", bus });
    expect(core.deviceFor("d0")).toBe(dev);
    expect(dev.registered).toBe(true);
    await core.deviceUnregister(dev);
    expect(log).toEqual([
      "hi:BUS_NOTIFY_ADD_DEVICE d0",
      "lo:BUS_NOTIFY_ADD_DEVICE d0",
      "hi:BUS_NOTIFY_DEL_DEVICE d0",
      "lo:BUS_NOTIFY_DEL_DEVICE d0",
      "hi:BUS_NOTIFY_REMOVED_DEVICE d0",
      "lo:BUS_NOTIFY_REMOVED_DEVICE d0",
    ]);
    expect(dev.kref.read()).toBe(0);
    expect(core.deviceFor("d0")).toBeUndefined();
    diag.runTeardownChecks();
    expect(diag.formatReport()).toBeUndefined();
  });

  it("a stop return ends the chain", async () => {
    const { core } = machine();
    const bus = core.busRegister(new Bus({ name: "platform", type: "platform" }));
    const log: string[] = [];
    bus.notifier.register({ notifierCall: () => NOTIFY_STOP, priority: 1 });
    bus.notifier.register(recorder(log));
    const dev = await core.deviceRegister({ name: "d0", bus });
    expect(log).toEqual([]);
    await core.deviceUnregister(dev);
  });

  it("rejects duplicate names and double adds", async () => {
    const { core } = machine();
    const bus = core.busRegister(new Bus({ name: "platform", type: "platform" }));
    const d = await core.deviceRegister({ name: "d0", bus });
    await expect(core.deviceRegister({ name: "d0", bus })).rejects.toMatchObject({ code: "EEXIST" });
    await expect(core.deviceAdd(d)).rejects.toMatchObject({ code: "EINVAL" });
    await core.teardown();
  });
});

describe("busFindDeviceByNode", () => {
  it("returns a referenced device that the caller must put", async () => {
    const { core, diag } = machine();
    await core.fromDescription(defaultPlatform());
    const node = core.fwnodes.find("/iommu@9050000")!;
    const bus = core.busFor("platform")!;
    const dev = busFindDeviceByNode(bus, node, "test_lookup")!;
    expect(dev.name).toBe("smmu0");
    expect(dev.kref.holders().get("test_lookup")).toBe(1);
    dev.put("test_lookup");
    expect(busFindDeviceByNode(bus, new FwNode("/nowhere"), "x")).toBeUndefined();
    await core.teardown();
    diag.runTeardownChecks();
    expect(diag.formatReport()).toBeUndefined();
  });

  it("a leaked reference is reported at teardown with its holder tag", async () => {
    const { core, diag } = machine();
    await core.fromDescription(defaultPlatform());
    const node = core.firmware.iommus.get("mock1")!.fwnode;
    const dev = busFindDeviceByNode(core.busFor("platform")!, node, "leaky_caller");
    expect(dev?.name).toBe("mock1");
    await core.teardown();
    diag.runTeardownChecks();
    const leaks = diag.ofKind("leak");
    expect(leaks).toHaveLength(1);
    expect(leaks[0]!.message).toBe("device mock1 still held by: leaky_caller(1)");
    expect(diag.formatReport()).toMatch(/leaky_caller/);
    // A deleted device is no longer found.
    expect(busFindDeviceByNode(core.busFor("platform")!, node, "late")).toBeUndefined();
  });
});

describe("platform drivers", () => {
  it("bind matching IOMMU devices by compatible, unbind on unregister, with bus events", async () => {
    const { core, diag } = machine();
    await core.fromDescription(defaultPlatform());
    const log: string[] = [];
    core.busFor("platform")!.notifier.register(recorder(log));
    const drv = driver("mock-iommu", ["mock"], log);
    await core.registerDriver(drv);
    expect(core.deviceFor("mock0")!.driver).toBe(drv);
    expect(core.deviceFor("mock1")!.driver).toBe(drv);
    expect(core.deviceFor("smmu0")!.driver).toBeUndefined();
    expect(log).toEqual([
      "BUS_NOTIFY_BIND_DRIVER mock0",
      "probe mock-iommu mock0",
      "BUS_NOTIFY_BOUND_DRIVER mock0",
      "BUS_NOTIFY_BIND_DRIVER mock1",
      "probe mock-iommu mock1",
      "BUS_NOTIFY_BOUND_DRIVER mock1",
    ]);
    log.length = 0;
    await core.unregisterDriver(drv);
    expect(log).toEqual([
      "BUS_NOTIFY_UNBIND_DRIVER mock1",
      "remove mock-iommu mock1",
      "BUS_NOTIFY_UNBOUND_DRIVER mock1",
      "BUS_NOTIFY_UNBIND_DRIVER mock0",
      "remove mock-iommu mock0",
      "BUS_NOTIFY_UNBOUND_DRIVER mock0",
    ]);
    expect(core.deviceFor("mock0")!.driver).toBeUndefined();
    await expect(core.unregisterDriver(drv)).rejects.toMatchObject({ code: "ENOENT" });
    await core.teardown();
    diag.runTeardownChecks();
    expect(diag.formatReport()).toBeUndefined();
  });

  it("a driver registered first binds devices as they are added; deleting a bound device unbinds it", async () => {
    const { core } = machine();
    const log: string[] = [];
    const bus = core.busRegister(new Bus({ name: "platform", type: "platform" }));
    await core.registerDriver(driver("d", ["x"], log));
    const dev = await core.deviceRegister({ name: "dev0", bus, compatible: "x" });
    await core.deviceRegister({ name: "dev1", bus, compatible: "y" });
    expect(log).toEqual(["probe d dev0"]);
    await core.deviceUnregister(dev);
    expect(log).toEqual(["probe d dev0", "remove d dev0"]);
    await core.teardown();
  });

  it("EPROBE_DEFER parks the device until another driver binds", async () => {
    const { core, diag } = machine();
    await core.fromDescription(defaultPlatform());
    const log: string[] = [];
    core.busFor("platform")!.notifier.register(recorder(log));
    let smmuReady = false;
    // The mock driver depends on the SMMU driver having bound (like a supplier dependency).
    const mockDrv = driver("mock-iommu", ["mock"], log, async () => {
      if (!smmuReady) throw kerr("EPROBE_DEFER");
    });
    await core.registerDriver(mockDrv);
    expect(core.deferred.map((d) => d.name)).toEqual(["mock0", "mock1"]);
    expect(core.deviceFor("mock0")!.driver).toBeUndefined();
    expect(core.deviceFor("mock0")!.probeError).toBe(517);
    expect(log).toContain("BUS_NOTIFY_DRIVER_NOT_BOUND mock0");
    // A failing probe with another errno is not retried.
    const vtdDrv = driver("vtd", ["vtd"], log, async () => {
      throw kerr("ENODEV");
    });
    await core.registerDriver(vtdDrv);
    expect(core.deferred.map((d) => d.name)).toEqual(["mock0", "mock1"]);
    log.length = 0;
    const smmuDrv = driver("smmu", ["smmuv3"], log, async () => {
      smmuReady = true;
    });
    await core.registerDriver(smmuDrv);
    expect(log).toEqual([
      "BUS_NOTIFY_BIND_DRIVER smmu0",
      "probe smmu smmu0",
      "BUS_NOTIFY_BOUND_DRIVER smmu0",
      "BUS_NOTIFY_BIND_DRIVER mock0",
      "probe mock-iommu mock0",
      "BUS_NOTIFY_BOUND_DRIVER mock0",
      "BUS_NOTIFY_BIND_DRIVER mock1",
      "probe mock-iommu mock1",
      "BUS_NOTIFY_BOUND_DRIVER mock1",
    ]);
    expect(core.deferred).toEqual([]);
    expect(core.deviceFor("mock1")!.driver).toBe(mockDrv);
    expect(core.deviceFor("vtd0")!.driver).toBeUndefined();
    await core.teardown();
    diag.runTeardownChecks();
    expect(diag.formatReport()).toBeUndefined();
  });

  it("retryDeferred retries on demand", async () => {
    const { core } = machine();
    await core.fromDescription(defaultPlatform());
    let ok = false;
    await core.registerDriver(
      driver("amd", ["amd"], [], async () => {
        if (!ok) throw kerr("EPROBE_DEFER");
      }),
    );
    expect(core.deferred.map((d) => d.name)).toEqual(["amd0"]);
    await core.retryDeferred();
    expect(core.deferred.map((d) => d.name)).toEqual(["amd0"]);
    ok = true;
    await core.retryDeferred();
    expect(core.deferred).toEqual([]);
    expect(core.deviceFor("amd0")!.driver?.name).toBe("amd");
    await core.teardown();
  });

  it("dma_configure runs before probe", async () => {
    const { core } = machine();
    const log: string[] = [];
    const bus = core.busRegister(new Bus({ name: "platform", type: "platform" }));
    bus.dmaConfigure = async (dev) => {
      log.push(`dma_configure ${dev.name}`);
    };
    await core.registerDriver(driver("d", ["x"], log));
    await core.deviceRegister({ name: "dev0", bus, compatible: "x" });
    expect(log).toEqual(["dma_configure dev0", "probe d dev0"]);
    await core.teardown();
  });
});

describe("description to devices", () => {
  it("builds IOMMU platform devices and endpoints", async () => {
    const { core } = machine();
    const events: string[] = [];
    const created = await core.fromDescription(defaultPlatform(), { add: false });
    for (const b of core.buses.values()) b.notifier.register(recorder(events));
    for (const d of created) await core.deviceAdd(d);
    expect(events[0]).toBe("BUS_NOTIFY_ADD_DEVICE mock0");
    const smmu = core.deviceFor("smmu0")!;
    expect(smmu.compatible).toBe("smmuv3");
    expect(smmu.resources).toEqual([{ name: "mmio", start: 0x09050000, size: 0x20000 }]);
    expect(smmu.fwnode?.path).toBe("/iommu@9050000");
    expect(smmu.platformData).toMatchObject({ stages: "s1s2" });
    const plat = core.deviceFor("smmu-dma0")!;
    expect(plat.of.iommus).toEqual([{ fwnode: smmu.fwnode, args: [0x10] }]);
    const gpu = core.deviceFor("gpu0")!;
    expect(gpu.pci).toMatchObject({ segment: 0, busNr: 0, devfn: 0x10, rid: 0x10, multifunction: true, ats: true });
    expect(core.deviceFor("nic0")!.pci!.multifunction).toBe(false);
    expect(core.pciDevices(1).map((d) => d.name)).toEqual(["xhci0", "sata0", "nvme0"]);
    expect(core.iommuDevices().map((d) => d.name)).toEqual(["mock0", "mock1", "smmu0", "vtd0", "amd0"]);
    expect(core.firmware.dmar).toEqual([expect.objectContaining({ iommu: "vtd0", segment: 1, includePciAll: true })]);
    await expect(core.fromDescription(defaultPlatform())).rejects.toMatchObject({ code: "EBUSY" });
    await core.teardown();
  });
});

describe("PCI helpers", () => {
  it("pci_for_each_dma_alias visits the RID then the aliases, stopping on non-zero", async () => {
    const { core } = machine();
    await core.fromDescription(defaultPlatform());
    const sata = core.deviceFor("sata0")!;
    const seen: number[] = [];
    expect(
      pciForEachDmaAlias(sata, (_d, a) => {
        seen.push(a);
        return 0;
      }),
    ).toBe(0);
    expect(seen).toEqual([0xb8, 0xb9]);
    expect(pciForEachDmaAlias(sata, (_d, a) => (a === 0xb8 ? 7 : 0))).toBe(7);
    expect(() => pciForEachDmaAlias(core.deviceFor("uart0")!, () => 0)).toThrow(/not a PCI device/);
    await core.teardown();
  });

  it("ACS: multi-function devices need their own, the path depends on the bus", async () => {
    const { core } = machine();
    const p = defaultPlatform();
    p.buses.push({ name: "pci9", type: "pci", segment: 9, acs: false });
    p.devices.push({ name: "behind-switch", bus: "pci9", bdf: "00:01.0" });
    await core.fromDescription(p);
    const gpu = core.deviceFor("gpu0")!;
    expect(pciAcsEnabled(gpu)).toBe(false);
    expect(pciAcsEnabled(core.deviceFor("nic0")!)).toBe(true);
    expect(pciAcsPathEnabled(gpu, undefined)).toBe(true);
    expect(pciAcsPathEnabled(core.deviceFor("behind-switch")!, undefined)).toBe(false);
    expect(pciSlotFunctions(gpu).map((d) => d.name)).toEqual(["gpu0-audio"]);
    await core.teardown();
  });
});

describe("of_map_id", () => {
  const a = new FwNode("/iommu@a");
  const b = new FwNode("/iommu@b");
  const map = [
    { ridBase: 0x0000, fwnode: a, sidBase: 0x100, length: 0x100 },
    { ridBase: 0x0100, fwnode: b, sidBase: 0x0, length: 0x100 },
    { ridBase: 0x0100, fwnode: a, sidBase: 0x8000, length: 0x80 },
  ];

  it("maps the first matching entry: id - ridBase + sidBase", () => {
    expect(ofMapId(map, 0x0000)).toEqual({ fwnode: a, id: 0x100, entry: 0 });
    expect(ofMapId(map, 0x00ff)).toEqual({ fwnode: a, id: 0x1ff, entry: 0 });
    expect(ofMapId(map, 0x0105)).toEqual({ fwnode: b, id: 0x05, entry: 1 });
  });

  it("filters by target node", () => {
    expect(ofMapId(map, 0x0105, a)).toEqual({ fwnode: a, id: 0x8005, entry: 2 });
    expect(ofMapId(map, 0x0185, a)).toBeUndefined();
  });

  it("applies the mask first and misses out of range", () => {
    expect(ofMapId(map, 0x0200)).toBeUndefined();
    const masked = [{ ridBase: 0x10, fwnode: a, sidBase: 0x1000, length: 0x10, ridMask: 0xff }];
    expect(ofMapId(masked, 0x0312)).toEqual({ fwnode: a, id: 0x1002, entry: 0 });
  });

  it("bus events are numbered as in the kernel enum", () => {
    expect(BusNotify.ADD_DEVICE).toBe(0);
    expect(BusNotify.DRIVER_NOT_BOUND).toBe(7);
  });
});
