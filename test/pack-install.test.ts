/**
 * The packages as a user gets them: `npm pack` every package (prepack builds it), install the tarballs into an
 * empty project (npm install from the local tarballs; their third-party dependencies come from the npm registry or
 * its cache), then run a program with plain `node` (ESM), type-check it with `tsc --noEmit`, and run the CLI.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const exec = promisify(execFile);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const env = {
  ...process.env,
  npm_config_fund: "false",
  npm_config_audit: "false",
  npm_config_update_notifier: "false",
};
let dir: string;
let packed: { name: string; filename: string; files: { path: string }[] }[] = [];

async function run(cmd: string, args: string[], cwd = dir): Promise<{ stdout: string; stderr: string; code: number }> {
  return exec(cmd, args, { cwd, env, maxBuffer: 64 << 20 }).then(
    (r) => ({ ...r, code: 0 }),
    (e: { stdout: string; stderr: string; code: number }) => e,
  );
}

const PROGRAM = `import { createMachine, DuplicateCoreError, loadedCoreCopies } from "@iommu-sim/core";
import { MOCK_APERTURE_START, mockIommuDriver } from "@iommu-sim/drivers-mock";
import { armSmmuV3Driver } from "@iommu-sim/drivers-smmuv3";
import { IOMMU_IOAS_ALLOC, ioasMap, iommufdModule, vfioDeviceAttachPt, vfioDeviceBindIommufd, vfioDeviceOf } from "@iommu-sim/iommufd";
import { iommufdSelftestModule } from "@iommu-sim/selftest";

async function main(): Promise<string> {
  await using m = await createMachine({ modules: [mockIommuDriver, armSmmuV3Driver, iommufdModule, iommufdSelftestModule] });
  await m.boot();
  const p = m.spawnProcess();
  const iommufd = await p.open("/dev/iommu");
  const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
  await p.ioctl(iommufd, IOMMU_IOAS_ALLOC, cmd);
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor("mock-dev0")!)!.path);
  await vfioDeviceBindIommufd(p, devfd, iommufd);
  await vfioDeviceAttachPt(p, devfd, cmd.out_ioas_id);
  const buf = p.mmap(1 << 16);
  await ioasMap(p, iommufd, { ioasId: cmd.out_ioas_id, userVa: buf, length: 1 << 16, iova: MOCK_APERTURE_START });
  m.device("mock-dev0").dmaWrite(MOCK_APERTURE_START, new Uint8Array([42]));
  const seen = p.readMemory(buf, 1)[0];
  await p.close(devfd);
  await p.close(iommufd);
  return \`ok \${seen} copies=\${loadedCoreCopies().length} \${DuplicateCoreError.name}\`;
}
console.log(await main());
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "iommu-sim-pack-"));
  const r = await run(npm, ["pack", "--workspaces", "--json", "--pack-destination", dir], repo);
  expect(r.code, r.stderr).toBe(0);
  packed = JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as typeof packed;
  const tarballs = (await readdir(dir)).filter((f) => f.endsWith(".tgz")).map((f) => `./${f}`);
  await writeFile(
    join(dir, "package.json"),
    JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }),
  );
  const i = await run(npm, ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", ...tarballs]);
  expect(i.code, i.stderr).toBe(0);
}, 240_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("packed and installed outside the monorepo", () => {
  it("every package packs its build, README and LICENSE, and no .tsbuildinfo", () => {
    expect(packed.map((p) => p.name).sort()).toEqual([
      "@iommu-sim/cli",
      "@iommu-sim/core",
      "@iommu-sim/drivers-mock",
      "@iommu-sim/drivers-smmuv3",
      "@iommu-sim/drivers-vtd",
      "@iommu-sim/iommufd",
      "@iommu-sim/selftest",
    ]);
    for (const p of packed) {
      const files = p.files.map((f) => f.path);
      expect(files, p.name).toEqual(
        expect.arrayContaining(["dist/index.js", "dist/index.d.ts", "README.md", "LICENSE"]),
      );
      expect(
        files.filter((f) => f.includes("tsbuildinfo")),
        p.name,
      ).toEqual([]);
    }
  });

  it("installs one copy of core, and a plain-node ESM program runs and tears down clean", {
    timeout: 60_000,
  }, async () => {
    const ls = await run(npm, ["ls", "--all", "--parseable", "@iommu-sim/core"]);
    expect(
      ls.stdout
        .trim()
        .split("\n")
        .filter((l) => l.endsWith("@iommu-sim/core")),
    ).toHaveLength(1);
    await writeFile(join(dir, "main.mts"), PROGRAM);
    // Node 20 has Symbol.asyncDispose but not the \`await using\` syntax: the plain-JS program disposes by hand.
    const js = PROGRAM.replaceAll("!)!", ")")
      .replaceAll("!.path", ".path")
      .replace(": Promise<string>", "")
      .replace("await using m = ", "const m = ")
      .replace("  await m.boot();", "  try {\n  await m.boot();")
      .replace(/(return `ok[^\n]*\n)/, "$1  } finally {\n    await m[Symbol.asyncDispose]();\n  }\n");
    await writeFile(join(dir, "main.mjs"), js);
    const r = await run(process.execPath, ["main.mjs"]);
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("ok 42 copies=1 DuplicateCoreError");
  });

  it("type-checks against the published .d.ts with tsc --noEmit", { timeout: 120_000 }, async () => {
    await writeFile(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          lib: ["ES2022", "ESNext.Disposable"],
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          types: ["node"],
          typeRoots: [join(repo, "node_modules/@types")],
        },
        files: ["main.mts"],
      }),
    );
    const r = await run(process.execPath, [join(repo, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"]);
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("the installed CLI prints its package's version and rejects a bad platform with exit 2", {
    timeout: 60_000,
  }, async () => {
    const pkg = JSON.parse(await readFile(join(repo, "packages/cli/package.json"), "utf8")) as { version: string };
    const bin = join(dir, "node_modules/.bin/iommu-sim");
    const v = await run(bin, ["--version"]);
    expect(v.stdout).toBe(`iommu-sim ${pkg.version}\n`);
    await writeFile(join(dir, "bad.json"), JSON.stringify({ memory: { size: 123 } }));
    const bad = await run(bin, ["validate", "bad.json"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/memory\.size: expected a multiple of 4 KiB/);
    const t = await run(bin, ["topology"]);
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(/smmu0/);
  });
});
