/**
 * The IOAS object and its ioctls: an I/O address space user space maps memory into; HWPTs and accesses mirror it.
 * @linux drivers/iommu/iommufd/ioas.c
 */
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, kerr, Mutex } from "@iommu-sim/core";
import type { IommufdCtx } from "./ctx.js";
import type { IommufdHwptPaging } from "./hw-pagetable.js";
import {
  holesOf,
  IOPT_ALLOC_IOVA,
  IOPT_IOVA_MAX,
  IoPagetable,
  type IovaSpan,
  ioptDestroyTable,
  ioptFreePagesList,
  ioptGetPages,
  ioptMapPages,
  ioptSetAllowIova,
  ioptUnmapAll,
  ioptUnmapAllOrWait,
  ioptUnmapIova,
} from "./io-pagetable.js";
import {
  IOMMUFD_OBJ,
  IommufdObject,
  iommufdGetObject,
  iommufdObjectAbort,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdPutObject,
} from "./object.js";
import { ioptAllocFilePages, ioptAllocUserPages, ioptPagesAccount } from "./pages.js";
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  type IommuIoasAlloc,
  type IommuIoasAllowIovas,
  type IommuIoasChangeProcess,
  type IommuIoasCopy,
  type IommuIoasIovaRanges,
  type IommuIoasMap,
  type IommuIoasMapFile,
  type IommuIoasUnmap,
  iommu_iova_range,
  U64_MAX,
} from "./uapi.js";
import type { IommufdUcmd } from "./ucmd.js";

/**
 * @linux struct iommufd_ioas
 */
export class IommufdIoas extends IommufdObject {
  /** @linux iommufd_ioas.iopt */
  readonly iopt: IoPagetable;
  /** Serialises HWPT creation/attach against the IOAS and CHANGE_PROCESS. @linux iommufd_ioas.mutex */
  readonly mutex: Mutex;
  /** Paging HWPTs built on this IOAS. @linux iommufd_ioas.hwpt_list */
  readonly hwptList: IommufdHwptPaging[] = [];

  constructor(ictx: IommufdCtx) {
    super();
    this.iopt = new IoPagetable(ictx.core);
    this.mutex = new Mutex(ictx.sched, "iommufd_ioas.mutex");
  }
}

/** The last IOVA as u64 (the simulated ULONG_MAX reads as U64_MAX). */
export function iovaToU64(iova: number): bigint {
  return iova >= IOPT_IOVA_MAX ? U64_MAX : BigInt(iova);
}

/**
 * A u64 from user space as an IOVA or length: values at or above ULONG_MAX are EOVERFLOW, as are values beyond the
 * simulated IOVA space (2^53 - 1).
 * @linux the `>= ULONG_MAX` checks of the ioas ioctls
 */
export function u64ToNum(v: bigint): number {
  if (v >= U64_MAX || v > BigInt(IOPT_IOVA_MAX)) throw kerr("EOVERFLOW", `0x${v.toString(16)} is out of range`);
  return Number(v);
}

/**
 * Allocate an IOAS (unfinalized).
 * @linux iommufd_ioas_alloc
 */
export function iommufdIoasAlloc(ictx: IommufdCtx): IommufdIoas {
  return iommufdObjectAlloc(ictx, IOMMUFD_OBJ.IOAS, () => new IommufdIoas(ictx));
}

/**
 * Destroy an IOAS: unmap everything, tear down the table.
 * @linux iommufd_ioas_destroy
 */
export function iommufdIoasDestroy(obj: IommufdObject): Promise<void> | undefined {
  const ioas = obj as IommufdIoas;
  // Uncontended and with no access to notify, the unmap completes without an asynchronous step.
  let unmapping: number | Promise<number>;
  try {
    unmapping = ioptUnmapAllOrWait(ioas.iopt);
  } catch (e) {
    ioasDestroyTable(ioas, e);
    return undefined;
  }
  if (typeof unmapping !== "number") {
    return unmapping.then(
      () => ioasDestroyTable(ioas, undefined),
      (e) => ioasDestroyTable(ioas, e),
    );
  }
  ioasDestroyTable(ioas, undefined);
  return undefined;
}

/** The end of {@link iommufdIoasDestroy}: warn when the unmap failed, then tear the table down. */
function ioasDestroyTable(ioas: IommufdIoas, unmapError: unknown): void {
  if (unmapError !== undefined) {
    ioas.ictx.diag.warnOn(true, `unmap of ${ioas} at destroy failed: ${(unmapError as Error).message}`);
  }
  ioptDestroyTable(ioas.iopt);
}

/**
 * Look up an IOAS (ENOENT).
 * @linux iommufd_get_ioas
 */
export function iommufdGetIoas(ictx: IommufdCtx, id: number): IommufdIoas {
  return iommufdGetObject<IommufdIoas>(ictx, id, IOMMUFD_OBJ.IOAS);
}

/** IOMMU_IOAS_MAP_* flags as IOMMU_* protection. @linux conv_iommu_prot */
export function convIommuProt(flags: number): number {
  let prot = IOMMU_CACHE;
  if (flags & IOMMU_IOAS_MAP_WRITEABLE) prot |= IOMMU_WRITE;
  if (flags & IOMMU_IOAS_MAP_READABLE) prot |= IOMMU_READ;
  return prot;
}

/**
 * IOMMU_IOAS_ALLOC. Uncontended it completes without an asynchronous step (returns nothing).
 * @linux iommufd_ioas_alloc_ioctl
 */
export function iommufdIoasAllocIoctl(ucmd: IommufdUcmd): Promise<void> | undefined {
  const cmd = ucmd.cmd as unknown as IommuIoasAlloc;
  if (cmd.flags) throw kerr("EOPNOTSUPP", "flags must be 0");
  const ioas = iommufdIoasAlloc(ucmd.ictx);
  cmd.out_ioas_id = ioas.id;
  try {
    ucmd.respond();
  } catch (e) {
    ioptDestroyTable(ioas.iopt);
    iommufdObjectAbort(ucmd.ictx, ioas);
    throw e;
  }
  const w = ucmd.ictx.ioasCreationLock.downReadOrWait();
  if (w) return w.then(() => ioasPublish(ucmd.ictx, ioas));
  ioasPublish(ucmd.ictx, ioas);
  return undefined;
}

/** Finalize a new IOAS under ioas_creation_lock (held for read), then release it. */
function ioasPublish(ictx: IommufdCtx, ioas: IommufdIoas): void {
  iommufdObjectFinalize(ictx, ioas);
  ictx.ioasCreationLock.upRead();
}

/**
 * IOMMU_IOAS_IOVA_RANGES: the holes between reserved ranges; EMSGSIZE (after writing back the count needed) when
 * the caller's array is too short.
 * @linux iommufd_ioas_iova_ranges
 */
export async function iommufdIoasIovaRanges(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasIovaRanges;
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  const ioas = iommufdGetIoas(ucmd.ictx, cmd.ioas_id);
  const iopt = ioas.iopt;
  await iopt.iovaRwsem.downRead();
  try {
    const max = cmd.num_iovas;
    cmd.num_iovas = 0;
    cmd.out_iova_alignment = BigInt(iopt.iovaAlignment);
    const used = iopt.reserved.map((r) => ({ start: r.start, last: r.last }));
    used.sort((a, b) => a.start - b.start);
    for (const h of holesOf(mergeSorted(used), 0, IOPT_IOVA_MAX)) {
      if (cmd.num_iovas < max) {
        const elm = iommu_iova_range.encode({ start: BigInt(h.start), last: iovaToU64(h.last) });
        ucmd.user.write(cmd.allowed_iovas + BigInt(cmd.num_iovas * iommu_iova_range.size), elm);
      }
      cmd.num_iovas++;
    }
    ucmd.respond();
    if (cmd.num_iovas > max) throw kerr("EMSGSIZE", `${cmd.num_iovas} ranges do not fit in ${max}`);
  } finally {
    iopt.iovaRwsem.upRead();
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

function mergeSorted(spans: IovaSpan[]): IovaSpan[] {
  const out: IovaSpan[] = [];
  for (const x of spans) {
    const top = out[out.length - 1];
    if (top && x.start <= top.last + 1) top.last = Math.max(top.last, x.last);
    else out.push({ ...x });
  }
  return out;
}

/**
 * IOMMU_IOAS_ALLOW_IOVAS: restrict the IOVA allocator to the given ranges. EINVAL for an empty, inverted or
 * overlapping range; EADDRINUSE when one covers a reserved range.
 * @linux iommufd_ioas_allow_iovas
 */
export async function iommufdIoasAllowIovas(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasAllowIovas;
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  const ioas = iommufdGetIoas(ucmd.ictx, cmd.ioas_id);
  try {
    const allowed: IovaSpan[] = [];
    for (let i = 0; i < cmd.num_iovas; i++) {
      const bytes = ucmd.user.read(cmd.allowed_iovas + BigInt(i * iommu_iova_range.size), iommu_iova_range.size);
      const r = iommu_iova_range.decode(bytes);
      if (r.start >= r.last || r.last > U64_MAX) throw kerr("EINVAL", "bad range");
      const start = Number(r.start > BigInt(IOPT_IOVA_MAX) ? BigInt(IOPT_IOVA_MAX) : r.start);
      const last = Number(r.last > BigInt(IOPT_IOVA_MAX) ? BigInt(IOPT_IOVA_MAX) : r.last);
      if (allowed.some((a) => a.start <= last && a.last >= start)) throw kerr("EINVAL", "ranges overlap");
      ucmd.ictx.faults.check("iopt_allowed_alloc");
      allowed.push({ start, last });
    }
    await ioptSetAllowIova(ioas.iopt, allowed);
  } finally {
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

function checkMapFlags(flags: number): void {
  if (flags & ~(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)) {
    throw kerr("EOPNOTSUPP", "unknown map flags");
  }
}

/**
 * Map `length` bytes of user memory at `uptr` into an IOAS.
 * @linux iopt_map_user_pages
 */
export async function ioptMapUserPages(
  ictx: IommufdCtx,
  ioas: IommufdIoas,
  user: IommufdUcmd["user"],
  iova: number,
  uptr: number,
  length: number,
  prot: number,
  flags: number,
): Promise<number> {
  const { pages, startByte } = ioptAllocUserPages(
    ictx.core,
    user,
    uptr,
    length,
    (prot & IOMMU_WRITE) !== 0,
    ictx.accountMode,
  );
  const list = [{ pages, startByte, length }];
  try {
    return await ioptMapPages(ioas.iopt, list, length, iova, prot, flags);
  } finally {
    ioptFreePagesList(list);
  }
}

/**
 * IOMMU_IOAS_MAP.
 * @linux iommufd_ioas_map
 */
export async function iommufdIoasMap(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasMap;
  checkMapFlags(cmd.flags);
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  if (cmd.iova >= U64_MAX || cmd.length >= U64_MAX) throw kerr("EOVERFLOW", "iova or length too large");
  if (!(cmd.flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE))) throw kerr("EINVAL", "no access");
  const ioas = iommufdGetIoas(ucmd.ictx, cmd.ioas_id);
  const flags = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA ? 0 : IOPT_ALLOC_IOVA;
  await ioas.mutex.lock();
  try {
    const iova = flags ? 0 : u64ToNum(cmd.iova);
    const uptr = u64ToNum(cmd.user_va);
    const length = u64ToNum(cmd.length);
    const got = await ioptMapUserPages(ucmd.ictx, ioas, ucmd.user, iova, uptr, length, convIommuProt(cmd.flags), flags);
    cmd.iova = BigInt(got);
    ucmd.respond();
  } finally {
    ioas.mutex.unlock();
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

/**
 * IOMMU_IOAS_MAP_FILE: map a memfd range. EBADF for a bad fd, EINVAL for a file that is not a memfd.
 * @linux iommufd_ioas_map_file
 */
export async function iommufdIoasMapFile(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasMapFile;
  checkMapFlags(cmd.flags);
  if (cmd.iova >= U64_MAX || cmd.length >= U64_MAX || cmd.start >= U64_MAX) {
    throw kerr("EOVERFLOW", "iova, start or length too large");
  }
  if (!(cmd.flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE))) throw kerr("EINVAL", "no access");
  const ioas = iommufdGetIoas(ucmd.ictx, cmd.ioas_id);
  const flags = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA ? 0 : IOPT_ALLOC_IOVA;
  await ioas.mutex.lock();
  try {
    const file = ucmd.user.fileOf?.(cmd.fd);
    if (file === undefined) throw kerr("EBADF", `fd ${cmd.fd} is not open`);
    const iova = flags ? 0 : u64ToNum(cmd.iova);
    const length = u64ToNum(cmd.length);
    const prot = convIommuProt(cmd.flags);
    const { pages, startByte } = ioptAllocFilePages(
      ucmd.ictx.core,
      ucmd.user,
      file,
      u64ToNum(cmd.start),
      length,
      (prot & IOMMU_WRITE) !== 0,
      ucmd.ictx.accountMode,
    );
    const list = [{ pages, startByte, length }];
    try {
      cmd.iova = BigInt(await ioptMapPages(ioas.iopt, list, length, iova, prot, flags));
    } finally {
      ioptFreePagesList(list);
    }
    ucmd.respond();
  } finally {
    ioas.mutex.unlock();
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

/**
 * IOMMU_IOAS_COPY: map the pages behind a range of one IOAS into another (sharing the pins).
 * @linux iommufd_ioas_copy
 */
export async function iommufdIoasCopy(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasCopy;
  checkMapFlags(cmd.flags);
  if (cmd.length >= U64_MAX || cmd.src_iova >= U64_MAX || cmd.dst_iova >= U64_MAX) {
    throw kerr("EOVERFLOW", "iova or length too large");
  }
  // A mapping that grants no access is refused here, before any page is looked at.
  if (!(cmd.flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE))) throw kerr("EINVAL", "no access");
  const length = u64ToNum(cmd.length);
  const src = iommufdGetIoas(ucmd.ictx, cmd.src_ioas_id);
  let list: Awaited<ReturnType<typeof ioptGetPages>>;
  try {
    list = await ioptGetPages(src.iopt, u64ToNum(cmd.src_iova), length);
  } finally {
    iommufdPutObject(ucmd.ictx, src);
  }
  try {
    const dst = iommufdGetIoas(ucmd.ictx, cmd.dst_ioas_id);
    const flags = cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA ? 0 : IOPT_ALLOC_IOVA;
    await dst.mutex.lock();
    try {
      const iova = flags ? 0 : u64ToNum(cmd.dst_iova);
      cmd.dst_iova = BigInt(await ioptMapPages(dst.iopt, list, length, iova, convIommuProt(cmd.flags), flags));
      ucmd.respond();
    } finally {
      dst.mutex.unlock();
      iommufdPutObject(ucmd.ictx, dst);
    }
  } finally {
    ioptFreePagesList(list);
  }
}

/**
 * IOMMU_IOAS_UNMAP: unmap whole areas inside the range (0..U64_MAX: everything); `length` returns the bytes
 * unmapped.
 * @linux iommufd_ioas_unmap
 */
export async function iommufdIoasUnmap(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasUnmap;
  const ioas = iommufdGetIoas(ucmd.ictx, cmd.ioas_id);
  try {
    let unmapped: number;
    if (cmd.iova === 0n && cmd.length === U64_MAX) {
      unmapped = await ioptUnmapAll(ioas.iopt);
    } else {
      if (cmd.iova >= U64_MAX || cmd.length >= U64_MAX) throw kerr("EOVERFLOW", "iova or length too large");
      const iova = cmd.iova > BigInt(IOPT_IOVA_MAX) ? IOPT_IOVA_MAX : Number(cmd.iova);
      if (cmd.iova > BigInt(IOPT_IOVA_MAX) || cmd.iova + cmd.length - 1n > BigInt(IOPT_IOVA_MAX)) {
        // Nothing can be mapped beyond the simulated IOVA space; unmap what lies below it.
        if (cmd.length === 0n) throw kerr("EINVAL", "zero length");
        unmapped = await ioptUnmapIova(ioas.iopt, iova, IOPT_IOVA_MAX - iova + 1);
      } else {
        unmapped = await ioptUnmapIova(ioas.iopt, iova, Number(cmd.length));
      }
      // iopt_unmap_iova succeeds on an empty range; only this ioctl calls that ENOENT (VFIO's unmap does not).
      if (!unmapped) throw kerr("ENOENT", "nothing mapped in the range");
    }
    cmd.length = BigInt(unmapped);
    ucmd.respond();
  } finally {
    iommufdPutObject(ucmd.ictx, ioas);
  }
}

/**
 * IOMMU_IOAS_CHANGE_PROCESS: move the pin accounting of every IOAS of the context to the calling process. Only
 * file-backed mappings can move (EINVAL otherwise); ENOMEM when the new owner's limit is exceeded (nothing moved).
 * @linux iommufd_ioas_change_process
 */
export async function iommufdIoasChangeProcess(ucmd: IommufdUcmd): Promise<void> {
  const cmd = ucmd.cmd as unknown as IommuIoasChangeProcess;
  if (cmd.__reserved) throw kerr("EOPNOTSUPP", "__reserved must be 0");
  const ictx = ucmd.ictx;
  const user = ucmd.user;
  await ictx.ioasCreationLock.downWrite();
  const list: IommufdIoas[] = [];
  ictx.objects.forEach((_id, obj) => {
    if (obj.type !== IOMMUFD_OBJ.IOAS) return;
    if (!obj.users.incNotZero()) return;
    if (!obj.waitCnt.incNotZero()) {
      obj.users.dec();
      return;
    }
    list.push(obj as IommufdIoas);
  });
  // iommufd_take_all_iova_rwsem: only each iova_rwsem, in ID order, nested under ioas_creation_lock (never
  // ioas->mutex, which is taken outside iova_rwsem elsewhere: holding one IOAS's iova_rwsem while taking the next
  // IOAS's mutex would invert that order).
  for (const ioas of list) await ioas.iopt.iovaRwsem.downWriteNestLock(ictx.ioasCreationLock);
  try {
    const all = new Set<ReturnType<typeof pagesOf>[number]>();
    for (const ioas of list) for (const p of pagesOf(ioas)) all.add(p);
    for (const p of all) if (p.type !== "file") throw kerr("EINVAL", "only file mappings can change process");
    const moved: typeof all extends Set<infer P> ? P[] : never = [];
    const oldSources = new Map<(typeof moved)[number], typeof user>();
    try {
      for (const p of all) {
        if (p.source.mm === user.mm) continue;
        oldSources.set(p, p.source);
        p.source = user;
        ioptPagesAccount(p, p.npinned);
        moved.push(p);
      }
    } catch (e) {
      for (const p of moved) {
        ioptPagesAccount(p, -p.npinned);
      }
      for (const [p, s] of oldSources) p.source = s;
      throw e;
    }
    // Charged to the new owner: uncharge the old one and move the references (change_mm).
    for (const p of moved) {
      const newSrc = p.source;
      const oldSrc = oldSources.get(p)!;
      p.source = oldSrc;
      ioptPagesAccount(p, -p.npinned);
      p.source = newSrc;
      newSrc.grab?.();
      oldSrc.drop?.();
    }
  } finally {
    // iommufd_release_all_iova_rwsem
    for (const ioas of list) {
      ioas.iopt.iovaRwsem.upWrite();
      iommufdPutObject(ictx, ioas);
    }
    ictx.ioasCreationLock.upWrite();
  }
}

function pagesOf(ioas: IommufdIoas) {
  const out = [];
  for (const a of ioas.iopt.areas) if (a.pages) out.push(a.pages);
  return out;
}
