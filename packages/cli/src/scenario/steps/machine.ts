/** Steps of the machine's life: boot (modules, probe), the VMM process, /dev/iommu, and the checked teardown. */
import { createMachine, describeIommuTopology } from "@iommu-sim/core";
import { StepError } from "../context.js";
import type { StepRunner } from "./types.js";

/** Create the machine with the run's platform, modules and seed, and boot it (every device probed). */
export const boot: StepRunner<"boot"> = async (ctx) => {
  if (ctx.machine) throw new StepError("the machine is booted already");
  const m = await createMachine({ platform: ctx.platform, modules: ctx.modules, seed: ctx.seed });
  ctx.machine = m;
  ctx.tracer?.attach(m);
  // Progress while booting: each module as it loads (its probe events) and each device as it is probed.
  let nProbed = 0;
  const detach = m.diag.trace.attach((r) => {
    if (r.event === "iommu:probe_device") ctx.status(`probed ${String(r.fields.device)} (${++nProbed})`);
  });
  try {
    await m.boot();
  } finally {
    detach();
  }
  const topo = describeIommuTopology(m);
  const probed = topo.devices.filter((d) => d.group !== undefined).length;
  const drivers = topo.iommus.map((i) => `${i.name}:${i.driver ?? "-"}`).join(" ");
  return `${ctx.modules.length} modules, ${topo.iommus.length} IOMMUs (${drivers}), ${probed}/${topo.devices.length} devices probed`;
};

/** Start the VMM process. */
export const spawn: StepRunner<"spawn"> = async (ctx) => {
  if (ctx.process) throw new StepError("the VMM process exists already");
  ctx.process = ctx.m.spawnProcess();
  return "VMM process started";
};

/** open("/dev/iommu"). */
export const openIommufd: StepRunner<"open-iommufd"> = async (ctx) => {
  ctx.iommufd = await ctx.p.open("/dev/iommu");
  return `/dev/iommu is fd ${ctx.iommufd}`;
};

/**
 * Close what the VMM still holds (event-queue files, devices, /dev/iommu), exit it, then tear the machine down: a
 * leak, an unexpected warning or a held lock fails the step with the machine's report.
 */
export const teardown: StepRunner<"teardown"> = async (ctx) => {
  const m = ctx.m;
  ctx.tornDown = true;
  const p = ctx.process;
  let pinned = 0;
  if (p && !p.exited) {
    for (const o of ctx.objects.values()) {
      if (o.fd !== undefined) {
        await p.close(o.fd);
        o.fd = undefined;
      }
    }
    for (const [name, d] of ctx.devices) {
      await p.close(d.fd);
      ctx.devices.delete(name);
    }
    if (ctx.iommufd !== undefined) await p.close(ctx.iommufd);
    ctx.iommufd = undefined;
    await p.exit();
  }
  pinned = m.userSpace.pages.pinnedCount;
  ctx.tracer?.stop();
  await m.teardown();
  const warnings = m.diag.records.filter((r) => !r.expected).length;
  return `nothing leaked: ${pinned} pages pinned, ${warnings} diagnostics, every module unloaded`;
};
