/**
 * `inspect`: decode a device's translation path from raw memory and registers, with the decoder its IOMMU's
 * vendor package exports (hw/), and format it level by level.
 */
import { describeIommuTopology, type Machine, type TranslationDecoder, type TranslationPath } from "@iommu-sim/core";
import { amdHw } from "@iommu-sim/drivers-amd";
import { decodeMockTranslation } from "@iommu-sim/drivers-mock";
import { smmuv3Hw } from "@iommu-sim/drivers-smmuv3";
import { vtdHw } from "@iommu-sim/drivers-vtd";
import { StepError } from "../scenario/context.js";

/** The decoder of each IOMMU kind (a kind that lands adds its own). */
export const DECODERS: Record<string, TranslationDecoder> = {
  mock: decodeMockTranslation,
  smmuv3: smmuv3Hw.decodeSmmuv3Translation,
  vtd: vtdHw.decodeVtdTranslation,
  amd: amdHw.decodeAmdTranslation,
};

/** A decoded path with its text rendering. */
export type InspectedPath = TranslationPath & { device: string; text: string };

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Render a path the way a debugger session reads. */
export function formatPath(p: InspectedPath): string {
  const lines = [
    `${p.device} → ${p.iommu} (${p.kind}), requester ID ${hex(p.requesterId)}${p.pasid >= 0 ? `, PASID ${p.pasid}` : ""}, IOVA ${hex(p.iova)}`,
  ];
  for (const l of p.levels) {
    lines.push(`  ${l.name.padEnd(14)} @ ${hex(l.address).padEnd(12)} ${l.raw.join(" ")}`);
    const f = Object.entries(l.fields).map(([k, v]) => `${k}=${typeof v === "number" && v > 9 ? hex(v) : String(v)}`);
    if (f.length) lines.push(`  ${"".padEnd(14)}   ${f.join(" ")}`);
  }
  const r = p.result;
  lines.push(
    r.fault !== undefined
      ? `  → fault: ${r.fault}`
      : `  → PA ${hex(r.pa ?? 0)} (${r.size !== undefined ? `${r.size / 1024} KiB page, ` : ""}${r.perm ?? ""})`,
  );
  return lines.join("\n");
}

/** Decode `device`'s translation of `iova` (at `pasid`). */
export function inspectTranslation(m: Machine, device: string, iova: number, pasid?: number): InspectedPath {
  const topo = describeIommuTopology(m);
  const d = topo.devices.find((x) => x.name === device);
  if (!d) throw new StepError(`the platform has no device ${device}`);
  if (!d.iommu || d.requesterId === undefined) throw new StepError(`${device} has no IOMMU: its DMA is not translated`);
  const io = topo.iommus.find((i) => i.name === d.iommu)!;
  const decode = DECODERS[io.kind];
  if (!decode) throw new StepError(`no decoder for ${io.kind} IOMMUs (${io.name})`);
  const base = io.mmioBase;
  const out = decode({
    memory: m.memory,
    readReg: (off) => m.mmio.read32(base + off),
    requesterId: d.requesterId,
    pasid: pasid ?? -1,
    iova,
  });
  const path = { iommu: io.name, kind: io.kind, requesterId: d.requesterId, pasid: pasid ?? -1, iova, ...out, device };
  return { ...path, text: formatPath({ ...path, text: "" }) };
}
