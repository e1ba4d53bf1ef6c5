/**
 * The iommufd object graph of the VMM's context, read from the kernel's object table: every object with its type
 * and users count, "refers to" edges from the fields that hold another object (HWPT → IOAS, vIOMMU → HWPT, vDEVICE
 * → vIOMMU and device, nested HWPT → vIOMMU, ...), and tombstones (IDs still held by objects destroyed on unbind).
 */
import { fget, fput } from "@iommu-sim/core";
import { type IommufdCtx, IommufdObject } from "@iommu-sim/iommufd";
import type { GraphEdge, GraphNode, GraphSnapshot, RunContext } from "./context.js";

/** Snapshot the graph now; `label` names the point of the scenario. */
export async function snapshotGraph(ctx: RunContext, label: string): Promise<GraphSnapshot> {
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  if (ctx.iommufd !== undefined && ctx.process && !ctx.process.exited) {
    const file = fget(ctx.p, ctx.iommufd, "iommu-sim snapshot");
    try {
      const ictx = file.privateData as IommufdCtx;
      ictx.objects.forEach((id, obj) => {
        const label = ctx.labelOf(id);
        nodes.push({ id, type: obj.type, users: obj.users.read(), ...(label ? { label } : {}) });
        for (const [field, v] of Object.entries(obj)) {
          if (v instanceof IommufdObject && v !== obj && v.ictx === ictx)
            edges.push({ from: id, to: v.id, why: field });
        }
      });
      // Tombstones: destroyed with their ID kept (trace records of this context), and not reused since.
      const live = new Set(nodes.map((n) => n.id));
      for (const l of ctx.tracer?.lines ?? []) {
        if (
          l.event === "iommufd:object_destroy" &&
          l.tombstone === true &&
          l.ctx === ictx.name &&
          !live.has(l.id as number)
        ) {
          const id = l.id as number;
          const label = ctx.labelOf(id);
          nodes.push({ id, type: String(l.type), users: 0, tombstone: true, ...(label ? { label } : {}) });
          live.add(id);
        }
      }
    } finally {
      await fput(file, "iommu-sim snapshot");
    }
  }
  nodes.sort((a, b) => a.id - b.id);
  const snap = { label, step: ctx.stepIndex + 1, nodes, edges };
  ctx.snapshots.push(snap);
  return snap;
}

/** One line per node for the terminal: `IOAS#1 ioas0 users 3 → ...`. */
export function formatGraph(s: GraphSnapshot): string {
  return s.nodes
    .map((n) => {
      const out = s.edges.filter((e) => e.from === n.id).map((e) => `${e.why}→#${e.to}`);
      return `${n.type}#${n.id}${n.label ? ` ${n.label}` : ""}${n.tombstone ? " [tombstone]" : ` users=${n.users}`}${out.length ? ` (${out.join(", ")})` : ""}`;
    })
    .join("; ");
}
