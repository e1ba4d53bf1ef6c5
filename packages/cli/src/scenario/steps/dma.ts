/** Device DMA through the IOMMU: reads and writes at an IOVA, with the outcome the scenario expects. */
import { DmaFault } from "@iommu-sim/core";
import type { RunContext } from "../context.js";
import { StepError } from "../context.js";
import type { Smmuv3Guest } from "./smmuv3-guest.js";
import { hex, type StepRunner } from "./types.js";

const GUEST_PAGE = 4096;

const DEFAULT_DATA = [0xa5, 0x5a, 0xc3, 0x3c];

/**
 * Where a device's DMA at `iova` lands in the VMM's memory (its VA and a description), when the device is attached
 * to an IOAS (or a HWPT on one) with a region there, or to a guest whose stage 1 maps `iova`.
 */
function landing(ctx: RunContext, device: string, iova: number): { name: string; va: bigint } | undefined {
  const pt = ctx.attached.get(device);
  if (!pt) return undefined;
  const guest = ctx.guests.get(pt) as Smmuv3Guest | undefined;
  if (guest) {
    if (iova < guest.giova || iova >= guest.giova + GUEST_PAGE) return undefined;
    const r = ctx.region(guest.ram);
    const off = guest.page * GUEST_PAGE + (iova - guest.giova);
    return { name: `${guest.ram} at guest page ${guest.page} +${hex(iova - guest.giova)}`, va: r.va + BigInt(off) };
  }
  const ioas = ctx.objects.get(pt)?.kind === "ioas" ? pt : ctx.hwptIoas.get(pt);
  if (!ioas) return undefined;
  for (const [name, r] of ctx.regions) {
    if (r.ioas === ioas && iova >= r.iova && iova < r.iova + r.size) {
      return { name: `${name} at +${hex(iova - r.iova)}`, va: r.va + BigInt(iova - r.iova) };
    }
  }
  return undefined;
}

/**
 * One DMA access from the device. `ok`: it must complete (a write is read back from the VMM's memory when it
 * lands in a mapped region); `fault` / `page-request`: the IOMMU must refuse it that way (`fault` may name a word
 * of the reason, e.g. `permission`).
 */
export const dma: StepRunner<"dma"> = async (ctx, s) => {
  const ep = ctx.m.device(s.device);
  const opts = s.pasid !== undefined ? { pasid: s.pasid } : {};
  const data = new Uint8Array(s.data ?? DEFAULT_DATA);
  const what = `${s.op} ${s.op === "write" ? data.length : (s.length ?? 4)} bytes at ${hex(s.iova)}`;
  let fault: DmaFault | undefined;
  let read: Uint8Array | undefined;
  try {
    if (s.op === "write") ep.dmaWrite(s.iova, data, opts);
    else read = ep.dmaRead(s.iova, s.length ?? 4, opts);
  } catch (e) {
    if (!(e instanceof DmaFault)) throw e;
    fault = e;
  }
  if (fault) {
    ctx.note({
      kind: /page request/i.test(fault.faultReason) ? "page-request" : "fault",
      iommu: fault.iommu,
      device: s.device,
      text: `${s.op} ${hex(s.iova)}: ${fault.faultReason}`,
    });
    const isPr = /page request/i.test(fault.faultReason);
    if (s.outcome === "ok") throw new StepError(`expected the ${what} to complete: ${fault.message}`);
    if (s.outcome === "page-request" && !isPr)
      throw new StepError(`expected a page request, got: ${fault.faultReason}`);
    if (s.outcome === "fault" && isPr) throw new StepError("expected a fault, got a page request");
    if (s.fault && !fault.faultReason.toLowerCase().includes(s.fault.toLowerCase())) {
      throw new StepError(`expected a ${s.fault} fault, got: ${fault.faultReason}`);
    }
    return `${what} → ${fault.iommu}: ${fault.faultReason} (as expected)`;
  }
  if (s.outcome !== "ok")
    throw new StepError(
      `expected the ${what} to ${s.outcome === "fault" ? "fault" : "become a page request"}, it completed`,
    );
  ctx.note({ kind: "dma", device: s.device, text: `${what}: ok` });
  const land = landing(ctx, s.device, s.iova);
  if (s.op === "write" && land) {
    const back = ctx.p.readMemory(land.va, data.length);
    if (!back.every((b, i) => b === data[i])) {
      throw new StepError(`the write completed but ${land.name} does not hold the bytes written`);
    }
    return `${what} → landed in ${land.name}`;
  }
  return `${what} → ok${read ? ` [${[...read].map((b) => b.toString(16).padStart(2, "0")).join(" ")}]` : ""}`;
};
