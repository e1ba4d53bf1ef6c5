import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../src/index.js";

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

function tmpFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "iommu-sim-cli-"));
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

describe("iommu-sim CLI", () => {
  it("documents every command in --help", async () => {
    const r = await run("--help");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/topology/);
    expect(r.out).toMatch(/validate/);
    const t = await run("topology", "--help");
    expect(t.out).toMatch(/--platform FILE/);
  });

  it("prints the default platform's IOMMUs, devices and the IDs that route them", async () => {
    const r = await run("topology");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    for (const name of ["mock0", "smmu0", "vtd0", "amd0", "nic0", "xhci0", "amd-nic0"]) expect(r.out).toContain(name);
    expect(r.out).toMatch(/nic0\s+pci0\s+00:01\.0\s+smmu0\s+0x108\s+iommu-map/);
    expect(r.out).toMatch(/xhci0\s+pci1\s+00:14\.0\s+vtd0\s+0xa0\s+dmar/);
  });

  it("loads the IOMMU drivers: probed devices show their group and default domain; functions without ACS share one", async () => {
    const r = await run("topology", "--json");
    const t = JSON.parse(r.out) as { devices: { name: string; group?: number; domain?: string }[] };
    const dev = (n: string) => t.devices.find((d) => d.name === n)!;
    expect(dev("gpu0").group).toBeDefined();
    expect(dev("gpu0").group).toBe(dev("gpu0-audio").group);
    expect(dev("nic0").group).not.toBe(dev("gpu0").group);
    expect(dev("mock-dev0").domain).toBe("DMA");
    expect(dev("uart0").group).toBeUndefined();
    const bare = JSON.parse((await run("topology", "--json", "--no-drivers")).out) as typeof t;
    expect(bare.devices.every((d) => d.group === undefined)).toBe(true);
  });

  it("prints JSON with --json", async () => {
    const r = await run("topology", "--json");
    const t = JSON.parse(r.out) as { iommus: { name: string }[] };
    expect(t.iommus.map((i) => i.name)).toContain("amd0");
  });

  it("exits 2 with the schema error naming path and value for a bad platform file", async () => {
    const f = tmpFile("bad.json", JSON.stringify({ iommus: [{ name: "x", kind: "mock", mmio: { base: "lots" } }] }));
    const r = await run("topology", "--platform", f);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/iommus\[0\]\.mmio\.base/);
    expect(r.err).toMatch(/"lots"/);
    const v = await run("validate", f);
    expect(v.code).toBe(2);
  });

  it("exits 2 for a file that is not JSON, a missing file, an unknown command or option", async () => {
    expect((await run("topology", "--platform", tmpFile("x.json", "{nope"))).code).toBe(2);
    expect((await run("topology", "--platform", "/nonexistent/p.json")).code).toBe(2);
    expect((await run("frobnicate")).code).toBe(2);
    expect((await run("topology", "--bogus")).code).toBe(2);
  });

  it("validates a good platform file", async () => {
    const f = tmpFile(
      "ok.json",
      JSON.stringify({ iommus: [{ name: "m", kind: "mock", mmio: { base: "0x1000000" } }] }),
    );
    const r = await run("validate", f);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/valid \(1 IOMMUs/);
  });
});
