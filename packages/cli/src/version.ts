import { createRequire } from "node:module";

/** The CLI's version, read from its package.json (src/ and dist/ both sit one level below it). */
export function cliVersion(): string {
  const pkg = createRequire(import.meta.url)("../package.json") as { version?: string };
  return pkg.version ?? "0.0.0";
}
