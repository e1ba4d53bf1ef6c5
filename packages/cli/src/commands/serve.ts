import { startServer } from "@iommu-sim/serve";
import { parseArgs, UsageError } from "../args.js";
import type { Command } from "../command.js";
import { EXIT } from "../io.js";
import { loadPlatformArg } from "./platform-arg.js";
import { runGuarded } from "./run-guarded.js";

/**
 * `iommu-sim serve --platform FILE --socket PATH`: one simulated machine served to C programs running under the
 * preload shim of @iommu-sim/serve. Runs until SIGINT/SIGTERM or a client's SHUTDOWN request; exits 0 when the
 * machine's teardown is clean and 1 with the teardown report otherwise.
 */
export const serveCommand: Command = {
  name: "serve",
  summary: "serve a simulated machine on a Unix socket to C programs using the LD_PRELOAD shim",
  usage: "serve --socket PATH [--platform FILE] [--seed N]",
  help: [
    "Each connection is a simulated process; when it disconnects its leaks and warnings are printed to stderr.",
    "Stops on SIGINT, SIGTERM or a SHUTDOWN request; the exit status is the machine's teardown (0 clean, 1 not).",
    "Client: LD_PRELOAD=packages/serve/native/build/libiommu-shim.so IOMMU_SIM_SOCKET=PATH ./program",
  ].join("\n"),
  examples: ["serve --socket /tmp/iommu-sim.sock", "serve --platform my-platform.json --socket /tmp/iommu-sim.sock"],
  run: (args, io) =>
    runGuarded(io, async () => {
      const { options, positional } = parseArgs(args, ["socket", "platform", "seed"], []);
      if (positional.length > 0) throw new UsageError("serve takes no positional arguments");
      const socket = options.get("socket");
      if (typeof socket !== "string") throw new UsageError("serve needs --socket PATH");
      const seed = Number(options.get("seed") ?? 1);
      if (!Number.isSafeInteger(seed)) throw new UsageError("--seed needs an integer");
      const platform = await loadPlatformArg(options.get("platform"));
      const server = await startServer({
        socket,
        platform,
        seed,
        onClientReport: (r) => {
          const problems = [...r.leaks, ...r.warnings];
          io.err(`client pid ${r.clientPid} (simulated pid ${r.pid}) exited: ${problems.length ? "" : "clean"}\n`);
          for (const p of problems) io.err(`  ${p}\n`);
        },
      });
      io.out(`serving on ${socket}\n`);
      const stop = () => void server.close();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      const result = await server.closed;
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      if (result.exitStatus !== 0) io.err(`machine teardown found problems:\n${result.report}\n`);
      return result.exitStatus === 0 ? EXIT.ok : EXIT.failure;
    }),
};
