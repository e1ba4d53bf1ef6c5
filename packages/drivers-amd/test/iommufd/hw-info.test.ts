/**
 * The AMD driver under iommufd: IOMMU_GET_HW_INFO returns `struct iommu_hw_info_amd` (EFR, EFR2) with
 * IOMMU_HW_INFO_TYPE_AMD; a paging HWPT on an IOAS translates the device's DMA to the user's memory.
 */
import { createMachine, defaultPlatformInput, type Machine, parsePlatform } from "@iommu-sim/core";
import {
  getHwInfo,
  ioasAlloc,
  ioasMap,
  iommufdModule,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";
import { afterEach, expect, it } from "vitest";
import { amdHardwareKind, createAmdIommuDriver, IOMMU_HW_INFO_TYPE_AMD } from "../../src/index.js";

const live: Machine[] = [];
afterEach(async () => {
  for (const m of live.splice(0)) await m.teardown();
});

it("GET_HW_INFO returns struct iommu_hw_info_amd; DMA goes through an IOAS", async () => {
  const input = defaultPlatformInput();
  const mod = createAmdIommuDriver({ hardware: [amdHardwareKind] });
  const m = await createMachine({ platform: parsePlatform(input), modules: [mod, iommufdModule], seed: 1 });
  live.push(m);
  await m.boot();
  const p = m.spawnProcess();
  const iommufd = await p.open("/dev/iommu");
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor("amd-gpu0")!)!.path);
  const devId = await vfioDeviceBindIommufd(p, devfd, iommufd);
  const info = await getHwInfo(p, iommufd, devId);
  expect(info.dataType).toBe(IOMMU_HW_INFO_TYPE_AMD);
  expect(info.dataLen).toBe(16);
  const dv = new DataView(info.data.buffer, info.data.byteOffset, 16);
  expect(dv.getBigUint64(0, true)).toBe(m.mmio.read64(0xfeb80000 + 0x30));
  expect(dv.getBigUint64(8, true)).toBe(8n); // EFR2.GCR3TRPMode (bit 3): the model takes guest GCR3 root pointers
  expect(info.maxPasidLog2).toBe(16);

  const ioas = await ioasAlloc(p, iommufd);
  const ram = p.mmap(4 * 4096);
  p.writeMemory(ram, new Uint8Array([9, 8, 7, 6]));
  await ioasMap(p, iommufd, { ioasId: ioas, userVa: ram, length: 4 * 4096, iova: 0x10_0000 });
  await vfioDeviceAttachPt(p, devfd, ioas);
  expect(m.device("amd-gpu0").dmaRead(0x10_0000, 4)).toEqual(new Uint8Array([9, 8, 7, 6]));
  await p.close(devfd);
  await p.close(iommufd);
});
