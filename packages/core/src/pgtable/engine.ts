/**
 * The generic radix page-table engine: one map/unmap/iova_to_phys/dirty algorithm for every format described by
 * a {@link PageTableFormat}. Entries are 64-bit little-endian words in simulated physical memory, read and written
 * as two 32-bit halves through `frame32`; nothing is kept on the JS side per entry. Everything here is synchronous
 * (the kernel calls these in atomic context).
 * @linux drivers/iommu/generic_pt/iommu_pt.h, drivers/iommu/io-pgtable-arm.c
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { type ErrnoCode, KernelError } from "../kernel/errno.js";
import { defaultGeometry, type PageTableFormat } from "./format.js";
import { IotlbGather } from "./gather.js";
import { IOMMU_DIRTY_NO_CLEAR, IOMMU_READ, IOMMU_WRITE } from "./prot.js";

/** The memory accesses the engine needs (a subset of `PhysicalMemory`). */
export interface PgtableMemory {
  frame32(pa: number): Uint32Array;
}

/** The page allocation the engine needs (a subset of `PageAllocator`). */
export interface PgtableAllocator {
  allocPages(order: number, site?: string): number;
  freePages(pa: number, order: number): void;
}

/** Domain parameters. */
export interface IoPageTableOptions {
  /** Input (IOVA) address bits. At most 53 (JavaScript numbers are exact below 2^53). */
  ias: number;
  /** Output (physical) address bits. */
  oas: number;
  /** Allocation site named to the fault injector and the leak report. Default "io-pgtable". */
  site?: string;
  /** Where WARN_ON goes; no warnings are recorded without it. */
  diag?: Diagnostics;
  /** Suppress the WARNs Linux suppresses for its selftests. @linux IO_PGTABLE_QUIRK_NO_WARN */
  noWarn?: boolean;
  /**
   * Invalidate the IOTLB and walk caches for a gather. Called by `map` when replacing empty lower tables by a
   * large leaf and no gather was passed, before those tables are freed. @linux iommu_iotlb_sync
   */
  sync?: (gather: IotlbGather) => void;
}

/** Entry kinds returned by {@link IoPageTable.walk}. @linux enum pt_entry_type */
export const PT_ENTRY_EMPTY = 0;
export const PT_ENTRY_TABLE = 1;
export const PT_ENTRY_OA = 2;

/** Callback of {@link IoPageTable.walk}: one call per level visited. */
export type PtWalkFn = (level: number, tablePa: number, index: number, lo: number, hi: number, type: number) => void;

/** Callback of {@link IoPageTable.dump}: one call per leaf. */
export type PtDumpFn = (iova: number, pa: number, size: number, prot: number, level: number) => void;

/** Callback of {@link IoPageTable.readAndClearDirty}: a dirty IOVA range. @linux iova_bitmap_set */
export type PtDirtyFn = (iova: number, length: number) => void;

/**
 * A failed `map`: the errno plus how many bytes were installed before the failure, which the caller unmaps.
 * @linux the int return and `*mapped` out-parameter of map_pages
 */
export class PgtableMapError extends KernelError {
  constructor(
    code: ErrnoCode,
    readonly mapped: number,
    message?: string,
  ) {
    super(code, message);
  }
}

const TWO_32 = 4294967296;
const INV_2_32 = 1 / TWO_32;
const FRAME_SHIFT = 12;
const FRAME_SIZE = 4096;
/** Entries per 4 KiB frame: tables larger than a frame are contiguous frames, indexed by `idx >>> 9`. */
const ENTRIES_PER_FRAME_LG2 = 9;
const ENTRIES_PER_FRAME_MASK = 511;

function err(code: ErrnoCode, message: string): KernelError {
  return new KernelError(code, message);
}

/**
 * One IO page table (one domain's translation tree) of a given format.
 * @linux struct io_pgtable_ops + struct pt_iommu (alloc_io_pgtable_ops / pt_iommu_init)
 */
export class IoPageTable {
  readonly format: PageTableFormat;
  readonly memory: PgtableMemory;
  readonly allocator: PgtableAllocator;
  readonly ias: number;
  readonly oas: number;
  readonly site: string;
  /** Number of levels; the root is at level `levels - 1`. */
  readonly levels: number;
  readonly topLevel: number;
  /** Physical address of the root table (what TTBR / SLPTPTR / the DTE's root pointer holds). */
  readonly root: number;
  /** Page sizes this table can map, as a sum of powers of two (may exceed 2^31). @linux pgsize_bitmap */
  readonly pgsizeBitmap: number;
  /** 4 KiB pages held by tables, root included. */
  tablePages = 0;

  private readonly diag: Diagnostics | undefined;
  private readonly warn: boolean;
  private readonly sync: ((gather: IotlbGather) => void) | undefined;
  private freed = false;

  // Per-level constants, indexed by level.
  private readonly itemLg2: Int32Array;
  private readonly itemSize: Float64Array;
  private readonly invItem: Float64Array;
  private readonly itemsLg2: Int32Array;
  private readonly idxMask: Int32Array;
  private readonly order: Int32Array;
  private readonly tblMask: Int32Array;
  private readonly tblVal: Int32Array;
  private readonly tblLo: Int32Array;
  private readonly tblHi: Int32Array;
  private readonly leafType: Int32Array;
  private readonly contigLg2: Int32Array;
  /** By log2 page size: leaf level (-1: unsupported) and contiguous count log2. */
  private readonly levelOfLg2: Int8Array;
  private readonly contigOfLg2: Int8Array;

  // Entry encoding.
  private readonly presentLo: number;
  private readonly oaLo: number;
  private readonly oaHi: number;
  private readonly leafTypeMaskLo: number;
  private readonly customOa: boolean;
  private readonly contigLo: number;
  private readonly contigHi: number;
  private readonly hasDirty: boolean;
  private readonly dMaskLo: number;
  private readonly dMaskHi: number;
  private readonly dDirtyLo: number;
  private readonly dDirtyHi: number;
  private readonly dCleanLo: number;
  private readonly dCleanHi: number;
  private readonly maxIova: number;
  private readonly maxOa: number;
  private readonly split: boolean;
  private readonly refuse: boolean;

  private readonly scratch = new Uint32Array(2);
  private readonly oaScratch = new Uint32Array(2);

  // Per-operation state (avoids closures and result objects on the hot path).
  private opUnmapped = 0;
  private opMapped = 0;
  private opGather: IotlbGather = new IotlbGather();
  private opDirtyFn: PtDirtyFn | null = null;
  private opDirtyFlags = 0;
  private opDirtyStart = 0;
  private opDirtyEnd = 0;

  /**
   * Create an empty table: allocates the root (throws ENOMEM from the allocator), EINVAL when the format cannot
   * cover `ias`.
   * @linux alloc_io_pgtable_ops / pt_iommu_<fmt>_init
   */
  constructor(format: PageTableFormat, memory: PgtableMemory, allocator: PgtableAllocator, opts: IoPageTableOptions) {
    const { ias, oas } = opts;
    if (!Number.isInteger(ias) || ias < format.granuleLg2 || ias > 53) {
      throw err("EINVAL", `${format.name}: ias ${ias} out of range`);
    }
    if (!Number.isInteger(oas) || oas < format.granuleLg2 || oas > 53) {
      throw err("EINVAL", `${format.name}: oas ${oas} out of range`);
    }
    const geo = format.geometry ? format.geometry(ias) : defaultGeometry(format, ias);
    if (geo.levels < 1 || geo.levels > format.maxLevels || geo.levels < format.minLevels) {
      throw err("EINVAL", `${format.name}: ${geo.levels} levels needed for ias ${ias}`);
    }
    this.format = format;
    this.memory = memory;
    this.allocator = allocator;
    this.ias = ias;
    this.oas = oas;
    this.site = opts.site ?? "io-pgtable";
    this.diag = opts.diag;
    this.warn = opts.diag !== undefined && !opts.noWarn;
    this.sync = opts.sync;
    this.levels = geo.levels;
    this.topLevel = geo.levels - 1;
    this.maxIova = 2 ** ias;
    this.maxOa = 2 ** oas;

    const n = geo.levels;
    this.itemLg2 = new Int32Array(n);
    this.itemSize = new Float64Array(n);
    this.invItem = new Float64Array(n);
    this.itemsLg2 = new Int32Array(n);
    this.idxMask = new Int32Array(n);
    this.order = new Int32Array(n);
    this.tblMask = new Int32Array(n);
    this.tblVal = new Int32Array(n);
    this.tblLo = new Int32Array(n);
    this.tblHi = new Int32Array(n);
    this.leafType = new Int32Array(n);
    this.contigLg2 = new Int32Array(n);
    this.levelOfLg2 = new Int8Array(64).fill(-1);
    this.contigOfLg2 = new Int8Array(64);
    const s = this.scratch;
    let bitmap = 0;
    for (let l = 0; l < n; l++) {
      const itemLg2 = format.granuleLg2 + l * format.bitsPerLevel;
      const itemsLg2 = l === this.topLevel ? geo.topItemsLg2 : format.bitsPerLevel;
      this.itemLg2[l] = itemLg2;
      this.itemSize[l] = 2 ** itemLg2;
      this.invItem[l] = 2 ** -itemLg2;
      this.itemsLg2[l] = itemsLg2;
      this.idxMask[l] = 2 ** itemsLg2 - 1;
      this.order[l] = Math.max(0, itemsLg2 + 3 - FRAME_SHIFT);
      if (l > 0) {
        s[0] = s[1] = 0;
        format.tableMatch(l, s);
        this.tblMask[l] = s[0]!;
        this.tblVal[l] = s[1]!;
        s[0] = s[1] = 0;
        format.encodeTable(l, s);
        this.tblLo[l] = s[0]!;
        this.tblHi[l] = s[1]!;
      }
      const leafOk = (format.leafLevels >>> l) & 1;
      if (leafOk) {
        s[0] = s[1] = 0;
        format.encodeLeaf(l, IOMMU_READ, s);
        this.leafType[l] = s[0]! & format.leafTypeMaskLo;
        if (itemLg2 <= oas && itemLg2 < 53) {
          this.levelOfLg2[itemLg2] = l;
          bitmap += 2 ** itemLg2;
        }
        const c = format.contig?.lg2PerLevel[l] ?? 0;
        this.contigLg2[l] = c;
        if (c > 0 && c <= itemsLg2 && itemLg2 + c <= oas && itemLg2 + c < 53) {
          this.levelOfLg2[itemLg2 + c] = l;
          this.contigOfLg2[itemLg2 + c] = c;
          bitmap += 2 ** (itemLg2 + c);
        }
      }
    }
    this.pgsizeBitmap = bitmap;

    this.presentLo = format.presentLo;
    this.oaLo = format.oaLo;
    this.oaHi = format.oaHi;
    this.leafTypeMaskLo = format.leafTypeMaskLo;
    this.customOa = format.packOa !== null && format.unpackOa !== null;
    this.contigLo = format.contig?.markLo ?? 0;
    this.contigHi = format.contig?.markHi ?? 0;
    const d = format.dirty;
    this.hasDirty = d !== null;
    this.dMaskLo = d?.maskLo ?? 0;
    this.dMaskHi = d?.maskHi ?? 0;
    this.dDirtyLo = d?.dirtyLo ?? 0;
    this.dDirtyHi = d?.dirtyHi ?? 0;
    this.dCleanLo = d?.cleanLo ?? 0;
    this.dCleanHi = d?.cleanHi ?? 0;
    this.split = format.partialUnmap === "split";
    this.refuse = format.partialUnmap === "refuse";

    this.root = this.allocTable(this.topLevel);
  }

  // --- entry access -------------------------------------------------------------------------------------------

  private frameOf(table: number, idx: number): Uint32Array {
    return this.memory.frame32(table + (idx >>> ENTRIES_PER_FRAME_LG2) * FRAME_SIZE);
  }

  private unpack(lo: number, hi: number): number {
    if (this.customOa) return this.format.unpackOa!(lo, hi);
    return (hi & this.oaHi) * TWO_32 + ((lo & this.oaLo) >>> 0);
  }

  /** Write a table-pointer entry for `child` into slot `w` of frame `f` of a `level` table. */
  private writeTable(f: Uint32Array, w: number, level: number, child: number): void {
    let alo: number;
    let ahi: number;
    if (this.customOa) {
      this.format.packOa!(child, this.oaScratch);
      alo = this.oaScratch[0]!;
      ahi = this.oaScratch[1]!;
    } else {
      alo = child & this.oaLo;
      ahi = Math.floor(child * INV_2_32) & this.oaHi;
    }
    f[w + 1] = this.tblHi[level]! | ahi;
    f[w] = this.tblLo[level]! | alo;
  }

  private isTable(lo: number, level: number): boolean {
    return level > 0 && (lo & this.tblMask[level]!) === this.tblVal[level]!;
  }

  private allocTable(level: number): number {
    const order = this.order[level]!;
    const pa = this.allocator.allocPages(order, this.site);
    this.tablePages += 2 ** order;
    return pa;
  }

  private releaseTable(pa: number, level: number, gather: IotlbGather | null): void {
    const order = this.order[level]!;
    this.tablePages -= 2 ** order;
    if (gather) gather.addFreedTable(pa, order);
    else this.allocator.freePages(pa, order);
  }

  private checkLive(): void {
    if (this.freed) throw err("EINVAL", `${this.format.name}: page table used after free`);
  }

  // --- map ----------------------------------------------------------------------------------------------------

  /**
   * Install `pgcount` pages of `pgsize` bytes from `iova` to `paddr`. Returns the bytes mapped. Throws a
   * {@link PgtableMapError}: EINVAL for a page size the table lacks, misalignment or no R/W permission, ERANGE
   * beyond the IAS/OAS, EEXIST when something is already mapped there, ENOMEM when a table cannot be allocated;
   * its `mapped` says how much was installed first (the caller unmaps it, as iommu_map does).
   * @linux io_pgtable_ops.map_pages (arm_lpae_map_pages), pt_iommu_<fmt>_map_pages
   */
  map(iova: number, paddr: number, pgsize: number, pgcount: number, prot: number, gather?: IotlbGather): number {
    this.checkLive();
    const lg2 = pgsize === this.itemSize[0]! ? this.itemLg2[0]! : Math.log2(pgsize);
    const leafLevel = Number.isInteger(lg2) && lg2 < 64 ? this.levelOfLg2[lg2]! : -1;
    if (leafLevel < 0) throw new PgtableMapError("EINVAL", 0, `page size 0x${pgsize.toString(16)} not supported`);
    if (!Number.isInteger(pgcount) || pgcount < 1) throw new PgtableMapError("EINVAL", 0, "no pages");
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0) {
      this.diag?.warnOn(this.warn, "io-pgtable map without IOMMU_READ or IOMMU_WRITE");
      throw new PgtableMapError("EINVAL", 0, "no read or write permission");
    }
    if (!Number.isInteger(iova) || !Number.isInteger(paddr) || iova % pgsize !== 0 || paddr % pgsize !== 0) {
      throw new PgtableMapError("EINVAL", 0, "iova or paddr not aligned to the page size");
    }
    const len = pgsize * pgcount;
    if (iova < 0 || paddr < 0 || iova + len > this.maxIova || paddr + len > this.maxOa) {
      throw new PgtableMapError("ERANGE", 0, "iova or paddr beyond the table's address size");
    }
    const s = this.scratch;
    s[0] = s[1] = 0;
    if (!this.format.encodeLeaf(leafLevel, prot, s)) {
      throw new PgtableMapError("EINVAL", 0, `protection 0x${prot.toString(16)} not expressible`);
    }
    const contig = this.contigOfLg2[lg2]!;
    let aLo = s[0]!;
    let aHi = s[1]!;
    if (contig > 0) {
      aLo |= this.contigLo;
      aHi |= this.contigHi;
    }
    const own = gather === undefined;
    const g = own ? this.opGather : gather;
    if (own) g.reset();
    let mapped = 0;
    this.opMapped = 0;
    try {
      mapped = this.mapLeaves(iova, paddr, leafLevel, pgcount * 2 ** contig, contig, aLo, aHi, g);
    } catch (e) {
      // A table allocation failed (the allocator throws); report the progress like map_pages' *mapped.
      if (e instanceof KernelError && !(e instanceof PgtableMapError)) {
        throw new PgtableMapError(e.code, this.opMapped, e.message);
      }
      throw e;
    } finally {
      if (own && g.freelist.length > 0) {
        this.sync?.(g);
        g.freePages(this.allocator);
      }
    }
    return mapped;
  }

  /** Walk from the root to the `leafLevel` table holding `iova`, allocating missing tables; -1 if a leaf is in the way. */
  private descendAlloc(iova: number, leafLevel: number): number {
    let table = this.root;
    const present = this.presentLo;
    for (let l = this.topLevel; l > leafLevel; l--) {
      const idx = Math.floor(iova * this.invItem[l]!) & this.idxMask[l]!;
      const f = this.memory.frame32(table + (idx >>> ENTRIES_PER_FRAME_LG2) * FRAME_SIZE);
      const w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      if ((lo & present) === 0) {
        const child = this.allocTable(l - 1);
        this.writeTable(f, w, l, child);
        table = child;
      } else if ((lo & this.tblMask[l]!) === this.tblVal[l]!) {
        table = this.unpack(lo, f[w + 1]!);
      } else {
        return -1;
      }
    }
    return table;
  }

  private mapLeaves(
    iova: number,
    paddr: number,
    level: number,
    count: number,
    contig: number,
    aLo: number,
    aHi: number,
    gather: IotlbGather,
  ): number {
    const step = this.itemSize[level]!;
    const inv = this.invItem[level]!;
    const mask = this.idxMask[level]!;
    const entries = mask + 1;
    const present = this.presentLo;
    const oaLo = this.oaLo;
    const oaHi = this.oaHi;
    const custom = this.customOa;
    const group = 2 ** contig;
    const mem = this.memory;
    let iv = iova;
    let pa = paddr;
    let left = count;
    while (left > 0) {
      this.opMapped = pa - paddr;
      const table = this.descendAlloc(iv, level);
      if (table < 0) throw this.existError(iv, pa - paddr);
      let idx = Math.floor(iv * inv) & mask;
      const n = Math.min(left, entries - idx);
      let f = mem.frame32(table + (idx >>> ENTRIES_PER_FRAME_LG2) * FRAME_SIZE);
      let w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      for (let k = 0; k < n; k++) {
        if (w === 1024) {
          f = mem.frame32(table + (idx >>> ENTRIES_PER_FRAME_LG2) * FRAME_SIZE);
          w = 0;
        }
        if (contig > 0 && (k & (group - 1)) === 0) {
          if (!this.groupEmpty(table, idx, group, level, iv, gather)) throw this.existError(iv, pa - paddr);
        } else if ((f[w]! & present) !== 0) {
          if (!this.replaceEmptyTable(f, w, level, gather)) throw this.existError(iv, pa - paddr);
          gather.addRange(iv, step);
        }
        if (custom) {
          this.format.packOa!(pa, this.oaScratch);
          f[w + 1] = aHi | this.oaScratch[1]!;
          f[w] = aLo | this.oaScratch[0]!;
        } else {
          f[w + 1] = aHi | (Math.floor(pa * INV_2_32) & oaHi);
          f[w] = aLo | (pa & oaLo);
        }
        pa += step;
        iv += step;
        w += 2;
        idx++;
      }
      left -= n;
    }
    return pa - paddr;
  }

  private existError(iova: number, mapped: number): PgtableMapError {
    this.diag?.warnOn(this.warn, `io-pgtable: iova 0x${iova.toString(16)} already mapped; unmap first`);
    return new PgtableMapError("EEXIST", mapped, `iova 0x${iova.toString(16)} already mapped`);
  }

  /** Check (and clear of empty tables) the `group` entries from `idx` before a contiguous run is written. */
  private groupEmpty(
    table: number,
    idx: number,
    group: number,
    level: number,
    iova: number,
    gather: IotlbGather,
  ): boolean {
    for (let i = 0; i < group; i++) {
      const f = this.frameOf(table, idx + i);
      const w = ((idx + i) & ENTRIES_PER_FRAME_MASK) << 1;
      if ((f[w]! & this.presentLo) !== 0) {
        if (!this.replaceEmptyTable(f, w, level, gather)) return false;
        gather.addRange(iova + i * this.itemSize[level]!, this.itemSize[level]!);
      }
    }
    return true;
  }

  /**
   * A present entry where a leaf goes: if it is a table whose subtree maps nothing, unlink it and queue its pages
   * for freeing (returns true); otherwise it is a conflict.
   * @linux clear_contig / __collect_tables (check_mapped)
   */
  private replaceEmptyTable(f: Uint32Array, w: number, level: number, gather: IotlbGather): boolean {
    const lo = f[w]!;
    if (!this.isTable(lo, level)) return false;
    const child = this.unpack(lo, f[w + 1]!);
    if (!this.subtreeEmpty(child, level - 1)) return false;
    f[w] = 0;
    f[w + 1] = 0;
    this.freeSubtree(child, level - 1, gather);
    return true;
  }

  private subtreeEmpty(table: number, level: number): boolean {
    const entries = this.idxMask[level]! + 1;
    for (let i = 0; i < entries; i++) {
      const f = this.frameOf(table, i);
      const w = (i & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      if ((lo & this.presentLo) === 0) continue;
      if (!this.isTable(lo, level)) return false;
      if (!this.subtreeEmpty(this.unpack(lo, f[w + 1]!), level - 1)) return false;
    }
    return true;
  }

  /** Release `table` (a `level` table) and every table below it. */
  private freeSubtree(table: number, level: number, gather: IotlbGather | null): void {
    if (level > 0) {
      const entries = this.idxMask[level]! + 1;
      for (let i = 0; i < entries; i++) {
        const f = this.frameOf(table, i);
        const w = (i & ENTRIES_PER_FRAME_MASK) << 1;
        const lo = f[w]!;
        if ((lo & this.presentLo) !== 0 && this.isTable(lo, level)) {
          this.freeSubtree(this.unpack(lo, f[w + 1]!), level - 1, gather);
        }
      }
    }
    this.releaseTable(table, level, gather);
  }

  // --- unmap --------------------------------------------------------------------------------------------------

  /**
   * Remove the translations of `pgcount` pages of `pgsize` from `iova`. Returns the bytes unmapped; stops at the
   * first hole. Lower tables the range fully covers are unlinked and queued on `gather.freelist`, to be freed with
   * `gather.freePages` once the caller has synced the IOTLB. A partially covered leaf follows the format's
   * `partialUnmap`. Returns 0 for a page size the table lacks, misalignment, or a range beyond the IAS.
   * @linux io_pgtable_ops.unmap_pages (arm_lpae_unmap_pages), pt_iommu_<fmt>_unmap_pages
   */
  unmap(iova: number, pgsize: number, pgcount: number, gather: IotlbGather): number {
    this.checkLive();
    const lg2 = pgsize === this.itemSize[0]! ? this.itemLg2[0]! : Math.log2(pgsize);
    if (!Number.isInteger(lg2) || lg2 >= 64 || this.levelOfLg2[lg2]! < 0) return 0;
    if (!Number.isInteger(pgcount) || pgcount < 1 || !Number.isInteger(iova) || iova < 0) return 0;
    if (iova % this.itemSize[0]! !== 0) return 0;
    const len = pgsize * pgcount;
    if (iova + len > this.maxIova) return 0;
    this.opUnmapped = 0;
    this.unmapLevel(this.root, this.topLevel, iova, iova + len - 1, gather);
    const unmapped = this.opUnmapped;
    if (unmapped > 0 && !gather.queued) gather.addRange(iova, unmapped);
    return unmapped;
  }

  /** Unmap [va, last] inside one `level` table; false when the unmap must stop. */
  private unmapLevel(table: number, level: number, va: number, last: number, gather: IotlbGather): boolean {
    const size = this.itemSize[level]!;
    const inv = this.invItem[level]!;
    const present = this.presentLo;
    const cLo = this.contigLo;
    const cHi = this.contigHi;
    const mem = this.memory;
    let idx = Math.floor(va * inv) & this.idxMask[level]!;
    let cur = va;
    let itemStart = Math.floor(cur * inv) * size;
    let fi = idx >>> ENTRIES_PER_FRAME_LG2;
    let f = mem.frame32(table + fi * FRAME_SIZE);
    for (;;) {
      if (idx >>> ENTRIES_PER_FRAME_LG2 !== fi) {
        fi = idx >>> ENTRIES_PER_FRAME_LG2;
        f = mem.frame32(table + fi * FRAME_SIZE);
      }
      const w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      if ((lo & present) === 0) return false;
      let itemLast = itemStart + size - 1;
      if (level > 0 && (lo & this.tblMask[level]!) === this.tblVal[level]!) {
        const child = this.unpack(lo, f[w + 1]!);
        const fully = cur === itemStart && last >= itemLast;
        if (!this.unmapLevel(child, level - 1, cur, Math.min(last, itemLast), gather)) return false;
        if (fully) {
          f[w] = 0;
          f[w + 1] = 0;
          this.releaseTable(child, level - 1, gather);
        }
        idx++;
      } else {
        const hi = f[w + 1]!;
        if ((lo & cLo) === 0 && (hi & cHi) === 0) {
          if (cur !== itemStart || last < itemLast) {
            if (!this.partialLeaf(table, level, idx, 1, lo, hi, cur === itemStart)) return false;
            if (this.split) continue; // re-read: now a table
          }
          f[w] = 0;
          f[w + 1] = 0;
          this.opUnmapped += size;
          idx++;
        } else {
          // A contiguous run: handled as one leaf.
          const n = 2 ** this.contigLg2[level]!;
          const within = idx & (n - 1);
          const runIdx = idx - within;
          const runStart = itemStart - within * size;
          itemLast = runStart + n * size - 1;
          if (cur !== runStart || last < itemLast) {
            if (!this.partialLeaf(table, level, runIdx, n, lo, hi, cur === runStart)) return false;
            if (this.split) continue; // re-read: now independent leaves
          }
          for (let i = 0; i < n; i++) {
            const fr = this.frameOf(table, runIdx + i);
            const wi = ((runIdx + i) & ENTRIES_PER_FRAME_MASK) << 1;
            fr[wi] = 0;
            fr[wi + 1] = 0;
          }
          this.opUnmapped += n * size;
          idx = runIdx + n;
        }
      }
      cur = itemLast + 1;
      if (cur > last) return true;
      itemStart = cur;
    }
  }

  /**
   * An unmap covers only part of a leaf (or contiguous run) of `n` entries at `idx`. Returns true when the caller
   * may go on: after a split (re-read the entry), or under "whole" when the range starts at the leaf (remove it
   * all). False stops the unmap.
   */
  private partialLeaf(
    table: number,
    level: number,
    idx: number,
    n: number,
    lo: number,
    hi: number,
    atStart: boolean,
  ): boolean {
    if (this.split) return this.splitLeaf(table, level, idx, n, lo, hi);
    if (this.refuse) {
      this.diag?.warnOnOnce(this.warn, "Unmap of a partial large IOPTE is not allowed");
      return false;
    }
    return atStart;
  }

  /**
   * Make a partial unmap of a leaf possible: a contiguous run loses its hint (its entries become independent
   * leaves); a single block becomes a next-level table of leaves with the same attributes. False when the block
   * cannot be split (leaf level, next level cannot hold leaves, no memory).
   * @linux arm_lpae_split_blk_unmap (before v6.12)
   */
  private splitLeaf(table: number, level: number, idx: number, n: number, lo: number, hi: number): boolean {
    if (n > 1) {
      const cLo = ~this.contigLo;
      const cHi = ~this.contigHi;
      for (let i = 0; i < n; i++) {
        const f = this.frameOf(table, idx + i);
        const w = ((idx + i) & ENTRIES_PER_FRAME_MASK) << 1;
        f[w] = f[w]! & cLo;
        f[w + 1] = f[w + 1]! & cHi;
      }
      return true;
    }
    if (level === 0 || ((this.format.leafLevels >>> (level - 1)) & 1) === 0) return false;
    let child: number;
    try {
      child = this.allocTable(level - 1);
    } catch (e) {
      if (e instanceof KernelError && e.code === "ENOMEM") return false;
      throw e;
    }
    const base = this.unpack(lo, hi);
    const aLo = (lo & ~this.leafTypeMaskLo & ~this.oaLo & ~this.contigLo) | this.leafType[level - 1]!;
    const aHi = hi & ~this.oaHi & ~this.contigHi;
    const step = this.itemSize[level - 1]!;
    const entries = this.idxMask[level - 1]! + 1;
    for (let i = 0; i < entries; i++) {
      const f = this.frameOf(child, i);
      const w = (i & ENTRIES_PER_FRAME_MASK) << 1;
      const pa = base + i * step;
      if (this.customOa) {
        this.format.packOa!(pa, this.oaScratch);
        f[w + 1] = aHi | this.oaScratch[1]!;
        f[w] = aLo | this.oaScratch[0]!;
      } else {
        f[w + 1] = aHi | (Math.floor(pa * INV_2_32) & this.oaHi);
        f[w] = aLo | (pa & this.oaLo);
      }
    }
    const f = this.frameOf(table, idx);
    this.writeTable(f, (idx & ENTRIES_PER_FRAME_MASK) << 1, level, child);
    return true;
  }

  // --- lookups ------------------------------------------------------------------------------------------------

  /**
   * The physical address `iova` translates to (with its offset in the page), or 0 when it is not mapped.
   * @linux iommu_iova_to_phys / io_pgtable_ops.iova_to_phys
   */
  iovaToPhys(iova: number): number {
    if (this.freed || !(iova >= 0 && iova < this.maxIova)) return 0;
    let table = this.root;
    const mem = this.memory;
    for (let l = this.topLevel; l >= 0; l--) {
      const idx = Math.floor(iova * this.invItem[l]!) & this.idxMask[l]!;
      const f = mem.frame32(table + (idx >>> ENTRIES_PER_FRAME_LG2) * FRAME_SIZE);
      const w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      if ((lo & this.presentLo) === 0) return 0;
      const oa = this.unpack(lo, f[w + 1]!);
      if (l > 0 && (lo & this.tblMask[l]!) === this.tblVal[l]!) {
        table = oa;
        continue;
      }
      const size = this.itemSize[l]!;
      return oa - (oa % size) + (iova - Math.floor(iova * this.invItem[l]!) * size);
    }
    return 0;
  }

  /**
   * Visit the entries on the path to `iova`, root first; returns the last entry's kind
   * (PT_ENTRY_EMPTY / PT_ENTRY_TABLE / PT_ENTRY_OA). For debugging and tests.
   * @linux pt_walk_range with a single-entry callback
   */
  walk(iova: number, cb: PtWalkFn): number {
    if (this.freed || !(iova >= 0 && iova < this.maxIova)) return PT_ENTRY_EMPTY;
    let table = this.root;
    for (let l = this.topLevel; l >= 0; l--) {
      const idx = Math.floor(iova * this.invItem[l]!) & this.idxMask[l]!;
      const f = this.frameOf(table, idx);
      const w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      const hi = f[w + 1]!;
      const type = (lo & this.presentLo) === 0 ? PT_ENTRY_EMPTY : this.isTable(lo, l) ? PT_ENTRY_TABLE : PT_ENTRY_OA;
      cb(l, table, idx, lo, hi, type);
      if (type !== PT_ENTRY_TABLE) return type;
      table = this.unpack(lo, hi);
    }
    return PT_ENTRY_EMPTY;
  }

  /** Call `cb` for every leaf entry, in IOVA order (a contiguous run reports each entry). */
  dump(cb: PtDumpFn): void {
    if (!this.freed) this.dumpLevel(this.root, this.topLevel, 0, cb);
  }

  private dumpLevel(table: number, level: number, base: number, cb: PtDumpFn): void {
    const entries = this.idxMask[level]! + 1;
    const size = this.itemSize[level]!;
    for (let i = 0; i < entries; i++) {
      const f = this.frameOf(table, i);
      const w = (i & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      if ((lo & this.presentLo) === 0) continue;
      const hi = f[w + 1]!;
      const iova = base + i * size;
      if (this.isTable(lo, level)) this.dumpLevel(this.unpack(lo, hi), level - 1, iova, cb);
      else cb(iova, this.unpack(lo, hi), size, this.format.decodeProt(lo, hi, level), level);
    }
  }

  // --- dirty tracking -----------------------------------------------------------------------------------------

  /**
   * Report the write-dirty leaves in [iova, iova + size) through `record` and, unless `flags` has
   * IOMMU_DIRTY_NO_CLEAR, make them write-clean again (adding their range to `gather`, which the caller syncs).
   * Holes are skipped. Throws EOPNOTSUPP when the format has no dirty bit.
   * @linux iommu_dirty_ops.read_and_clear_dirty (pt_iommu_<fmt>_read_and_clear_dirty)
   */
  readAndClearDirty(iova: number, size: number, record: PtDirtyFn, flags: number, gather?: IotlbGather): number {
    this.checkLive();
    if (!this.hasDirty) throw err("EOPNOTSUPP", `${this.format.name} has no dirty tracking`);
    if (!Number.isInteger(iova) || !Number.isInteger(size) || size <= 0 || iova < 0) {
      throw err("EINVAL", "bad dirty range");
    }
    const last = Math.min(iova + size, this.maxIova) - 1;
    if (last < iova) return 0;
    this.opDirtyFn = record;
    this.opDirtyFlags = flags;
    this.opDirtyStart = iova;
    this.opDirtyEnd = iova + size;
    const g = gather ?? this.opGather;
    if (!gather) g.reset();
    this.dirtyLevel(this.root, this.topLevel, iova, last, g);
    this.opDirtyFn = null;
    return 0;
  }

  private dirtyLevel(table: number, level: number, va: number, last: number, gather: IotlbGather): void {
    const size = this.itemSize[level]!;
    const inv = this.invItem[level]!;
    let idx = Math.floor(va * inv) & this.idxMask[level]!;
    let itemStart = Math.floor(va * inv) * size;
    const noClear = (this.opDirtyFlags & IOMMU_DIRTY_NO_CLEAR) !== 0;
    while (itemStart <= last) {
      const f = this.frameOf(table, idx);
      const w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      const lo = f[w]!;
      if ((lo & this.presentLo) !== 0) {
        const hi = f[w + 1]!;
        const itemLast = itemStart + size - 1;
        if (this.isTable(lo, level)) {
          const from = Math.max(itemStart, va);
          this.dirtyLevel(this.unpack(lo, hi), level - 1, from, Math.min(last, itemLast), gather);
        } else if ((lo & this.dMaskLo) === this.dDirtyLo && (hi & this.dMaskHi) === this.dDirtyHi) {
          const from = Math.max(itemStart, this.opDirtyStart);
          const to = Math.min(itemLast + 1, this.opDirtyEnd);
          this.opDirtyFn!(from, to - from);
          if (!noClear) {
            f[w + 1] = (hi & ~this.dMaskHi) | this.dCleanHi;
            f[w] = (lo & ~this.dMaskLo) | this.dCleanLo;
            gather.addRange(itemStart, size);
          }
        }
      }
      itemStart += size;
      idx++;
    }
  }

  /**
   * Make the leaf at `iova` write-dirty, as the device would on a write (the mock's IOMMU_TEST_OP_DIRTY). Returns
   * 0, -ENOENT when nothing is mapped, -EAGAIN when the leaf is not writable-clean or dirty, -EOPNOTSUPP without
   * dirty tracking.
   * @linux pt_iommu set_dirty (NS(set_dirty)) / pt_entry_make_write_dirty
   */
  setDirty(iova: number): number {
    if (!this.hasDirty) return -95;
    let result = -2;
    this.walk(iova, (_level, table, idx, lo, hi, type) => {
      if (type !== PT_ENTRY_OA) return;
      const f = this.frameOf(table, idx);
      const w = (idx & ENTRIES_PER_FRAME_MASK) << 1;
      const mLo = lo & this.dMaskLo;
      const mHi = hi & this.dMaskHi;
      if (mLo === this.dDirtyLo && mHi === this.dDirtyHi) {
        result = 0;
      } else if (mLo === this.dCleanLo && mHi === this.dCleanHi) {
        f[w + 1] = (hi & ~this.dMaskHi) | this.dDirtyHi;
        f[w] = (lo & ~this.dMaskLo) | this.dDirtyLo;
        result = 0;
      } else {
        result = -11;
      }
    });
    return result;
  }

  // --- teardown -----------------------------------------------------------------------------------------------

  /**
   * Free every table page, root included. The caller has already fenced the hardware and flushed its caches.
   * @linux free_io_pgtable_ops / pt_iommu_deinit
   */
  free(): void {
    if (this.freed) return;
    this.freeSubtree(this.root, this.topLevel, null);
    this.freed = true;
  }
}
