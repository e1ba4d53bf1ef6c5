import { describe, expect, it } from "vitest";
import { createMachine, type IommuPlatformRules, PlatformError, parsePlatform } from "../../src/index.js";

// A driver's platform rules: checked when a platform is parsed with them (createMachine passes its modules').
const rules: IommuPlatformRules = {
  kind: "mock",
  iommuCells: 1,
  streamIdBits: () => 4,
  check: (io) => (io.options.pasidBits === 7 ? [{ path: ["options", "pasidBits"], message: "no 7", value: 7 }] : []),
};

function platform(sids: number[], pasidBits = 20) {
  return {
    iommus: [{ name: "io0", kind: "mock", mmio: { base: "0x09000000" }, options: { pasidBits } }],
    buses: [{ name: "platform", type: "platform" }],
    devices: sids.map((sid, i) => ({ name: `d${i}`, bus: "platform", iommus: [{ iommu: "io0", args: [sid] }] })),
  };
}
const issues = (json: unknown, r?: IommuPlatformRules[]) => {
  try {
    parsePlatform(json, r ? { rules: r } : {});
    return [];
  } catch (e) {
    return (e as PlatformError).issues.map((i) => `${i.path}: ${i.message}`);
  }
};

describe("IOMMU platform rules (what a driver requires of the IOMMUs it drives)", () => {
  it("check StreamID range, uniqueness and the driver's own checks only when given", () => {
    const bad = platform([3, 16, 3], 7);
    expect(issues(bad)).toEqual([]);
    expect(issues(bad, [rules])).toEqual([
      "iommus[0].options.pasidBits: no 7",
      "devices[1].iommus[0].args[0]: StreamID beyond the 4-bit range of io0 (expected below 0x10)",
      "devices[2].iommus[0].args[0]: StreamID 0x3 of io0 already used by devices[0] (d0)",
    ]);
    expect(issues(platform([0, 15]), [rules])).toEqual([]);
  });

  it("createMachine applies the rules of the modules it is given", async () => {
    const toy = { name: "toy", platformRules: [rules] };
    await expect(createMachine({ platform: platform([16]), modules: [toy] })).rejects.toThrow(PlatformError);
    const m = await createMachine({ platform: platform([15]), modules: [toy] });
    await m.teardown();
  });
});
