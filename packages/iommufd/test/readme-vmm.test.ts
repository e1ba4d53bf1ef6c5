// The top-level README's "Driving iommufd like a VMM" example, run as written.
import { createMachine } from "@iommu-sim/core";
import { MOCK_APERTURE_START, mockIommuDriver } from "@iommu-sim/drivers-mock";
import { expect, it } from "vitest";
import {
  ioasAlloc,
  ioasMap,
  iommufdModule,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceOf,
} from "../src/index.js";

it("runs the README's VMM example: DMA lands in the mapped user buffer and closing releases every pin", async () => {
  const m = await createMachine({ modules: [mockIommuDriver, iommufdModule], seed: 1 });
  await m.boot();
  const p = m.spawnProcess();
  const iommufd = await p.open("/dev/iommu");
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor("mock-dev0")!)!.path);
  await vfioDeviceBindIommufd(p, devfd, iommufd);
  const ioas = await ioasAlloc(p, iommufd);
  await vfioDeviceAttachPt(p, devfd, ioas);
  const buf = p.mmap(1 << 20);
  await ioasMap(p, iommufd, { ioasId: ioas, userVa: buf, length: 1 << 20, iova: MOCK_APERTURE_START });
  m.device("mock-dev0").dmaWrite(MOCK_APERTURE_START + 5, new Uint8Array([0xab]));
  expect(p.readMemory(buf + 5n, 1)[0]).toBe(0xab);
  expect(m.userSpace.pages.pinnedCount).toBeGreaterThan(0);
  await p.close(devfd);
  await p.close(iommufd);
  expect(m.userSpace.pages.pinnedCount).toBe(0);
  await m.teardown();
});
