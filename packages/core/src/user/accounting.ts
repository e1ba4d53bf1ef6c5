/**
 * Accounting of pinned and locked memory against RLIMIT_MEMLOCK, in the two modes iommufd offers
 * (`IOMMU_OPTION_RLIMIT_MODE`): per user (`user_struct->locked_vm`) or per process (`mm->locked_vm`), both also
 * adding to `mm->pinned_vm`. CAP_IPC_LOCK bypasses the limit. The caller (iommufd) picks the mode; these are the
 * counters and checks it uses.
 * Mirrors `mm/util.c` (__account_locked_vm, account_locked_vm), `include/linux/sched/signal.h` (task_rlimit),
 * `kernel/capability.c` (capable) and the per-user helpers of `drivers/iommu/iommufd/pages.c`
 * (incr_user_locked_vm, decr_user_locked_vm).
 */
import { kerr } from "../kernel/errno.js";
import { PAGE_SHIFT } from "../platform/memory.js";
import type { Capability, RlimitResource, UserStruct } from "./cred.js";
import { currentProcess } from "./current.js";
import type { MmStruct } from "./mm.js";
import type { Process } from "./process.js";

/**
 * The current limit of `resource` for `task`.
 * @linux task_rlimit
 */
export function taskRlimit(task: Process, resource: RlimitResource): number {
  return task.rlimits[resource];
}

/**
 * RLIMIT_MEMLOCK of `task` in pages (Infinity when unlimited).
 * @linux task_rlimit(task, RLIMIT_MEMLOCK) >> PAGE_SHIFT
 */
export function memlockLimitPages(task: Process): number {
  const bytes = taskRlimit(task, "RLIMIT_MEMLOCK");
  return bytes === Number.POSITIVE_INFINITY ? bytes : Math.floor(bytes / 2 ** PAGE_SHIFT);
}

/**
 * Whether `task` (default: the current process) has `cap`. Kernel code outside any system call runs with the
 * kernel's full credentials.
 * @linux capable
 */
export function capable(cap: Capability, task: Process | undefined = currentProcess()): boolean {
  return task === undefined ? true : task.cred.has(cap);
}

/**
 * Charge (`inc`) or uncharge `npages` to `mm->locked_vm`. Charging fails with ENOMEM when it would exceed `task`'s
 * RLIMIT_MEMLOCK, unless `bypassRlim`; uncharging more than is charged is a warning.
 * @linux __account_locked_vm
 */
export function accountLockedVmChecked(
  mm: MmStruct,
  npages: number,
  inc: boolean,
  task: Process,
  bypassRlim: boolean,
): void {
  if (npages === 0) return;
  if (inc) {
    if (!bypassRlim && mm.lockedVm + npages > memlockLimitPages(task)) {
      throw kerr("ENOMEM", `locked_vm ${mm.lockedVm} + ${npages} pages exceeds RLIMIT_MEMLOCK of pid ${task.pid}`);
    }
    mm.lockedVm += npages;
  } else {
    if (npages > mm.lockedVm) {
      mm.ctx.files.diag.report("warning", `__account_locked_vm: uncharging ${npages} of ${mm.lockedVm} pages`, {
        culprit: `mm of pid ${mm.ownerPid}`,
      });
      mm.lockedVm = 0;
      return;
    }
    mm.lockedVm -= npages;
  }
}

/**
 * {@link accountLockedVmChecked} for the current process (or `task`), bypassing the limit with CAP_IPC_LOCK.
 * @linux account_locked_vm
 */
export function accountLockedVm(mm: MmStruct, npages: number, inc: boolean, task?: Process): void {
  const t = task ?? currentProcess();
  if (t === undefined) throw new Error("accountLockedVm: no current process; pass the task");
  accountLockedVmChecked(mm, npages, inc, t, capable("CAP_IPC_LOCK", t));
}

/**
 * Charge `npages` to `user->locked_vm`; ENOMEM when the total would exceed `limitPages` (the RLIMIT_MEMLOCK of
 * the task that owns the memory, in pages). The caller skips this under CAP_IPC_LOCK, as iommufd does.
 * @linux incr_user_locked_vm (drivers/iommu/iommufd/pages.c)
 */
export function incrUserLockedVm(user: UserStruct, npages: number, limitPages: number): void {
  if (user.lockedVm + npages > limitPages) {
    throw kerr("ENOMEM", `user ${user.uid}: locked_vm ${user.lockedVm} + ${npages} pages exceeds ${limitPages}`);
  }
  user.lockedVm += npages;
}

/**
 * Uncharge `npages` from `user->locked_vm`.
 * @linux decr_user_locked_vm (drivers/iommu/iommufd/pages.c)
 */
export function decrUserLockedVm(user: UserStruct, npages: number): void {
  if (npages > user.lockedVm) throw new Error(`user ${user.uid}: uncharging ${npages} of ${user.lockedVm} pages`);
  user.lockedVm -= npages;
}
