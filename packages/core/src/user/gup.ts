/**
 * Pinning user pages for DMA: fault the pages in, take a pin on each (GUP_PIN_COUNTING_BIAS on an order-0 folio,
 * one reference plus one `_pincount` on a large one), hand back their physical addresses; unpin drops them again.
 * Mirrors `mm/gup.c` (pin_user_pages, pin_user_pages_fast, pin_user_pages_remote, unpin_user_pages,
 * unpin_user_pages_dirty_lock, unpin_user_page_range_dirty_lock, memfd_pin_folios, unpin_folios).
 */
import { kerr } from "../kernel/errno.js";
import { PAGE_SIZE } from "../platform/memory.js";
import { currentProcess } from "./current.js";
import type { File } from "./file.js";
import { type MmStruct, PROT_READ, PROT_WRITE } from "./mm.js";
import type { Folio, PinRecord, UserPageRefs } from "./page-refs.js";
import { PTE_LEAF_ENTRIES } from "./pte-table.js";
import { shmemInodeOf } from "./shmem.js";

/**
 * How pages are pinned.
 * @linux the gup_flags FOLL_WRITE and FOLL_LONGTERM (FOLL_PIN is implied)
 */
export interface PinOptions {
  /** The device will write the pages: fault them in writable, break copy-on-write. @linux FOLL_WRITE */
  write?: boolean;
  /** The pin lasts indefinitely (DMA mappings). @linux FOLL_LONGTERM */
  longterm?: boolean;
}

/**
 * Where pin/unpin find the machine's page table: an address space, or the table itself.
 * @linux the global struct page array that a struct page pointer indexes
 */
export type PageRefSource = MmStruct | UserPageRefs;

function tableOf(src: PageRefSource): UserPageRefs {
  return "allocator" in src ? src : src.pages;
}

const holders = new WeakMap<MmStruct, [PinRecord, PinRecord]>();

/**
 * The holder record of pins taken through `mm`, shared by all of them (records are never changed): a long-lived
 * object, so storing it beside each pinned page costs no write barrier into a young object.
 */
function holderOf(mm: MmStruct, longterm: boolean): PinRecord {
  let h = holders.get(mm);
  if (h === undefined) {
    h = [
      { pid: mm.ownerPid, longterm: false },
      { pid: mm.ownerPid, longterm: true },
    ];
    holders.set(mm, h);
  }
  return h[longterm ? 1 : 0];
}

/**
 * Pin `npages` pages of `mm` from `va` (rounded down to a page) and return their physical addresses, faulting
 * missing pages in (writable with `write`). All or nothing: EFAULT when a page is outside every mapping, in a
 * mapping of physical memory (a driver's `remapPfnRange`), or not writable with `write` / not accessible at all, ENOMEM when a page cannot be allocated; nothing stays pinned then
 * (Linux may instead return a short count, after which the next call fails). With `pages`, the addresses are
 * written into it from index 0 and it is returned (a buffer reused across calls, like Linux's `pages` argument).
 * Synchronous: the page walk of GUP-fast plus its fault fallback in one step.
 * @linux pin_user_pages_fast
 */
export function pinUserPagesFast(
  mm: MmStruct,
  va: bigint,
  npages: number,
  opts: PinOptions = {},
  pages?: number[],
): number[] {
  if (!Number.isSafeInteger(npages) || npages < 0) throw kerr("EINVAL", `bad npages ${npages}`);
  if (!mm.alive) throw kerr("EFAULT", `address space of pid ${mm.ownerPid} is gone`);
  const table = mm.pages;
  const start = Number(va) - (Number(va) % PAGE_SIZE);
  const write = opts.write ?? false;
  const longterm = opts.longterm ?? false;
  // The caller's pages array, or one sized up front: no growth while pinning.
  const out = pages ?? new Array<number>(npages);
  let got = 0;
  // One holder record per address space and kind of pin; each page's VA is kept beside its pin.
  const record = holderOf(mm, longterm);
  try {
    let i = 0;
    while (i < npages) {
      const a = start + i * PAGE_SIZE;
      const vma = mm.findVma(a);
      if (vma === undefined) throw kerr("EFAULT", `pin of unmapped address 0x${a.toString(16)}`);
      // check_vma_flags: a mapping of raw physical memory (driver MMIO, VM_IO | VM_PFNMAP) has no pages to pin.
      if (vma.pfnmap) throw kerr("EFAULT", `pin of 0x${a.toString(16)}: mapping of physical memory (VM_PFNMAP)`);
      if (write ? (vma.prot & PROT_WRITE) === 0 : (vma.prot & PROT_READ) === 0) {
        throw kerr("EFAULT", `pin of 0x${a.toString(16)}: mapping does not allow ${write ? "write" : "read"}`);
      }
      // A pin needs a real page: never the zero page (FOLL_PIN unshares anonymous memory). A read-only long-term
      // pin of a private file mapping unshares too (gup_must_unshare): it pins the process's own copy, so a later
      // write by the process lands in the pinned page rather than in a fresh copy-on-write page.
      const unshare = longterm && !write && !vma.shared && vma.inode !== undefined;
      // GUP-fast: a present entry is pinned as it is unless the pin must break copy-on-write of a private file
      // page (what faultPage would do for it); everything else takes the fault path, one page at a time.
      const fast = (!write && !unshare) || vma.shared || vma.inode === undefined;
      // The checks hold for every page of this mapping: walk its pages without looking it up again.
      const stop = Math.min(npages, i + Math.ceil((vma.end - a) / PAGE_SIZE));
      const vpn0 = start / PAGE_SIZE;
      while (i < stop) {
        if (fast) {
          const ptes = mm.pteLeaf(vpn0 + i);
          if (ptes !== undefined) {
            const k = (vpn0 + i) % PTE_LEAF_ENTRIES;
            const end = Math.min(stop, i + PTE_LEAF_ENTRIES - k);
            const n = table.pinEntries(ptes, k, k + end - i, record, start + i * PAGE_SIZE, out, got);
            got += n;
            i += n;
            if (i === end) continue;
          }
        }
        const va = start + i * PAGE_SIZE;
        const pa = mm.faultPage(vma, va, write, true, unshare);
        table.pin(pa, record, va);
        out[got++] = pa;
        i++;
      }
    }
  } catch (e) {
    for (let k = 0; k < got; k++) table.unpin(out[k]!);
    throw e;
  }
  return out;
}

/**
 * {@link pinUserPagesFast} as a sleeping call (it takes the mmap lock): a scheduling point first, then the pin.
 * @linux pin_user_pages / pin_user_pages_remote
 */
export async function pinUserPages(mm: MmStruct, va: bigint, npages: number, opts: PinOptions = {}): Promise<number[]> {
  mm.ctx.mightSleep?.("pin_user_pages");
  await mm.ctx.schedulingPoint?.();
  return pinUserPagesFast(mm, va, npages, opts);
}

/**
 * Drop one pin of each page (physical addresses as returned by a pin). `src` names the machine (the mm the pages
 * were pinned from, or its page table); the one-argument form uses the current process's machine and throws
 * outside a system call.
 * @linux unpin_user_pages
 */
export function unpinUserPages(src: PageRefSource, pfns: readonly number[]): void;
export function unpinUserPages(pfns: readonly number[]): void;
export function unpinUserPages(a: PageRefSource | readonly number[], b?: readonly number[]): void {
  const [t, pfns] = Array.isArray(a)
    ? [currentTable(), a as readonly number[]]
    : [tableOf(a as PageRefSource), b ?? []];
  for (const pa of pfns) t.unpin(pa);
}

function currentTable(): UserPageRefs {
  const p = currentProcess();
  if (p === undefined) throw new Error("unpinUserPages(pfns) outside a system call: pass the mm");
  return p.space.pages;
}

/**
 * Drop one pin of each page, marking it dirty first when `makeDirty` (the device wrote to it).
 * @linux unpin_user_pages_dirty_lock
 */
export function unpinUserPagesDirtyLock(src: PageRefSource, pfns: readonly number[], makeDirty: boolean): void {
  const t = tableOf(src);
  for (const pa of pfns) t.unpin(pa, makeDirty);
}

/**
 * Drop one pin of each of the `npages` physically contiguous pages from `pa`.
 * @linux unpin_user_page_range_dirty_lock
 */
export function unpinUserPageRangeDirtyLock(src: PageRefSource, pa: number, npages: number, makeDirty: boolean): void {
  tableOf(src).unpinRange(pa, npages, makeDirty);
}

/**
 * Whether the page at `pa` may be pinned for DMA right now.
 * @linux folio_maybe_dma_pinned
 */
export function pageMaybeDmaPinned(src: PageRefSource, pa: number): boolean {
  return (tableOf(src).folioOf(pa)?.pinCount ?? 0) > 0;
}

/**
 * The result of {@link memfdPinFolios}.
 * @linux the folios array and *offset of memfd_pin_folios
 */
export interface MemfdPinned {
  /** Physical address of each pinned folio's first page, in file order, one entry per folio. */
  folios: number[];
  /** Orders of those folios. */
  orders: number[];
  /** Byte offset of `start` inside the first folio. */
  offset: number;
}

/**
 * Pin the folios of a memfd covering bytes [start, end] (inclusive, as Linux), allocating missing pages, at most
 * `maxFolios` of them. Each folio is pinned once (its first page carries the pin). EINVAL for a file that is not a
 * memfd or a bad range, EFAULT-free: pages past the end of the file are EINVAL.
 * @linux memfd_pin_folios
 */
export function memfdPinFolios(
  file: File,
  start: number,
  end: number,
  maxFolios = Number.POSITIVE_INFINITY,
): MemfdPinned {
  const inode = shmemInodeOf(file);
  if (inode === undefined) throw kerr("EINVAL", `${file.name} is not a memfd`);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw kerr("EINVAL", `bad range [${start}, ${end}]`);
  }
  if (end >= inode.size) throw kerr("EINVAL", `range end ${end} past the end of ${file.name}`);
  const table = inode.pages;
  const pid = currentProcess()?.pid;
  const got: Folio[] = [];
  const out: MemfdPinned = { folios: [], orders: [], offset: 0 };
  try {
    let index = Math.floor(start / PAGE_SIZE);
    const last = Math.floor(end / PAGE_SIZE);
    while (index <= last && got.length < maxFolios) {
      const f = inode.getFolio(index);
      if (got.length === 0) out.offset = start - f.index * PAGE_SIZE;
      const record: PinRecord = { file: file.name, offset: f.index * PAGE_SIZE, longterm: true };
      if (pid !== undefined) record.pid = pid;
      table.pin(f.pa, record);
      got.push(f);
      out.folios.push(f.pa);
      out.orders.push(f.order);
      index = f.index + f.nrPages;
    }
  } catch (e) {
    for (const f of got) table.unpin(f.pa);
    throw e;
  }
  return out;
}

/**
 * Drop the pins taken by {@link memfdPinFolios} (folio first-page addresses).
 * @linux unpin_folios
 */
export function unpinFolios(src: PageRefSource, folios: readonly number[]): void {
  const t = tableOf(src);
  for (const pa of folios) t.unpin(pa);
}
