/**
 * vEVENTQs: IOMMU_VEVENTQ_ALLOC errnos (one queue per type per vIOMMU), records read as header + payload with
 * sequence numbers, overflow (events dropped, a LOST_EVENTS header, a gap in the sequence), short reads; and a
 * fail-nth sweep over fault-queue and vEVENTQ allocation that must leave nothing behind.
 */
import { IOMMU_VEVENTQ_TYPE_SELFTEST, mockViommuReportVevent } from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import {
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_DEFAULT,
  IOMMUFD_OBJ,
  IOMMUFD_VEVENTQ_MAX_DEPTH,
  type IommufdViommu,
  iommufd_vevent_header,
  iommufdGetObject,
  iommufdPutObject,
  iommufdViommuReportEvent,
} from "../src/index.js";
import {
  bindMock,
  type Ev,
  evFinish,
  evSetup,
  faultAlloc,
  hwptAlloc,
  ioasAlloc,
  veventqAlloc,
  viommuRig,
} from "./eventq-env.js";

const HDR = iommufd_vevent_header.size;
const REC = HDR + 4;

function viommuOf(ev: Ev, id: number): IommufdViommu {
  const v = iommufdGetObject<IommufdViommu>(ev.ictx, id, IOMMUFD_OBJ.VIOMMU);
  iommufdPutObject(ev.ictx, v);
  return v;
}

/** Decode header + selftest payload records. */
function decode(bytes: Uint8Array) {
  const out: { flags: number; sequence: number; virtId?: number }[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = 0;
  while (off < bytes.length) {
    const flags = dv.getUint32(off, true);
    const sequence = dv.getUint32(off + 4, true);
    off += HDR;
    if (flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) {
      out.push({ flags, sequence });
      continue;
    }
    out.push({ flags, sequence, virtId: dv.getUint32(off, true) });
    off += 4;
  }
  return out;
}

describe("IOMMU_VEVENTQ_ALLOC", () => {
  it("errnos: flags/type EOPNOTSUPP, depth EINVAL, bad vIOMMU ENOENT, one queue per type EEXIST", async () => {
    const ev = await evSetup();
    const r = await viommuRig(ev);
    const T = IOMMU_VEVENTQ_TYPE_SELFTEST;
    await expect(veventqAlloc(ev, r.viommuId, T, 2, { flags: 1 })).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(veventqAlloc(ev, r.viommuId, T, 2, { __reserved: 1 })).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await expect(veventqAlloc(ev, r.viommuId, IOMMU_VEVENTQ_TYPE_DEFAULT, 2)).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await expect(veventqAlloc(ev, r.viommuId, T, 0)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(veventqAlloc(ev, r.viommuId, T, IOMMUFD_VEVENTQ_MAX_DEPTH + 1)).rejects.toMatchObject({
      code: "EINVAL",
    });
    await expect(veventqAlloc(ev, r.ioas, T, 2)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(veventqAlloc(ev, 9999, T, 2)).rejects.toMatchObject({ code: "ENOENT" });
    const q = await veventqAlloc(ev, r.viommuId, T, IOMMUFD_VEVENTQ_MAX_DEPTH);
    expect(ev.p.files.lookup(q.fd)?.name).toBe("anon_inode:[iommufd-viommu-event]");
    await expect(veventqAlloc(ev, r.viommuId, T, 2)).rejects.toMatchObject({ code: "EEXIST" });
    // Another type is fine.
    const q2 = await veventqAlloc(ev, r.viommuId, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 2);
    // The queue holds the vIOMMU; its file holds the queue.
    await expect(ev.ioctl(IOMMU_DESTROY, { size: 0, id: r.viommuId })).rejects.toMatchObject({ code: "EBUSY" });
    await expect(ev.ioctl(IOMMU_DESTROY, { size: 0, id: q.id })).rejects.toMatchObject({ code: "EBUSY" });
    await ev.p.close(q.fd);
    await ev.ioctl(IOMMU_DESTROY, { size: 0, id: q.id });
    // The type is free again.
    const q3 = await veventqAlloc(ev, r.viommuId, T, 2);
    expect(q3.id).toBe(q.id);
    void q2;
    await evFinish(ev);
  });
});

describe("vEVENTQ delivery", () => {
  it("keeps order and sequence numbers; reads whole records; EINVAL for a read too small", async () => {
    const ev = await evSetup();
    const r = await viommuRig(ev);
    const q = await veventqAlloc(ev, r.viommuId, IOMMU_VEVENTQ_TYPE_SELFTEST, 8);
    const v = viommuOf(ev, r.viommuId);
    // No queue of another type: EOPNOTSUPP for the driver.
    await expect(iommufdViommuReportEvent(v, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, new Uint8Array(4))).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    expect((await ev.p.read(q.fd, REC)).length).toBe(0);
    for (const id of [0x11, 0x22, 0x33]) await mockViommuReportVevent(v, id);
    await expect(ev.p.read(q.fd, 0)).rejects.toMatchObject({ code: "EINVAL" });
    await expect(ev.p.read(q.fd, REC - 1)).rejects.toMatchObject({ code: "EINVAL" });
    // Two records fit in 2.5 records' worth.
    let recs = decode(await ev.p.read(q.fd, 2 * REC + 6));
    expect(recs).toEqual([
      { flags: 0, sequence: 0, virtId: 0x11 },
      { flags: 0, sequence: 1, virtId: 0x22 },
    ]);
    recs = decode(await ev.p.read(q.fd, 10 * REC));
    expect(recs).toEqual([{ flags: 0, sequence: 2, virtId: 0x33 }]);
    await mockViommuReportVevent(v, 0x44);
    expect(decode(await ev.p.read(q.fd, REC))).toEqual([{ flags: 0, sequence: 3, virtId: 0x44 }]);
    await evFinish(ev);
  });

  it("overflow: events beyond the depth are dropped behind one LOST_EVENTS header, with a sequence gap", async () => {
    const ev = await evSetup();
    const r = await viommuRig(ev);
    const q = await veventqAlloc(ev, r.viommuId, IOMMU_VEVENTQ_TYPE_SELFTEST, 2);
    const v = viommuOf(ev, r.viommuId);
    for (let i = 1; i <= 5; i++) await mockViommuReportVevent(v, i);
    // e1 seq0, e2 seq1, then three drops: the lost header takes 2, then 3, then 4 (only the last shows).
    const recs = decode(await ev.p.read(q.fd, 10 * REC));
    expect(recs).toEqual([
      { flags: 0, sequence: 0, virtId: 1 },
      { flags: 0, sequence: 1, virtId: 2 },
      { flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence: 4 },
    ]);
    // Room again: the next event continues the sequence.
    await mockViommuReportVevent(v, 6);
    expect(decode(await ev.p.read(q.fd, REC))).toEqual([{ flags: 0, sequence: 5, virtId: 6 }]);
    // A lost-events header alone reads in a header's worth; a new event replaces it at the tail.
    for (let i = 7; i <= 9; i++) await mockViommuReportVevent(v, i);
    expect(decode(await ev.p.read(q.fd, REC))).toEqual([{ flags: 0, sequence: 6, virtId: 7 }]);
    expect(decode(await ev.p.read(q.fd, REC))).toEqual([{ flags: 0, sequence: 7, virtId: 8 }]);
    expect(decode(await ev.p.read(q.fd, HDR))).toEqual([{ flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS, sequence: 8 }]);
    expect((await ev.p.read(q.fd, REC)).length).toBe(0);
    await evFinish(ev);
  });

  it("a selftest-style reader sees EOVERFLOW from the gap (test_err_read_vevents)", async () => {
    const ev = await evSetup();
    const r = await viommuRig(ev);
    const q = await veventqAlloc(ev, r.viommuId, IOMMU_VEVENTQ_TYPE_SELFTEST, 2);
    const v = viommuOf(ev, r.viommuId);
    let prev = -1;
    const readVevents = async (n: number, virtId: number) => {
      const recs = decode(await ev.p.read(q.fd, n * REC));
      for (const h of recs) {
        if (h.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS || h.sequence - prev > 1) {
          prev = h.sequence;
          return "EOVERFLOW";
        }
        prev = h.sequence;
        if (h.virtId !== virtId) return "EINVAL";
      }
      return 0;
    };
    await mockViommuReportVevent(v, 0x99);
    expect(await readVevents(1, 0x99)).toBe(0);
    await mockViommuReportVevent(v, 0x99);
    await mockViommuReportVevent(v, 0x99);
    expect(await readVevents(2, 0x99)).toBe(0);
    for (let i = 0; i < 3; i++) await mockViommuReportVevent(v, 0x99);
    expect(await readVevents(3, 0x99)).toBe("EOVERFLOW");
    await evFinish(ev);
  });
});

describe("fail_nth: fault queue and vEVENTQ allocation", () => {
  async function sweep(
    path: (ev: Ev, st: Record<string, number>) => Promise<void>,
    prep?: (ev: Ev) => Promise<Record<string, number>>,
  ) {
    let n = 1;
    for (; n <= 100; n++) {
      const ev = await evSetup();
      const st = prep ? await prep(ev) : {};
      ev.m.faults.reset();
      ev.m.faults.failNth(n);
      try {
        await path(ev, st);
      } catch (e) {
        expect((e as { code?: string }).code, String(e)).toMatch(/^E[A-Z0-9]+$/);
      }
      const consumed = ev.m.faults.nthConsumed;
      ev.m.faults.reset();
      await evFinish(ev);
      if (!consumed) return n;
    }
    return n;
  }

  it("IOMMU_FAULT_QUEUE_ALLOC + fault-capable HWPT", async () => {
    const runs = await sweep(
      async (ev, st) => {
        const f = await faultAlloc(ev);
        await hwptAlloc(ev, st.idevId!, st.ioas!, IOMMU_HWPT_FAULT_ID_VALID, f.id);
      },
      async (ev) => {
        const ioas = await ioasAlloc(ev);
        const md = await bindMock(ev, ioas, "mock-t1");
        return { ioas, idevId: md.idevId };
      },
    );
    expect(runs).toBeGreaterThan(2);
    expect(runs).toBeLessThan(100);
  });

  it("IOMMU_VEVENTQ_ALLOC and reporting", async () => {
    const runs = await sweep(
      async (ev, st) => {
        const q = await veventqAlloc(ev, st.viommuId!, IOMMU_VEVENTQ_TYPE_SELFTEST, 4);
        const v = viommuOf(ev, st.viommuId!);
        await mockViommuReportVevent(v, 1);
        await ev.p.read(q.fd, 4 * REC);
      },
      async (ev) => ({ viommuId: (await viommuRig(ev)).viommuId }),
    );
    expect(runs).toBeGreaterThan(2);
    expect(runs).toBeLessThan(100);
  });

  it("a failed fault alloc leaves no fd and no object", async () => {
    const ev = await evSetup();
    ev.m.faults.failNth(1);
    await expect(ev.ioctl(IOMMU_FAULT_QUEUE_ALLOC, { size: 0, flags: 0 })).rejects.toMatchObject({ code: "ENOMEM" });
    ev.m.faults.reset();
    const f = await faultAlloc(ev);
    expect(f.fd).toBe(ev.fd + 1);
    await evFinish(ev);
  });
});
