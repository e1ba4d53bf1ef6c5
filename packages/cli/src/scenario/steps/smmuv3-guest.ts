/**
 * A guest on an SMMUv3 vIOMMU, as a VMM runs one: the guest's driver writes its CD table and stage-1 page tables
 * (4 KiB granule, 39-bit VA, levels 1-3) into guest RAM, and its vSTE (stage 1, the CD table's IPA) becomes a
 * nested HWPT on the vIOMMU; later the guest moves a page and invalidates it with TLBI_NH_VA through
 * IOMMU_HWPT_INVALIDATE. Guest RAM is a region mapped in the nesting parent's IOAS (IPA = IOVA).
 */
import {
  CMDQ_OP,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  LPAE_MAIR,
  makeS1Cd,
  STE,
  STE_VAL,
} from "@iommu-sim/drivers-smmuv3";
import { hwptAlloc, IOMMU_HWPT_INVALIDATE } from "@iommu-sim/iommufd";
import type { Region, RunContext } from "../context.js";
import { StepError } from "../context.js";
import { hex, type StepRunner } from "./types.js";

const PAGE = 4096;
/** Guest-RAM pages the guest driver uses for its structures; its data pages start at DATA. */
const G = { CD: 0, L1: 1, L2: 2, L3: 3, DATA: 5 } as const;

/** An SMMUv3 guest's layout, kept under its name in the run context. */
export interface Smmuv3Guest {
  kind: "smmuv3";
  viommu: string;
  ram: string;
  giova: number;
  asid: number;
  hwpt: number;
  /** The guest-RAM page its IOVA maps now. */
  page: number;
}

function write64(ctx: RunContext, r: Region, ipa: number, val: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, val, true);
  ctx.p.writeMemory(r.va + BigInt(ipa - r.iova), b);
}

/** A stage-1 4 KiB page descriptor as a guest's io-pgtable writes it: RW, WBWA, inner shareable, AF, nG. */
function s1PagePte(outIpa: number): bigint {
  return BigInt(outIpa) | 3n | (1n << 2n) | (1n << 6n) | (3n << 8n) | (1n << 10n) | (1n << 11n);
}

function l3Slot(r: Region, giova: number): number {
  return r.iova + G.L3 * PAGE + 8 * (Math.floor(giova / PAGE) % 512);
}

export const smmuv3Guest: StepRunner<"smmuv3-guest"> = async (ctx, s) => {
  const r = ctx.region(s.ram);
  if (r.size < (G.DATA + 2) * PAGE)
    throw new StepError(`${s.ram} is too small for a guest (${(G.DATA + 2) * 4} KiB at least)`);
  const ipa = (pg: number) => r.iova + pg * PAGE;
  for (const pg of [G.CD, G.L1, G.L2, G.L3]) ctx.p.writeMemory(r.va + BigInt(pg * PAGE), new Uint8Array(PAGE));
  write64(ctx, r, ipa(G.L1) + 8 * (Math.floor(s.iova / 2 ** 30) % 512), BigInt(ipa(G.L2)) | 3n);
  write64(ctx, r, ipa(G.L2) + 8 * (Math.floor(s.iova / 2 ** 21) % 512), BigInt(ipa(G.L3)) | 3n);
  write64(ctx, r, l3Slot(r, s.iova), s1PagePte(ipa(G.DATA)));
  const cd = makeS1Cd(
    {
      asid: s.asid,
      cfg: { tcr: { tsz: 64 - 39, tg: 0, irgn: 1, orgn: 1, sh: 3, ips: 2 }, ttbr: ipa(G.L1), mair: LPAE_MAIR },
      hd: false,
    },
    false,
  );
  for (let i = 0; i < 8; i++) write64(ctx, r, ipa(G.CD) + 8 * i, cd[i]!);
  // The vSTE: valid, stage-1 translate, the CD table at its IPA.
  const vste = new Uint8Array(16);
  new DataView(vste.buffer).setBigUint64(
    0,
    STE.V.mask | (BigInt(STE_VAL.CFG_S1_TRANS) << 1n) | BigInt(ipa(G.CD)),
    true,
  );
  const uptr = ctx.p.mmap(PAGE);
  ctx.p.writeMemory(uptr, vste);
  const id = await hwptAlloc(ctx.p, ctx.fd, {
    devId: ctx.device(s.device).devId,
    ptId: ctx.object(s.viommu, "viommu").id,
    dataType: IOMMU_HWPT_DATA_ARM_SMMUV3,
    dataUptr: uptr,
    dataLen: vste.length,
  });
  ctx.p.munmap(uptr, PAGE);
  ctx.objects.set(s.as, { kind: "hwpt", id });
  const guest: Smmuv3Guest = {
    kind: "smmuv3",
    viommu: s.viommu,
    ram: s.ram,
    giova: s.iova,
    asid: s.asid,
    hwpt: id,
    page: G.DATA,
  };
  ctx.guests.set(s.as, guest);
  return `guest CD (ASID ${s.asid}) and stage 1 in ${s.ram}: IOVA ${hex(s.iova)} → IPA ${hex(ipa(G.DATA))}; nested HWPT ${s.as} = id ${id}`;
};

/** The guest points its IOVA at another guest page, then (unless told not to) invalidates it with TLBI_NH_VA. */
export const smmuv3GuestRemap: StepRunner<"smmuv3-guest-remap"> = async (ctx, s) => {
  const g = ctx.guests.get(s.guest) as Smmuv3Guest | undefined;
  if (g?.kind !== "smmuv3") throw new StepError(`${s.guest} is not an SMMUv3 guest`);
  const r = ctx.region(g.ram);
  const outIpa = r.iova + s.page * PAGE;
  if (outIpa + PAGE > r.iova + r.size) throw new StepError(`page ${s.page} is outside ${g.ram}`);
  write64(ctx, r, l3Slot(r, g.giova), s1PagePte(outIpa));
  g.page = s.page;
  if (!s.invalidate) return `guest IOVA ${hex(g.giova)} → IPA ${hex(outIpa)} (no invalidation: the IOTLB may be stale)`;
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, CMDQ_OP.TLBI_NH_VA, true);
  dv.setUint32(4, (g.asid << 16) >>> 0, true);
  dv.setUint32(8, ((g.giova % 2 ** 32) & 0xfffff000) | 1, true);
  dv.setUint32(12, Math.floor(g.giova / 2 ** 32), true);
  const uptr = ctx.p.mmap(PAGE);
  ctx.p.writeMemory(uptr, b);
  const cmd = {
    size: 0,
    hwpt_id: ctx.object(g.viommu, "viommu").id,
    data_uptr: uptr,
    data_type: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
    entry_len: 16,
    entry_num: 1,
    __reserved: 0,
  };
  await ctx.p.ioctl(ctx.fd, IOMMU_HWPT_INVALIDATE, cmd);
  ctx.p.munmap(uptr, PAGE);
  return `guest IOVA ${hex(g.giova)} → IPA ${hex(outIpa)}; TLBI_NH_VA (ASID ${g.asid}) through IOMMU_HWPT_INVALIDATE: ${cmd.entry_num} handled`;
};
