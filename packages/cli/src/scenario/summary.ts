/** The per-IOMMU summary printed after a run: the hardware models' counters, side by side. */
import type { IommuHwCounters, Machine } from "@iommu-sim/core";

/** One IOMMU's row. */
export interface IommuSummary {
  name: string;
  kind: string;
  counters: IommuHwCounters | undefined;
  /** IOTLB hits / translations that reached the IOTLB, 0..1 (undefined without any). */
  hitRate: number | undefined;
}

/** Counters of every IOMMU that has a hardware model. */
export function summarize(m: Machine): IommuSummary[] {
  const out: IommuSummary[] = [];
  for (const [name, hw] of m.hw) {
    const c = hw.counters?.();
    const looked = c ? c.iotlbHits + c.iotlbMisses : 0;
    out.push({ name, kind: hw.kind, counters: c, hitRate: c && looked > 0 ? c.iotlbHits / looked : undefined });
  }
  return out;
}

const COLS: [string, (s: IommuSummary) => string][] = [
  ["IOMMU", (s) => s.name],
  ["kind", (s) => s.kind],
  ["translations", (s) => String(s.counters?.translations ?? "-")],
  ["IOTLB hit rate", (s) => (s.hitRate === undefined ? "-" : `${(s.hitRate * 100).toFixed(1)}%`)],
  ["walks", (s) => String(s.counters?.walks ?? "-")],
  ["faults", (s) => String(s.counters?.faults ?? "-")],
  ["page reqs", (s) => String(s.counters?.pageRequests ?? "-")],
  ["commands", (s) => String(s.counters?.commands ?? "-")],
  ["invalidations", (s) => String(s.counters?.invalidations ?? "-")],
];

/** A plain-text table (right-aligned numbers). */
export function formatSummary(rows: IommuSummary[]): string {
  const cells = rows.map((r) => COLS.map(([, f]) => f(r)));
  const widths = COLS.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (i < 2 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join("  ");
  return [line(COLS.map(([h]) => h)), ...cells.map(line)].join("\n");
}
