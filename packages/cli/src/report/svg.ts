/** Small inline-SVG pieces of the report: escaping, the object graph, bar charts, the timeline. */
import type { GraphSnapshot, TimelineEvent } from "../scenario/context.js";

/** Escape text for HTML/SVG. */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Column of each object type in the graph (left to right: devices, address spaces, page tables, vIOMMU objects). */
const RANK: Record<string, number> = {
  DEVICE: 0,
  IOAS: 1,
  HWPT_PAGING: 2,
  FAULT: 2,
  HWPT_NESTED: 3,
  VIOMMU: 3,
  VDEVICE: 4,
  VEVENTQ: 4,
  HW_QUEUE: 4,
  ACCESS: 1,
};

/** The object graph as an SVG: a box per object (users count, or "tombstone"), an arrow per reference. */
export function graphSvg(g: GraphSnapshot): string {
  const colW = 190;
  const rowH = 64;
  const boxW = 160;
  const boxH = 44;
  const cols = new Map<number, number>();
  const pos = new Map<number, { x: number; y: number }>();
  for (const n of g.nodes) {
    const c = RANK[n.type] ?? 5;
    const r = cols.get(c) ?? 0;
    cols.set(c, r + 1);
    pos.set(n.id, { x: 10 + c * colW, y: 10 + r * rowH });
  }
  const width = 20 + (Math.max(0, ...cols.keys()) + 1) * colW;
  const height = 20 + Math.max(1, ...cols.values()) * rowH;
  const edges = g.edges
    .filter((e) => pos.has(e.from) && pos.has(e.to))
    .map((e) => {
      const a = pos.get(e.from)!;
      const b = pos.get(e.to)!;
      const fromRight = a.x <= b.x;
      const x1 = fromRight ? a.x + boxW : a.x;
      const x2 = fromRight ? b.x : b.x + boxW;
      const y1 = a.y + boxH / 2;
      const y2 = b.y + boxH / 2;
      const mx = (x1 + x2) / 2;
      return `<g class="edge" data-from="${e.from}" data-to="${e.to}"><path d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)"/><text x="${mx}" y="${(y1 + y2) / 2 - 3}">${esc(e.why)}</text></g>`;
    })
    .join("");
  const nodes = g.nodes
    .map((n) => {
      const p = pos.get(n.id)!;
      const cls = n.tombstone ? "node tombstone" : "node";
      return `<g class="${cls}" data-id="${n.id}" data-type="${esc(n.type)}"><rect x="${p.x}" y="${p.y}" width="${boxW}" height="${boxH}" rx="6"/><text x="${p.x + 8}" y="${p.y + 18}" class="title">${esc(`${n.type}#${n.id}`)}</text><text x="${p.x + 8}" y="${p.y + 35}">${esc(n.label ?? "")}${n.tombstone ? " — tombstone" : ` · users ${n.users}`}</text></g>`;
    })
    .join("");
  return `<svg class="graph" role="img" aria-label="iommufd objects at ${esc(g.label)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>${edges}${nodes}</svg>`;
}

/** A horizontal bar chart: one bar per (label, value). */
export function barChart(
  title: string,
  rows: { label: string; value: number; note?: string }[],
  size: { width?: number; labelWidth?: number; noteWidth?: number } = {},
): string {
  const max = Math.max(1, ...rows.map((r) => r.value));
  const barH = 18;
  const labelW = size.labelWidth ?? 120;
  const w = size.width ?? 420;
  const noteW = size.noteWidth ?? 70;
  const h = 26 + rows.length * (barH + 6);
  const bars = rows
    .map((r, i) => {
      const y = 24 + i * (barH + 6);
      const bw = Math.round(((w - labelW - noteW) * r.value) / max);
      return `<g class="bar-row"><text x="0" y="${y + 13}">${esc(r.label)}</text><rect class="bar" x="${labelW}" y="${y}" width="${Math.max(bw, r.value > 0 ? 2 : 0)}" height="${barH}" data-value="${r.value}"/><text x="${labelW + bw + 6}" y="${y + 13}">${esc(r.note ?? String(r.value))}</text></g>`;
    })
    .join("");
  return `<svg class="chart" role="img" aria-label="${esc(title)}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><text class="chart-title" x="0" y="14">${esc(title)}</text>${bars}</svg>`;
}

const KIND_CLASS: Record<TimelineEvent["kind"], string> = {
  fault: "ev-fault",
  "page-request": "ev-pr",
  vevent: "ev-vevent",
  "page-response": "ev-resp",
  dma: "ev-dma",
};

/** The fault and event timeline: one mark per event at its step. */
export function timelineSvg(events: TimelineEvent[], steps: number): string {
  const w = 760;
  const h = 70;
  const x = (s: number) => 20 + ((w - 40) * (s - 1)) / Math.max(1, steps - 1);
  const marks = events
    .map((e, i) => {
      const y = 20 + (i % 3) * 14;
      return `<g class="mark ${KIND_CLASS[e.kind]}"><circle cx="${x(e.step)}" cy="${y}" r="5"><title>${esc(`step ${e.step}: ${e.kind} ${e.text}`)}</title></circle></g>`;
    })
    .join("");
  return `<svg class="timeline" role="img" aria-label="fault and event timeline" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><line x1="20" y1="60" x2="${w - 20}" y2="60"/><text x="20" y="${h - 0}">step 1</text><text x="${w - 70}" y="${h}">step ${steps}</text>${marks}</svg>`;
}
