/**
 * A device's GCR3 table: the radix tree, indexed by PASID, of guest CR3 values (v2 table roots) the DTE points at
 * with GV, GLX (levels − 1) and the GCR3 root pointer pieces, and the per-device domain ID its translations are
 * tagged with. Entries are written by the CPU and flushed with INVALIDATE_IOMMU_PAGES carrying the PASID and GN.
 * @linux drivers/iommu/amd/iommu.c struct gcr3_tbl_info, get_gcr3_levels, setup_gcr3_table, __get_gcr3_pte,
 * update_gcr3, free_gcr3_table
 */
import { kerr, type Machine } from "@iommu-sim/core";
import { GCR3_VALID } from "./regs.js";

/** Entries of one GCR3 table level (4 KiB / 8 bytes). */
const GCR3_ENTRIES_LG2 = 9;

/**
 * GCR3 levels − 1 (the DTE's GLX) for `pasids` PASIDs: one level covers 2^9 of them.
 * @linux get_gcr3_levels
 */
export function gcr3Glx(pasids: number): number {
  let order = 0;
  while (2 ** order < pasids) order++;
  return order ? Math.ceil(order / GCR3_ENTRIES_LG2) - 1 : 0;
}

/**
 * One device's GCR3 table.
 * @linux struct gcr3_tbl_info
 */
export class Gcr3Table {
  /** PASIDs with an entry. @linux gcr3_tbl_info.pasid_cnt */
  pasidCnt = 0;
  /** Lower-level tables (freed with the table). */
  private readonly lower: number[] = [];

  private constructor(
    private readonly machine: Machine,
    /** Root table. @linux gcr3_tbl_info.gcr3_tbl */
    readonly root: number,
    /** @linux gcr3_tbl_info.glx */
    readonly glx: number,
    /** Per-device domain ID the v2 translations are tagged with. @linux gcr3_tbl_info.domid */
    readonly domid: number,
  ) {}

  /**
   * A table for `pasids` PASIDs: EINVAL when it needs more levels than the IOMMU supports (`maxGlx`); the domain
   * ID comes from `allocId` (which throws ENOSPC when none is left), and is returned to `freeId` on failure.
   * @linux setup_gcr3_table
   */
  static setup(
    machine: Machine,
    pasids: number,
    maxGlx: number,
    allocId: () => number,
    freeId: (id: number) => void,
  ): Gcr3Table {
    const glx = gcr3Glx(pasids);
    if (glx > maxGlx) throw kerr("EINVAL", `GCR3 table of ${glx + 1} levels (at most ${maxGlx + 1})`);
    const domid = allocId();
    let root: number;
    try {
      root = machine.pages.allocPages(0, "amd_iommu_gcr3_tbl");
    } catch (e) {
      freeId(domid);
      throw e;
    }
    machine.memory.fill(root, 4096, 0);
    return new Gcr3Table(machine, root, glx, domid);
  }

  /**
   * The address of the leaf entry of `pasid`, allocating missing lower levels.
   * @linux __get_gcr3_pte (alloc = true)
   */
  private pte(pasid: number): number {
    const mem = this.machine.memory;
    let table = this.root;
    for (let level = this.glx; ; level--) {
      const at = table + 8 * (Math.floor(pasid / 2 ** (GCR3_ENTRIES_LG2 * level)) & 0x1ff);
      if (level === 0) return at;
      let lo = mem.read32(at) >>> 0;
      if (!(lo & GCR3_VALID)) {
        const next = this.machine.pages.allocPages(0, "amd_iommu_gcr3_tbl");
        mem.fill(next, 4096, 0);
        this.lower.push(next);
        lo = (next % 2 ** 32) | GCR3_VALID;
        mem.write32(at + 4, Math.floor(next / 2 ** 32));
        mem.write32(at, lo >>> 0);
      }
      table = (mem.read32(at + 4) >>> 0) * 2 ** 32 + ((lo & 0xfffff000) >>> 0);
    }
  }

  /**
   * Point `pasid` at the v2 table `cr3` (valid), or clear it (`cr3` < 0). The caller flushes.
   * @linux update_gcr3 (without dev_flush_pasid_all)
   */
  write(pasid: number, cr3: number): void {
    const at = this.pte(pasid);
    const mem = this.machine.memory;
    if (cr3 < 0) {
      mem.write32(at, 0);
      mem.write32(at + 4, 0);
      return;
    }
    mem.write32(at + 4, Math.floor(cr3 / 2 ** 32));
    mem.write32(at, ((cr3 % 2 ** 32) & 0xfffff000) | GCR3_VALID);
  }

  /** Free every level. The caller frees the domain ID. @linux free_gcr3_table */
  free(): void {
    for (const p of this.lower.splice(0)) this.machine.pages.freePages(p, 0);
    this.machine.pages.freePages(this.root, 0);
  }
}
