/**
 * Quiet commands: the build prints nothing when it succeeds (turbo's banner, task logs and summary only on a
 * failure), and turbo's telemetry and update notifier are off in the project's own configuration.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
// A user config with telemetry never decided: without the project's setting turbo would print its banner.
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: "", DO_NOT_TRACK: "" };
const turbo = (...args: string[]) =>
  spawnSync(process.execPath, ["scripts/turbo.mjs", ...args], { cwd: repo, encoding: "utf8", env });

describe("quiet commands", () => {
  it("a successful turbo run prints nothing", { timeout: 300_000 }, () => {
    // One package's lint alone: it writes nothing (a build here could race with tests reading dist/).
    const r = turbo("run", "lint", "--only", "--filter=@iommu-sim/cli");
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("a failing run shows turbo's output and fails", { timeout: 60_000 }, () => {
    const r = turbo("run", "no-such-task");
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/no-such-task/);
  });

  it("the project config turns telemetry and the update notifier off and keeps task logs to errors", () => {
    const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts.build).toBe("node scripts/turbo.mjs run build");
    expect(pkg.scripts.lint).toMatch(/^node scripts\/turbo\.mjs run lint/);
    const wrapper = readFileSync(join(repo, "scripts/turbo.mjs"), "utf8");
    expect(wrapper).toMatch(/TURBO_TELEMETRY_DISABLED: "1"/);
    const t = JSON.parse(readFileSync(join(repo, "turbo.json"), "utf8")) as {
      noUpdateNotifier: boolean;
      tasks: Record<string, { outputLogs?: string }>;
    };
    expect(t.noUpdateNotifier).toBe(true);
    expect(t.tasks.build?.outputLogs).toBe("errors-only");
  });
});
