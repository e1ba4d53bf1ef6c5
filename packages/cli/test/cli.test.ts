import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { type CliIo, COMMANDS, main } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  return runWith({}, ...argv);
}

async function runWith(extra: Partial<CliIo>, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s), ...extra });
  return { code, out, err };
}

function tmpFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "iommu-sim-cli-"));
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

describe("help, version and argument checking", () => {
  it("lists every command with an example; every command has --help with examples", async () => {
    const r = await run("--help");
    expect(r.code).toBe(0);
    for (const c of COMMANDS) {
      expect(r.out).toContain(`  ${c.name}`);
      expect(r.out).toContain(`e.g. iommu-sim ${c.examples[0]}`);
      const h = await run(c.name, "--help");
      expect(h.code).toBe(0);
      expect(h.out).toMatch(/^Usage: iommu-sim /);
      expect(h.out).toContain("Examples:");
      expect((await run("help", c.name)).out).toBe(h.out);
    }
    expect((await run("topology", "--help")).out).toMatch(/--platform FILE/);
  });

  it("help for an unknown command, an unknown command and no command at all are usage errors", async () => {
    const h = await run("help", "nope");
    expect(h.code).toBe(2);
    expect(h.err).toMatch(/no such command 'nope'/);
    expect((await run("frobnicate")).code).toBe(2);
    expect((await run()).code).toBe(2);
  });

  it("--version prints the cli package's version", async () => {
    const pkg = JSON.parse(readFileSync(join(here, "..", "package.json"), "utf8")) as { version: string };
    for (const flag of ["--version", "-V"]) {
      const r = await run(flag);
      expect(r.code).toBe(0);
      expect(r.out).toBe(`iommu-sim ${pkg.version}\n`);
    }
  });

  it("rejects a malformed number, unknown options, missing values and extra arguments with exit 2", async () => {
    const seed = await run("topology", "--seed", "abc");
    expect(seed.code).toBe(2);
    expect(seed.err).toMatch(/--seed needs a non-negative integer \(got "abc"\)/);
    expect((await run("run", "--seed", "1.5")).code).toBe(2);
    expect((await run("topology", "--bogus")).code).toBe(2);
    expect((await run("topology", "extra")).err).toMatch(/unexpected argument: extra/);
    expect((await run("run", "a.yaml", "b.yaml")).err).toMatch(/too many arguments: b.yaml/);
    expect((await run("run", "--trace")).err).toMatch(/--trace/);
    expect((await run("inspect", "--iova", "0x1000")).err).toMatch(/needs --device/);
    expect((await run("inspect", "--device", "mock-dev0", "--iova", "zz")).code).toBe(2);
  });
});

describe("topology and validate", () => {
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
    // A built-in driver named with --module after --no-drivers: only its devices probe.
    const smmuOnly = JSON.parse(
      (await run("topology", "--json", "--no-drivers", "--module", "arm-smmu-v3")).out,
    ) as typeof t;
    expect(smmuOnly.devices.find((d) => d.name === "nic0")!.group).toBeDefined();
    expect(smmuOnly.devices.find((d) => d.name === "mock-dev0")!.group).toBeUndefined();
  });

  it("exits 2 with the schema error naming path and value for a bad platform file", async () => {
    const f = tmpFile("bad.json", JSON.stringify({ iommus: [{ name: "x", kind: "mock", mmio: { base: "lots" } }] }));
    const r = await run("topology", "--platform", f);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/iommus\[0\]\.mmio\.base/);
    expect(r.err).toMatch(/"lots"/);
    expect((await run("validate", f)).code).toBe(2);
    expect((await run("run", "--platform", f)).code).toBe(2);
  });

  it("exits 2 for a platform file that is not JSON or is missing", async () => {
    expect((await run("topology", "--platform", tmpFile("x.json", "{nope"))).code).toBe(2);
    expect((await run("topology", "--platform", "/nonexistent/p.json")).code).toBe(2);
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
