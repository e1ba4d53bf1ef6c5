import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createMachine, KernelError, EPOLLIN as POLLIN, type Process, vfsPoll } from "@iommu-sim/core";
import { MOCK_APERTURE_START, mockIommuDriver } from "@iommu-sim/drivers-mock";
import {
  destroy,
  hwptAlloc,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_OPTION,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VFIO_IOAS,
  IOMMU_VIOMMU_ALLOC,
  ioasAlloc,
  ioasIovaRanges,
  ioasMap,
  ioasUnmap,
  iommufdModule,
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_GET_API_VERSION,
  vfioDeviceAttachPt,
  vfioDeviceBindIommufd,
  vfioDeviceDetachPt,
  vfioDeviceOf,
} from "@iommu-sim/iommufd";
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  IOMMU_TEST_OP,
  IOMMU_VIOMMU_TYPE_SELFTEST,
  iommufdSelftestModule,
  MOCK_ACCESS_RW_WRITE,
  testCmd,
} from "@iommu-sim/selftest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Server, startServer } from "../src/index.js";

const root = resolve(import.meta.dirname, "..", "..", "..");
const hasCc = spawnSync("cc", ["--version"]).status === 0;
const RAM_SIZE = 64 * 1024;

let dir: string;
let shim: string;
const bin = (name: string) => join(dir, name);

function build(): void {
  dir = mkdtempSync(join(tmpdir(), "iommu-sim-c-"));
  shim = join(dir, "libiommu-shim.so");
  const native = join(root, "packages", "serve", "native", "iommu-shim.c");
  execFileSync("cc", ["-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", shim, native, "-ldl", "-lpthread"]);
  for (const ex of ["vmm-flow", "uapi-errors", "ioctl-tour"]) {
    execFileSync("cc", ["-O2", "-Wall", "-Werror", "-o", bin(ex), join(root, "examples", "c", `${ex}.c`)]);
  }
}

interface Run {
  child: ChildProcess;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function runClient(server: Server, exe: string, args: string[] = []): Run {
  const child = spawn(exe, args, {
    env: { ...process.env, LD_PRELOAD: shim, IOMMU_SIM_SOCKET: server.socket },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  // "close", not "exit": "exit" can fire before the pipes are drained, losing the output of a client that exits
  // while the other one still runs (seen as an empty stdout under load).
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) =>
    child.on("close", (code) => r({ code, stdout, stderr })),
  );
  return { child, done };
}

/** Wait until the server has reported `n` disconnected clients (the report follows the socket's close). */
async function reportsOf(server: Server, n: number) {
  while (server.reports.length < n) await new Promise((r) => setTimeout(r, 10));
  return server.reports;
}

/** examples/c/vmm-flow.c, ioctl by ioctl, from TypeScript: the lines it prints. */
async function tsVmmFlow(): Promise<string[]> {
  const m = await createMachine({ modules: [mockIommuDriver, iommufdModule, iommufdSelftestModule], seed: 1 });
  await m.boot();
  const p: Process = m.spawnProcess();
  const out: string[] = [];
  const iommufd = await p.open("/dev/iommu");
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor("mock-dev0")!)!.path);
  const devid = await vfioDeviceBindIommufd(p, devfd, iommufd);
  out.push(`devid ${devid}`);
  const ioas = await ioasAlloc(p, iommufd);
  out.push(`ioas ${ioas}`);
  const { ranges } = await ioasIovaRanges(p, iommufd, ioas, 4);
  out.push(`num_iovas ${ranges.length}`);
  out.push(`range0 0x${ranges[0]!.start.toString(16)}-0x${ranges[0]!.last.toString(16)}`);
  const ram = p.mmap(RAM_SIZE);
  p.writeMemory(
    ram,
    Uint8Array.from({ length: RAM_SIZE }, (_, i) => i & 0xff),
  );
  const iova = await ioasMap(p, iommufd, { ioasId: ioas, userVa: ram, length: RAM_SIZE, iova: MOCK_APERTURE_START });
  out.push(`mapped 0x${iova.toString(16)}`);
  const hwpt = await vfioDeviceAttachPt(p, devfd, ioas);
  out.push(`hwpt ${hwpt}`);
  await testCmd(p, iommufd, IOMMU_TEST_OP.MD_CHECK_MAP, {
    id: hwpt,
    iova: BigInt(MOCK_APERTURE_START),
    length: BigInt(RAM_SIZE),
    uptr: ram,
  });
  out.push("md_check_map ok");
  const acc = await testCmd(p, iommufd, IOMMU_TEST_OP.CREATE_ACCESS, { id: ioas });
  out.push("access_fd valid");
  const msg = p.mmap(4096);
  const text = new TextEncoder().encode("written by DMA\0");
  p.writeMemory(msg, text);
  const rw = { id: acc.out_access_fd, iova: BigInt(MOCK_APERTURE_START + 0x1100), length: BigInt(text.length) };
  await testCmd(p, iommufd, IOMMU_TEST_OP.ACCESS_RW, { ...rw, uptr: msg, flags: MOCK_ACCESS_RW_WRITE });
  out.push(`dma_write_seen ${new TextDecoder().decode(p.readMemory(ram + 0x1100n, text.length - 1))}`);
  p.writeMemory(ram + 0x2200n, new TextEncoder().encode("stored by the CPU\0"));
  const rd = { id: acc.out_access_fd, iova: BigInt(MOCK_APERTURE_START + 0x2200), length: 18n, uptr: msg, flags: 0 };
  await testCmd(p, iommufd, IOMMU_TEST_OP.ACCESS_RW, rd);
  out.push(`cpu_store_seen ${new TextDecoder().decode(p.readMemory(msg, 17))}`);
  await p.close(acc.out_access_fd);
  await expect(p.ioctl(iommufd, IOMMU_VIOMMU_ALLOC, null)).rejects.toMatchObject({ code: "EFAULT" });
  out.push("bad_pointer EFAULT");
  await expect(destroy(p, iommufd, 9999)).rejects.toMatchObject({ code: "ENOENT" });
  out.push("destroy_unknown ENOENT");
  const parent = await hwptAlloc(p, iommufd, { devId: devid, ptId: ioas, flags: 1 });
  out.push(`parent_hwpt ${parent}`);
  const va = { size: 0, flags: 0, type: IOMMU_VIOMMU_TYPE_SELFTEST, dev_id: devid, hwpt_id: parent };
  const viommu = { ...va, out_viommu_id: 0, data_len: 0, __reserved: 0, data_uptr: 0n };
  await p.ioctl(iommufd, IOMMU_VIOMMU_ALLOC, viommu);
  out.push(`viommu ${viommu.out_viommu_id}`);
  const vdev = { size: 0, viommu_id: viommu.out_viommu_id, dev_id: devid, out_vdevice_id: 0, virt_id: 0x99n };
  await p.ioctl(iommufd, IOMMU_VDEVICE_ALLOC, vdev);
  out.push(`vdevice ${vdev.out_vdevice_id}`);
  const fault = { size: 0, flags: 0, out_fault_id: 0, out_fault_fd: 0 };
  await p.ioctl(iommufd, IOMMU_FAULT_QUEUE_ALLOC, fault);
  out.push(`fault ${fault.out_fault_id}`);
  const data = p.mmap(4096);
  p.writeMemory(data, new Uint8Array(new Uint32Array([IOMMU_TEST_IOTLB_DEFAULT, 0]).buffer));
  const nested = await hwptAlloc(p, iommufd, {
    devId: devid,
    ptId: viommu.out_viommu_id,
    flags: 4,
    dataType: IOMMU_HWPT_DATA_SELFTEST,
    dataUptr: data,
    dataLen: 8,
    faultId: fault.out_fault_id,
  });
  out.push(`nested_hwpt ${nested}`);
  await vfioDeviceAttachPt(p, devfd, nested);
  await testCmd(p, iommufd, IOMMU_TEST_OP.MD_CHECK_IOTLB, { id: nested, iotlb: IOMMU_TEST_IOTLB_DEFAULT });
  p.writeMemory(data, new Uint8Array(new Uint32Array([IOMMU_TEST_INVALIDATE_FLAG_ALL, 0]).buffer));
  const inv = { size: 0, hwpt_id: nested, data_uptr: data, data_type: IOMMU_HWPT_INVALIDATE_DATA_SELFTEST };
  const invCmd = { ...inv, entry_len: 8, entry_num: 1, __reserved: 0 };
  await p.ioctl(iommufd, IOMMU_HWPT_INVALIDATE, invCmd);
  out.push(`invalidated ${invCmd.entry_num}`);
  await testCmd(p, iommufd, IOMMU_TEST_OP.MD_CHECK_IOTLB, { id: nested, iotlb: 0 });
  out.push("iotlb_cleared ok");
  await testCmd(p, iommufd, IOMMU_TEST_OP.TRIGGER_IOPF, { dev_id: devid, grpid: 2, perm: 1, addr: 0xdeadbeafn });
  const rec = new DataView((await p.read(fault.out_fault_fd, 40)).buffer);
  const addr = rec.getBigUint64(24, true);
  out.push(`fault_read dev_id=${rec.getUint32(4, true)} grpid=${rec.getUint32(12, true)} addr=0x${addr.toString(16)}`);
  await p.write(fault.out_fault_fd, new Uint8Array(new Uint32Array([rec.getUint32(36, true), 0]).buffer));
  out.push("fault_answered ok");
  await vfioDeviceAttachPt(p, devfd, ioas);
  for (const id of [nested, vdev.out_vdevice_id, viommu.out_viommu_id, parent]) await destroy(p, iommufd, id);
  await p.close(fault.out_fault_fd);
  await vfioDeviceDetachPt(p, devfd);
  const unmapped = await ioasUnmap(p, iommufd, ioas, BigInt(MOCK_APERTURE_START), BigInt(RAM_SIZE));
  out.push(`unmapped 0x${unmapped.toString(16)}`);
  await p.close(devfd);
  await p.close(iommufd);
  out.push("done");
  await p.exit();
  await m.teardown();
  return out;
}

/** -errno of a rejected call, 0 when it succeeds (the C program's `rc()`). */
async function rc(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 0;
  } catch (e) {
    if (e instanceof KernelError) return -e.errno;
    throw e;
  }
}

/** examples/c/ioctl-tour.c from TypeScript: the lines it prints. */
async function tsIoctlTour(): Promise<string[]> {
  const m = await createMachine({ modules: [mockIommuDriver, iommufdModule, iommufdSelftestModule], seed: 1 });
  await m.boot();
  const p: Process = m.spawnProcess();
  const out: string[] = [];
  const fd = await p.open("/dev/iommu");
  const devfd = await p.open(vfioDeviceOf(m, m.driverCore.deviceFor("mock-dev0")!)!.path);
  const dev = await vfioDeviceBindIommufd(p, devfd, fd);
  const alloc = { size: 0, flags: 0, out_ioas_id: 0 };
  await p.ioctl(fd, IOMMU_IOAS_ALLOC, alloc);
  const ioas = alloc.out_ioas_id;
  const scratch = p.mmap(4096);
  const info = { size: 0, flags: 0, dev_id: dev, data_len: 8, data_uptr: scratch, out_data_type: 0 };
  const infoCmd = { ...info, out_max_pasid_log2: 0, __reserved: [0, 0, 0], out_capabilities: 0n };
  let r = await rc(p.ioctl(fd, IOMMU_GET_HW_INFO, infoCmd));
  const testReg = new DataView(p.readMemory(scratch + 4n, 4).buffer).getUint32(0, true);
  out.push(
    `get_hw_info ${r} type=${infoCmd.out_data_type} data_len=${infoCmd.data_len} test_reg=${testReg} ` +
      `pasid_log2=${infoCmd.out_max_pasid_log2} caps=${infoCmd.out_capabilities}`,
  );
  const range = new DataView(new ArrayBuffer(16));
  range.setBigUint64(0, BigInt(MOCK_APERTURE_START), true);
  range.setBigUint64(8, BigInt(MOCK_APERTURE_START + (1 << 20) - 1), true);
  p.writeMemory(scratch, new Uint8Array(range.buffer));
  const aw = { size: 0, ioas_id: ioas, num_iovas: 1, __reserved: 0, allowed_iovas: scratch };
  out.push(`allow_iovas ${await rc(p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, aw))}`);
  const ranges = { size: 0, ioas_id: ioas, num_iovas: 0, __reserved: 0, allowed_iovas: 0n, out_iova_alignment: 0n };
  r = await rc(p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, ranges));
  out.push(`iova_ranges_too_small ${r} num_iovas=${ranges.num_iovas}`);
  const ram = p.mmap(RAM_SIZE);
  p.writeMemory(ram, new Uint8Array(RAM_SIZE).fill(0x5a));
  const rw = 1 | 2 | 4;
  const map = { size: 0, flags: rw, ioas_id: ioas, __reserved: 0, user_va: ram, length: BigInt(RAM_SIZE) };
  out.push(`ioas_map ${await rc(p.ioctl(fd, IOMMU_IOAS_MAP, { ...map, iova: BigInt(MOCK_APERTURE_START) }))}`);
  const alloc2 = { size: 0, flags: 0, out_ioas_id: 0 };
  await p.ioctl(fd, IOMMU_IOAS_ALLOC, alloc2);
  const apStart = BigInt(MOCK_APERTURE_START);
  const copy = { size: 0, flags: rw, dst_ioas_id: alloc2.out_ioas_id, src_ioas_id: ioas, length: BigInt(RAM_SIZE) };
  r = await rc(p.ioctl(fd, IOMMU_IOAS_COPY, { ...copy, dst_iova: apStart, src_iova: apStart }));
  out.push(`ioas_copy ${r} dst=${alloc2.out_ioas_id}`);
  const opt = { size: 0, option_id: 0, op: 1, __reserved: 0, object_id: 0, val64: 0n };
  r = await rc(p.ioctl(fd, IOMMU_OPTION, opt));
  out.push(`option_rlimit_mode ${r} val64=${opt.val64}`);
  const vi = { size: 0, ioas_id: 0, op: 0, __reserved: 0 };
  out.push(`vfio_ioas_get_unset ${await rc(p.ioctl(fd, IOMMU_VFIO_IOAS, { ...vi }))}`);
  out.push(`vfio_ioas_set ${await rc(p.ioctl(fd, IOMMU_VFIO_IOAS, { ...vi, op: 1, ioas_id: ioas }))}`);
  r = await rc(p.ioctl(fd, IOMMU_VFIO_IOAS, vi));
  out.push(`vfio_ioas_get ${r} ioas_id=${vi.ioas_id}`);
  const hwpt = { size: 0, flags: 1 | 2, dev_id: dev, pt_id: ioas, out_hwpt_id: 0, __reserved: 0 };
  const parent = { ...hwpt, data_type: 0, data_len: 0, data_uptr: 0n, fault_id: 0, __reserved2: 0 };
  r = await rc(p.ioctl(fd, IOMMU_HWPT_ALLOC, parent));
  out.push(`hwpt_alloc_dirty ${r} id=${parent.out_hwpt_id}`);
  const at = { argsz: 0, flags: 0, pt_id: parent.out_hwpt_id, pasid: 0 };
  out.push(`attach ${await rc(p.ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, at))}`);
  const dt = { size: 0, flags: 1, hwpt_id: parent.out_hwpt_id, __reserved: 0 };
  out.push(`set_dirty_tracking ${await rc(p.ioctl(fd, IOMMU_HWPT_SET_DIRTY_TRACKING, dt))}`);
  p.writeMemory(scratch, new Uint8Array(8).fill(0).fill(5, 0, 1));
  const dirty = { id: parent.out_hwpt_id, iova: apStart, length: BigInt(RAM_SIZE), page_size: 4096n, uptr: scratch };
  let nr = -1n;
  r = await rc(testCmd(p, fd, IOMMU_TEST_OP.DIRTY, dirty).then((d) => (nr = d.out_nr_dirty)));
  out.push(`test_dirty ${r} nr=${nr}`);
  p.writeMemory(scratch, new Uint8Array(8));
  const gd = { size: 0, hwpt_id: parent.out_hwpt_id, flags: 0, __reserved: 0, iova: apStart };
  r = await rc(
    p.ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { ...gd, length: BigInt(RAM_SIZE), page_size: 4096n, data: scratch }),
  );
  out.push(`get_dirty_bitmap ${r} bitmap=${new DataView(p.readMemory(scratch, 8).buffer).getBigUint64(0, true)}`);
  const va = { size: 0, flags: 0, type: IOMMU_VIOMMU_TYPE_SELFTEST, dev_id: dev, hwpt_id: parent.out_hwpt_id };
  const viommu = { ...va, out_viommu_id: 0, data_len: 0, __reserved: 0, data_uptr: 0n };
  r = await rc(p.ioctl(fd, IOMMU_VIOMMU_ALLOC, viommu));
  out.push(`viommu_alloc ${r} id=${viommu.out_viommu_id}`);
  const vd = { size: 0, viommu_id: viommu.out_viommu_id, dev_id: dev, out_vdevice_id: 0, virt_id: 0x99n };
  r = await rc(p.ioctl(fd, IOMMU_VDEVICE_ALLOC, vd));
  out.push(`vdevice_alloc ${r} id=${vd.out_vdevice_id}`);
  const vq = { size: 0, flags: 0, viommu_id: viommu.out_viommu_id, type: 0xbeefbeef, veventq_depth: 2 };
  const vqCmd = { ...vq, out_veventq_id: 0, out_veventq_fd: 0, __reserved: 0 };
  r = await rc(p.ioctl(fd, IOMMU_VEVENTQ_ALLOC, vqCmd));
  out.push(`veventq_alloc ${r} id=${vqCmd.out_veventq_id}`);
  p.writeMemory(scratch, new Uint8Array(new Uint32Array([IOMMU_TEST_IOTLB_DEFAULT, 0]).buffer));
  const nested = { ...parent, flags: 0, pt_id: viommu.out_viommu_id, out_hwpt_id: 0 };
  Object.assign(nested, { data_type: IOMMU_HWPT_DATA_SELFTEST, data_len: 8, data_uptr: scratch });
  r = await rc(p.ioctl(fd, IOMMU_HWPT_ALLOC, nested));
  out.push(`nested_alloc ${r} id=${nested.out_hwpt_id}`);
  const atNested = { ...at, pt_id: nested.out_hwpt_id };
  out.push(`attach_nested ${await rc(p.ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, atNested))}`);
  const pollIn = () => vfsPoll(p.files.lookup(vqCmd.out_veventq_fd)!) & POLLIN;
  out.push(`poll_empty ${pollIn() ? 1 : 0} revents=${pollIn()}`);
  out.push(`trigger_vevent ${await rc(testCmd(p, fd, IOMMU_TEST_OP.TRIGGER_VEVENT, { dev_id: dev }))}`);
  out.push(`poll_event ${pollIn() ? 1 : 0} revents=${pollIn()}`);
  const qdup = p.dupFrom(vqCmd.out_veventq_fd, 3);
  const ev = new DataView((await p.read(qdup, 12)).buffer);
  const evLine = `flags=${ev.getUint32(0, true)} sequence=${ev.getUint32(4, true)} virt_id=${ev.getUint32(8, true)}`;
  out.push(`veventq_read ${ev.byteLength} ${evLine}`);
  const hq = { size: 0, flags: 0, viommu_id: viommu.out_viommu_id, type: 0xdeadbeef, index: 0, out_hw_queue_id: 0 };
  const hqCmd = { ...hq, nesting_parent_iova: apStart, length: 4096n };
  r = await rc(p.ioctl(fd, IOMMU_HW_QUEUE_ALLOC, hqCmd));
  out.push(`hw_queue_alloc ${r} id=${hqCmd.out_hw_queue_id}`);
  out.push(`poll_drained ${pollIn() ? 1 : 0}`);
  await p.close(qdup);
  const mfd = p.memfdCreate("guest", RAM_SIZE);
  const mf = { size: 0, flags: 4, ioas_id: alloc2.out_ioas_id, fd: mfd, start: 0n, length: BigInt(RAM_SIZE), iova: 0n };
  r = await rc(p.ioctl(fd, IOMMU_IOAS_MAP_FILE, mf));
  out.push(`ioas_map_file_memfd ${r} iova=0x${mf.iova.toString(16)}`);
  await p.close(mfd);
  out.push(`vfio_api_version ${await p.ioctl(fd, VFIO_GET_API_VERSION)}`);
  out.push(`vfio_check_type1v2 ${await p.ioctl(fd, VFIO_CHECK_EXTENSION, { arg: 3 })}`);
  out.push(`ioas_change_process ${await rc(p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, { size: 0, __reserved: 0 }))}`);
  await p.close(vqCmd.out_veventq_fd);
  await p.close(devfd);
  await p.close(fd);
  out.push("done");
  await p.exit();
  await m.teardown();
  return out;
}

describe.skipIf(!hasCc)(
  `unmodified C clients through the preload shim${hasCc ? "" : " (skipped: no C compiler cc)"}`,
  () => {
    let server: Server;
    let sockDir: string;
    beforeAll(async () => {
      build();
      sockDir = mkdtempSync(join(tmpdir(), "iommu-sim-sock-"));
    });
    afterAll(() => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(sockDir, { recursive: true, force: true });
    });
    const serve = async (name: string) => {
      server = await startServer({ socket: join(sockDir, `${name}.sock`) });
      return server;
    };

    it("runs the VMM flow: DMA writes seen by the client, client stores seen by DMA, nesting, invalidation, faults", async () => {
      const s = await serve("flow");
      const r = await runClient(s, bin("vmm-flow")).done;
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("dma_write_seen written by DMA\n");
      expect(r.stdout).toContain("cpu_store_seen stored by the CPU\n");
      expect(r.stdout).toContain("fault_read dev_id=1 grpid=2 addr=0xdeadbeaf\n");
      const [report] = await reportsOf(s, 1);
      expect(report).toMatchObject({ leaks: [], warnings: [] });
      expect(await s.close()).toEqual({ exitStatus: 0, report: "" });
    });

    it("gives the same results as the same ioctl sequence issued from TypeScript", async () => {
      const s = await serve("compare");
      const r = await runClient(s, bin("vmm-flow")).done;
      expect(r.code).toBe(0);
      expect(await s.close()).toMatchObject({ exitStatus: 0 });
      expect(r.stdout.trim().split("\n")).toEqual(await tsVmmFlow());
    });

    it("issues every other iommufd ioctl once, with the results of the same sequence from TypeScript", async () => {
      const s = await serve("tour");
      const r = await runClient(s, bin("ioctl-tour")).done;
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(await s.close()).toMatchObject({ exitStatus: 0 });
      const lines = r.stdout.trim().split("\n");
      expect(lines).toContain("get_dirty_bitmap 0 bitmap=5");
      expect(lines).toContain("veventq_read 12 flags=0 sequence=0 virt_id=153");
      expect(lines).toContain("vfio_check_type1v2 1");
      // poll reflects the vEVENTQ (empty: not readable; after the event: POLLIN); a dup reads the same queue; a
      // memfd of the client maps through its shadow.
      expect(lines).toContain("poll_empty 0 revents=0");
      expect(lines).toContain("poll_event 1 revents=1");
      expect(lines).toContain("poll_drained 0");
      expect(lines.find((l) => l.startsWith("ioas_map_file_memfd"))).toMatch(/^ioas_map_file_memfd 0 /);
      expect(lines).toEqual(await tsIoctlTour());
    });

    it("answers errors as the kernel does, and fails calls with EIO once the server is gone", async () => {
      const s = await serve("errors");
      const run = runClient(s, bin("uapi-errors"));
      await new Promise<void>((ready) => run.child.stdout!.on("data", (d) => String(d).includes("ready") && ready()));
      expect(await s.close()).toEqual({ exitStatus: 0, report: "" });
      run.child.stdin!.write("x");
      const r = await run.done;
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout.trim().split("\n")).toEqual([
        "short_struct 22",
        "oversized_struct 7",
        "oversized_zero_tail ok 1",
        "bad_struct_pointer 14",
        "unbacked_map_without_domain ok",
        "bad_out_array 14",
        "bad_fd 9",
        "closed_fd 9",
        "ready",
        "server_gone 5",
      ]);
    });

    it("serves two clients at once as separate processes with separate fd tables", async () => {
      const s = await serve("two");
      const [a, b] = await Promise.all([
        runClient(s, bin("vmm-flow"), ["/dev/vfio/devices/vfio0"]).done,
        runClient(s, bin("vmm-flow"), ["/dev/vfio/devices/vfio1"]).done,
      ]);
      expect([a.code, b.code, a.stderr, b.stderr]).toEqual([0, 0, "", ""]);
      // Object IDs are per iommufd context: each client sees the same IDs as if alone.
      expect(a.stdout).toBe(b.stdout);
      const reports = await reportsOf(s, 2);
      expect(new Set(reports.map((x) => x.pid)).size).toBe(2);
      expect(await s.close()).toEqual({ exitStatus: 0, report: "" });
    });

    it("reports a client that leaves objects behind as cleaned up by its exit, like the kernel's release", async () => {
      const s = await serve("exit");
      // A client killed mid-run: its process exits, closing its fds, and the machine still tears down clean.
      const run = runClient(s, bin("uapi-errors"));
      await new Promise<void>((ready) => run.child.stdout!.on("data", (d) => String(d).includes("ready") && ready()));
      run.child.kill("SIGKILL");
      await run.done;
      const [report] = await reportsOf(s, 1);
      expect(report).toMatchObject({ leaks: [], warnings: [] });
      expect(await s.close()).toEqual({ exitStatus: 0, report: "" });
    });
  },
);
