/**
 * The iommufd kernel module: registers its tables in the machine's container, creates the per-machine state and
 * the /dev/iommu char device at init.
 * @linux module_init(iommufd_init) / iommufd_misc_dev (drivers/iommu/iommufd/main.c)
 */

import {
  type IoctlArg as CoreIoctlArg,
  type File,
  type FileOperations,
  type KernelModule,
  kerr,
  type Machine,
  type Module,
  type Process,
  type Vma,
} from "@iommu-sim/core";
import { createIommufdCore, getIommufdCore, type IommufdCore } from "./core.js";
import { IommufdCtx, iommufdCtxGet, iommufdCtxPut, iommufdFopsOpen } from "./ctx.js";
import { iommufdFopsIoctl } from "./ioctl.js";
import { registerIommufdTables } from "./main.js";
import { iommufdFopsMmap } from "./mmap.js";
import type { IoctlArg } from "./ucmd.js";
import { type IommufdUser, userOfProcess } from "./user-glue.js";
import { vfioCdevExit, vfioCdevInit } from "./vfio-cdev.js";

/** The path of the iommufd char device. @linux /dev/iommu (iommufd_misc_dev) */
export const IOMMUFD_DEV_PATH = "/dev/iommu";

const fopsOfCore = new WeakMap<IommufdCore, FileOperations>();

/**
 * The file operations of /dev/iommu: open makes a context (the file's private data), the last fput releases it,
 * ioctls run as the calling process, mmap maps a driver's registered region.
 * @linux iommufd_fops
 */
export function iommufdFops(core: IommufdCore, owner?: Module): FileOperations {
  const hit = fopsOfCore.get(core);
  if (hit) return hit;
  const fops: FileOperations = {
    ...(owner ? { owner } : {}),
    open: (file: File): void => {
      file.privateData = iommufdFopsOpen(core);
    },
    release: async (file: File): Promise<void> => {
      await iommufdCtxPut(file.privateData as IommufdCtx);
    },
    ioctl: (file: File, cmd: number, arg: CoreIoctlArg, current: Process): Promise<number> =>
      iommufdFopsIoctl(file.privateData as IommufdCtx, cmd, arg as IoctlArg | null, userOfProcess(current)),
    mmap: (file: File, vma: Vma): void => iommufdFopsMmap(file.privateData as IommufdCtx, vma),
  };
  fopsOfCore.set(core, fops);
  return fops;
}

/**
 * The context behind an open /dev/iommu file; EBADFD for any other file.
 * @linux iommufd_ctx_from_file
 */
export function iommufdCtxFromFile(file: File): IommufdCtx {
  const ictx = file.privateData;
  if (!(ictx instanceof IommufdCtx) || fopsOfCore.get(ictx.core) !== file.fops) {
    throw kerr("EBADFD", `${file.name} is not an iommufd file`);
  }
  return ictx;
}

/**
 * The context behind fd `fd` of `proc`, with a file reference the caller drops with {@link iommufdCtxPut} (the
 * reference is the context's). EBADF for a closed fd, EBADFD for a file that is not /dev/iommu.
 * @linux iommufd_ctx_from_fd
 */
export function iommufdCtxFromFd(proc: Process, fd: number): IommufdCtx {
  const file = proc.files.lookup(fd);
  if (!file) throw kerr("EBADF", `fd ${fd} is not open`);
  const ictx = iommufdCtxFromFile(file);
  // Linux hands the file reference over to the context: iommufd_ctx_get / iommufd_ctx_put are fget / fput.
  iommufdCtxGet(ictx);
  return ictx;
}

/**
 * The iommufd module, to pass to `createMachine`: /dev/iommu, and a VFIO device node for every device in an
 * IOMMU group.
 * @linux iommufd.ko (with vfio.ko's cdev part)
 */
export const iommufdModule: KernelModule = {
  name: "iommufd",
  register(container) {
    registerIommufdTables(container);
  },
  async init({ machine, owner }) {
    const core = createIommufdCore(machine);
    machine.chrdevs.register(IOMMUFD_DEV_PATH, iommufdFops(core, owner));
    try {
      vfioCdevInit(machine, owner);
    } catch (e) {
      machine.chrdevs.unregister(IOMMUFD_DEV_PATH);
      throw e;
    }
  },
  async exit({ machine }) {
    vfioCdevExit(machine);
    machine.chrdevs.unregister(IOMMUFD_DEV_PATH);
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
