import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertSingleCoreCopy, loadedCoreCopies } from "../../src/index.js";

// Two installed copies of the built core (as npm leaves them on a version skew), loaded by one plain-node program.
const pkgRoot = join(dirname(fileURLToPath(import.meta.url)), "../..");
const repoModules = join(pkgRoot, "../../node_modules");
let dir: string;

async function installCopy(at: string, version: string): Promise<void> {
  await mkdir(at, { recursive: true });
  await cp(join(pkgRoot, "dist"), join(at, "dist"), { recursive: true });
  const pkg = JSON.parse(await readFile(join(pkgRoot, "package.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(at, "package.json"), JSON.stringify({ ...pkg, version }));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "iommu-sim-dup-core-"));
  await mkdir(join(dir, "node_modules"));
  for (const dep of ["tsyringe", "reflect-metadata", "zod", "tslib"]) {
    await symlink(join(repoModules, dep), join(dir, "node_modules", dep), "dir").catch(() => undefined);
  }
  await installCopy(join(dir, "node_modules/@iommu-sim/core"), "0.1.0");
  await installCopy(join(dir, "node_modules/some-driver/node_modules/@iommu-sim/core"), "0.2.0");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(program: string): Promise<{ stdout: string; stderr: string; code: number }> {
  await writeFile(join(dir, "main.mjs"), program);
  return promisify(execFile)(process.execPath, ["main.mjs"], { cwd: dir }).then(
    (r) => ({ ...r, code: 0 }),
    (e: { stdout: string; stderr: string; code: number }) => e,
  );
}

describe("a second copy of @iommu-sim/core", () => {
  it("one copy: createMachine works", async () => {
    const r = await run(
      'import { createMachine } from "@iommu-sim/core";\nconst m = await createMachine();\nawait m.boot();\nawait m.teardown();\nconsole.log("ok");\n',
    );
    expect(r.stdout.trim()).toBe("ok");
  });

  it("is named, with both versions and paths, by createMachine", async () => {
    const r = await run(
      [
        'import { createMachine } from "@iommu-sim/core";',
        'await import("./node_modules/some-driver/node_modules/@iommu-sim/core/dist/index.js");',
        "try { await createMachine(); console.log('no error'); }",
        "catch (e) { console.log(e.name); console.log(e.message); }",
      ].join("\n"),
    );
    expect(r.stdout).toMatch(/^DuplicateCoreError\n2 copies of @iommu-sim\/core are loaded/);
    expect(r.stdout).toMatch(/0\.1\.0 from file:.*node_modules\/@iommu-sim\/core\/dist\/machine\/copies\.js/);
    expect(r.stdout).toMatch(/0\.2\.0 from file:.*some-driver\/node_modules\/@iommu-sim\/core\/dist/);
    expect(r.stdout).toMatch(/npm ls @iommu-sim\/core/);
  });

  it("this test process has exactly one copy", () => {
    expect(loadedCoreCopies()).toHaveLength(1);
    expect(() => assertSingleCoreCopy()).not.toThrow();
  });
});
