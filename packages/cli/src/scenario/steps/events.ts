/**
 * What comes back up from the hardware: page requests read from a fault queue and answered (after mapping the
 * missing page, as a VMM that populates memory on demand does), and vEVENTQ records a vIOMMU's guest sees.
 */
import {
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  ioasMap,
  iommu_hwpt_page_response,
  iommu_hwpt_pgfault,
} from "@iommu-sim/iommufd";
import type { RunContext } from "../context.js";
import { StepError } from "../context.js";
import { hex, type StepRunner } from "./types.js";

const PAGE = 4096;

/** Let the drivers' threaded IRQ handlers run (event queues, fault queues, IOPF work). */
export async function settle(ctx: RunContext): Promise<void> {
  await ctx.m.scheduler.runUntilIdle();
}

interface Pgfault {
  flags: number;
  dev_id: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
  length: number;
  cookie: number;
}

/** Read every pending page request from a fault queue, optionally map each page, then answer each group. */
export const pageRequests: StepRunner<"page-requests"> = async (ctx, s) => {
  const q = ctx.object(s.queue, "fault");
  if (q.fd === undefined) throw new StepError(`${s.queue}'s file is closed`);
  await settle(ctx);
  const size = iommu_hwpt_pgfault.size;
  const bytes = await ctx.p.read(q.fd, 64 * size);
  const recs: Pgfault[] = [];
  for (let off = 0; off + size <= bytes.length; off += size) {
    recs.push(iommu_hwpt_pgfault.decode(bytes.subarray(off, off + size)) as unknown as Pgfault);
  }
  if (s.count !== undefined && recs.length !== s.count) {
    throw new StepError(`expected ${s.count} page requests, read ${recs.length}`);
  }
  const mapped: string[] = [];
  if (s.mapIn) {
    const ioas = ctx.object(s.mapIn, "ioas");
    for (const r of recs) {
      const iova = Number(r.addr) - (Number(r.addr) % PAGE);
      const va = ctx.p.mmap(PAGE);
      await ioasMap(ctx.p, ctx.fd, {
        ioasId: ioas.id,
        userVa: va,
        length: PAGE,
        iova,
        access: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      });
      ctx.regions.set(`${s.queue}@${hex(iova)}`, { ioas: s.mapIn, iova, size: PAGE, va });
      mapped.push(hex(iova));
    }
  }
  const code = s.respond === "success" ? IOMMUFD_PAGE_RESP_SUCCESS : IOMMUFD_PAGE_RESP_INVALID;
  const cookies = [...new Set(recs.map((r) => r.cookie))];
  const rsize = iommu_hwpt_page_response.size;
  const out = new Uint8Array(cookies.length * rsize);
  cookies.forEach((cookie, i) => {
    out.set(iommu_hwpt_page_response.encode({ cookie, code } as never), i * rsize);
  });
  if (cookies.length > 0) await ctx.p.write(q.fd, out);
  for (const r of recs) {
    ctx.note({
      kind: "page-request",
      device: ctx.labelOf(r.dev_id) ?? `dev_id ${r.dev_id}`,
      text: `read from ${s.queue}: ${hex(r.addr)} grpid ${r.grpid}`,
    });
  }
  if (cookies.length > 0) {
    ctx.note({ kind: "page-response", text: `${cookies.length} group(s) answered ${s.respond.toUpperCase()}` });
  }
  const list = recs.map((r) => `${hex(r.addr)}(dev_id ${r.dev_id}, grpid ${r.grpid})`).join(", ");
  return `${recs.length} page request(s) ${list}${mapped.length ? `; mapped ${mapped.join(", ")}` : ""}; answered ${s.respond.toUpperCase()}`;
};

const VEVENT_HDR = 8;

/** Read the records a vEVENTQ holds: header (flags, sequence) and the vendor's event; check the virtual IDs. */
export const veventqRead: StepRunner<"veventq-read"> = async (ctx, s) => {
  const q = ctx.object(s.queue, "veventq");
  if (q.fd === undefined) throw new StepError(`${s.queue}'s file is closed`);
  await settle(ctx);
  const bytes = await ctx.p.read(q.fd, 64 * 64);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // SMMUv3 records: an 8-byte header and the 32-byte event with the vSID in word 1.
  const recSize = VEVENT_HDR + 32;
  const recs: { seq: number; id: number; vsid: number; addr: number }[] = [];
  for (let off = 0; off + recSize <= bytes.length; off += recSize) {
    recs.push({
      seq: dv.getUint32(off + 4, true),
      id: dv.getUint32(off + VEVENT_HDR, true) & 0xff,
      vsid: dv.getUint32(off + VEVENT_HDR + 4, true),
      addr: dv.getUint32(off + VEVENT_HDR + 16, true) + dv.getUint32(off + VEVENT_HDR + 20, true) * 2 ** 32,
    });
  }
  if (s.count !== undefined && recs.length !== s.count) {
    throw new StepError(`expected ${s.count} vEVENTQ records, read ${recs.length}`);
  }
  if (s.virtId !== undefined) {
    const bad = recs.find((r) => r.vsid !== s.virtId);
    if (bad) throw new StepError(`a record names virtual ID ${hex(bad.vsid)}, expected ${hex(s.virtId)}`);
  }
  for (const r of recs) {
    ctx.note({
      kind: "vevent",
      text: `${s.queue} seq ${r.seq}: event 0x${r.id.toString(16)} vSID ${hex(r.vsid)} at ${hex(r.addr)}`,
    });
  }
  return `${recs.length} record(s): ${recs.map((r) => `event 0x${r.id.toString(16)} vSID ${hex(r.vsid)} iova ${hex(r.addr)}`).join(", ") || "none"}`;
};
