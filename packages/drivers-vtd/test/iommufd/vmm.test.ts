/**
 * The VT-d driver under iommufd, as a VMM uses it: IOMMU_GET_HW_INFO returns `struct iommu_hw_info_vtd` (CAP and
 * ECAP); a nested HWPT from IOMMU_HWPT_DATA_VTD_S1 on a second-stage nest parent translates through the guest's
 * first-stage tables in guest RAM; IOMMU_HWPT_INVALIDATE with IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 entries makes a
 * guest PTE change visible and writes back entry_num after a partial failure; dirty tracking through
 * IOMMU_HWPT_SET_DIRTY_TRACKING / IOMMU_HWPT_GET_DIRTY_BITMAP.
 */
import { createMachine, defaultPlatformInput, type Machine, type Process, parsePlatform } from "@iommu-sim/core";
import {
  getHwInfo,
  hwptAlloc,
  hwptGetDirtyBitmap,
  hwptSetDirtyTracking,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  ioasAlloc,
  ioasMap,
  iommufdModule,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";
import { faultQueueAlloc, readFaults, writeFaultResponse } from "@iommu-sim/testkit";
import { afterEach, describe, expect, it } from "vitest";
import {
  createIntelIommuDriver,
  type IntelIommu,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  type VtdHw,
  vtdHardwareKind,
  vtdHw,
} from "../../src/index.js";

const PAGE = 4096;
const GPA_BASE = 0x4000_0000;
const GUEST_PAGES = 16;
/** Guest-RAM pages: the guest's first-stage tables (4-level from PML4, 5-level from PML5) and two data pages. */
const G = { PML4: 0, PDPT: 1, PD: 2, PT: 3, PML5: 4, DATA_A: 5, DATA_B: 6 } as const;
const GIOVA = 0x1000_0000;

interface Vmm {
  m: Machine;
  mod: ReturnType<typeof createIntelIommuDriver>;
  p: Process;
  hw: VtdHw;
  iommufd: number;
  devfd: number;
  devId: number;
  ioas: number;
  ram: bigint;
}

const live: Machine[] = [];
afterEach(async () => {
  for (const m of live.splice(0)) await m.teardown();
});

async function vmm(dev = "nvme0", hw: Record<string, unknown> = { strict: true }): Promise<Vmm> {
  const input = defaultPlatformInput();
  const v = input.iommus!.find((i) => i.name === "vtd0")!;
  v.options = { ...(v.options ?? {}), ...hw };
  const mod = createIntelIommuDriver({ hardware: [vtdHardwareKind] });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod, iommufdModule], seed: 1 });
  live.push(m);
  await m.boot();
  const p = m.spawnProcess();
  const iommufd = await p.open("/dev/iommu");
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor(dev)!)!.path);
  const devId = await vfioDeviceBindIommufd(p, devfd, iommufd);
  const ioas = await ioasAlloc(p, iommufd);
  const ram = p.mmap(GUEST_PAGES * PAGE);
  await ioasMap(p, iommufd, { ioasId: ioas, userVa: ram, length: GUEST_PAGES * PAGE, iova: GPA_BASE });
  return { m, mod, p, hw: m.dma.modelFor("vtd0") as VtdHw, iommufd, devfd, devId, ioas, ram };
}

const gpa = (page: number) => GPA_BASE + page * PAGE;

function write64(v: Vmm, at: number, val: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, val, true);
  v.p.writeMemory(v.ram + BigInt(at - GPA_BASE), b);
}

/** The guest's x86-64 tables mapping GIOVA to `page` (tables P|RW|US|A, leaf also D); 5-level tables add a PML5. */
function guestBuild(v: Vmm, page: number, levels = 4): void {
  const idx = (l: number) => Math.floor(GIOVA / 2 ** (12 + 9 * (l - 1))) % 512;
  if (levels === 5) write64(v, gpa(G.PML5) + 8 * idx(5), BigInt(gpa(G.PML4)) | 0x27n);
  write64(v, gpa(G.PML4) + 8 * idx(4), BigInt(gpa(G.PDPT)) | 0x27n);
  write64(v, gpa(G.PDPT) + 8 * idx(3), BigInt(gpa(G.PD)) | 0x27n);
  write64(v, gpa(G.PD) + 8 * idx(2), BigInt(gpa(G.PT)) | 0x27n);
  write64(v, gpa(G.PT) + 8 * idx(1), BigInt(gpa(page)) | 0x67n);
}

function s1Data(v: Vmm, flags: bigint, pgtbl: number, addrWidth: number): { uptr: bigint; len: number } {
  const b = new Uint8Array(24);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, flags, true);
  dv.setBigUint64(8, BigInt(pgtbl), true);
  dv.setUint32(16, addrWidth, true);
  const va = v.p.mmap(PAGE);
  v.p.writeMemory(va, b);
  return { uptr: va, len: 24 };
}

/** IOMMU_HWPT_INVALIDATE with `struct iommu_hwpt_vtd_s1_invalidate` entries. */
async function invalidate(v: Vmm, hwptId: number, ents: { addr: bigint; npages: bigint; flags?: number }[]) {
  const b = new Uint8Array(24 * ents.length);
  const dv = new DataView(b.buffer);
  ents.forEach((e, i) => {
    dv.setBigUint64(24 * i, e.addr, true);
    dv.setBigUint64(24 * i + 8, e.npages, true);
    dv.setUint32(24 * i + 16, e.flags ?? 0, true);
  });
  const va = v.p.mmap(PAGE);
  v.p.writeMemory(va, b);
  const cmd = {
    size: 0,
    hwpt_id: hwptId,
    data_uptr: va,
    data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
    entry_len: 24,
    entry_num: ents.length,
    __reserved: 0,
  };
  let err: unknown;
  try {
    await v.p.ioctl(v.iommufd, IOMMU_HWPT_INVALIDATE, cmd);
  } catch (e) {
    err = e;
  }
  return { cmd, err };
}

describe("iommufd over VT-d", () => {
  it("IOMMU_GET_HW_INFO: struct iommu_hw_info_vtd with the CAP and ECAP registers", async () => {
    const v = await vmm();
    const info = await getHwInfo(v.p, v.iommufd, v.devId);
    expect(info.dataType).toBe(IOMMU_HW_INFO_TYPE_INTEL_VTD);
    expect(info.dataLen).toBe(24);
    const dv = new DataView(info.data.buffer, info.data.byteOffset, 24);
    // flags: Linux reports ERRATA_772415_SPR17 on every unit (nest parents refuse read-only mappings).
    expect(dv.getUint32(0, true)).toBe(IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17);
    expect(dv.getBigUint64(8, true)).toBe(v.m.mmio.read64(0xfed90000 + 0x08));
    expect(dv.getBigUint64(16, true)).toBe(v.m.mmio.read64(0xfed90000 + 0x10));
    expect(info.capabilities & IOMMU_HW_CAP_DIRTY_TRACKING).toBe(IOMMU_HW_CAP_DIRTY_TRACKING);
    expect(info.maxPasidLog2).toBe(20);
  });

  it.each([
    { name: "4-level guest over a 4-level second stage", hw: {}, s1: 4, s2: 4 },
    { name: "4-level guest over a 5-level second stage", hw: { sagaw: [4, 5] }, s1: 4, s2: 5 },
    { name: "5-level guest over a 5-level second stage", hw: { sagaw: [4, 5], fl5lp: true }, s1: 5, s2: 5 },
  ])("nested HWPT ($name): user invalidation makes a guest PTE change visible", async ({ hw, s1, s2 }) => {
    const v = await vmm("nvme0", { strict: true, ...hw });
    const parent = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    guestBuild(v, G.DATA_A, s1);
    const d = s1Data(v, 0n, gpa(s1 === 5 ? G.PML5 : G.PML4), s1 === 5 ? 57 : 48);
    const nested = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: parent,
      dataType: IOMMU_HWPT_DATA_VTD_S1,
      dataUptr: d.uptr,
      dataLen: d.len,
    });
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    const ep = v.m.device("nvme0");
    ep.dmaWrite(GIOVA + 8, Uint8Array.of(1, 2, 3, 4));
    expect(v.p.readMemory(v.ram + BigInt(G.DATA_A * PAGE + 8), 4)).toEqual(Uint8Array.of(1, 2, 3, 4));
    // The unit's PASID entry: nested, with the guest's paging mode and the parent's second-stage width; the
    // independent decoder walks the same path to the same byte.
    const path = vtdHw.decodeVtdTranslation({
      memory: v.m.memory,
      readReg: (off) => v.m.mmio.read32(0xfed90000 + off),
      requesterId: ep.route.requesterId,
      pasid: -1,
      iova: GIOVA + 8,
    });
    expect(path.levels.find((l) => l.name === "PASID entry")!.fields).toMatchObject({
      PGTT: "nested",
      FSPM: `${s1 - 4} (${s1}-level)`,
      AW: `${s2 - 2} (${s2}-level)`,
    });
    expect(path.levels.filter((l) => l.name.startsWith("FS L"))).toHaveLength(s1);
    expect(path.levels.filter((l) => l.name.startsWith("SS L"))).toHaveLength(s2);
    expect(v.m.memory.readBytes(path.result.pa!, 4)).toEqual(Uint8Array.of(1, 2, 3, 4));
    // The guest remaps GIOVA; until it invalidates, the unit may keep using the old translation.
    guestBuild(v, G.DATA_B, s1);
    const r = await invalidate(v, nested, [{ addr: BigInt(GIOVA), npages: 1n }]);
    expect(r.err).toBeUndefined();
    expect(r.cmd.entry_num).toBe(1);
    ep.dmaWrite(GIOVA + 8, Uint8Array.of(5, 6, 7, 8));
    expect(v.p.readMemory(v.ram + BigInt(G.DATA_B * PAGE + 8), 4)).toEqual(Uint8Array.of(5, 6, 7, 8));
    // A bad second entry: the first is handled, entry_num says so.
    const bad = await invalidate(v, nested, [
      { addr: BigInt(GIOVA), npages: 1n },
      { addr: BigInt(GIOVA), npages: 1n, flags: 0x80 },
    ]);
    expect(bad.err).toMatchObject({ code: "EOPNOTSUPP" });
    expect(bad.cmd.entry_num).toBe(1);
    const unaligned = await invalidate(v, nested, [{ addr: BigInt(GIOVA + 8), npages: 1n }]);
    expect(unaligned.err).toMatchObject({ code: "EINVAL" });
    expect(unaligned.cmd.entry_num).toBe(0);
    const all = await invalidate(v, nested, [{ addr: 0n, npages: 2n ** 64n - 1n }]);
    expect(all.err).toBeUndefined();
    expect(v.hw.stats.staleReports).toBe(0);
  });

  it("nested HWPT data is validated: type, flags, and the address width at attach", async () => {
    const v = await vmm();
    const parent = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const flagsBad = s1Data(v, 1n << 5n, gpa(G.PML4), 48);
    await expect(
      hwptAlloc(v.p, v.iommufd, {
        devId: v.devId,
        ptId: parent,
        dataType: IOMMU_HWPT_DATA_VTD_S1,
        dataUptr: flagsBad.uptr,
        dataLen: 24,
      }),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    // A paging (not nest-parent) HWPT cannot be a parent.
    const plain = await hwptAlloc(v.p, v.iommufd, { devId: v.devId, ptId: v.ioas });
    const ok = s1Data(v, 0n, gpa(G.PML4), 48);
    await expect(
      hwptAlloc(v.p, v.iommufd, {
        devId: v.devId,
        ptId: plain,
        dataType: IOMMU_HWPT_DATA_VTD_S1,
        dataUptr: ok.uptr,
        dataLen: 24,
      }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    const aw = s1Data(v, 0n, gpa(G.PML4), 40);
    const nested = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: parent,
      dataType: IOMMU_HWPT_DATA_VTD_S1,
      dataUptr: aw.uptr,
      dataLen: 24,
    });
    await expect(vfioDeviceAttachPt(v.p, v.devfd, nested)).rejects.toMatchObject({ code: "EINVAL" });
  });

  it("dirty tracking through iommufd: set tracking, DMA writes, the bitmap shows the written pages", async () => {
    const v = await vmm();
    const hwpt = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    });
    await vfioDeviceAttachPt(v.p, v.devfd, hwpt);
    await hwptSetDirtyTracking(v.p, v.iommufd, hwpt, true);
    const ep = v.m.device("nvme0");
    ep.dmaWrite(gpa(3) + 100, Uint8Array.of(9));
    ep.dmaWrite(gpa(9), Uint8Array.of(9));
    ep.dmaRead(gpa(4), 4);
    const bitmap = v.p.mmap(PAGE);
    await hwptGetDirtyBitmap(v.p, v.iommufd, {
      hwptId: hwpt,
      iova: GPA_BASE,
      length: GUEST_PAGES * PAGE,
      pageSize: PAGE,
      data: bitmap,
    });
    const bits = new DataView(v.p.readMemory(bitmap, 8).buffer).getBigUint64(0, true);
    expect(bits).toBe((1n << 3n) | (1n << 9n));
    await hwptSetDirtyTracking(v.p, v.iommufd, hwpt, false);
    expect(v.hw.stats.staleReports).toBe(0);
  });
  it("page requests through an iommufd fault queue: read(2) the fault, write(2) the response, the device gets it", async () => {
    const v = await vmm();
    const fq = await faultQueueAlloc(v.p, v.iommufd);
    const hwpt = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId: fq.id,
    });
    await vfioDeviceAttachPt(v.p, v.devfd, hwpt);
    const ep = v.m.device("nvme0");
    const iommu = v.mod.instanceFor(v.m, "vtd0") as IntelIommu;
    const descs: number[][] = [];
    v.hw.onDescriptor = (w) => descs.push([...w.slice(0, 4)]);
    // A two-request group: the first is not the last of its group, the second is; both wait in the PRQ.
    expect(ep.pageRequest({ addr: gpa(20), read: true, grpid: 3, last: false })).toBe(true);
    expect(ep.pageRequest({ addr: gpa(21) + 0x10, write: true, grpid: 3, last: true })).toBe(true);
    await iommu.drainPrq();
    const faults = await readFaults(v.p, fq.fd);
    expect(faults).toHaveLength(2);
    expect(faults.map((f) => [f.addr, f.grpid, f.dev_id])).toEqual([
      [BigInt(gpa(20)), 3, v.devId],
      [BigInt(gpa(21)), 3, v.devId],
    ]);
    expect(faults[1]!.flags & 2).toBe(2); // IOMMU_PGFAULT_FLAGS_LAST_PAGE
    expect(ep.pageResponses()).toEqual([]); // no answer before the VMM's
    await writeFaultResponse(v.p, fq.fd, faults[1]!.cookie, 0);
    // One page group response descriptor (type 0x9) for RID 0x100, PRG index 3, success.
    const resp = descs.filter((w) => (w[0]! & 0xf) === 0x9);
    expect(resp).toHaveLength(1);
    expect((resp[0]![0]! >>> 16) & 0xffff).toBe(0x100);
    expect((resp[0]![0]! >>> 12) & 0xf).toBe(0);
    expect((resp[0]![2]! >>> 3) & 0x1ff).toBe(3);
    expect(ep.pageResponses()).toEqual([{ requesterId: 0x100, pasid: -1, grpid: 3, code: 0, auto: false }]);
    // A request the VMM answers "invalid".
    ep.pageRequest({ addr: gpa(22), read: true, grpid: 4 });
    await iommu.drainPrq();
    const [f2] = await readFaults(v.p, fq.fd);
    await writeFaultResponse(v.p, fq.fd, f2!.cookie, 1);
    expect(ep.pageResponses().at(-1)).toMatchObject({ grpid: 4, code: 1, auto: false });
    v.hw.onDescriptor = undefined;
  });
});
