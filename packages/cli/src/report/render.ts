/**
 * `--report FILE`: one self-contained HTML page about a run (inline CSS and SVG, no script, nothing fetched): the
 * steps, the iommufd object graph at each snapshot (users edges, tombstones), each inspected translation path level
 * by level, page-table occupancy per domain (from the map/unmap trace), the fault and event timeline, and the
 * per-IOMMU counters as bar charts.
 */
import type { TranslationPath } from "@iommu-sim/core";
import type { RunResult } from "../scenario/runner.js";
import type { Scenario } from "../scenario/schema.js";
import { barChart, esc, graphSvg, timelineSvg } from "./svg.js";

const CSS = `
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
.pass{color:#1a7f37;font-weight:700}.fail{color:#cf222e;font-weight:700}.muted{color:#5b6472}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #eceff4;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f5f7fa}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
details{margin:4px 0}summary{cursor:pointer}
svg text{font:11px system-ui,sans-serif;fill:#1d2330}svg .title{font-weight:700}
.graph .node rect{fill:#eef4ff;stroke:#3b6fd8}.graph .tombstone rect{fill:#f3f3f3;stroke:#888;stroke-dasharray:4 3}
.graph .edge path{fill:none;stroke:#7a8699}.graph .edge text{fill:#5b6472;font-size:10px}marker path{fill:#7a8699}
.chart .bar{fill:#3b6fd8}.chart .chart-title{font-weight:700}
.timeline line{stroke:#aab}.ev-fault circle{fill:#cf222e}.ev-pr circle{fill:#bf8700}.ev-vevent circle{fill:#8250df}.ev-resp circle{fill:#1a7f37}.ev-dma circle{fill:#3b6fd8}
.charts{display:flex;flex-wrap:wrap;gap:18px}.legend span{margin-right:14px}
.path .level td:first-child{font-weight:600;white-space:nowrap}
`;

function stepsSection(r: RunResult): string {
  const rows = r.steps
    .map(
      (s) =>
        `<tr class="${s.ok ? "ok" : "failed"}"><td>${s.index}</td><td class="${s.ok ? "pass" : "fail"}">${s.ok ? "ok" : "FAIL"}</td><td>${esc(s.label)}</td><td>${esc(s.detail)}</td></tr>`,
    )
    .join("");
  return `<details ${r.ok ? "" : "open"}><summary>${r.steps.length} steps</summary><table><tr><th>#</th><th></th><th>step</th><th>what happened</th></tr>${rows}</table></details>`;
}

function graphsSection(r: RunResult): string {
  if (r.ctx.snapshots.length === 0)
    return `<p class="muted">The scenario took no snapshot (add a <code>snapshot</code> step).</p>`;
  return r.ctx.snapshots
    .map((g) => {
      const tomb = g.nodes.filter((n) => n.tombstone).length;
      return `<section class="snapshot" data-label="${esc(g.label)}"><h3>At “${esc(g.label)}” (step ${g.step}): ${g.nodes.length} objects${tomb ? `, ${tomb} tombstone` : ""}</h3>${graphSvg(g)}</section>`;
    })
    .join("");
}

function pathsSection(r: RunResult): string {
  if (r.ctx.inspections.length === 0)
    return `<p class="muted">No translation was inspected (add an <code>inspect</code> step).</p>`;
  return r.ctx.inspections
    .map((insp) => {
      const p = insp.data as TranslationPath;
      const rows = p.levels
        .map(
          (l) =>
            `<tr class="level"><td>${esc(l.name)}</td><td class="mono">0x${l.address.toString(16)}</td><td class="mono">${l.raw.map(esc).join("<br>")}</td><td class="mono">${esc(
              Object.entries(l.fields)
                .map(([k, v]) => `${k}=${v}`)
                .join(" "),
            )}</td></tr>`,
        )
        .join("");
      const res =
        p.result.fault !== undefined
          ? `<span class="fail">fault: ${esc(p.result.fault)}</span>`
          : `<span class="pass">PA 0x${(p.result.pa ?? 0).toString(16)}</span> ${esc(p.result.perm ?? "")}`;
      return `<section class="path" data-device="${esc(insp.device)}"><h3>${esc(insp.device)} → ${esc(p.iommu)} (${esc(p.kind)}), IOVA 0x${insp.iova.toString(16)}${p.pasid >= 0 ? `, PASID ${p.pasid}` : ""} — step ${insp.step}</h3><table><tr><th>level</th><th>address</th><th>raw</th><th>decoded</th></tr>${rows}<tr class="result"><td>result</td><td colspan="3">${res}</td></tr></table></section>`;
    })
    .join("");
}

function occupancySection(r: RunResult): string {
  const dom = new Map<string, { now: number; peak: number; maps: number; unmaps: number }>();
  for (const l of r.tracer.lines) {
    if (l.event !== "iommu:map" && l.event !== "iommu:unmap") continue;
    const d = dom.get(String(l.domain)) ?? { now: 0, peak: 0, maps: 0, unmaps: 0 };
    if (l.event === "iommu:map") {
      d.now += Number(l.size);
      d.maps++;
    } else {
      d.now -= Number(l.unmapped);
      d.unmaps++;
    }
    d.peak = Math.max(d.peak, d.now);
    dom.set(String(l.domain), d);
  }
  if (dom.size === 0) return `<p class="muted">Nothing was mapped.</p>`;
  const rows = [...dom.entries()].map(([label, d]) => ({
    label,
    value: d.peak / 4096,
    note: `${d.peak / 4096} pages peak, ${d.now / 4096} at the end (${d.maps} maps, ${d.unmaps} unmaps)`,
  }));
  return `<div class="occupancy">${barChart("mapped 4 KiB pages per domain (peak)", rows, { width: 1060, labelWidth: 260, noteWidth: 380 })}</div>`;
}

function timelineSection(r: RunResult): string {
  const ev = r.ctx.timeline.filter((e) => e.kind !== "dma");
  const rows = ev
    .map(
      (e) =>
        `<tr class="event"><td>${e.step}</td><td>${esc(e.kind)}</td><td>${esc(e.iommu ?? "")}</td><td>${esc(e.device ?? "")}</td><td>${esc(e.text)}</td></tr>`,
    )
    .join("");
  const hw = r.tracer.lines.filter((l) => l.event === "hw:fault" || l.event === "hw:page_request").length;
  return `${timelineSvg(ev, r.steps.length)}<p class="legend"><span style="color:#cf222e">● fault</span><span style="color:#bf8700">● page request</span><span style="color:#8250df">● vEVENT</span><span style="color:#1a7f37">● page response</span> <span class="muted">(${hw} fault/page-request records in the hardware trace)</span></p><table><tr><th>step</th><th>kind</th><th>IOMMU</th><th>device</th><th>what</th></tr>${rows}</table>`;
}

function countersSection(r: RunResult): string {
  const keys: [string, (c: NonNullable<RunResult["summary"][number]["counters"]>) => number | undefined][] = [
    ["translations", (c) => c.translations],
    ["IOTLB hits", (c) => c.iotlbHits],
    ["walks", (c) => c.walks],
    ["faults", (c) => c.faults],
    ["page requests", (c) => c.pageRequests],
    ["commands", (c) => c.commands],
    ["invalidations", (c) => c.invalidations],
  ];
  const withCounters = r.summary.filter((s) => s.counters);
  const charts = keys
    .map(([name, get]) =>
      barChart(
        name,
        withCounters.map((s) => ({
          label: s.name,
          value: get(s.counters!) ?? 0,
          note: get(s.counters!) === undefined ? "—" : String(get(s.counters!)),
        })),
      ),
    )
    .join("");
  const rows = r.summary
    .map(
      (s) =>
        `<tr><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${s.counters?.translations ?? "—"}</td><td>${s.hitRate === undefined ? "—" : `${(s.hitRate * 100).toFixed(1)}%`}</td><td>${s.counters?.walks ?? "—"}</td><td>${s.counters?.faults ?? "—"}</td><td>${s.counters?.commands ?? "—"}</td><td>${s.counters?.invalidations ?? "—"}</td></tr>`,
    )
    .join("");
  return `<table class="counters"><tr><th>IOMMU</th><th>kind</th><th>translations</th><th>IOTLB hit rate</th><th>walks</th><th>faults</th><th>commands</th><th>invalidations</th></tr>${rows}</table><div class="charts">${charts}</div>`;
}

/** The report page for `sc` and its run `r`. */
export function renderReport(sc: Scenario, r: RunResult): string {
  const verdict = r.ok
    ? `<span class="pass">PASS</span>: ${r.steps.length} steps, torn down with nothing leaked`
    : `<span class="fail">FAIL</span> at step ${r.failed!.index} (${esc(r.failed!.label)}): ${esc(r.failed!.message)}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>iommu-sim report: ${esc(sc.name)}</title><style>${CSS}</style></head>
<body>
<h1>iommu-sim run: ${esc(sc.name)}</h1>
<p class="verdict">${verdict}</p>
${sc.description ? `<p class="muted">${esc(sc.description)}</p>` : ""}
<h2 id="steps">Steps</h2>${stepsSection(r)}
<h2 id="graph">iommufd object graph</h2><p class="muted">Boxes are objects of the VMM's iommufd (type#id, the scenario's name, users count); arrows are the references one object holds on another; a dashed box is a tombstone (its ID stays reserved until iommufd is closed).</p>${graphsSection(r)}
<h2 id="paths">Translation paths</h2><p class="muted">Each structure as read from simulated memory: address, raw 64-bit words, decoded fields; then the output address or the fault.</p>${pathsSection(r)}
<h2 id="occupancy">Page-table occupancy per domain</h2>${occupancySection(r)}
<h2 id="timeline">Faults and events</h2>${timelineSection(r)}
<h2 id="counters">Per-IOMMU counters</h2>${countersSection(r)}
<p class="muted">Generated by iommu-sim; ${r.tracer.lines.length} trace events.</p>
</body></html>
`;
}
