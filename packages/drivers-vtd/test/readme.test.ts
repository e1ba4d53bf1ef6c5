/**
 * The package README's example, run as written: every ```ts block is written to a temporary module beside this
 * test and imported (it must end in a clean `await m.teardown()`, which throws on leaks).
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

it("runs the README's ts example", async () => {
  const readme = readFileSync(fileURLToPath(new URL("../README.md", import.meta.url)), "utf8");
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((x) => x[1]!);
  expect(blocks.length).toBeGreaterThan(0);
  for (const [i, code] of blocks.entries()) {
    const file = fileURLToPath(new URL(`./readme-example-${i}.tmp.ts`, import.meta.url));
    writeFileSync(file, code);
    try {
      await import(/* @vite-ignore */ `${file}?t=${Date.now()}`);
    } finally {
      rmSync(file, { force: true });
    }
  }
}, 30_000);
