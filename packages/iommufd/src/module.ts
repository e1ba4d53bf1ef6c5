/**
 * The iommufd kernel module: registers its tables in the machine's container, creates the per-machine state and
 * the /dev/iommu char device at init.
 * @linux module_init(iommufd_init) / iommufd_misc_dev (drivers/iommu/iommufd/main.c)
 */

import type { KernelModule, Machine } from "@iommu-sim/core";
import * as coreApi from "@iommu-sim/core";
import { createIommufdCore, getIommufdCore, type IommufdCore } from "./core.js";
import { type IommufdCtx, iommufdCtxPut, iommufdFopsOpen } from "./ctx.js";
import { iommufdFopsIoctl } from "./ioctl.js";
import { registerIommufdTables } from "./main.js";
import type { IoctlArg } from "./ucmd.js";
import { type IommufdUser, userOfProcess } from "./user-glue.js";

/** The path of the iommufd char device. @linux /dev/iommu (iommufd_misc_dev) */
export const IOMMUFD_DEV_PATH = "/dev/iommu";

/** A struct file as the char-device layer hands it to iommufd (docs/user-space-contracts.md). */
export interface IommufdFile {
  privateData?: unknown;
  /** The process that opened it, when the file layer records it. */
  process?: unknown;
}

/**
 * The file operations of /dev/iommu, for the char-device registry. The calling process is taken from the extra
 * argument the file layer passes, else from the file.
 * @linux iommufd_fops
 */
export function iommufdFops(core: IommufdCore) {
  const callerOf = (file: IommufdFile, proc: unknown): IommufdUser => userOfProcess(proc ?? file.process);
  return {
    open: (file: IommufdFile): void => {
      file.privateData = iommufdFopsOpen(core);
    },
    release: async (file: IommufdFile): Promise<void> => {
      await iommufdCtxPut(file.privateData as IommufdCtx);
    },
    ioctl: (file: IommufdFile, cmd: number, arg: IoctlArg | null, proc?: unknown): Promise<number> =>
      iommufdFopsIoctl(file.privateData as IommufdCtx, cmd, arg, callerOf(file, proc)),
  };
}

interface ChrdevRegistryLike {
  register(path: string, fops: unknown): void;
  unregister(path: string): void;
}

/** The machine's char-device registry, once core provides one (DI token `Tokens.chrdev` or `machine.chrdevs`). */
export function chrdevRegistryOf(machine: Machine): ChrdevRegistryLike | undefined {
  const tokens = (coreApi as unknown as { Tokens: Record<string, symbol> }).Tokens;
  for (const name of ["chrdev", "chrdevs", "chrdevRegistry"]) {
    const t = tokens[name];
    if (t && machine.container.isRegistered(t, true)) return machine.container.resolve(t) as ChrdevRegistryLike;
  }
  const m = machine as unknown as { chrdevs?: ChrdevRegistryLike };
  return m.chrdevs;
}

/**
 * The iommufd module, to pass to `createMachine`.
 * @linux iommufd.ko
 */
export const iommufdModule: KernelModule = {
  name: "iommufd",
  register(container) {
    registerIommufdTables(container);
  },
  async init({ machine }) {
    const core = createIommufdCore(machine);
    chrdevRegistryOf(machine)?.register(IOMMUFD_DEV_PATH, iommufdFops(core));
  },
  async exit({ machine }) {
    chrdevRegistryOf(machine)?.unregister(IOMMUFD_DEV_PATH);
  },
};

/**
 * Open an iommufd context without a process (kernel-side tests and tools).
 * @linux iommufd_fops_open
 */
export function iommufdOpen(machine: Machine): IommufdCtx {
  return iommufdFopsOpen(getIommufdCore(machine));
}

/**
 * Issue an ioctl on a context as `caller` (an {@link IommufdUser} or a core `Process`).
 * @linux iommufd_fops_ioctl
 */
export function iommufdIoctl(
  ictx: IommufdCtx,
  cmd: number,
  arg: IoctlArg | null,
  caller: IommufdUser | unknown,
): Promise<number> {
  return iommufdFopsIoctl(ictx, cmd, arg, userOfProcess(caller));
}

/**
 * Close a context opened with {@link iommufdOpen} (drops the file's reference).
 * @linux fput of the iommufd file
 */
export function iommufdClose(ictx: IommufdCtx): Promise<void> {
  return iommufdCtxPut(ictx);
}
