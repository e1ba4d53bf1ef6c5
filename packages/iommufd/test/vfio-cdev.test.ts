/**
 * The VFIO-cdev path the way QEMU drives it: open /dev/iommu and /dev/vfio/devices/vfioN, bind, allocate and
 * attach, map, DMA, close. Plus the README example run as written.
 */
import { createMachine, type Device, type Machine, type Process } from "@iommu-sim/core";
import { MOCK_APERTURE_START, mockIommuDriver } from "@iommu-sim/drivers-mock";
import { describe, expect, it } from "vitest";
import {
  destroy,
  hwptAlloc,
  IOMMU_IOAS_ALLOC,
  ioasAlloc,
  ioasMap,
  ioasUnmap,
  iommufdModule,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  vfio_device_bind_iommufd,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceDetachPt,
  vfioDeviceOf,
  vfioRegisterDevice,
  vfioUnregisterDevice,
} from "../src/index.js";
import { addMockDevice, bootMachine, PAGE_SIZE } from "./helpers.js";

function vfioPath(m: Machine, name: string): string {
  return vfioDeviceOf(m, m.driverCore.deviceFor(name)!)!.path;
}

async function finishAll(m: Machine, ...ps: Process[]) {
  for (const p of ps) await p.exit();
  expect(m.userSpace.pages.pinnedCount).toBe(0);
  await m.teardown();
}

describe("README example", () => {
  it("runs as written", async () => {
    const m = await createMachine({ modules: [mockIommuDriver, iommufdModule], seed: 1 });
    await m.boot();
    const p = m.spawnProcess();
    const fd = await p.open("/dev/iommu");
    const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
    await p.ioctl(fd, IOMMU_IOAS_ALLOC, cmd);
    expect(cmd.out_ioas_id).toBe(1);
    await p.close(fd);
    await m.teardown();
  });
});

describe("vfio cdev", () => {
  it("nodes exist for every device in an IOMMU group and go away at module exit", async () => {
    const m = await bootMachine({ devices: 2 });
    const paths = m.chrdevs.paths().filter((x) => x.startsWith("/dev/vfio/devices/"));
    const grouped = m.driverCore.devices().filter((d: Device) => d.iommuGroup !== undefined);
    expect(paths.length).toBe(grouped.length);
    expect(paths).toContain(vfioPath(m, "mock-t0"));
    // On demand: a device added later, registered and unregistered.
    const d = await addMockDevice(m, "late-dev", 40);
    expect(vfioDeviceOf(m, d)).toBeUndefined();
    const v = vfioRegisterDevice(m, d);
    expect(() => vfioRegisterDevice(m, d)).toThrow(/EEXIST/);
    expect(m.chrdevs.lookup(v.path)).toBeDefined();
    vfioUnregisterDevice(m, d);
    expect(m.chrdevs.lookup(v.path)).toBeUndefined();
    await m.teardown();
  });

  it("QEMU flow: bind, HWPT_ALLOC, attach, map, DMA, replace, detach, close unbinds", async () => {
    const m = await bootMachine({ devices: 2 });
    const p = m.spawnProcess();
    const iommufd = await p.open("/dev/iommu");
    const devfd = await p.open(vfioPath(m, "mock-t0"));
    const devid = await vfioDeviceBindIommufd(p, devfd, iommufd);
    expect(devid).toBeGreaterThan(0);
    const ioas = await ioasAlloc(p, iommufd);
    // Attach to the IOAS: an automatic HWPT is made.
    const autoHwpt = await vfioDeviceAttachPt(p, devfd, ioas);
    expect(autoHwpt).not.toBe(ioas);
    const buf = p.mmap(4 * PAGE_SIZE);
    p.writeMemory(buf, new Uint8Array([9, 8, 7, 6]));
    await ioasMap(p, iommufd, { ioasId: ioas, userVa: buf, length: 4 * PAGE_SIZE, iova: MOCK_APERTURE_START });
    const dev = m.device("mock-t0");
    expect([...dev.dmaRead(MOCK_APERTURE_START, 4)]).toEqual([9, 8, 7, 6]);
    dev.dmaWrite(MOCK_APERTURE_START + PAGE_SIZE, new Uint8Array([1, 2]));
    expect([...p.readMemory(buf + BigInt(PAGE_SIZE), 2)]).toEqual([1, 2]);
    // An explicit HWPT, then replace onto it (attach while attached = replace).
    const hwpt = await hwptAlloc(p, iommufd, { devId: devid, ptId: ioas });
    expect(await vfioDeviceAttachPt(p, devfd, hwpt)).toBe(hwpt);
    expect([...dev.dmaRead(MOCK_APERTURE_START, 2)]).toEqual([9, 8]);
    // The device object is the driver's: user space cannot destroy it; the HWPT is in use.
    await expect(destroy(p, iommufd, devid)).rejects.toMatchObject({ code: "EBUSY" });
    await expect(destroy(p, iommufd, hwpt)).rejects.toMatchObject({ code: "EBUSY" });
    await vfioDeviceDetachPt(p, devfd);
    await vfioDeviceDetachPt(p, devfd); // nothing attached: no error
    expect(() => dev.dmaRead(MOCK_APERTURE_START, 2)).toThrow();
    await destroy(p, iommufd, hwpt);
    // Attach again and close the device fd while attached: close detaches and unbinds.
    await vfioDeviceAttachPt(p, devfd, ioas);
    await p.close(devfd);
    await expect(destroy(p, iommufd, devid)).rejects.toMatchObject({ code: "ENOENT" });
    // No domain left on the IOAS: nothing needs the pages pinned.
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    expect(await ioasUnmap(p, iommufd, ioas)).toBe(BigInt(4 * PAGE_SIZE));
    await p.close(iommufd);
    await finishAll(m, p);
  });

  it("closing /dev/iommu first: the bound device keeps the context until its fd closes", async () => {
    const m = await bootMachine({ devices: 1 });
    const p = m.spawnProcess();
    const iommufd = await p.open("/dev/iommu");
    const devfd = await p.open(vfioPath(m, "mock-t0"));
    await vfioDeviceBindIommufd(p, devfd, iommufd);
    const ioas = await ioasAlloc(p, iommufd);
    await vfioDeviceAttachPt(p, devfd, ioas);
    const buf = p.mmap(2 * PAGE_SIZE);
    await ioasMap(p, iommufd, { ioasId: ioas, userVa: buf, length: 2 * PAGE_SIZE });
    await p.close(iommufd);
    // The device still translates through the context's mappings.
    expect(m.userSpace.pages.pinnedCount).toBe(2);
    await p.close(devfd);
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    await finishAll(m, p);
  });

  it("bind errno: EINVAL for argsz/flags/negative fd/second bind/second opener, EBADF, EBADFD", async () => {
    const m = await bootMachine({ devices: 2 });
    const p = m.spawnProcess();
    const iommufd = await p.open("/dev/iommu");
    const path = vfioPath(m, "mock-t0");
    const devfd = await p.open(path);
    const bind = (arg: object | Uint8Array | null, fd = devfd) => p.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, arg);
    await expect(bind(null)).rejects.toMatchObject({ code: "EFAULT" });
    await expect(bind({ argsz: 12, flags: 0, iommufd, out_devid: 0 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(bind({ argsz: 16, flags: 1, iommufd, out_devid: 0 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(bind({ argsz: 16, flags: 0, iommufd: -1, out_devid: 0 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(bind({ argsz: 16, flags: 0, iommufd: 77, out_devid: 0 })).rejects.toMatchObject({ code: "EBADF" });
    const memfd = p.memfdCreate("not-iommufd", PAGE_SIZE);
    await expect(bind({ argsz: 16, flags: 0, iommufd: memfd, out_devid: 0 })).rejects.toMatchObject({
      code: "EBADFD",
    });
    // Other ioctls before a bind: EINVAL.
    await expect(
      p.ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, flags: 0, pt_id: 1, pasid: 0 }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    // A user pointer: EFAULT when unmapped; a short argsz read from user memory is EINVAL.
    await expect(p.ioctl(devfd, VFIO_DEVICE_BIND_IOMMUFD, 16)).rejects.toMatchObject({ code: "EFAULT" });
    const uarg = p.mmap(PAGE_SIZE);
    p.writeMemory(uarg, vfio_device_bind_iommufd.encode({ argsz: 12, flags: 0, iommufd, out_devid: 0 }));
    await expect(p.ioctl(devfd, VFIO_DEVICE_BIND_IOMMUFD, uarg)).rejects.toMatchObject({ code: "EINVAL" });
    // Byte form, out_devid written back.
    const bytes = vfio_device_bind_iommufd.encode({ argsz: 16, flags: 0, iommufd, out_devid: 0 });
    await bind(bytes);
    const devid = vfio_device_bind_iommufd.decode(bytes).out_devid;
    expect(devid).toBeGreaterThan(0);
    await expect(bind({ argsz: 16, flags: 0, iommufd, out_devid: 0 })).rejects.toMatchObject({ code: "EINVAL" });
    // A second opener of the same device may open the node but not bind it.
    const devfd2 = await p.open(path);
    await expect(bind({ argsz: 16, flags: 0, iommufd, out_devid: 0 }, devfd2)).rejects.toMatchObject({
      code: "EINVAL",
    });
    // Unknown ioctl after bind: ENOTTY. Attach/detach argsz and flags: EINVAL.
    await expect(p.ioctl(devfd, 0x3b00 + 100 + 40, {})).rejects.toMatchObject({ code: "ENOTTY" });
    await expect(
      p.ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 8, flags: 0, pt_id: 1, pasid: 0 }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    await expect(
      p.ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, flags: 2, pt_id: 1, pasid: 0 }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    await expect(
      p.ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 12, flags: 1, pt_id: 1, pasid: 0 }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    await expect(p.ioctl(devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 4, flags: 0, pasid: 0 })).rejects.toMatchObject(
      { code: "EINVAL" },
    );
    await expect(
      p.ioctl(devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 12, flags: 4, pasid: 0 }),
    ).rejects.toMatchObject({ code: "EINVAL" });
    // Attach to a missing ID: ENOENT; to the device object itself: EINVAL.
    await expect(vfioDeviceAttachPt(p, devfd, 999)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(vfioDeviceAttachPt(p, devfd, devid)).rejects.toMatchObject({ code: "EINVAL" });
    await p.close(devfd2);
    await p.close(devfd);
    await p.close(memfd);
    await p.close(iommufd);
    await finishAll(m, p);
  });

  it("a device bound to one iommufd cannot be claimed by another context (EBUSY/EPERM), and is free after close", async () => {
    const m = await bootMachine({ devices: 1 });
    const p = m.spawnProcess();
    const q = m.spawnProcess();
    const fdA = await p.open("/dev/iommu");
    const fdB = await q.open("/dev/iommu");
    const path = vfioPath(m, "mock-t0");
    const devA = await p.open(path);
    const devB = await q.open(path);
    await vfioDeviceBindIommufd(p, devA, fdA);
    // Linux: open_count is checked first, so the second cdev opener sees EINVAL.
    await expect(vfioDeviceBindIommufd(q, devB, fdB)).rejects.toMatchObject({ code: "EINVAL" });
    await p.close(devA);
    expect(await vfioDeviceBindIommufd(q, devB, fdB)).toBeGreaterThan(0);
    await finishAll(m, p, q);
  });

  it("PASID attach/replace/detach on a device with PASID support", async () => {
    const m = await bootMachine({ devices: 0 });
    const d = await addMockDevice(m, "pasid-dev", 41, { "mock-dev-flags": 1 << 2, "pasid-num-bits": 20 });
    const v = vfioRegisterDevice(m, d);
    const p = m.spawnProcess();
    const iommufd = await p.open("/dev/iommu");
    const devfd = await p.open(v.path);
    const devid = await vfioDeviceBindIommufd(p, devfd, iommufd);
    const ioas = await ioasAlloc(p, iommufd);
    const hwpt = await hwptAlloc(p, iommufd, { devId: devid, ptId: ioas, flags: 1 << 3 });
    // A PASID needs the RID on a PASID-capable HWPT (the automatic one is not).
    await vfioDeviceAttachPt(p, devfd, ioas);
    await expect(vfioDeviceAttachPt(p, devfd, hwpt, 5)).rejects.toMatchObject({ code: "EINVAL" });
    expect(await vfioDeviceAttachPt(p, devfd, hwpt)).toBe(hwpt);
    expect(await vfioDeviceAttachPt(p, devfd, hwpt, 5)).toBe(hwpt);
    expect(v.pasids.has(5)).toBe(true);
    // Replace the PASID's attachment with itself again, then detach it.
    expect(await vfioDeviceAttachPt(p, devfd, hwpt, 5)).toBe(hwpt);
    await vfioDeviceDetachPt(p, devfd, 5);
    await vfioDeviceDetachPt(p, devfd, 5);
    expect(v.pasids.size).toBe(0);
    // Closing with a PASID still attached detaches it.
    await vfioDeviceAttachPt(p, devfd, hwpt, 7);
    await p.close(devfd);
    await destroy(p, iommufd, hwpt);
    await finishAll(m, p);
  });
});
