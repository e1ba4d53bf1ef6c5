/**
 * The wire protocol between the preload shim (native/iommu-shim.c) and the server: little-endian, one request and
 * one reply at a time per connection. docs/serve-protocol.md is the reference; the C side keeps the same numbers.
 * There is no Linux counterpart: this is the system-call boundary, carried over a Unix socket.
 */

/** Protocol version; HELLO fails with EPROTO (the shim's calls then fail) when the client speaks another. */
export const SERVE_PROTOCOL_VERSION = 2;

/** Every message starts with this many header bytes. */
export const HEADER_SIZE = 16;

/** The largest message either side accepts (header included). */
export const MAX_MESSAGE = 1 << 20;

/** Request operation codes. */
export const Op = {
  HELLO: 1,
  OPEN: 2,
  CLOSE: 3,
  IOCTL: 4,
  READ: 5,
  WRITE: 6,
  MMAP: 7,
  MUNMAP: 8,
  POLL: 9,
  SHUTDOWN: 10,
  DUP: 11,
} as const;

/** A decoded request: its operation, sequence number and payload (the bytes after the header). */
export interface Request {
  op: number;
  seq: number;
  payload: DataView;
}

/**
 * Split complete requests off the front of `buf`. Returns the requests and the unconsumed rest; throws on a
 * message whose length is below the header or above {@link MAX_MESSAGE} (the connection is then dropped).
 * @linux none: the system-call entry the messages stand for (arch/x86/entry/entry_64.S)
 */
export function parseRequests(buf: Buffer): { requests: Request[]; rest: Buffer } {
  const requests: Request[] = [];
  let off = 0;
  while (buf.length - off >= 4) {
    const len = buf.readUInt32LE(off);
    if (len < HEADER_SIZE || len > MAX_MESSAGE) throw new Error(`bad message length ${len}`);
    if (buf.length - off < len) break;
    const op = buf.readUInt32LE(off + 4);
    const seq = buf.readUInt32LE(off + 8);
    const body = buf.subarray(off + HEADER_SIZE, off + len);
    requests.push({ op, seq, payload: new DataView(body.buffer, body.byteOffset, body.byteLength) });
    off += len;
  }
  return { requests, rest: buf.subarray(off) };
}

/**
 * Encode a reply: `result` (a count or fd, or -errno), the fds the call installed in the process's table (anonymous
 * fds handed out inside ioctl structs), then `payload`.
 * @linux none: a system call's return value in rax, as the message carries it
 */
export function encodeReply(seq: number, result: number, newFds: readonly number[], payload?: Uint8Array): Buffer {
  const plen = payload?.byteLength ?? 0;
  const out = Buffer.alloc(HEADER_SIZE + 4 * newFds.length + plen);
  out.writeUInt32LE(out.length, 0);
  out.writeInt32LE(result, 4);
  out.writeUInt32LE(seq, 8);
  out.writeUInt32LE(newFds.length, 12);
  for (const [i, fd] of newFds.entries()) out.writeInt32LE(fd, HEADER_SIZE + 4 * i);
  if (payload) out.set(payload, HEADER_SIZE + 4 * newFds.length);
  return out;
}
