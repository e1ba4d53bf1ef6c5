/**
 * `@iommu-sim/testkit/smmuv3-vmm` — a VMM over the SMMUv3 driver and iommufd (moved here from the SMMUv3 package's
 * tests so every VMM test can import it): boot with both, open /dev/iommu and a device's VFIO cdev, bind, and
 * the uAPI calls the guest-style tests make (vIOMMU, vDEVICE, nested HWPT, vEVENTQ, invalidation). Guest RAM is
 * one mmap of the VMM mapped in an IOAS at GPA_BASE (the guest's IPA = that IOVA); the guest's page tables and CD
 * table are written into it.
 */
import { createMachine, defaultPlatformInput, type Machine, type Process, parsePlatform } from "@iommu-sim/core";
import {
  type ArmSmmuDevice,
  type ArmSmmuDriver,
  createArmSmmuV3Driver,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  LPAE_MAIR,
  makeS1Cd,
  type Smmuv3Hw,
  STE,
  STE_VAL,
  smmuv3HardwareKind,
} from "@iommu-sim/drivers-smmuv3";
import {
  hwptAlloc,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VIOMMU_ALLOC,
  ioasAlloc,
  ioasMap,
  iommufdModule,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";

export const PAGE = 4096;
/** Guest RAM: IPA GPA_BASE.. in the IOAS. */
export const GPA_BASE = 0x4000_0000;
export const GUEST_PAGES = 16;
/** Guest-RAM page indexes the guest uses for its structures. */
export const G = { CD: 0, L1: 1, L2: 2, L3: 3, DATA_A: 5, DATA_B: 6 } as const;
/** The guest's ASID for its stage 1. */
export const GUEST_ASID = 5;
/** The guest IOVA (stage-1 input) the guest maps. */
export const GIOVA = 0x1000_0000;

export interface Vmm {
  m: Machine;
  p: Process;
  smmu: ArmSmmuDevice;
  hw: Smmuv3Hw;
  drv: ArmSmmuDriver;
  iommufd: number;
  devfd: number;
  devId: number;
  ioas: number;
  /** VA of guest RAM in the VMM. */
  ram: bigint;
  ioctl(op: number, cmd: object): Promise<unknown>;
}

/**
 * Boot the default platform with the SMMUv3 (model options `hw`) and iommufd; bind `devName` in a VMM process.
 * @linux a VMM's (QEMU's) iommufd + VFIO cdev setup for an assigned device
 */
export async function vmmSetup(devName = "smmu-dma0", hw: Record<string, unknown> = { strict: true }): Promise<Vmm> {
  const input = defaultPlatformInput();
  const smmu0 = input.iommus!.find((i) => i.name === "smmu0")!;
  smmu0.options = { ...(smmu0.options ?? {}), ...hw };
  const mod = createArmSmmuV3Driver({ hardware: [smmuv3HardwareKind] });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod, iommufdModule], seed: 1 });
  await m.boot();
  const smmu = mod.instanceFor(m, "smmu0") as ArmSmmuDevice;
  const drv = (mod.driverFor(m) as unknown as { state: ArmSmmuDriver }).state;
  const p = m.spawnProcess();
  const iommufd = await p.open("/dev/iommu");
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor(devName)!)!.path);
  const devId = await vfioDeviceBindIommufd(p, devfd, iommufd);
  const ioas = await ioasAlloc(p, iommufd);
  const ram = p.mmap(GUEST_PAGES * PAGE);
  await ioasMap(p, iommufd, { ioasId: ioas, userVa: ram, length: GUEST_PAGES * PAGE, iova: GPA_BASE });
  return {
    m,
    p,
    smmu,
    hw: m.hw.get("smmu0") as Smmuv3Hw,
    drv,
    iommufd,
    devfd,
    devId,
    ioas,
    ram,
    ioctl: (op, cmd) => p.ioctl(iommufd, op, cmd),
  };
}

/** Copy `bytes` into fresh VMM memory; returns its VA. @linux a user buffer passed by pointer */
export function userBytes(v: Vmm, bytes: Uint8Array): bigint {
  const va = v.p.mmap(Math.max(PAGE, bytes.length));
  v.p.writeMemory(va, bytes);
  return va;
}

/** The IPA of guest-RAM page `page`. @linux the guest's physical address space */
export function ipa(page: number): number {
  return GPA_BASE + page * PAGE;
}

/** Write a little-endian u64 into guest RAM at IPA `at`. @linux the guest kernel's WRITE_ONCE of a descriptor */
export function guestWrite64(v: Vmm, at: number, val: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, val, true);
  v.p.writeMemory(v.ram + BigInt(at - GPA_BASE), b);
}

/** Read guest RAM at IPA `at`. @linux the guest kernel's READ_ONCE */
export function guestRead(v: Vmm, at: number, len: number): Uint8Array {
  return v.p.readMemory(v.ram + BigInt(at - GPA_BASE), len);
}

/**
 * A stage-1 4 KiB-granule page descriptor as the guest's io-pgtable would write it (RW, WBWA, inner shareable).
 * @linux arm_lpae_prot_to_pte + arm_lpae_init_pte
 */
export function s1PagePte(outIpa: number): bigint {
  // type=page (0b11), AttrIndx=1 (WBWA), AP[1]=1 (unprivileged), SH=IS, AF, nG.
  return BigInt(outIpa) | 3n | (1n << 2n) | (1n << 6n) | (3n << 8n) | (1n << 10n) | (1n << 11n);
}

/**
 * The guest's stage-1 tables (39-bit VA, 3 levels from level 1) mapping GIOVA → DATA_A, and its CD 0.
 * @linux what the guest's arm-smmu-v3 driver builds (arm_smmu_write_cd_entry over io-pgtable-arm)
 */
export function guestBuildS1(v: Vmm): void {
  for (const pg of [G.CD, G.L1, G.L2, G.L3]) v.p.writeMemory(v.ram + BigInt(pg * PAGE), new Uint8Array(PAGE));
  const l1i = Math.floor(GIOVA / 2 ** 30) % 512;
  const l2i = Math.floor(GIOVA / 2 ** 21) % 512;
  const l3i = Math.floor(GIOVA / PAGE) % 512;
  guestWrite64(v, ipa(G.L1) + 8 * l1i, BigInt(ipa(G.L2)) | 3n);
  guestWrite64(v, ipa(G.L2) + 8 * l2i, BigInt(ipa(G.L3)) | 3n);
  guestWrite64(v, ipa(G.L3) + 8 * l3i, s1PagePte(ipa(G.DATA_A)));
  const cd = makeS1Cd(
    {
      asid: GUEST_ASID,
      cfg: { tcr: { tsz: 64 - 39, tg: 0, irgn: 1, orgn: 1, sh: 3, ips: 2 }, ttbr: ipa(G.L1), mair: LPAE_MAIR },
      hd: false,
    },
    false,
  );
  for (let i = 0; i < 8; i++) guestWrite64(v, ipa(G.CD) + 8 * i, cd[i]!);
}

/** The guest's PTE for GIOVA now points at `page`. @linux the guest's io-pgtable map */
export function guestRemap(v: Vmm, page: number): void {
  const l3i = Math.floor(GIOVA / PAGE) % 512;
  guestWrite64(v, ipa(G.L3) + 8 * l3i, s1PagePte(ipa(page)));
}

/** A vSTE: stage-1 translate with the guest's linear one-CD table. @linux struct iommu_hwpt_arm_smmuv3 */
export function vsteS1(extra0 = 0n, extra1 = 0n): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, STE.V.mask | (BigInt(STE_VAL.CFG_S1_TRANS) << 1n) | BigInt(ipa(G.CD)) | extra0, true);
  dv.setBigUint64(8, extra1, true);
  return b;
}

/** A nesting-parent HWPT on the VMM's IOAS. @linux IOMMU_HWPT_ALLOC with IOMMU_HWPT_ALLOC_NEST_PARENT */
export async function parentAlloc(v: Vmm): Promise<number> {
  return hwptAlloc(v.p, v.iommufd, { devId: v.devId, ptId: v.ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
}

/** An SMMUv3 vIOMMU on the parent HWPT. @linux IOMMU_VIOMMU_ALLOC */
export async function viommuAlloc(v: Vmm, hwptId: number, type = IOMMU_VIOMMU_TYPE_ARM_SMMUV3): Promise<number> {
  const cmd = {
    size: 0,
    flags: 0,
    type,
    dev_id: v.devId,
    hwpt_id: hwptId,
    out_viommu_id: 0,
    data_len: 0,
    data_uptr: 0n,
  };
  await v.ioctl(IOMMU_VIOMMU_ALLOC, cmd);
  return cmd.out_viommu_id;
}

/** The device's vSID in the vIOMMU. @linux IOMMU_VDEVICE_ALLOC */
export async function vdeviceAlloc(v: Vmm, viommuId: number, vsid: number, devId = v.devId): Promise<number> {
  const cmd = { size: 0, viommu_id: viommuId, dev_id: devId, out_vdevice_id: 0, virt_id: BigInt(vsid) };
  await v.ioctl(IOMMU_VDEVICE_ALLOC, cmd);
  return cmd.out_vdevice_id;
}

/** A nested HWPT from a guest vSTE. @linux IOMMU_HWPT_ALLOC with IOMMU_HWPT_DATA_ARM_SMMUV3 */
export async function nestedAlloc(
  v: Vmm,
  ptId: number,
  vste: Uint8Array,
  opts: { dataType?: number; flags?: number } = {},
): Promise<number> {
  return hwptAlloc(v.p, v.iommufd, {
    devId: v.devId,
    ptId,
    flags: opts.flags ?? 0,
    dataType: opts.dataType ?? IOMMU_HWPT_DATA_ARM_SMMUV3,
    dataUptr: userBytes(v, vste),
    dataLen: vste.length,
  });
}

/** A vEVENTQ of `type` on the vIOMMU. @linux IOMMU_VEVENTQ_ALLOC */
export async function veventqAlloc(v: Vmm, viommuId: number, type: number, depth: number) {
  const cmd = {
    size: 0,
    flags: 0,
    viommu_id: viommuId,
    type,
    veventq_depth: depth,
    out_veventq_id: 0,
    out_veventq_fd: 0,
    __reserved: 0,
  };
  await v.ioctl(IOMMU_VEVENTQ_ALLOC, cmd);
  return { id: cmd.out_veventq_id, fd: cmd.out_veventq_fd };
}

/** A guest command: four 32-bit words. */
export type GuestCmd = [number, number, number, number];

/**
 * IOMMU_HWPT_INVALIDATE on `id` with guest commands; returns the struct (entry_num written back) and the run.
 * @linux IOMMU_HWPT_INVALIDATE with struct iommu_viommu_arm_smmuv3_invalidate entries
 */
export function invalidate(v: Vmm, id: number, cmds: GuestCmd[], type = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) {
  const b = new Uint8Array(16 * Math.max(1, cmds.length));
  const dv = new DataView(b.buffer);
  cmds.forEach((c, i) => {
    for (let j = 0; j < 4; j++) dv.setUint32(16 * i + 4 * j, c[j]! >>> 0, true);
  });
  const cmd = {
    size: 0,
    hwpt_id: id,
    data_uptr: userBytes(v, b),
    data_type: type,
    entry_len: 16,
    entry_num: cmds.length,
    __reserved: 0,
  };
  return { cmd, run: () => v.ioctl(IOMMU_HWPT_INVALIDATE, cmd) };
}
