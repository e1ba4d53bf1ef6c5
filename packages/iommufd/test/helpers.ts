/**
 * Test helpers: a machine with the mock driver and iommufd, a user process with /dev/iommu open (every ioctl goes
 * through `p.ioctl` as a VMM's would), and the "mock domain" of the selftests done through the kernel API (bind a
 * mock device to the context under a SELFTEST object and attach it) — the stand-in for IOMMU_TEST_CMD.
 */
import {
  createMachine,
  defaultPlatformInput,
  type Machine,
  type Process,
  type SchedulerChoice,
  type SpawnOptions,
} from "@iommu-sim/core";
import { mockIommuDriver } from "@iommu-sim/drivers-mock";
import {
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
  iommufdCtxFromFile,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceUnbind,
  iommufdModule,
  iommufdObjectAbort,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
} from "../src/index.js";

export const PAGE_SIZE = 4096;

/** The selftest object that owns a mock device's binding. @linux struct selftest_obj (selftest.c) */
export class SelftestObj extends IommufdObject {
  idev!: IommufdDevice;
}

/** A platform with `n` mock devices on mock0 (plus the default ones). */
export function mockPlatform(n = 6) {
  const p = defaultPlatformInput() as { devices: Record<string, unknown>[] };
  for (let i = 0; i < n; i++) {
    p.devices.push({ name: `mock-t${i}`, bus: "platform", iommus: [{ iommu: "mock0", args: [10 + i] }] });
  }
  return p;
}

/** Boot a machine with the mock driver and iommufd, with the SELFTEST object type registered through DI. */
export async function bootMachine(
  opts: {
    devices?: number /** e.g. `{ kind: "random", seed }` for interleaving tests. */;
    scheduler?: SchedulerChoice;
  } = {},
): Promise<Machine> {
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
    platform: mockPlatform(opts.devices ?? 6),
    modules: [mockIommuDriver, iommufdModule, selftestModule],
    seed: 1,
    ...(opts.scheduler ? { scheduler: opts.scheduler } : {}),
  });
  await m.boot();
  return m;
}

/** Everything a scenario needs: a process with /dev/iommu open, and the context behind that fd. */
export interface Env {
  m: Machine;
  p: Process;
  fd: number;
  /** The context of `fd` (for the kernel-API parts of the selftests). */
  ictx: IommufdCtx;
  ioctl(cmd: number, arg: object | Uint8Array | null): Promise<number>;
  close(): Promise<void>;
}

/** Open /dev/iommu in `p` and wrap it as an {@link Env}. */
export async function openEnv(m: Machine, p: Process): Promise<Env> {
  const fd = await p.open("/dev/iommu");
  const ictx = iommufdCtxFromFile(p.files.lookup(fd)!);
  let closed = false;
  return {
    m,
    p,
    fd,
    ictx,
    ioctl: (cmd, arg) => p.ioctl(fd, cmd, arg),
    close: async () => {
      if (closed) return;
      closed = true;
      await p.close(fd);
    },
  };
}

export async function setup(
  opts: { devices?: number; spawn?: SpawnOptions; scheduler?: SchedulerChoice } = {},
): Promise<Env> {
  const m = await bootMachine(opts);
  return openEnv(m, m.spawnProcess(opts.spawn ?? {}));
}

/** Physical address behind a (touched) user VA of the env's process. */
export function vaPhys(env: Env, va: bigint | number): number | undefined {
  return env.p.mm.lookupPhys(BigInt(va));
}

/** Pins held on the page at `pa`. */
export function pinsOf(env: Env, pa: number | undefined): number {
  return pa === undefined ? 0 : (env.m.userSpace.pages.refs(pa)?.pinCount ?? 0);
}

/** Every pin held on user pages of the machine. */
export function totalPins(env: Env): number {
  return env.m.userSpace.pages.pinnedCount;
}

/** Close the fd, check that every pin went with it, exit the process, tear down. */
export async function finish(env: Env): Promise<void> {
  await env.close();
  const pins = totalPins(env);
  await env.p.exit();
  await env.m.teardown();
  if (pins) throw new Error(`${pins} pins left after close`);
}

/** Register a mock device after boot (platform data such as `mock-dev-flags`), probed at once. */
export async function addMockDevice(m: Machine, name: string, sid: number, platformData: Record<string, unknown> = {}) {
  const mock0 = m.driverCore.deviceFor("mock0")!;
  return m.driverCore.deviceRegister({
    name,
    bus: m.driverCore.busFor("platform")!,
    iommus: [{ fwnode: mock0.fwnode!, args: [sid] }],
    platformData,
  });
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
