/**
 * The doc-test runner: every ```ts block of every README.md and docs/*.md is a complete program, run here as a
 * module (imports resolve to the workspace packages' sources). A block that builds a machine must end it with a
 * clean `await m.teardown()` (or `await using`): teardown throws on leaks, unexpected warnings and held locks, so a
 * README that rots fails here. Snippets that are not programs belong in ```text or ```sh blocks.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(repo, "test/.doc-blocks");

/** Markdown files with examples: README.md anywhere outside node_modules/dist, and docs/*.md. */
function markdownFiles(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      if (name === "node_modules" || name === "dist" || name.startsWith(".")) continue;
      const p = join(dir, name);
      if (statSync(p).isDirectory()) {
        if (relative(repo, p) !== "docs/api") walk(p);
      } else if (name === "README.md" || (dirname(p) === join(repo, "docs") && name.endsWith(".md"))) found.push(p);
    }
  };
  walk(repo);
  return found.sort();
}

/** The fenced ts blocks of a markdown text, with the line each starts on. */
function tsBlocks(text: string): { line: number; code: string }[] {
  const blocks: { line: number; code: string }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*(ts|typescript)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[2]!;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !lines[j]!.trimStart().startsWith(fence)) body.push(lines[j++]!);
    blocks.push({ line: i + 1, code: body.join("\n") });
    i = j;
  }
  return blocks;
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const files = markdownFiles();
// What a user's project would check the examples with (types from the built packages' .d.ts), plus unused names.
writeFileSync(
  join(out, "tsconfig.json"),
  JSON.stringify({
    compilerOptions: {
      target: "ES2022",
      lib: ["ES2022", "ESNext.Disposable"],
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      noUnusedLocals: true,
      noEmit: true,
      skipLibCheck: true,
      types: ["node"],
    },
    include: ["*.ts"],
  }),
);

describe("README and docs code blocks run", () => {
  it("finds the READMEs and docs pages", () => {
    const rel = files.map((f) => relative(repo, f));
    for (const f of [
      "README.md",
      "packages/core/README.md",
      "packages/drivers-smmuv3/README.md",
      "packages/drivers-vtd/README.md",
      "docs/architecture.md",
    ])
      expect(rel).toContain(f);
  });

  it("type-check as TypeScript programs, importing nothing they do not use", { timeout: 120_000 }, () => {
    const tsc = join(repo, "node_modules/typescript/bin/tsc");
    const r = spawnSync(process.execPath, [tsc, "-p", join(out, "tsconfig.json")], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  for (const file of files) {
    const rel = relative(repo, file);
    tsBlocks(readFileSync(file, "utf8")).forEach(({ line, code }, k) => {
      const path = join(out, `${rel.replaceAll("/", "__")}.${k}.ts`);
      writeFileSync(path, `${code}\nexport {};\n`);
      it(`${rel}:${line}`, { timeout: 60_000 }, async () => {
        const program = code.replace(/\/\/.*$/gm, "").replace(/\/\*[\s\S]*?\*\//g, "");
        if (/createMachine\(/.test(program)) {
          expect(program, "a block that builds a machine tears it down").toMatch(/\.teardown\(\)|await using /);
        }
        await import(path);
      });
    });
  }
});
