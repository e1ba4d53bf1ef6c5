/**
 * The fuzzer's seeded random source: every choice of a campaign comes from one of these, so a seed reproduces a
 * whole campaign and a program's seed reproduces the program.
 * @linux none: syzkaller's prog/rand.go plays this part
 */
import { mulberry32 } from "@iommu-sim/core";

/**
 * A small seeded PRNG with the helpers a generator needs.
 * @linux none (syzkaller randGen)
 */
export class Rng {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = mulberry32(seed >>> 0 || 1);
  }

  /** A float in [0, 1). */
  float(): number {
    return this.next();
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }

  /** One key by weight. */
  weighted<K extends string>(w: Readonly<Record<K, number>>): K {
    const entries = Object.entries(w) as [K, number][];
    let total = 0;
    for (const [, v] of entries) total += v;
    let x = this.next() * total;
    for (const [k, v] of entries) {
      x -= v;
      if (x < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }

  /** A 32-bit unsigned value. */
  u32(): number {
    return Math.floor(this.next() * 0x1_0000_0000) >>> 0;
  }

  /** A 64-bit unsigned value. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** A seed for a child generator. */
  fork(): number {
    return this.u32() || 1;
  }
}
