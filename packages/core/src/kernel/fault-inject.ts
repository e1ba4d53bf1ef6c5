import { type ErrnoCode, KernelError } from "./errno.js";

/** Which sites a failure rule applies to: all, a list of names, or a pattern. */
export type SiteFilter = string[] | RegExp | undefined;

function siteMatches(filter: SiteFilter, site: string): boolean {
  if (filter === undefined) return true;
  return Array.isArray(filter) ? filter.includes(site) : filter.test(site);
}

/** A small deterministic PRNG (mulberry32) so a seed reproduces a run. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Rule {
  kind: "nth" | "probability" | "site";
  filter: SiteFilter;
  /** nth: calls still to pass before failing (1 = the next eligible call fails). site: remaining failures. */
  remaining: number;
  probability: number;
  random: () => number;
}

/**
 * Named allocation sites that can be made to fail. Every allocation in the simulated kernel asks `check(site)`
 * first, so a test can fail the Nth allocation (like `iommufd_fail_nth`), fail at random under a seed, or fail a
 * named site.
 * @linux should_failslab / fail-nth (lib/fault-inject.c, Documentation/fault-injection)
 */
export class FaultInjector {
  private rules: Rule[] = [];
  /** Number of eligible calls seen since the last `reset`. */
  calls = 0;
  /** Number of failures injected since the last `reset`. */
  injected = 0;
  /** Calls per site since the last `reset`. */
  readonly siteCalls = new Map<string, number>();
  /** The sites that failed, in order. */
  readonly failedSites: string[] = [];

  /**
   * Whether the allocation at `site` must fail now. Counts the call.
   * @linux should_fail
   */
  shouldFail(site: string): boolean {
    this.calls++;
    this.siteCalls.set(site, (this.siteCalls.get(site) ?? 0) + 1);
    if (this.rules.length === 0) return false;
    for (const r of this.rules) {
      if (!siteMatches(r.filter, site)) continue;
      let fail = false;
      if (r.kind === "nth") {
        if (r.remaining > 0 && --r.remaining === 0) fail = true;
      } else if (r.kind === "probability") {
        fail = r.random() < r.probability;
      } else if (r.remaining > 0) {
        r.remaining--;
        fail = true;
      }
      if (fail) {
        this.injected++;
        this.failedSites.push(site);
        return true;
      }
    }
    return false;
  }

  /**
   * Throw `ENOMEM` (or `code`) when the allocation at `site` must fail.
   * @linux the NULL return of kmalloc under fault injection
   */
  check(site: string, code: ErrnoCode = "ENOMEM"): void {
    if (this.shouldFail(site)) throw new KernelError(code, `injected failure at ${site}`);
  }

  /** Fail the `n`th eligible call from now (1-based), once. */
  failNth(n: number, filter?: SiteFilter): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError("failNth takes n >= 1");
    this.rules.push({ kind: "nth", filter, remaining: n, probability: 0, random: Math.random });
  }

  /** Fail each eligible call with probability `p`, drawn from a PRNG seeded with `seed`. */
  failProbability(p: number, seed: number, filter?: SiteFilter): void {
    this.rules.push({ kind: "probability", filter, remaining: 0, probability: p, random: mulberry32(seed) });
  }

  /** Fail the next `times` calls (default every call) at the named site or sites. */
  failSite(site: string | RegExp, times = Number.POSITIVE_INFINITY): void {
    this.rules.push({
      kind: "site",
      filter: typeof site === "string" ? [site] : site,
      remaining: times,
      probability: 0,
      random: Math.random,
    });
  }

  /** Whether an armed `failNth` rule has fired (what `iommufd_fail_nth` checks to stop its sweep). */
  get nthConsumed(): boolean {
    return this.rules.some((r) => r.kind === "nth" && r.remaining === 0);
  }

  /** Drop every rule and zero the counters. */
  reset(): void {
    this.rules = [];
    this.calls = 0;
    this.injected = 0;
    this.siteCalls.clear();
    this.failedSites.length = 0;
  }
}
