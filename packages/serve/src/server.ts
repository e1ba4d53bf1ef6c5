/**
 * `startServer()`: one simulated machine (the mock IOMMU driver, iommufd and its selftest module) served over a
 * Unix stream socket. Each connection is a simulated process; requests of one connection run one at a time, in
 * order; connections interleave at the kernel's scheduling points like processes do.
 */
import { rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import {
  createMachine,
  defaultPlatform,
  type KernelModule,
  type Machine,
  type PlatformDescription,
  TeardownError,
} from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import { iommufdModule } from "@iommu-sim/iommufd";
import { iommufdSelftestModule } from "@iommu-sim/selftest";
import { MAX_MESSAGE, parseRequests } from "./protocol.js";
import { type ClientReport, ClientSession } from "./session.js";

/** Options of {@link startServer}. */
export interface ServeOptions {
  /** Path of the Unix socket to listen on (replaced if it exists). */
  socket: string;
  /** The platform; the embedded default when absent. */
  platform?: PlatformDescription;
  /** Machine seed (default 1). */
  seed?: number;
  /** Called when a client disconnects, with what its process left behind. */
  onClientReport?: (report: ClientReport) => void;
}

/** How the machine ended. */
export interface ShutdownResult {
  /** 0 when teardown was clean, 1 when it found leaks, warnings or held locks. */
  exitStatus: number;
  /** The teardown report (empty when clean). */
  report: string;
}

/** A running server. */
export interface Server {
  /** The simulated machine. */
  readonly machine: Machine;
  /** The socket path. */
  readonly socket: string;
  /** Reports of the clients that have disconnected so far. */
  readonly reports: readonly ClientReport[];
  /** Stop accepting, end every session, tear the machine down. Idempotent. */
  close(): Promise<ShutdownResult>;
  /** Settles when the server has shut down (by `close()` or a client's SHUTDOWN request). */
  readonly closed: Promise<ShutdownResult>;
}

/**
 * Boot a machine and serve it on `opts.socket`.
 * @linux the system-call entry of a whole machine: each connection is a task doing syscalls on it
 */
export async function startServer(opts: ServeOptions): Promise<Server> {
  const modules: KernelModule[] = [iommufdModule, iommufdSelftestModule];
  const machine = await createMachine({
    platform: opts.platform ?? defaultPlatform(),
    modules: [mockIommuDriver, ...modules],
    seed: opts.seed ?? 1,
  });
  await machine.boot();
  const reports: ClientReport[] = [];
  const sessions = new Set<{ socket: Socket; session: ClientSession; done: Promise<void> }>();
  let shutdownPromise: Promise<ShutdownResult> | undefined;
  let resolveClosed!: (r: ShutdownResult) => void;
  const closed = new Promise<ShutdownResult>((r) => {
    resolveClosed = r;
  });

  const serveConnection = (socket: Socket): void => {
    const session = new ClientSession(
      machine,
      (pid) => {
        for (const s of sessions) if (s.session.pid === pid && s.session.simProcess !== undefined) return s.session;
        return undefined;
      },
      () => [...sessions].map((s) => s.session),
    );
    let pending: Buffer = Buffer.alloc(0);
    let chain: Promise<void> = Promise.resolve();
    let ended = false;
    let endDone!: () => void;
    const entry = { socket, session, done: new Promise<void>((r) => (endDone = r)) };
    sessions.add(entry);
    const finish = () => {
      if (ended) return;
      ended = true;
      chain = chain.then(async () => {
        const r = await session.disconnect();
        if (r) {
          reports.push(r);
          opts.onClientReport?.(r);
        }
        sessions.delete(entry);
        endDone();
      });
    };
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      let parsed: ReturnType<typeof parseRequests>;
      try {
        parsed = parseRequests(pending);
      } catch {
        socket.destroy();
        return;
      }
      pending = parsed.rest;
      for (const req of parsed.requests) {
        chain = chain.then(async () => {
          if (ended) return;
          try {
            const { reply, shutdown } = await session.handle(req);
            if (!socket.destroyed) socket.write(reply);
            if (shutdown) void shutdownNow();
          } catch {
            socket.destroy(); // the client's calls fail with EIO; the session still ends through "close"
          }
        });
      }
      if (pending.length > MAX_MESSAGE) socket.destroy();
    });
    socket.on("close", finish);
    socket.on("error", () => socket.destroy());
  };

  const server = createServer(serveConnection);
  rmSync(opts.socket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.socket, () => resolve());
  });

  const shutdownNow = (): Promise<ShutdownResult> => {
    shutdownPromise ??= (async () => {
      // server.close() completes only once every connection has ended, so end them first.
      const listening = new Promise<void>((r) => server.close(() => r()));
      const ending = [...sessions];
      for (const s of ending) s.socket.destroy();
      await Promise.all(ending.map((s) => s.done));
      await listening;
      rmSync(opts.socket, { force: true });
      let result: ShutdownResult = { exitStatus: 0, report: "" };
      try {
        await machine.teardown();
      } catch (e) {
        if (!(e instanceof TeardownError)) throw e;
        result = { exitStatus: 1, report: e.report };
      }
      resolveClosed(result);
      return result;
    })();
    return shutdownPromise;
  };

  return { machine, socket: opts.socket, reports, close: shutdownNow, closed };
}
