/**
 * A VMM on the AMD driver through iommufd: dirty tracking on v1 HWPTs (HAD in the DTE, the D bit in the host PTE,
 * IOMMU_HWPT_GET_DIRTY_BITMAP) and EOPNOTSUPP without EFR.HDSup; nest-parent HWPTs, the AMD vIOMMU and nested
 * HWPTs from the guest DTE (`struct iommu_hwpt_amd_guest`), translating through the guest's GCR3 table and v2
 * tables and the parent's v1 table, with the guest-to-host domain ID map and the kernel's validation errno.
 */
import {
  createMachine,
  DmaFault,
  defaultPlatformInput,
  iommuGetDomainForDev,
  type Machine,
  type Process,
  parsePlatform,
  X86_64,
} from "@iommu-sim/core";
import {
  getHwInfo,
  hwptAlloc,
  hwptGetDirtyBitmap,
  hwptSetDirtyTracking,
  IOMMU_DESTROY,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  ioasMap,
  ioasUnmap,
  iommufdModule,
  vfioDeviceAttachPt,
} from "@iommu-sim/iommufd";
import { nestedHwptAlloc, openVmmSession, viommuAlloc } from "@iommu-sim/testkit";
import { afterEach, describe, expect, it } from "vitest";
import {
  type AmdHw,
  type AmdIommuModuleOptions,
  amdHardwareKind,
  amdIommuDriverState,
  createAmdIommuDriver,
  DTE_W,
  dteGet,
  IOMMU_HWPT_DATA_AMD_GUEST,
  IOMMU_VIOMMU_TYPE_AMD,
  type ProtectionDomain,
} from "../../src/index.js";

const PAGE = 4096;
const GPA_BASE = 0x4000_0000;
const RAM_PAGES = 16;
const GPU = 0x0100;
const GIOVA = 0x1000_0000;

interface Vmm {
  m: Machine;
  p: Process;
  hw: AmdHw;
  iommufd: number;
  devfd: number;
  devId: number;
  ioas: number;
  ram: bigint;
  dteOf(): number[];
}

const live: Machine[] = [];
afterEach(async () => {
  for (const m of live.splice(0)) await m.teardown();
});

async function vmm(hw: Record<string, unknown> = { strict: true }, driver: AmdIommuModuleOptions = {}): Promise<Vmm> {
  const input = defaultPlatformInput();
  const a = input.iommus!.find((i) => i.name === "amd0")!;
  a.options = { ...(a.options ?? {}), ...hw };
  const mod = createAmdIommuDriver({ hardware: [amdHardwareKind], ...driver });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod, iommufdModule], seed: 1 });
  live.push(m);
  await m.boot();
  const s = await openVmmSession(m, "amd-gpu0");
  const ram = s.p.mmap(RAM_PAGES * PAGE);
  await ioasMap(s.p, s.iommufd, { ioasId: s.ioas, userVa: ram, length: RAM_PAGES * PAGE, iova: GPA_BASE });
  const iommu = amdIommuDriverState(mod, m)!.units.get("amd0")!;
  return { ...s, m, hw: m.dma.modelFor("amd0") as AmdHw, ram, dteOf: () => iommu.readDte(GPU) };
}

function bitmapWord(v: Vmm, va: bigint): bigint {
  return new DataView(v.p.readMemory(va, 8).buffer).getBigUint64(0, true);
}

async function dirtyBits(v: Vmm, hwpt: number, flags = 0): Promise<bigint> {
  const bitmap = v.p.mmap(PAGE);
  await hwptGetDirtyBitmap(v.p, v.iommufd, {
    hwptId: hwpt,
    iova: GPA_BASE,
    length: RAM_PAGES * PAGE,
    pageSize: PAGE,
    data: bitmap,
    flags,
  });
  return bitmapWord(v, bitmap);
}

describe("dirty tracking", () => {
  it("HAD in the DTE while tracking; written pages are reported once and cleared", async () => {
    const v = await vmm();
    const info = await getHwInfo(v.p, v.iommufd, v.devId);
    expect(info.capabilities & BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)).not.toBe(0n);
    const hwpt = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    });
    await vfioDeviceAttachPt(v.p, v.devfd, hwpt);
    expect(dteGet(v.dteOf(), DTE_W.HAD)).toBe(0);
    await expect(dirtyBits(v, hwpt)).rejects.toMatchObject({ code: "EINVAL" }); // tracking is off
    await hwptSetDirtyTracking(v.p, v.iommufd, hwpt, true);
    expect(dteGet(v.dteOf(), DTE_W.HAD)).toBe(3);
    const ep = v.m.device("amd-gpu0");
    ep.dmaRead(GPA_BASE + 3 * PAGE, 4); // a read first: the cached translation must not let the write skip D
    ep.dmaWrite(GPA_BASE + 3 * PAGE + 100, Uint8Array.of(9));
    ep.dmaWrite(GPA_BASE + 9 * PAGE, Uint8Array.of(9));
    ep.dmaRead(GPA_BASE + 4 * PAGE, 4);
    expect(await dirtyBits(v, hwpt, 1)).toBe((1n << 3n) | (1n << 9n)); // NO_CLEAR
    expect(await dirtyBits(v, hwpt)).toBe((1n << 3n) | (1n << 9n));
    expect(await dirtyBits(v, hwpt)).toBe(0n);
    // D was cleared and the IOTLB flushed: the next write marks the page again.
    ep.dmaWrite(GPA_BASE + 9 * PAGE, Uint8Array.of(7));
    expect(await dirtyBits(v, hwpt)).toBe(1n << 9n);
    await hwptSetDirtyTracking(v.p, v.iommufd, hwpt, false);
    expect(dteGet(v.dteOf(), DTE_W.HAD)).toBe(0);
    ep.dmaWrite(GPA_BASE + 5 * PAGE, Uint8Array.of(7));
    expect(v.hw.stats.staleReports).toBe(0);
  });

  it("EOPNOTSUPP without EFR.HDSup (platform dirty: false), and on a HWPT allocated without the flag", async () => {
    const v = await vmm({ dirty: false });
    const info = await getHwInfo(v.p, v.iommufd, v.devId);
    expect(info.capabilities & BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)).toBe(0n);
    await expect(
      hwptAlloc(v.p, v.iommufd, { devId: v.devId, ptId: v.ioas, flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING }),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    const plain = await hwptAlloc(v.p, v.iommufd, { devId: v.devId, ptId: v.ioas });
    await expect(hwptSetDirtyTracking(v.p, v.iommufd, plain, true)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
  });
});

// ---- nesting ---------------------------------------------------------------------------------------------------

/** Guest RAM pages: the GCR3 table, the guest's 4-level v2 tables, two data pages. */
const G = { GCR3: 0, PML4: 1, PDPT: 2, PD: 3, PT: 4, DATA_A: 6, DATA_B: 7 } as const;

/**
 * The guest's memory layout: the model walks guest table pointers as system addresses (see the README), so the VMM
 * maps guest RAM a second time at GPA = its physical address and the guest keeps its tables there; data pages are
 * reached through GPA_BASE, so the final address does go through the parent's table.
 */
interface Guest {
  tableGpa(page: number): number;
  dataGpa(page: number): number;
}

async function guestLayout(v: Vmm, parent: number): Promise<Guest> {
  await vfioDeviceAttachPt(v.p, v.devfd, parent);
  const d = iommuGetDomainForDev(v.m.driverCore.deviceFor("amd-gpu0")!) as ProtectionDomain;
  const phys = (page: number) => d.pt.iovaToPhys(GPA_BASE + page * PAGE);
  for (const page of [G.GCR3, G.PML4, G.PDPT, G.PD, G.PT]) {
    const pa = phys(page);
    await ioasMap(v.p, v.iommufd, { ioasId: v.ioas, userVa: v.ram + BigInt(page * PAGE), length: PAGE, iova: pa });
  }
  return { tableGpa: phys, dataGpa: (page) => GPA_BASE + page * PAGE };
}

function write64(v: Vmm, page: number, off: number, val: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, val, true);
  v.p.writeMemory(v.ram + BigInt(page * PAGE + off), b);
}

/** GCR3[0] → PML4 (valid); the x86-64 tables map GIOVA to `data` with the bits Linux writes. */
function guestBuild(v: Vmm, g: Guest, data: number): void {
  const X = X86_64;
  const table = BigInt(X.P | X.RW | X.U | X.A);
  const chain = [G.PML4, G.PDPT, G.PD, G.PT];
  write64(v, G.GCR3, 0, BigInt(g.tableGpa(G.PML4)) | 1n);
  chain.forEach((page, i) => {
    const level = 4 - i;
    const slot = Math.floor(GIOVA / 2 ** (3 + 9 * level)) % 512;
    const next = level > 1 ? BigInt(g.tableGpa(chain[i + 1]!)) | table : BigInt(g.dataGpa(data)) | table | BigInt(X.D);
    write64(v, page, 8 * slot, next);
  });
}

/** `struct iommu_hwpt_amd_guest`: V, TV, GV, GIOV, GLX 0, the GCR3 root, the guest domain ID, the paging mode. */
function guestDte(gcr3: number, gdomId: number, opts: { qw0?: bigint; gpt?: bigint; len?: number } = {}): Uint8Array {
  const b = new Uint8Array(opts.len ?? 32);
  const dv = new DataView(b.buffer);
  const g = BigInt(gcr3);
  const qw0 = 1n | 2n | (1n << 54n) | (1n << 55n) | (((g >> 12n) & 7n) << 58n) | (opts.qw0 ?? 0n);
  const qw1 = BigInt(gdomId) | (((g >> 15n) & 0xffffn) << 16n) | (((g >> 31n) & 0x1fffffn) << 43n);
  dv.setBigUint64(0, qw0, true);
  if (b.length >= 16) dv.setBigUint64(8, qw1, true);
  if (b.length >= 24) dv.setBigUint64(16, (opts.gpt ?? 0n) << 54n, true);
  return b;
}

describe("nesting", () => {
  it("a nested HWPT on an AMD vIOMMU translates through the guest's GCR3 and v2 tables, then the parent", async () => {
    const v = await vmm();
    const parent = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const g = await guestLayout(v, parent);
    guestBuild(v, g, G.DATA_A);
    const { viommuId } = await viommuAlloc(v.p, v.iommufd, {
      type: IOMMU_VIOMMU_TYPE_AMD,
      devId: v.devId,
      hwptId: parent,
    });
    const data = guestDte(g.tableGpa(G.GCR3), 7);
    const nested = await nestedHwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: viommuId,
      dataType: IOMMU_HWPT_DATA_AMD_GUEST,
      data,
    });
    // Same guest domain ID: the same host domain ID; another guest ID: another.
    const twin = await nestedHwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: viommuId,
      dataType: IOMMU_HWPT_DATA_AMD_GUEST,
      data,
    });
    const other = await nestedHwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: viommuId,
      dataType: IOMMU_HWPT_DATA_AMD_GUEST,
      data: guestDte(g.tableGpa(G.GCR3), 8),
    });
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    const w = v.dteOf();
    const hdom = dteGet(w, DTE_W.DOMID);
    expect(dteGet(w, DTE_W.MODE)).toBe(4); // the parent's v1 table
    expect([dteGet(w, DTE_W.GV), dteGet(w, DTE_W.GIOV), dteGet(w, DTE_W.GLX)]).toEqual([1, 1, 0]);
    const ep = v.m.device("amd-gpu0");
    ep.dmaWrite(GIOVA + 8, Uint8Array.of(1, 2, 3, 4));
    expect(v.p.readMemory(v.ram + BigInt(G.DATA_A * PAGE + 8), 4)).toEqual(Uint8Array.of(1, 2, 3, 4));
    // Unmapping from the nest parent flushes the host domain IDs of its vIOMMU's guest domains too: the cached
    // nested translation goes, and the strict model reports no stale hit.
    await ioasUnmap(v.p, v.iommufd, v.ioas, GPA_BASE, RAM_PAGES * PAGE);
    expect(() => ep.dmaWrite(GIOVA + 8, Uint8Array.of(9))).toThrow(DmaFault);
    await ioasMap(v.p, v.iommufd, { ioasId: v.ioas, userVa: v.ram, length: RAM_PAGES * PAGE, iova: GPA_BASE });
    await vfioDeviceAttachPt(v.p, v.devfd, twin);
    expect(dteGet(v.dteOf(), DTE_W.DOMID)).toBe(hdom);
    await vfioDeviceAttachPt(v.p, v.devfd, other);
    expect(dteGet(v.dteOf(), DTE_W.DOMID)).not.toBe(hdom);
    await vfioDeviceAttachPt(v.p, v.devfd, parent);
    expect(dteGet(v.dteOf(), DTE_W.GV)).toBe(0);
    for (const id of [nested, twin, other, viommuId]) await v.p.ioctl(v.iommufd, IOMMU_DESTROY, { size: 0, id });
    expect(v.hw.stats.staleReports).toBe(0);
  });

  it("validates as the kernel does: vIOMMU type and parent, data type and length, and the guest DTE", async () => {
    const v = await vmm();
    const plain = await hwptAlloc(v.p, v.iommufd, { devId: v.devId, ptId: v.ioas });
    await expect(
      viommuAlloc(v.p, v.iommufd, { type: IOMMU_VIOMMU_TYPE_AMD, devId: v.devId, hwptId: plain }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    const parent = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    await expect(viommuAlloc(v.p, v.iommufd, { type: 1, devId: v.devId, hwptId: parent })).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    const { viommuId } = await viommuAlloc(v.p, v.iommufd, {
      type: IOMMU_VIOMMU_TYPE_AMD,
      devId: v.devId,
      hwptId: parent,
    });
    const alloc = (data: Uint8Array, dataType = IOMMU_HWPT_DATA_AMD_GUEST) =>
      nestedHwptAlloc(v.p, v.iommufd, { devId: v.devId, ptId: viommuId, dataType, data });
    const gcr3 = 0x10_0000;
    // Nested HWPTs need the vIOMMU: the AMD driver has no domain_alloc_nested on a plain parent.
    await expect(
      nestedHwptAlloc(v.p, v.iommufd, {
        devId: v.devId,
        ptId: parent,
        dataType: IOMMU_HWPT_DATA_AMD_GUEST,
        data: guestDte(gcr3, 1),
      }),
    ).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    await expect(alloc(guestDte(gcr3, 1), 1)).rejects.toMatchObject({ code: "EOPNOTSUPP" }); // VTD_S1 data
    await expect(alloc(guestDte(gcr3, 1, { len: 16 }))).rejects.toMatchObject({ code: "EINVAL" });
    const long = guestDte(gcr3, 1, { len: 40 });
    long[36] = 1;
    await expect(alloc(long)).rejects.toMatchObject({ code: "E2BIG" });
    await expect(alloc(guestDte(gcr3, 1, { qw0: 4n << 9n }))).rejects.toMatchObject({ code: "EINVAL" }); // Mode
    await expect(alloc(guestDte(gcr3, 1, { qw0: 0x5000n }))).rejects.toMatchObject({ code: "EINVAL" }); // host root
    await expect(alloc(guestDte(0, 1))).rejects.toMatchObject({ code: "EINVAL" }); // GV without GCR3
    await expect(alloc(guestDte(gcr3, 1, { gpt: 2n }))).rejects.toMatchObject({ code: "EINVAL" });
    await expect(alloc(guestDte(gcr3, 1, { qw0: 3n << 56n }))).rejects.toMatchObject({ code: "EINVAL" }); // GLX 3
    await expect(alloc(guestDte(gcr3, 1, { gpt: 1n }))).rejects.toMatchObject({ code: "EOPNOTSUPP" }); // 4-level host
    const ok = await alloc(guestDte(gcr3, 1, { len: 40 })); // a longer struct with a zero tail is fine
    await v.p.ioctl(v.iommufd, IOMMU_DESTROY, { size: 0, id: ok });
    await v.p.ioctl(v.iommufd, IOMMU_DESTROY, { size: 0, id: viommuId });
  });

  it("5-level guest tables are accepted when the host runs 5-level v2 tables (la57)", async () => {
    const v = await vmm({ strict: true }, { la57: true });
    const parent = await hwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: v.ioas,
      flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
    });
    const { viommuId } = await viommuAlloc(v.p, v.iommufd, {
      type: IOMMU_VIOMMU_TYPE_AMD,
      devId: v.devId,
      hwptId: parent,
    });
    const id = await nestedHwptAlloc(v.p, v.iommufd, {
      devId: v.devId,
      ptId: viommuId,
      dataType: IOMMU_HWPT_DATA_AMD_GUEST,
      data: guestDte(0x10_0000, 1, { gpt: 1n }),
    });
    await vfioDeviceAttachPt(v.p, v.devfd, id);
    expect(dteGet(v.dteOf(), DTE_W.GPT_LEVEL)).toBe(1);
    await vfioDeviceAttachPt(v.p, v.devfd, parent);
  });
});
