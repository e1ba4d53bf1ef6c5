/**
 * What a package promises the registry: metadata, a license, peer dependencies on the shared packages (one core
 * per install), and every package its published files import declared in its manifest.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const names = readdirSync(join(repo, "packages")).filter((n) => existsSync(join(repo, "packages", n, "package.json")));
interface Manifest {
  name: string;
  private?: boolean;
  license?: string;
  repository?: { url: string; directory: string };
  homepage?: string;
  bugs?: { url: string };
  files?: string[];
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}
const manifest = (n: string) => JSON.parse(readFileSync(join(repo, "packages", n, "package.json"), "utf8")) as Manifest;

function filesUnder(dir: string, ext: RegExp): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p, ext) : ext.test(n) ? [p] : [];
  });
}

/** Bare package names a JS or .d.ts file imports (`from "x"`, `import("x")`, `import "x"`). */
function bareImports(text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["']([^"'./][^"']*)["']/g)) {
    const spec = m[1]!;
    if (spec.startsWith("node:")) continue;
    out.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
  }
  return [...out];
}

describe("package manifests", () => {
  it("the repository has an MIT LICENSE, and changesets publishes public packages", () => {
    expect(readFileSync(join(repo, "LICENSE"), "utf8")).toMatch(/^MIT License/);
    const cs = JSON.parse(readFileSync(join(repo, ".changeset/config.json"), "utf8")) as { access: string };
    expect(cs.access).toBe("public");
  });

  it.each(names)("%s: license, repository, homepage, bugs, README, prepack build, no build info shipped", (n) => {
    const m = manifest(n);
    expect(m.license).toBe("MIT");
    expect(readFileSync(join(repo, "packages", n, "LICENSE"), "utf8")).toMatch(/^MIT License/);
    expect(existsSync(join(repo, "packages", n, "README.md"))).toBe(true);
    expect(m.repository?.directory).toBe(`packages/${n}`);
    expect(m.homepage).toMatch(/^https:\/\//);
    expect(m.bugs?.url).toMatch(/^https:\/\//);
    expect(m.scripts?.prepack).toMatch(/tsc -b/);
    expect(m.files).toContain("!dist/.tsbuildinfo");
  });

  it.each(names.filter((n) => n !== "core" && n !== "cli"))(
    "%s: the @iommu-sim packages it builds on are peer dependencies (dev dependencies in the workspace)",
    (n) => {
      const m = manifest(n);
      expect(Object.keys(m.dependencies ?? {}).filter((d) => d.startsWith("@iommu-sim/"))).toEqual([]);
      expect(m.peerDependencies?.["@iommu-sim/core"]).toBeDefined();
      for (const d of Object.keys(m.peerDependencies ?? {})) expect(m.devDependencies?.[d]).toBeDefined();
    },
  );

  it.each(names)("%s: every package its built .js and .d.ts import is declared", (n) => {
    const m = manifest(n);
    const declared = new Set([m.name, ...Object.keys(m.dependencies ?? {}), ...Object.keys(m.peerDependencies ?? {})]);
    const dist = join(repo, "packages", n, "dist");
    const files = filesUnder(dist, /\.(js|d\.ts)$/);
    expect(files.length, `${dist} is built`).toBeGreaterThan(0);
    const missing = new Set<string>();
    for (const f of files)
      for (const dep of bareImports(readFileSync(f, "utf8"))) if (!declared.has(dep)) missing.add(dep);
    expect([...missing]).toEqual([]);
  });
});
