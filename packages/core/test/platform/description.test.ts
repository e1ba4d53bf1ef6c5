import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { defaultPlatform, defaultPlatformInput, platformFromFile } from "../../src/platform/default-platform.js";
import { PlatformError, parseBdf, parsePlatform, parseSize } from "../../src/platform/description.js";

function issuesOf(json: unknown): { path: string; message: string; value: unknown }[] {
  try {
    parsePlatform(json);
  } catch (e) {
    expect(e).toBeInstanceOf(PlatformError);
    return (e as PlatformError).issues;
  }
  throw new Error("expected a PlatformError");
}

function errorText(json: unknown): string {
  try {
    parsePlatform(json);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("expected a PlatformError");
}

const base = () => ({
  iommus: [
    { name: "smmu0", kind: "smmuv3", mmio: { base: "0x09050000" } },
    { name: "vtd0", kind: "vtd", mmio: { base: "0xfed90000" } },
  ],
  buses: [
    { name: "platform", type: "platform" },
    { name: "pci0", type: "pci", segment: 0 },
  ],
  devices: [{ name: "dev0", bus: "platform", iommus: [{ iommu: "smmu0", args: [1] }] }],
});

describe("sizes and addresses", () => {
  it("accepts numbers, hex and binary units", () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize("0x09050000")).toBe(0x09050000);
    expect(parseSize("64KiB")).toBe(65536);
    expect(parseSize("4GiB")).toBe(4 * 2 ** 30);
    expect(parseSize("2M")).toBe(2 * 2 ** 20);
    expect(parseSize("12")).toBe(12);
    expect(parseSize("4 parsecs")).toBeUndefined();
    expect(parseSize(-1)).toBeUndefined();
    expect(parseSize(1.5)).toBeUndefined();
  });

  it("decodes BB:DD.F", () => {
    expect(parseBdf("01:02.3")).toMatchObject({ bus: 1, dev: 2, fn: 3, devfn: 0x13, rid: 0x113 });
    expect(parseBdf("00:20.0")).toBeUndefined();
    expect(parseBdf("00:1f.8")).toBeUndefined();
  });
});

describe("shape errors name the path and the value", () => {
  it("a bad MMIO base", () => {
    const j = base();
    (j.iommus[1]!.mmio as { base: unknown }).base = "lots";
    const issues = issuesOf(j);
    expect(issues).toEqual([expect.objectContaining({ path: "iommus[1].mmio.base", value: "lots" })]);
    expect(errorText(j)).toMatch(/iommus\[1\]\.mmio\.base: .*\(got "lots"\)/);
  });

  it("several issues at once, each with its own path", () => {
    const j = {
      memory: { size: "big" },
      iommus: [{ name: "x", kind: "smmuv3", mmio: { base: 0, size: -4 } }],
      buses: [{ name: "b", type: "isa" }],
      devices: [{ name: "d", bus: "b", bdf: "00:00.9", wat: true }],
    };
    const issues = issuesOf(j);
    const paths = issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        "memory.size",
        "iommus[0].mmio.size",
        "buses[0].type",
        "devices[0].bdf",
        "devices[0].wat",
      ]),
    );
    expect(issues.find((i) => i.path === "buses[0].type")!.value).toBe("isa");
    expect(issues.find((i) => i.path === "devices[0].bdf")!.value).toBe("00:00.9");
    expect(issues.find((i) => i.path === "iommus[0].mmio.size")!.value).toBe(-4);
    expect(errorText(j)).toContain("devices[0].wat: unknown property (got true)");
  });

  it("a missing required field", () => {
    const j = base();
    delete (j.devices[0] as { bus?: string }).bus;
    expect(issuesOf(j)).toEqual([expect.objectContaining({ path: "devices[0].bus", value: undefined })]);
  });

  it("known kinds validate their options; kinds registered by a module (passed as kinds) are free-form", () => {
    const j = base();
    (j.iommus[0] as Record<string, unknown>).options = { stages: "s3", ssidBits: 40 };
    const issues = issuesOf(j);
    expect(issues.map((i) => [i.path, i.value])).toEqual([
      ["iommus[0].options.stages", "s3"],
      ["iommus[0].options.ssidBits", 40],
    ]);
    const u = base();
    u.iommus.push({ name: "mine", kind: "my-iommu", mmio: { base: "0x1000" }, options: { anything: [1] } } as never);
    expect(issuesOf(u)).toEqual([
      expect.objectContaining({
        path: "iommus[2].kind",
        value: "my-iommu",
        message: expect.stringMatching(/unknown IOMMU kind/),
      }),
    ]);
    const p = parsePlatform(u, { kinds: ["my-iommu"] });
    expect(p.iommus[2]).toMatchObject({ kind: "my-iommu", fwnode: "/iommu@1000", options: { anything: [1] } });
  });

  it("a bad IVRS entry names its index", () => {
    const j = { ...base(), acpi: { ivrs: [{ iommu: "vtd0", entries: [{ type: "select" }] }] } };
    expect(issuesOf(j)).toEqual([expect.objectContaining({ path: "acpi.ivrs[0].entries[0].bdf" })]);
  });
});

describe("cross-reference errors", () => {
  it("unknown bus and IOMMU names", () => {
    const j = base();
    j.devices.push({ name: "d2", bus: "nobus" } as never);
    j.devices.push({ name: "d3", bus: "platform", iommus: [{ iommu: "ghost", args: [] }] } as never);
    const issues = issuesOf(j);
    expect(issues).toEqual([
      expect.objectContaining({ path: "devices[1].bus", value: "nobus", message: "unknown bus" }),
      expect.objectContaining({ path: "devices[2].iommus[0].iommu", value: "ghost" }),
    ]);
  });

  it("duplicate names, overlapping MMIO, bdf collisions", () => {
    const j = base();
    j.iommus.push({ name: "smmu1", kind: "smmuv3", mmio: { base: "0x09060000" } });
    j.devices.push({ name: "smmu1", bus: "platform" } as never);
    j.devices.push({ name: "p0", bus: "pci0", bdf: "00:01.0" } as never);
    j.devices.push({ name: "p1", bus: "pci0", bdf: "0:1.0" } as never);
    const text = errorText(j);
    expect(text).toMatch(/iommus\[2\]\.mmio\.base: MMIO window .* overlaps iommus\[0\] \(smmu0\)/);
    expect(text).toMatch(/devices\[1\]\.name: duplicate device name \(also iommus\[2\]\) \(got "smmu1"\)/);
    expect(text).toMatch(
      /devices\[3\]\.bdf: address already used on segment 0 by devices\[2\] \(p0\) \(got "00:01.0"\)/,
    );
  });

  it("a device reached by two mechanisms", () => {
    const j = {
      ...base(),
      buses: [
        { name: "platform", type: "platform" },
        {
          name: "pci0",
          type: "pci",
          segment: 0,
          iommuMap: [{ ridBase: 0, iommu: "smmu0", sidBase: 0, length: 0x100 }],
        },
      ],
      devices: [{ name: "nic", bus: "pci0", bdf: "00:03.0" }],
      acpi: { dmar: [{ iommu: "vtd0", segment: 0, includePciAll: true }] },
    };
    const issues = issuesOf(j);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ path: "devices[0].bdf", value: "00:03.0" });
    expect(issues[0]!.message).toMatch(/more than one IOMMU mechanism: iommu-map .* dmar INCLUDE_PCI_ALL/);
  });

  it("table kinds, segments and PCI-only fields", () => {
    const j = {
      ...base(),
      devices: [{ name: "d", bus: "platform", bdf: "00:01.0" }],
      acpi: { dmar: [{ iommu: "smmu0", segment: 7 }] },
    };
    const issues = issuesOf(j).map((i) => i.path);
    expect(issues).toEqual(["acpi.dmar[0].iommu", "acpi.dmar[0].segment", "devices[0].bdf"]);
  });
});

describe("default platform", () => {
  it("parses, with defaults filled in", () => {
    const p = defaultPlatform();
    expect(p.memory.size).toBe(4 * 2 ** 30);
    expect(p.iommus.map((i) => [i.name, i.kind])).toEqual([
      ["mock0", "mock"],
      ["mock1", "mock"],
      ["smmu0", "smmuv3"],
      ["vtd0", "vtd"],
      ["amd0", "amd"],
    ]);
    expect(p.iommus[2]).toMatchObject({ mmio: { base: 0x09050000, size: 0x20000 }, fwnode: "/iommu@9050000" });
    expect(p.devices.some((d) => (d.aliases?.length ?? 0) > 0)).toBe(true);
    // Returns a fresh object each call.
    expect(defaultPlatform()).not.toBe(p);
    expect(defaultPlatform()).toEqual(p);
  });

  it("platformFromFile reads and parses, naming the file on errors", async () => {
    const dir = mkdtempSync(join(tmpdir(), "plat-"));
    const good = join(dir, "good.json");
    writeFileSync(good, JSON.stringify(defaultPlatformInput()));
    await expect(platformFromFile(good)).resolves.toEqual(defaultPlatform());
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ iommus: [{ name: "a", kind: "mock", mmio: { base: "x" } }] }));
    await expect(platformFromFile(bad)).rejects.toThrow(
      /bad\.json: invalid platform description:\n.*iommus\[0\]\.mmio\.base/,
    );
  });
});
