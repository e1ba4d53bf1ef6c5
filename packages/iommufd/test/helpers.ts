/**
 * Test helpers: a minimal calling process (an address space backed by machine pages, with pin counts), a machine
 * with the mock driver and iommufd, and the "mock domain" of the selftests done through the kernel API (bind a mock
 * device to the context under a SELFTEST object and attach it), as IOMMU_TEST_CMD will do in issue 5.
 */
import { createMachine, defaultPlatformInput, type Machine, provide } from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import {
  getIommufdCore,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMUFD_OBJ,
  type IommufdCtx,
  type IommufdDevice,
  IommufdObject,
  IommufdTokens,
  type IommufdUser,
  iommufdClose,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceUnbind,
  iommufdIoctl,
  iommufdModule,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdOpen,
} from "../src/index.js";

export const PAGE_SIZE = 4096;

/** A process's address space for tests: anonymous mappings backed by machine pages on first touch. */
export class TestUser implements IommufdUser {
  readonly mm = {};
  readonly userAcct = { lockedVm: 0 };
  readonly mmAcct: { lockedVm: number; pinnedVm?: number } = { lockedVm: 0, pinnedVm: 0 };
  private next = 0x1000_0000;
  private readonly vmas: { start: number; end: number; ro: boolean }[] = [];
  readonly pages = new Map<number, number>(); // va page -> pa
  readonly pins = new Map<number, number>(); // pa -> pin count
  caps = new Set(["CAP_IPC_LOCK", "CAP_SYS_RESOURCE"]);
  memlock = 8 * 1024 * 1024;

  constructor(readonly m: Machine) {}

  memlockLimit(): number {
    return this.memlock;
  }
  capable(cap: string): boolean {
    return this.caps.has(cap);
  }
  mmap(length: number, opts: { ro?: boolean; align?: number } = {}): bigint {
    const align = opts.align ?? PAGE_SIZE;
    this.next = Math.ceil(this.next / align) * align;
    const start = this.next;
    const len = Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    this.vmas.push({ start, end: start + len, ro: opts.ro ?? false });
    this.next += len + PAGE_SIZE; // guard page
    return BigInt(start);
  }
  munmap(va: bigint): void {
    const i = this.vmas.findIndex((v) => v.start === Number(va));
    if (i >= 0) this.vmas.splice(i, 1);
  }
  private vma(a: number) {
    return this.vmas.find((v) => a >= v.start && a < v.end);
  }
  private page(a: number): number {
    const pg = a - (a % PAGE_SIZE);
    let pa = this.pages.get(pg);
    if (pa === undefined) {
      pa = this.m.pages.allocPages(0, "test_user_page");
      this.m.memory.fill(pa, PAGE_SIZE, 0);
      this.pages.set(pg, pa);
    }
    return pa;
  }
  pin(va: number, npages: number, write: boolean): number[] {
    const out: number[] = [];
    try {
      for (let i = 0; i < npages; i++) {
        const a = va + i * PAGE_SIZE;
        const v = this.vma(a);
        if (!v || (write && v.ro)) {
          const e = new Error("EFAULT") as Error & { code: string };
          throw Object.assign(e, { code: "EFAULT", errno: 14 });
        }
        const pa = this.page(a);
        this.pins.set(pa, (this.pins.get(pa) ?? 0) + 1);
        out.push(pa);
      }
    } catch (e) {
      for (const pa of out) this.pins.set(pa, this.pins.get(pa)! - 1);
      throw e;
    }
    return out;
  }
  unpin(pas: readonly number[]): void {
    for (const pa of pas) {
      const n = this.pins.get(pa) ?? 0;
      if (n <= 0) throw new Error(`unpin of unpinned page 0x${pa.toString(16)}`);
      this.pins.set(pa, n - 1);
    }
  }
  totalPins(): number {
    let n = 0;
    for (const v of this.pins.values()) n += v;
    return n;
  }
  read(va: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let a = Number(va);
    let done = 0;
    while (done < length) {
      if (!this.vma(a)) throw Object.assign(new Error("EFAULT"), { code: "EFAULT", errno: 14 });
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), length - done);
      out.set(this.m.memory.readBytes(this.page(a) + (a % PAGE_SIZE), n), done);
      done += n;
      a += n;
    }
    return out;
  }
  write(va: bigint, bytes: Uint8Array): void {
    let a = Number(va);
    let done = 0;
    while (done < bytes.length) {
      if (!this.vma(a)) throw Object.assign(new Error("EFAULT"), { code: "EFAULT", errno: 14 });
      const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), bytes.length - done);
      this.m.memory.writeBytes(this.page(a) + (a % PAGE_SIZE), bytes.subarray(done, done + n));
      done += n;
      a += n;
    }
  }
  /** Free the backing pages (process exit). */
  exit(): void {
    for (const pa of this.pages.values()) this.m.pages.freePages(pa, 0);
    this.pages.clear();
  }
}

/** The selftest object that owns a mock device's binding. @linux struct selftest_obj (selftest.c) */
export class SelftestObj extends IommufdObject {
  idev!: IommufdDevice;
}

/** A platform with `n` mock devices on mock0 (plus the default ones). */
export function mockPlatform(n = 6, _flags: Record<string, number> = {}) {
  const p = defaultPlatformInput() as { devices: Record<string, unknown>[] };
  for (let i = 0; i < n; i++) {
    const name = `mock-t${i}`;
    p.devices.push({
      name,
      bus: "platform",
      iommus: [{ iommu: "mock0", args: [10 + i] }],
    });
  }
  return p;
}

/** Boot a machine with the mock driver and iommufd, with the SELFTEST object type registered through DI. */
export async function bootMachine(opts: { devices?: number; flags?: Record<string, number> } = {}): Promise<Machine> {
  const selftestModule = {
    name: "iommufd-selftest",
    register(c: import("tsyringe").DependencyContainer) {
      c.register(IommufdTokens.objectType, {
        useValue: {
          type: IOMMUFD_OBJ.SELFTEST,
          destroy: async (obj: IommufdObject) => {
            const s = obj as SelftestObj;
            await iommufdDeviceDetach(s.idev, 0);
            await iommufdDeviceUnbind(s.idev);
          },
        },
      });
    },
  };
  const m = await createMachine({
    platform: mockPlatform(opts.devices ?? 6, opts.flags ?? {}),
    modules: [mockIommuDriver, iommufdModule, selftestModule],
    seed: 1,
  });
  await m.boot();
  void provide;
  return m;
}

/** Everything a scenario needs. */
export interface Env {
  m: Machine;
  ictx: IommufdCtx;
  u: TestUser;
  ioctl(cmd: number, arg: object | Uint8Array | null): Promise<number>;
  close(): Promise<void>;
}

export async function setup(opts: { devices?: number; flags?: Record<string, number> } = {}): Promise<Env> {
  const m = await bootMachine(opts);
  const ictx = iommufdOpen(m);
  const u = new TestUser(m);
  let closed = false;
  return {
    m,
    ictx,
    u,
    ioctl: (cmd, arg) => iommufdIoctl(ictx, cmd, arg as never, u),
    close: async () => {
      if (closed) return;
      closed = true;
      await iommufdClose(ictx);
    },
  };
}

/** Close, check no pins are left, free the process, tear down. */
export async function finish(env: Env): Promise<void> {
  await env.close();
  const pins = env.u.totalPins();
  env.u.exit();
  await env.m.teardown();
  if (pins) throw new Error(`${pins} pins left after close`);
  void getIommufdCore;
}

export async function ioasAlloc(env: Env): Promise<number> {
  const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
  await env.ioctl(IOMMU_IOAS_ALLOC, cmd);
  return cmd.out_ioas_id;
}

export async function ioasMapFixed(env: Env, ioasId: number, va: bigint, length: number, iova: number, ro = false) {
  const cmd = {
    size: 0,
    flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | (ro ? 0 : IOMMU_IOAS_MAP_WRITEABLE),
    ioas_id: ioasId,
    __reserved: 0,
    user_va: va,
    length: BigInt(length),
    iova: BigInt(iova),
  };
  await env.ioctl(IOMMU_IOAS_MAP, cmd);
  return cmd;
}

export async function ioasMap(env: Env, ioasId: number, va: bigint, length: number): Promise<number> {
  const cmd = {
    size: 0,
    flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    ioas_id: ioasId,
    __reserved: 0,
    user_va: va,
    length: BigInt(length),
    iova: 0n,
  };
  await env.ioctl(IOMMU_IOAS_MAP, cmd);
  return Number(cmd.iova);
}

/**
 * The selftest's mock domain: bind a mock device (no context reference, like a mock device) under a SELFTEST
 * object and attach it to `ptId`. Returns the ids the selftest returns.
 * @linux IOMMU_TEST_OP_MOCK_DOMAIN
 */
export async function mockDomain(env: Env, ptId: number, devName = nextMock(env)) {
  const ictx = env.ictx;
  const dev = env.m.driverCore.deviceFor(devName)!;
  const sobj = iommufdObjectAlloc(ictx, IOMMUFD_OBJ.SELFTEST, () => new SelftestObj());
  let bound: { idev: IommufdDevice; id: number } | undefined;
  try {
    bound = await iommufdDeviceBind(ictx, dev, { noCtxRef: true });
    sobj.idev = bound.idev;
    const pt = { id: ptId };
    await iommufdDeviceAttach(bound.idev, 0, pt);
    iommufdObjectFinalize(ictx, sobj);
    return { stdevId: sobj.id, hwptId: pt.id, idevId: bound.id, idev: bound.idev, dev };
  } catch (e) {
    if (bound) await iommufdDeviceUnbind(bound.idev);
    const { iommufdObjectAbort } = await import("../src/index.js");
    iommufdObjectAbort(ictx, sobj);
    throw e;
  }
}

const used = new WeakMap<Env, number>();
function nextMock(env: Env): string {
  const n = used.get(env) ?? 0;
  used.set(env, n + 1);
  return `mock-t${n}`;
}
