/** Steps that look without changing anything: an object-graph snapshot, a decoded translation path. */
import { inspectTranslation } from "../../inspect/inspect.js";
import { formatGraph, snapshotGraph } from "../graph.js";
import { hex, type StepRunner } from "./types.js";

export const snapshot: StepRunner<"snapshot"> = async (ctx, s) => {
  const g = await snapshotGraph(ctx, s.label);
  const tomb = g.nodes.filter((n) => n.tombstone).length;
  return `"${s.label}": ${g.nodes.length} objects${tomb ? ` (${tomb} tombstone)` : ""}: ${formatGraph(g)}`;
};

export const inspect: StepRunner<"inspect"> = async (ctx, s) => {
  const path = inspectTranslation(ctx.m, s.device, s.iova, s.pasid);
  ctx.inspections.push({
    step: ctx.stepIndex + 1,
    device: s.device,
    iova: s.iova,
    ...(s.pasid !== undefined ? { pasid: s.pasid } : {}),
    text: path.text,
    data: path,
  });
  const end = path.result.fault ? `fault: ${path.result.fault}` : `PA ${hex(path.result.pa ?? 0)}`;
  return `${s.device} IOVA ${hex(s.iova)}: ${path.levels.map((l) => l.name).join(" → ")} → ${end}`;
};
