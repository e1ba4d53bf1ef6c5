/**
 * The page-table entries of one address space: virtual page number -> physical address of the mapped page. Kept
 * as 512-entry leaves (one per 2 MiB of address space, like a last-level page table) found through a map of leaf
 * numbers, with the last leaf cached: a walk over consecutive pages (pinning, faulting a buffer in) costs an array
 * index per page, not a hash of a 35-bit page number.
 * @linux the PTE level of a process's page tables (pte_offset_map / set_pte_at / pte_clear)
 */

const LEAF = 512;
const EMPTY = -1;
/** Entries per leaf of a {@link PteTable}. @linux PTRS_PER_PTE */
export const PTE_LEAF_ENTRIES = LEAF;
/** A leaf entry that maps nothing. @linux pte_none */
export const PTE_NONE = EMPTY;

/** VPN -> PA entries; an absent entry is "not present". */
export class PteTable {
  private readonly leaves = new Map<number, Float64Array>();
  private lastHi = -1;
  private lastLeaf: Float64Array | undefined;
  /** Present entries. @linux mm_counter (RSS) */
  size = 0;

  private leaf(hi: number): Float64Array | undefined {
    if (hi === this.lastHi) return this.lastLeaf;
    const l = this.leaves.get(hi);
    if (l !== undefined) {
      this.lastHi = hi;
      this.lastLeaf = l;
    }
    return l;
  }

  /** Physical address mapped at `vpn`, or undefined. @linux pte_offset_map + pte_present */
  get(vpn: number): number | undefined {
    const hi = Math.floor(vpn / LEAF);
    const l = this.leaf(hi);
    if (l === undefined) return undefined;
    const pa = l[vpn - hi * LEAF]!;
    return pa === EMPTY ? undefined : pa;
  }

  /**
   * The leaf of entries covering `vpn` (index `vpn % PTE_LEAF_ENTRIES`, {@link PTE_NONE} when not present), or
   * undefined when nothing in it is mapped: a walk over consecutive pages reads the entries in place. Read only.
   * @linux pte_offset_map (the PTE page of a PMD)
   */
  leafAt(vpn: number): Float64Array | undefined {
    return this.leaf(Math.floor(vpn / LEAF));
  }

  /** Whether `vpn` has an entry. */
  has(vpn: number): boolean {
    return this.get(vpn) !== undefined;
  }

  /** Map `vpn` to `pa`. @linux set_pte_at */
  set(vpn: number, pa: number): void {
    const hi = Math.floor(vpn / LEAF);
    let l = this.leaf(hi);
    if (l === undefined) {
      // One slot past the entries counts the leaf's present entries.
      l = new Float64Array(LEAF + 1).fill(EMPTY);
      l[LEAF] = 0;
      this.leaves.set(hi, l);
      this.lastHi = hi;
      this.lastLeaf = l;
    }
    const i = vpn - hi * LEAF;
    if (l[i] === EMPTY) {
      l[LEAF]!++;
      this.size++;
    }
    l[i] = pa;
  }

  /** Clear the entry of `vpn`; frees an empty leaf. @linux pte_clear */
  delete(vpn: number): void {
    const hi = Math.floor(vpn / LEAF);
    const l = this.leaf(hi);
    if (l === undefined) return;
    const i = vpn - hi * LEAF;
    if (l[i] === EMPTY) return;
    l[i] = EMPTY;
    this.size--;
    if (--l[LEAF]! === 0) {
      this.leaves.delete(hi);
      if (this.lastHi === hi) {
        this.lastHi = -1;
        this.lastLeaf = undefined;
      }
    }
  }

  /** Every present entry as [vpn, pa], in address order within a leaf (a snapshot: safe to modify meanwhile). */
  entries(): [number, number][] {
    const out: [number, number][] = [];
    for (const [hi, l] of this.leaves) {
      for (let i = 0; i < LEAF; i++) if (l[i] !== EMPTY) out.push([hi * LEAF + i, l[i]!]);
    }
    return out;
  }
}
