import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";
import { main } from "../src/index.js";

it("serve: needs --socket, serves until a SHUTDOWN request, and exits with the teardown status", async () => {
  const dir = mkdtempSync(join(tmpdir(), "iommu-sim-cli-serve-"));
  let out = "";
  let err = "";
  const io = { out: (s: string) => (out += s), err: (s: string) => (err += s) };
  expect(await main(["serve"], io)).toBe(2);
  expect(err).toContain("serve needs --socket PATH");
  const socket = join(dir, "s.sock");
  const code = main(["serve", "--socket", socket], io);
  while (!out.includes("serving")) await new Promise((r) => setTimeout(r, 10));
  const s = connect(socket);
  await new Promise<void>((r) => s.once("connect", () => r()));
  const shutdown = Buffer.alloc(16);
  shutdown.writeUInt32LE(16, 0);
  shutdown.writeUInt32LE(10, 4); // SHUTDOWN
  s.write(shutdown);
  expect(await code).toBe(0);
  expect(out).toBe(`serving on ${socket}\n`);
  s.destroy();
  rmSync(dir, { recursive: true, force: true });
});
