/**
 * Bad platform files, as users write them: `validate` and `topology` (which boots) must agree on each, with exit
 * code 2 and an error naming the path and what was expected, never a stack trace; `createMachine` on the same JSON
 * rejects with the same issues. The edge values the schema accepts boot cleanly.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMachine, type defaultPlatformInput, describeIommuTopology, PlatformError } from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import { main } from "../src/index.js";
import { builtinDrivers } from "../src/modules.js";

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const dir = mkdtempSync(join(tmpdir(), "iommu-sim-bad-platform-"));
let n = 0;
function file(text: string): string {
  const f = join(dir, `p${n++}.json`);
  writeFileSync(f, text);
  return f;
}

type Input = ReturnType<typeof defaultPlatformInput>;
/** A small valid platform: one mock IOMMU, one SMMUv3, a platform bus, a PCI bus mapped to the SMMU. */
function small(): Input {
  return {
    memory: { size: "64MiB" },
    iommus: [
      { name: "mock0", kind: "mock", mmio: { base: "0x09000000" } },
      { name: "smmu0", kind: "smmuv3", mmio: { base: "0x09050000" }, options: { sidBits: 16 } },
    ],
    buses: [
      { name: "platform", type: "platform" },
      {
        name: "pci0",
        type: "pci",
        segment: 0,
        iommuMap: [{ ridBase: 0, iommu: "smmu0", sidBase: 0, length: "0x10000" }],
      },
    ],
    devices: [
      { name: "dma0", bus: "platform", iommus: [{ iommu: "mock0", args: [1] }] },
      { name: "dma1", bus: "platform", iommus: [{ iommu: "mock0", args: [2] }] },
      { name: "nic0", bus: "pci0", bdf: "00:01.0" },
    ],
  };
}
function edit(f: (p: Input) => void): string {
  const p = small();
  f(p);
  return JSON.stringify(p);
}
const opts = (p: Input, i: number) => p.iommus![i]! as { options?: Record<string, unknown> };

/** [case, file text, the path the error names, what it says was expected]. */
const BAD: [string, string, string, RegExp][] = [
  ["memory.size 0", edit((p) => (p.memory = { size: 0 })), "memory.size", /expected at least 1048576 \(1 MiB\)/],
  ["memory.size 4097", edit((p) => (p.memory = { size: 4097 })), "memory.size", /expected a multiple of 4 KiB/],
  ["memory.size 123", edit((p) => (p.memory = { size: 123 })), "memory.size", /expected a multiple of 4 KiB/],
  [
    "memory.size 2^53-1",
    edit((p) => (p.memory = { size: 2 ** 53 - 1 })),
    "memory.size",
    /expected a multiple of 4 KiB/,
  ],
  [
    "memory.size 2^52 + 4 KiB",
    edit((p) => (p.memory = { size: 2 ** 52 + 4096 })),
    "memory.size",
    /expected at most 2\^52/,
  ],
  [
    "memory.size true",
    edit((p) => (p.memory = { size: true as never })),
    "memory.size",
    /expected a non-negative integer, hex string \("0x1000"\) or size/,
  ],
  [
    "JSON nested 5,000 deep",
    `{"memory": {"size": "1GiB"}, "devices": ${"[".repeat(5000)}${"]".repeat(5000)}}`,
    `devices${"[0]".repeat(31)}`,
    /nested too deep: expected at most 32 levels/,
  ],
  [
    "duplicate stream ID on one IOMMU",
    edit((p) => (p.devices![1]!.iommus = [{ iommu: "mock0", args: [1] }])),
    "devices[1].iommus[0].args[0]",
    /StreamID 0x1 of mock0 already used by devices\[0\] \(dma0\)/,
  ],
  [
    "stream ID beyond the mock's range",
    edit((p) => (p.devices![1]!.iommus = [{ iommu: "mock0", args: [256] }])),
    "devices[1].iommus[0].args[0]",
    /StreamID beyond the 8-bit range of mock0 \(expected below 0x100\)/,
  ],
  [
    "iommu-map beyond the SMMU's sidBits",
    edit((p) => (opts(p, 1).options = { sidBits: 8 })),
    "buses[1].iommuMap[0].length",
    /exceeds the 8-bit StreamIDs of smmu0/,
  ],
  [
    "two PCI functions mapped to one stream ID (iommu-map mask)",
    edit((p) => {
      (p.buses![1] as { iommuMap: unknown[] }).iommuMap = [
        { ridBase: 0, iommu: "smmu0", sidBase: 0, length: 0x100, ridMask: 0xf8 },
      ];
      p.devices!.push({ name: "nic1", bus: "pci0", bdf: "00:01.1" });
    }),
    "devices[3].bdf",
    /StreamID 0x8 of smmu0 already used by devices\[2\] \(nic0\)/,
  ],
  [
    "stream ID beyond what a 2-level SMMUv3 stream table covers",
    edit((p) => {
      opts(p, 1).options = { sidBits: 32 };
      p.devices!.push({ name: "dma2", bus: "platform", iommus: [{ iommu: "smmu0", args: [0x2000000] }] });
    }),
    "devices[3].iommus[0].args[0]",
    /StreamID beyond the 25-bit range of smmu0/,
  ],
  [
    "SMMUv3 linear stream table too large to allocate",
    edit((p) => (opts(p, 1).options = { sidBits: 20, twoLevelStreamTable: false })),
    "iommus[1].options.sidBits",
    /linear stream table of 2\^20 STEs exceeds the largest allocation \(4 MiB\): expected sidBits <= 16/,
  ],
  [
    "platform device reaching two IOMMUs",
    edit((p) => p.devices![0]!.iommus!.push({ iommu: "smmu0", args: [5] })),
    "devices[0].iommus[1].iommu",
    /a device has one IOMMU: expected mock0 as in iommus\[0\]/,
  ],
  [
    "PCI DMA alias outside the iommu-map",
    edit((p) => {
      (p.buses![1] as { iommuMap: unknown[] }).iommuMap = [{ ridBase: 0, iommu: "smmu0", sidBase: 0, length: 0x10 }];
      p.devices![2]!.aliases = ["00:02.0"];
    }),
    "devices[2].aliases[0]",
    /DMA alias not in the iommu-map of pci0 while the device's own RID is/,
  ],
  [
    "PCI DMA alias mapped to another IOMMU",
    edit((p) => {
      (p.buses![1] as { iommuMap: unknown[] }).iommuMap = [
        { ridBase: 0, iommu: "smmu0", sidBase: 0, length: 0x10 },
        { ridBase: 0x10, iommu: "mock0", sidBase: 0x10, length: 0x10 },
      ];
      p.devices![2]!.aliases = ["00:02.0"];
    }),
    "devices[2].aliases[0]",
    /DMA alias mapped to mock0: expected the device's IOMMU smmu0/,
  ],
  [
    "platform device with two cells for a one-cell IOMMU",
    edit((p) => (p.devices![0]!.iommus = [{ iommu: "mock0", args: [1, 2] }])),
    "devices[0].iommus[0].args",
    /expected one StreamID \(#iommu-cells = 1 for mock\)/,
  ],
  [
    "unknown IOMMU kind",
    edit((p) => (p.iommus![0]!.kind = "vtx")),
    "iommus[0].kind",
    /unknown IOMMU kind: expected one of mock, smmuv3, vtd, amd \(did you mean vtd\?\)/,
  ],
  [
    "misspelled option",
    edit((p) => (opts(p, 1).options = { sidbits: 8 })),
    "iommus[1].options.sidbits",
    /unknown option \(did you mean sidBits\?\): expected one of .*sidBits/,
  ],
  [
    "option of the wrong type",
    edit((p) => (opts(p, 0).options = { tlbEntries: "many" })),
    "iommus[0].options.tlbEntries",
    /expected number/,
  ],
  [
    "MMIO window smaller than the register file",
    edit((p) => (p.iommus![1]!.mmio = { base: "0x09050000", size: "64KiB" })),
    "iommus[1].mmio.size",
    /smaller than the smmuv3 register file \(expected at least 0x20000\)/,
  ],
  ["UTF-8 byte-order mark", `\uFEFF${JSON.stringify(small())}`, "(root)", /byte-order mark \(U\+FEFF\): expected JSON/],
  ["not JSON", '{\n  "memory": { "size": 4096, }\n}', "(root)", /expected JSON: .*\(line 2, column \d+\)/],
  [
    "a 10 MB name",
    edit((p) => (p.devices![0]!.name = "n".repeat(10_000_000))),
    "devices[0].name",
    /expected a name of at most 64 characters/,
  ],
  ["unknown top-level property", edit((p) => Object.assign(p, { memroy: {} })), "memroy", /did you mean memory\?/],
];

describe("bad platform files: validate and boot agree", () => {
  it.each(BAD)("%s", async (_name, text, path, expected) => {
    const f = file(text);
    const v = await run("validate", f);
    const t = await run("topology", "--platform", f);
    for (const r of [v, t]) {
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toContain(`${f}: invalid platform description:\n`);
      const line = r.err.split("\n").find((l) => l.startsWith(`  ${path}: `));
      expect(line, r.err.slice(0, 2000)).toMatch(expected);
      expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
      expect(r.err.length).toBeLessThan(10_000);
    }
    expect(t.err).toBe(v.err);
    // Booting the same JSON from code rejects with the same first issue.
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return; // not JSON (or a BOM): only files have text
    }
    const boot = await createMachine({ platform: json, modules: builtinDrivers() }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(boot).toBeInstanceOf(PlatformError);
    expect((boot as PlatformError).issues[0]).toMatchObject({ path, message: expect.stringMatching(expected) });
  });
});

describe("edge values the schema accepts boot, and every mapped device gets its IOMMU", () => {
  const GOOD: [string, string, number][] = [
    ["the smallest memory (1 MiB)", edit((p) => (p.memory = { size: "1MiB" })), 3],
    ["the largest memory (2^52)", edit((p) => (p.memory = { size: 2 ** 52 })), 3],
    ["the mock's last stream ID", edit((p) => (p.devices![1]!.iommus = [{ iommu: "mock0", args: [255] }])), 3],
    [
      "an iommu-map ending at the SMMU's last stream ID",
      edit((p) => {
        opts(p, 1).options = { sidBits: 8 };
        (p.buses![1] as { iommuMap: unknown[] }).iommuMap = [{ ridBase: 0, iommu: "smmu0", sidBase: 0, length: 0x100 }];
      }),
      3,
    ],
    ["a BOM-free file with a $schema", edit((p) => Object.assign(p, { $schema: "./platform.schema.json" })), 3],
    ["a name of 64 characters", edit((p) => (p.devices![0]!.name = "d".repeat(64))), 3],
    [
      "the last stream ID of a 2-level SMMUv3 stream table",
      edit((p) => {
        opts(p, 1).options = { sidBits: 32 };
        p.devices!.push({ name: "dma2", bus: "platform", iommus: [{ iommu: "smmu0", args: [0x1ffffff] }] });
      }),
      4,
    ],
    [
      "a PCI function outside the iommu-map bypasses translation (not an error)",
      edit((p) => {
        (p.buses![1] as { iommuMap: unknown[] }).iommuMap = [{ ridBase: 0, iommu: "smmu0", sidBase: 0, length: 8 }];
      }),
      2,
    ],
    [
      "a PCI DMA alias mapped to the same IOMMU",
      edit((p) => {
        p.devices![2]!.aliases = ["00:01.1"];
      }),
      3,
    ],
    [
      "linear tables at the largest allocation",
      edit((p) => (opts(p, 1).options = { sidBits: 16, twoLevelStreamTable: false, cd2l: false, ssidBits: 16 })),
      3,
    ],
    [
      // arm_smmu_probe_device caps a master at CTXDESC_LINEAR_CDMAX: the CD table stays 64 KiB.
      "no 2-level CD tables with 20 SubstreamID bits",
      edit((p) => (opts(p, 1).options = { cd2l: false, ssidBits: 20 })),
      3,
    ],
  ];
  it.each(GOOD)("%s", async (_name, text, probed) => {
    const f = file(text);
    const v = await run("validate", f);
    expect(v.err).toBe("");
    expect(v.code).toBe(0);
    const t = await run("topology", "--platform", f, "--json");
    expect(t.err).toBe("");
    expect(t.code).toBe(0);
    const m = await createMachine({ platform: JSON.parse(text), modules: builtinDrivers() });
    await m.boot();
    const topo = describeIommuTopology(m);
    expect(topo.devices.filter((d) => d.group !== undefined)).toHaveLength(probed);
    expect(m.diag.formatReport()).toBeUndefined();
    await m.teardown();
  });
});

describe("a platform that boots but makes the kernel WARN", () => {
  it("topology prints the teardown report and exits 1, not an internal error", async () => {
    // cmdqBatch 0: an SMMU that never consumes commands (a test knob), so the driver's CMD_SYNC times out.
    const f = file(edit((p) => (opts(p, 1).options = { cmdqBatch: 0 })));
    const t = await run("topology", "--platform", f);
    expect(t.code).toBe(1);
    expect(t.err).toMatch(/^iommu-sim: machine teardown found problems:\n/);
    expect(t.err).toMatch(/CMD_SYNC timeout/);
    expect(t.err).not.toMatch(/internal error/);
  });
});
