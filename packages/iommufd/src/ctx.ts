/**
 * The iommufd context: one per open file of /dev/iommu, holding the object table. Kernel users (bound devices,
 * accesses) hold a reference on the file, so the context is released when the last of them lets go.
 * @linux struct iommufd_ctx, iommufd_fops_open, iommufd_fops_release, iommufd_ctx_get / iommufd_ctx_put
 */
import { kerr, kfree, Refcount, RwSemaphore, WaitQueue, XArray } from "@iommu-sim/core";
import type { IommufdCore } from "./core.js";
import type { IommufdGroup } from "./device.js";
import type { IommufdIoas } from "./ioas.js";
import type { IommufdMmap } from "./mmap.js";
import { freeObject, IOMMUFD_OBJ_XA_SITE, type IommufdObject } from "./object.js";

/** How pinned pages are charged. @linux enum iopt_pages_account_mode (NONE is decided per pin by CAP_IPC_LOCK) */
export const IOPT_PAGES_ACCOUNT_NONE = 0;
/** Charge user->locked_vm (and mm->pinned_vm). @linux IOPT_PAGES_ACCOUNT_USER */
export const IOPT_PAGES_ACCOUNT_USER = 1;
/** Charge mm->locked_vm. @linux IOPT_PAGES_ACCOUNT_MM */
export const IOPT_PAGES_ACCOUNT_MM = 2;

/** Fault-injection site of context allocation. */
export const IOMMUFD_CTX_ALLOC_SITE = "iommufd_ctx_alloc";

let ctxSeq = 0;

/**
 * One open /dev/iommu.
 * @linux struct iommufd_ctx
 */
export class IommufdCtx {
  /** @linux iommufd_ctx.objects (XA_FLAGS_ALLOC1) */
  readonly objects: XArray<IommufdObject>;
  /** iommufd groups by iommu group id. @linux iommufd_ctx.groups */
  readonly groups = new Map<number, IommufdGroup>();
  /** @linux iommufd_ctx.destroy_wait */
  readonly destroyWait: WaitQueue;
  /** @linux iommufd_ctx.ioas_creation_lock */
  readonly ioasCreationLock: RwSemaphore;
  /** @linux iommufd_ctx.account_mode */
  accountMode = IOPT_PAGES_ACCOUNT_USER;
  /** Registered mmap regions, in offset order. @linux iommufd_ctx.mt_mmap */
  readonly mmaps: IommufdMmap[] = [];
  /** The IOAS the VFIO compatibility layer uses. @linux iommufd_ctx.vfio_ioas */
  vfioIoas: IommufdIoas | undefined = undefined;
  /** The file's reference count (the open fd plus kernel users). @linux iommufd_ctx.file's f_count */
  readonly fileRefs: Refcount;
  /** Name for diagnostics. */
  readonly name: string;
  released = false;

  constructor(readonly core: IommufdCore) {
    this.objects = new XArray<IommufdObject>(core.faults, IOMMUFD_OBJ_XA_SITE);
    this.destroyWait = new WaitQueue(core.sched, "iommufd destroy_wait");
    this.ioasCreationLock = new RwSemaphore(core.sched, "iommufd ioas_creation_lock");
    this.name = `iommufd#${++ctxSeq}`;
    this.fileRefs = new Refcount(core.diag, `${this.name} file`, 1);
  }

  get diag() {
    return this.core.diag;
  }
  get faults() {
    return this.core.faults;
  }
  get sched() {
    return this.core.sched;
  }
}

/**
 * Open /dev/iommu: a new context. ENOMEM under fault injection.
 * @linux iommufd_fops_open
 */
export function iommufdFopsOpen(core: IommufdCore): IommufdCtx {
  core.faults.check(IOMMUFD_CTX_ALLOC_SITE);
  const ictx = new IommufdCtx(core);
  core.liveCtxs.add(ictx);
  return ictx;
}

/**
 * Take a reference on the context's file (bound devices and accesses do).
 * @linux iommufd_ctx_get
 */
export function iommufdCtxGet(ictx: IommufdCtx): void {
  ictx.fileRefs.inc();
}

/**
 * Drop a file reference; the last one releases the context.
 * @linux iommufd_ctx_put (fput)
 */
export async function iommufdCtxPut(ictx: IommufdCtx): Promise<void> {
  if (ictx.fileRefs.decAndTest()) await iommufdFopsRelease(ictx);
}

/**
 * Release the context: destroy every object leaf-first (repeatedly free the objects only the table still uses)
 * until only tombstones are left; a pass that frees nothing is a reference-counting bug (WARN, and stop). Then
 * drop the tombstones and free the context.
 * @linux iommufd_fops_release
 */
export async function iommufdFopsRelease(ictx: IommufdCtx): Promise<void> {
  if (ictx.diag.warnOn(ictx.released, `${ictx.name} released twice`)) return;
  ictx.released = true;
  for (;;) {
    let destroyed = 0;
    let empty = true;
    const pass: [number, IommufdObject][] = [];
    ictx.objects.forEach((id, obj) => {
      pass.push([id, obj]);
    });
    for (const [id, obj] of pass) {
      // Objects destroyed earlier in this pass may have freed others' slots.
      if (ictx.objects.load(id) !== obj) continue;
      empty = false;
      if (!obj.users.decIfOne()) continue;
      destroyed++;
      ictx.objects.erase(id);
      await ictx.core.objectOps(obj.type).destroy(obj);
      freeObject(ictx, obj);
    }
    if (empty) break;
    if (ictx.diag.warnOn(destroyed === 0, `${ictx.name}: release found objects it cannot free (refcount bug)`)) break;
  }
  // Tombstones left by iommufd_object_tombstone_user go with the table.
  ictx.objects.destroy();
  // Every owner is gone, so a region left behind names freed memory (Linux frees it silently with the tree; a later
  // mmap of it would be a use-after-free): a driver that forgot iommufd_viommu_destroy_mmap.
  for (const m of ictx.mmaps) ictx.diag.report("warning", `${ictx.name}: mmap region of ${m.owner} left at release`);
  ictx.mmaps.length = 0;
  ictx.diag.warnOn(ictx.groups.size !== 0, `${ictx.name}: groups left at release`);
  ictx.core.liveCtxs.delete(ictx);
  kfree(ictx.diag, ictx, ictx.name);
}

/** Throw EBADF-like EINVAL when a context was already released (a use after close). */
export function assertCtxLive(ictx: IommufdCtx): void {
  if (ictx.released) throw kerr("EINVAL", `${ictx.name} is closed`);
}
