import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { RefTracker } from "../../src/kernel/ref-tracker.js";
import { defaultPlatform } from "../../src/platform/default-platform.js";
import { DmaRouter } from "../../src/platform/dma.js";
import { DriverCore } from "../../src/platform/driver-core/index.js";
import { HwKindRegistry } from "../../src/platform/hw-kind.js";
import { DmaFault, type DmaRequest, type DmaTranslation, type IommuHwModel } from "../../src/platform/iommu-hw.js";
import { PhysicalMemory } from "../../src/platform/memory.js";
import { describeTopology, formatTopology } from "../../src/platform/topology.js";

const OFFSET = 0x100000;
const PAGE = 0x1000;
const FAULT_START = 0x5000;
const FAULT_END = 0x6000;

/** A fake IOMMU: PA = IOVA + OFFSET in 4 KiB pages, faulting on [FAULT_START, FAULT_END). */
class OffsetModel implements IommuHwModel {
  readonly kind = "offset";
  readonly mmioSize = 0x1000;
  readonly mmio = { read32: () => 0, write32: () => {} };
  readonly seen: DmaRequest[] = [];
  readonly requestObjects = new Set<DmaRequest>();
  readonly resultObjects = new Set<DmaTranslation>();
  constructor(readonly name: string) {}
  translate(req: DmaRequest, out: DmaTranslation): void {
    this.seen.push({ ...req });
    this.requestObjects.add(req);
    this.resultObjects.add(out);
    if (req.iova >= FAULT_START && req.iova < FAULT_END) {
      out.faultCode = 0x10;
      out.faultReason = "translation fault";
      return;
    }
    out.pa = req.iova + OFFSET;
    out.length = PAGE - (req.iova & (PAGE - 1));
  }
}

async function setup(models: Map<string, IommuHwModel> = new Map()) {
  const diag = new Diagnostics();
  const refs = new RefTracker(diag);
  refs.install();
  const core = new DriverCore({ diag, refs });
  await core.fromDescription(defaultPlatform());
  const memory = new PhysicalMemory({ size: 64 * 2 ** 20 });
  const router = new DmaRouter(core, memory, models);
  return { diag, core, memory, router };
}

describe("route resolution", () => {
  it("resolves every mechanism of the default platform", async () => {
    const { router, core } = await setup();
    const r = (n: string) => {
      const x = router.routeFor(n);
      return [x.mechanism, x.iommu, x.requesterId];
    };
    // DT iommus: args[0] is the ID.
    expect(r("mock-dev0")).toEqual(["dt-iommus", "mock0", 1]);
    expect(r("mock-dev1")).toEqual(["dt-iommus", "mock0", 2]);
    expect(r("mock1-dev0")).toEqual(["dt-iommus", "mock1", 1]);
    expect(r("smmu-dma1")).toEqual(["dt-iommus", "smmu0", 0x11]);
    // iommu-map: sidBase 0x100 + (rid - ridBase 0).
    expect(r("nic0")).toEqual(["iommu-map", "smmu0", 0x108]);
    expect(r("gpu0")).toEqual(["iommu-map", "smmu0", 0x110]);
    expect(r("gpu0-audio")).toEqual(["iommu-map", "smmu0", 0x111]);
    // DMAR INCLUDE_PCI_ALL: the 16-bit RID.
    expect(r("xhci0")).toEqual(["dmar", "vtd0", 0xa0]);
    expect(r("sata0")).toEqual(["dmar", "vtd0", 0xb8]);
    expect(r("nvme0")).toEqual(["dmar", "vtd0", 0x100]);
    // IVRS: select, range, and alias (the DMA carries the alias).
    expect(r("amd-nic0")).toEqual(["ivrs", "amd0", 0x08]);
    expect(r("amd-gpu0")).toEqual(["ivrs", "amd0", 0x100]);
    expect(r("amd-legacy0")).toEqual(["ivrs", "amd0", 0x10]);
    // No IOMMU.
    expect(r("uart0")).toEqual(["none", undefined, -1]);
    expect(router.routeFor("nvme0").fwnode).toBe(core.firmware.iommus.get("vtd0")!.fwnode);
    expect(() => router.routeFor("nope")).toThrow(RangeError);
  });

  it("DMAR explicit scope wins over INCLUDE_PCI_ALL; an unmapped RID has no IOMMU", async () => {
    const p = defaultPlatform();
    p.iommus.push({
      name: "vtd1",
      kind: "vtd",
      mmio: { base: 0xfed91000, size: 0x1000 },
      fwnode: "/dmar1",
      options: {},
    });
    p.acpi!.dmar.unshift({ iommu: "vtd1", segment: 1, includePciAll: false, scope: ["00:14.0"] });
    p.devices.push({ name: "far", bus: "pci0", bdf: "05:00.0" });
    const diag = new Diagnostics();
    const core = new DriverCore({ diag });
    await core.fromDescription(p);
    const router = new DmaRouter(core, new PhysicalMemory({ size: 1 << 20 }));
    expect(router.routeFor("xhci0")).toMatchObject({ mechanism: "dmar", iommu: "vtd1", requesterId: 0xa0 });
    expect(router.routeFor("sata0")).toMatchObject({ mechanism: "dmar", iommu: "vtd0" });
    expect(router.routeFor("far")).toMatchObject({ mechanism: "none", iommu: undefined, requesterId: 0x500 });
    await core.teardown();
  });
});

describe("endpoint DMA", () => {
  it("without an IOMMU (or without a model) DMA hits memory directly", async () => {
    const { router, memory } = await setup();
    const uart = router.endpoint("uart0");
    uart.dmaWrite(0x2000, Uint8Array.of(1, 2, 3, 4));
    expect(memory.read32(0x2000)).toBe(0x04030201);
    memory.write32(0x3000, 0xdeadbeef);
    expect([...uart.dmaRead(0x3000, 4)]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    // nvme0 sits behind vtd0, but no model for its kind is registered: untranslated.
    router.endpoint("nvme0").dmaWrite(0x4000, Uint8Array.of(9));
    expect(memory.read8(0x4000)).toBe(9);
    expect(router.endpoint("uart0")).toBe(uart);
  });

  it("through a model: data lands at the translated PA, across several chunks", async () => {
    const model = new OffsetModel("mock0");
    const { router, memory } = await setup(new Map([["mock0", model]]));
    const ep = router.endpoint("mock-dev1");
    const data = new Uint8Array(3 * PAGE).map((_, i) => (i * 7) & 0xff);
    ep.dmaWrite(0x1800, data, { pasid: 5 });
    // 0x1800..0x4800 crosses pages 1..4: 4 chunks, each translated once.
    expect(model.seen.map((s) => s.iova)).toEqual([0x1800, 0x2000, 0x3000, 0x4000]);
    expect(model.seen[0]).toEqual({
      requesterId: 2,
      pasid: 5,
      iova: 0x1800,
      write: true,
      exec: false,
      privileged: false,
    });
    expect(memory.readBytes(0x1800 + OFFSET, data.length)).toEqual(data);
    expect(memory.read8(0x1800)).toBe(0); // nothing at the untranslated address
    model.seen.length = 0;
    const back = ep.dmaRead(0x1800, data.length, { privileged: true, exec: true });
    expect(back).toEqual(data);
    expect(model.seen.every((s) => !s.write && s.privileged && s.exec && s.pasid === -1)).toBe(true);
    // One request and one result object, reused for every chunk.
    expect(model.requestObjects.size).toBe(1);
    expect(model.resultObjects.size).toBe(1);
  });

  it("a fault throws DmaFault with the faulting chunk's details, after the earlier chunks", async () => {
    const model = new OffsetModel("mock0");
    const { router, memory } = await setup(new Map([["mock0", model]]));
    const ep = router.endpoint("mock-dev0");
    let err: unknown;
    try {
      ep.dmaWrite(0x4f00, new Uint8Array(0x200).fill(0xaa), { pasid: 3 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DmaFault);
    expect(err).toMatchObject({
      iova: 0x5000,
      device: "mock-dev0",
      iommu: "mock0",
      requesterId: 1,
      pasid: 3,
      write: true,
      faultCode: 0x10,
      faultReason: "translation fault",
    });
    expect((err as Error).message).toMatch(
      /DMA write fault: mock-dev0 iova 0x5000 via mock0 \(requester 0x1 pasid 3\)/,
    );
    expect(memory.read8(0x4fff + OFFSET)).toBe(0xaa);
    expect(() => ep.dmaRead(0x5800, 4)).toThrow(expect.objectContaining({ write: false, pasid: -1, iova: 0x5800 }));
    expect(() => ep.dmaRead(-1, 4)).toThrow(RangeError);
  });

  it("models come from the kind registry and appear in the topology", async () => {
    const reg = new HwKindRegistry();
    reg.register("mock", (ctx) => new OffsetModel(ctx.name));
    expect(() => reg.register("mock", (ctx) => new OffsetModel(ctx.name))).toThrow(/EEXIST/);
    expect(reg.has("mock")).toBe(true);
    expect(reg.has("smmuv3")).toBe(false);
    const diag = new Diagnostics();
    const memory = new PhysicalMemory({ size: 64 * 2 ** 20 });
    const models = reg.instantiate(defaultPlatform(), { memory, diag });
    expect([...models.keys()]).toEqual(["mock0", "mock1"]);
    const core = new DriverCore({ diag });
    await core.fromDescription(defaultPlatform());
    const router = new DmaRouter(core, memory, models);
    const t = describeTopology(core, router);
    expect(t.iommus.find((i) => i.name === "mock0")).toMatchObject({ kind: "mock", mmioBase: 0x09000000, model: true });
    expect(t.iommus.find((i) => i.name === "vtd0")!.model).toBe(false);
    expect(t.devices.find((d) => d.name === "sata0")).toMatchObject({
      bus: "pci1",
      bdf: "00:17.0",
      iommu: "vtd0",
      mechanism: "dmar",
      requesterId: 0xb8,
    });
    expect(t.devices.find((d) => d.name === "uart0")).toMatchObject({ iommu: undefined, mechanism: "none" });
    const text = formatTopology(t);
    expect(text).toMatch(/^IOMMUs:/);
    expect(text).toMatch(/smmu0\s+smmuv3\s+0x9050000\+0x20000\s+\/iommu@9050000\s+no/);
    expect(text).toMatch(/amd-legacy0\s+pci2\s+02:00.0\s+amd0\s+0x10\s+ivrs/);
    expect(text).toMatch(/nic0\s+pci0\s+00:01.0\s+smmu0\s+0x108\s+iommu-map/);
    await core.teardown();
  });
});
