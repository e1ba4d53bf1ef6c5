import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HEADER_SIZE, Op, parseMaps, parseRequests, SERVE_PROTOCOL_VERSION, startServer } from "../src/index.js";

const dir = mkdtempSync(join(tmpdir(), "iommu-sim-proto-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function message(op: number, payload: Uint8Array, seq = 1): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + payload.byteLength);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(op, 4);
  b.writeUInt32LE(seq, 8);
  b.set(payload, HEADER_SIZE);
  return b;
}

/** A client speaking the protocol from this Node process (its own pid, so the server mirrors this process). */
async function client(path: string) {
  const sock: Socket = connect(path);
  await new Promise<void>((r) => sock.once("connect", () => r()));
  let buf = Buffer.alloc(0);
  const waiters: ((b: Buffer) => void)[] = [];
  sock.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 4 && buf.length >= buf.readUInt32LE(0)) {
      const len = buf.readUInt32LE(0);
      waiters.shift()?.(buf.subarray(0, len));
      buf = buf.subarray(len);
    }
  });
  const call = (op: number, payload: Uint8Array) =>
    new Promise<{ result: number; fds: number[] }>((resolve) => {
      waiters.push((b) => {
        const n = b.readUInt32LE(12);
        resolve({ result: b.readInt32LE(4), fds: Array.from({ length: n }, (_, i) => b.readInt32LE(16 + 4 * i)) });
      });
      sock.write(message(op, payload));
    });
  const u32s = (...v: number[]) => new Uint8Array(new Uint32Array(v).buffer);
  const open = (path: string) => call(Op.OPEN, Buffer.concat([u32s(2), Buffer.from(`${path}\0`)]));
  return { sock, call, u32s, open };
}

describe("the wire protocol", () => {
  it("splits requests at message boundaries and refuses impossible lengths", () => {
    const two = Buffer.concat([message(Op.CLOSE, new Uint8Array(4)), message(Op.POLL, new Uint8Array(8))]);
    const { requests, rest } = parseRequests(two.subarray(0, two.length - 3));
    expect(requests.map((r) => r.op)).toEqual([Op.CLOSE]);
    expect(rest.length).toBe(HEADER_SIZE + 8 - 3);
    const bad = Buffer.alloc(8);
    bad.writeUInt32LE(4, 0);
    expect(() => parseRequests(bad)).toThrow(/bad message length 4/);
  });

  it("mirrors only readable user ranges below TASK_SIZE, and not [vvar] or [vsyscall]", () => {
    const maps = [
      "55d0c0000000-55d0c0001000 r--p 00000000 08:01 123 /usr/bin/x",
      "55d0c0001000-55d0c0002000 rw-p 00000000 00:00 0 [heap]",
      "7f0000000000-7f0000001000 ---p 00000000 00:00 0",
      "7ffd00000000-7ffd00002000 r--p 00000000 00:00 0 [vvar]",
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]",
    ].join("\n");
    expect(parseMaps(maps)).toEqual([
      { start: 0x55d0c0000000, end: 0x55d0c0001000, prot: 1 },
      { start: 0x55d0c0001000, end: 0x55d0c0002000, prot: 3 },
    ]);
  });

  it("hands out fds the client does not use, refuses a wrong version, and shuts down on request", async () => {
    const server = await startServer({ socket: join(dir, "p.sock") });
    const bad = await client(server.socket);
    expect((await bad.call(Op.HELLO, bad.u32s(SERVE_PROTOCOL_VERSION + 1, process.pid))).result).toBe(-71); // EPROTO
    expect((await bad.call(Op.OPEN, new Uint8Array(8))).result).toBe(-71); // no HELLO yet
    bad.sock.destroy();

    const c = await client(server.socket);
    expect((await c.call(Op.HELLO, c.u32s(SERVE_PROTOCOL_VERSION, process.pid))).result).toBe(SERVE_PROTOCOL_VERSION);
    expect((await c.open("/dev/nonexistent")).result).toBe(-2); // ENOENT
    const mine = readdirSync("/proc/self/fd").map(Number);
    const opened = await c.open("/dev/iommu");
    expect(opened.result).toBeGreaterThanOrEqual(0);
    expect(opened.fds).toEqual([opened.result]);
    expect(mine).not.toContain(opened.result); // fd numbers of the client's own files stay the client's
    expect((await c.call(Op.IOCTL, new Uint8Array(16))).result).toBe(-9); // EBADF: fd 0 is the client's stdin
    expect((await c.call(Op.POLL, new Uint8Array(new Int32Array([opened.result, 1]).buffer))).result).toBe(1);
    expect((await c.call(Op.CLOSE, new Uint8Array(new Int32Array([opened.result]).buffer))).result).toBe(0);
    expect((await c.call(99, new Uint8Array(0))).result).toBe(-38); // ENOSYS
    await c.call(Op.SHUTDOWN, new Uint8Array(0));
    expect(await server.closed).toEqual({ exitStatus: 0, report: "" });
    expect(server.reports.map((r) => r.clientPid)).toEqual([process.pid]);
  });
});
