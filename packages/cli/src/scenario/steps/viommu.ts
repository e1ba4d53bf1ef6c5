/** A vIOMMU for a guest: IOMMU_VIOMMU_ALLOC, IOMMU_VDEVICE_ALLOC (the device's virtual ID), IOMMU_VEVENTQ_ALLOC. */
import { describeIommuTopology } from "@iommu-sim/core";
import { IOMMU_VEVENTQ_TYPE_SELFTEST, IOMMU_VIOMMU_TYPE_SELFTEST } from "@iommu-sim/drivers-mock";
import {
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
} from "@iommu-sim/iommufd";
import type { RunContext } from "../context.js";
import { StepError } from "../context.js";
import { hex, type StepRunner } from "./types.js";

/** The uAPI vIOMMU and vEVENTQ types of each IOMMU kind (a kind that lands adds its row). */
export const VIOMMU_KINDS: Record<string, { viommu: number; veventq: number }> = {
  smmuv3: { viommu: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, veventq: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 },
  mock: { viommu: IOMMU_VIOMMU_TYPE_SELFTEST, veventq: IOMMU_VEVENTQ_TYPE_SELFTEST },
};

/** The kind of the IOMMU behind `device`. */
export function iommuKindOf(ctx: RunContext, device: string): string {
  const topo = describeIommuTopology(ctx.m);
  const name = topo.devices.find((d) => d.name === device)?.iommu;
  const kind = topo.iommus.find((i) => i.name === name)?.kind;
  if (!kind) throw new StepError(`${device} has no IOMMU`);
  return kind;
}

export const viommuAlloc: StepRunner<"viommu-alloc"> = async (ctx, s) => {
  const dev = ctx.device(s.device);
  const kind = iommuKindOf(ctx, s.device);
  const t = VIOMMU_KINDS[kind];
  if (!t) throw new StepError(`no vIOMMU type is known for ${kind} IOMMUs`);
  const cmd = {
    size: 0,
    flags: 0,
    type: t.viommu,
    dev_id: dev.devId,
    hwpt_id: ctx.object(s.hwpt, "hwpt").id,
    out_viommu_id: 0,
    data_len: 0,
    data_uptr: 0n,
  };
  await ctx.p.ioctl(ctx.fd, IOMMU_VIOMMU_ALLOC, cmd);
  ctx.objects.set(s.as, { kind: "viommu", id: cmd.out_viommu_id, iommuKind: kind });
  const base = ctx.hwptIoas.get(s.hwpt);
  if (base) ctx.hwptIoas.set(s.as, base);
  return `${kind} vIOMMU ${s.as} = id ${cmd.out_viommu_id} on ${s.hwpt}`;
};

export const vdeviceAlloc: StepRunner<"vdevice-alloc"> = async (ctx, s) => {
  const cmd = {
    size: 0,
    viommu_id: ctx.object(s.viommu, "viommu").id,
    dev_id: ctx.device(s.device).devId,
    out_vdevice_id: 0,
    virt_id: BigInt(s.virtId),
  };
  await ctx.p.ioctl(ctx.fd, IOMMU_VDEVICE_ALLOC, cmd);
  ctx.objects.set(s.as, { kind: "vdevice", id: cmd.out_vdevice_id });
  return `vDEVICE ${s.as} = id ${cmd.out_vdevice_id}: ${s.device} is virtual ID ${hex(s.virtId)} in ${s.viommu}`;
};

export const veventqAlloc: StepRunner<"veventq-alloc"> = async (ctx, s) => {
  const v = ctx.object(s.viommu, "viommu");
  const t = VIOMMU_KINDS[v.iommuKind ?? ""];
  if (!t) throw new StepError(`no vEVENTQ type is known for ${v.iommuKind}`);
  const cmd = {
    size: 0,
    flags: 0,
    viommu_id: v.id,
    type: t.veventq,
    veventq_depth: s.depth,
    out_veventq_id: 0,
    out_veventq_fd: 0,
    __reserved: 0,
  };
  await ctx.p.ioctl(ctx.fd, IOMMU_VEVENTQ_ALLOC, cmd);
  ctx.objects.set(s.as, { kind: "veventq", id: cmd.out_veventq_id, fd: cmd.out_veventq_fd });
  return `vEVENTQ ${s.as} = id ${cmd.out_veventq_id}, fd ${cmd.out_veventq_fd}, depth ${s.depth}`;
};
