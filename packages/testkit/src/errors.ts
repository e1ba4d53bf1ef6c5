/** The failure a conformance check throws: a message a driver author can act on, and the seed that replays it. */

/**
 * A conformance check failed. `seed` (when the check is random) replays it: pass it as the suite's `seed` or set
 * IOMMU_SIM_SEED.
 * @linux the KUnit/kselftest failure line with its parameters
 */
export class ConformanceError extends Error {
  constructor(
    message: string,
    readonly seed?: number,
  ) {
    super(seed === undefined ? message : `${message} (replay with seed ${seed})`);
    this.name = "ConformanceError";
  }
}

/** Throw a {@link ConformanceError} with `message` unless `cond`. */
export function check(cond: boolean, message: string | (() => string), seed?: number): asserts cond {
  if (!cond) throw new ConformanceError(typeof message === "string" ? message : message(), seed);
}

/** Hex form of a number, for messages. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
