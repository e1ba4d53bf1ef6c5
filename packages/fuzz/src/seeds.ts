/**
 * Seed programs: the typical uses the kernel selftests make of the uAPI (a mock domain with maps, a nested HWPT
 * under a vIOMMU with a vDEVICE and a vEVENTQ, an access pinning pages, PASID attach, the VFIO cdev and the type1
 * compat path). A campaign starts its corpus with them, so mutation explores around deep states from the start,
 * as syzkaller does with its seed corpus.
 * @linux tools/testing/selftests/iommu/iommufd.c (the fixtures these follow); syzkaller's sys/linux/test seeds
 */
import * as I from "@iommu-sim/iommufd";
import * as S from "@iommu-sim/selftest";
import { bytesToHex } from "./executor.js";
import type { Call, Program, Ref, Val } from "./program.js";

const RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = I.IOMMU_IOAS_MAP_FIXED_IOVA | RW;
const APERTURE = BigInt(S.MOCK_APERTURE_START);

class Builder {
  readonly calls: Call[] = [];
  private id = 1;
  readonly fd: Ref;

  constructor() {
    this.fd = this.value({ id: 0, proc: 0, op: "open", path: "/dev/iommu" });
  }

  value(c: Call): Ref {
    c.id = this.id++;
    this.calls.push(c);
    return { $ref: c.id, field: "value" };
  }

  ioctl(name: string, args: Record<string, Val>, fd: Val = this.fd): number {
    const id = this.id++;
    this.calls.push({ id, proc: 0, op: "ioctl", fd, name, form: "object", args: { size: 0, ...args } });
    return id;
  }

  test(op: string, args: Record<string, Val>): number {
    return this.ioctl(`IOMMU_TEST_OP_${op}`, args);
  }

  mmap(length: number): Ref {
    return this.value({ id: 0, proc: 0, op: "mmap", length });
  }

  poke(off: number, bytes: Uint8Array): void {
    this.value({ id: 0, proc: 0, op: "poke", va: { $scratch: off }, data: bytesToHex(bytes) });
  }

  program(seed: number): Program {
    return { seed, calls: this.calls };
  }
}

const r = (id: number, field: string): Ref => ({ $ref: id, field });

function mockDomainMaps(): Program {
  const b = new Builder();
  const ioas = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  const buf = b.mmap(16 * 4096);
  const md = b.test("MOCK_DOMAIN", { id: r(ioas, "out_ioas_id") });
  const map = b.ioctl("IOMMU_IOAS_MAP", {
    flags: RW,
    ioas_id: r(ioas, "out_ioas_id"),
    user_va: buf,
    length: 8n * 4096n,
    iova: 0n,
  });
  b.ioctl("IOMMU_IOAS_MAP", {
    flags: FIXED,
    ioas_id: r(ioas, "out_ioas_id"),
    user_va: buf,
    length: 4096n,
    iova: APERTURE + 0x100000n,
  });
  b.test("MD_CHECK_MAP", { id: r(md, "out_hwpt_id"), iova: r(map, "iova"), length: 8n * 4096n, uptr: buf });
  const ioas2 = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  b.test("MOCK_DOMAIN", { id: r(ioas2, "out_ioas_id") });
  b.ioctl("IOMMU_IOAS_COPY", {
    flags: FIXED,
    dst_ioas_id: r(ioas2, "out_ioas_id"),
    src_ioas_id: r(ioas, "out_ioas_id"),
    length: 4096n,
    dst_iova: APERTURE,
    src_iova: APERTURE + 0x100000n,
  });
  b.test("MOCK_DOMAIN_REPLACE", { id: r(md, "out_stdev_id"), pt_id: r(ioas2, "out_ioas_id") });
  b.ioctl("IOMMU_IOAS_UNMAP", { ioas_id: r(ioas, "out_ioas_id"), iova: r(map, "iova"), length: 8n * 4096n });
  b.ioctl("IOMMU_DESTROY", { id: r(md, "out_stdev_id") });
  return b.program(101);
}

function nestedViommu(): Program {
  const b = new Builder();
  const ioas = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  const md = b.test("MOCK_DOMAIN", { id: r(ioas, "out_ioas_id") });
  const buf = b.mmap(4 * 4096);
  b.ioctl("IOMMU_IOAS_MAP", {
    flags: FIXED,
    ioas_id: r(ioas, "out_ioas_id"),
    user_va: buf,
    length: 4096n,
    iova: APERTURE,
  });
  const fault = b.ioctl("IOMMU_FAULT_QUEUE_ALLOC", { flags: 0 });
  const parent = b.ioctl("IOMMU_HWPT_ALLOC", {
    flags: I.IOMMU_HWPT_ALLOC_NEST_PARENT,
    dev_id: r(md, "out_idev_id"),
    pt_id: r(ioas, "out_ioas_id"),
  });
  const vi = b.ioctl("IOMMU_VIOMMU_ALLOC", {
    type: S.IOMMU_VIOMMU_TYPE_SELFTEST,
    dev_id: r(md, "out_idev_id"),
    hwpt_id: r(parent, "out_hwpt_id"),
  });
  const vdev = b.ioctl("IOMMU_VDEVICE_ALLOC", {
    viommu_id: r(vi, "out_viommu_id"),
    dev_id: r(md, "out_idev_id"),
    virt_id: 0x99n,
  });
  b.ioctl("IOMMU_VEVENTQ_ALLOC", {
    viommu_id: r(vi, "out_viommu_id"),
    type: S.IOMMU_VEVENTQ_TYPE_SELFTEST,
    veventq_depth: 2,
  });
  const data = new Uint8Array(8);
  new DataView(data.buffer).setUint32(0, S.IOMMU_TEST_IOTLB_DEFAULT, true);
  b.poke(4096, data);
  const nested = b.ioctl("IOMMU_HWPT_ALLOC", {
    flags: I.IOMMU_HWPT_FAULT_ID_VALID,
    dev_id: r(md, "out_idev_id"),
    pt_id: r(vi, "out_viommu_id"),
    data_type: S.IOMMU_HWPT_DATA_SELFTEST,
    data_len: 8,
    data_uptr: { $scratch: 4096 },
    fault_id: r(fault, "out_fault_id"),
  });
  b.test("MOCK_DOMAIN_REPLACE", { id: r(md, "out_stdev_id"), pt_id: r(nested, "out_hwpt_id") });
  b.test("TRIGGER_IOPF", { dev_id: r(md, "out_idev_id"), pasid: 0, grpid: 1, perm: 1, addr: 0x1000n });
  b.value({ id: 0, proc: 0, op: "read", fd: r(fault, "out_fault_fd"), length: 40 });
  b.test("TRIGGER_VEVENT", { dev_id: r(md, "out_idev_id") });
  b.poke(4096 + 64, new Uint8Array(8));
  b.ioctl("IOMMU_HWPT_INVALIDATE", {
    hwpt_id: r(nested, "out_hwpt_id"),
    data_uptr: { $scratch: 4096 + 64 },
    data_type: S.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
    entry_len: 8,
    entry_num: 1,
  });
  b.ioctl("IOMMU_HW_QUEUE_ALLOC", {
    viommu_id: r(vi, "out_viommu_id"),
    type: S.IOMMU_HW_QUEUE_TYPE_SELFTEST,
    index: 0,
    nesting_parent_iova: APERTURE,
    length: 4096n,
  });
  b.ioctl("IOMMU_DESTROY", { id: r(vdev, "out_vdevice_id") });
  return b.program(102);
}

function accessPages(): Program {
  const b = new Builder();
  const a = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  const c = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  const buf = b.mmap(8 * 4096);
  b.ioctl("IOMMU_IOAS_MAP", {
    flags: FIXED,
    ioas_id: r(a, "out_ioas_id"),
    user_va: buf,
    length: 4n * 4096n,
    iova: APERTURE,
  });
  const acc = b.test("CREATE_ACCESS", { id: r(a, "out_ioas_id"), flags: S.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES });
  const fd = r(acc, "out_access_fd");
  const pages = b.test("ACCESS_PAGES", { id: fd, flags: 0, iova: APERTURE, length: 4096n, uptr: buf });
  b.test("ACCESS_RW", { id: fd, iova: APERTURE, length: 16n, uptr: buf, flags: S.MOCK_ACCESS_RW_WRITE });
  b.test("DESTROY_ACCESS_PAGES", { id: fd, access_pages_id: r(pages, "out_access_pages_id") });
  b.test("ACCESS_REPLACE_IOAS", { id: fd, ioas_id: r(c, "out_ioas_id") });
  b.ioctl("IOMMU_IOAS_UNMAP", { ioas_id: r(a, "out_ioas_id"), iova: 0n, length: I.U64_MAX });
  b.value({ id: 0, proc: 0, op: "close", fd });
  return b.program(103);
}

function pasidAttach(): Program {
  const b = new Builder();
  const ioas = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  const md = b.test("MOCK_DOMAIN_FLAGS", { id: r(ioas, "out_ioas_id"), dev_flags: S.MOCK_FLAGS_DEVICE_PASID });
  const hwpt = b.ioctl("IOMMU_HWPT_ALLOC", {
    flags: I.IOMMU_HWPT_ALLOC_PASID,
    dev_id: r(md, "out_idev_id"),
    pt_id: r(ioas, "out_ioas_id"),
  });
  // A second device whose RID uses the PASID-capable HWPT, then a PASID of the first one on it.
  b.test("MOCK_DOMAIN", { id: r(hwpt, "out_hwpt_id") });
  b.test("MOCK_DOMAIN_REPLACE", { id: r(md, "out_stdev_id"), pt_id: r(hwpt, "out_hwpt_id") });
  b.test("PASID_ATTACH", { id: r(md, "out_stdev_id"), pasid: 2, pt_id: r(hwpt, "out_hwpt_id") });
  b.test("PASID_CHECK_HWPT", { id: r(md, "out_stdev_id"), pasid: 2, hwpt_id: r(hwpt, "out_hwpt_id") });
  const hwpt2 = b.ioctl("IOMMU_HWPT_ALLOC", {
    flags: I.IOMMU_HWPT_ALLOC_PASID,
    dev_id: r(md, "out_idev_id"),
    pt_id: r(ioas, "out_ioas_id"),
  });
  b.test("PASID_REPLACE", { id: r(md, "out_stdev_id"), pasid: 2, pt_id: r(hwpt2, "out_hwpt_id") });
  b.test("PASID_DETACH", { id: r(md, "out_stdev_id"), pasid: 2 });
  return b.program(104);
}

function vfioPaths(): Program {
  const b = new Builder();
  const ioas = b.ioctl("IOMMU_IOAS_ALLOC", { flags: 0, out_ioas_id: 0 });
  const dfd = b.value({ id: 0, proc: 0, op: "open", path: "/dev/vfio/devices/vfio0" });
  const bind = b.ioctl("VFIO_DEVICE_BIND_IOMMUFD", { argsz: 16, flags: 0, iommufd: b.fd }, dfd);
  void bind;
  b.ioctl("VFIO_DEVICE_ATTACH_IOMMUFD_PT", { argsz: 16, flags: 0, pt_id: r(ioas, "out_ioas_id"), pasid: 0 }, dfd);
  b.ioctl("IOMMU_VFIO_IOAS", { ioas_id: r(ioas, "out_ioas_id"), op: I.IOMMU_VFIO_IOAS_SET });
  const buf = b.mmap(4 * 4096);
  b.ioctl("VFIO_IOMMU_MAP_DMA", { argsz: 32, flags: 3, vaddr: buf, iova: APERTURE, size: 4096n });
  b.ioctl("VFIO_IOMMU_UNMAP_DMA", { argsz: 24, flags: 0, iova: APERTURE, size: 4096n });
  b.ioctl("IOMMU_IOAS_CHANGE_PROCESS", {});
  b.ioctl("VFIO_DEVICE_DETACH_IOMMUFD_PT", { argsz: 12, flags: 0, pasid: 0 }, dfd);
  const memfd = b.value({ id: 0, proc: 0, op: "memfd", size: 4 * 4096 });
  b.ioctl("IOMMU_IOAS_MAP_FILE", {
    flags: RW,
    ioas_id: r(ioas, "out_ioas_id"),
    fd: memfd,
    start: 0n,
    length: 4096n,
    iova: 0n,
  });
  b.value({ id: 0, proc: 0, op: "fork" });
  return b.program(105);
}

/** The seed corpus. @linux tools/testing/selftests/iommu/iommufd.c (the fixtures the seeds follow) */
export function seedPrograms(): Program[] {
  return [mockDomainMaps(), nestedViommu(), accessPages(), pasidAttach(), vfioPaths()];
}
