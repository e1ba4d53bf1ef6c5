/**
 * Reading a hardware model's implementation parameters from the platform description's `options` object: each
 * reader returns the value under a key when it has the expected type, else the model's default. Unknown keys are
 * ignored here (the platform schema rejects them); range clamping stays with each model, which knows its limits.
 * @linux none: hardware model helper (the platform description stands in for what firmware and ID registers say)
 */

/**
 * The finite number under `key`, else `dflt`.
 * @linux none: hardware model helper
 */
export function optionNumber(o: Record<string, unknown>, key: string, dflt: number): number {
  const v = o[key];
  return typeof v === "number" && Number.isFinite(v) ? v : dflt;
}

/**
 * The boolean under `key`, else `dflt`.
 * @linux none: hardware model helper
 */
export function optionBool(o: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = o[key];
  return typeof v === "boolean" ? v : dflt;
}

/**
 * The string under `key` when it is one of `allowed`, else `dflt`.
 * @linux none: hardware model helper
 */
export function optionChoice<T extends string>(
  o: Record<string, unknown>,
  key: string,
  allowed: readonly T[],
  dflt: T,
): T {
  const v = o[key];
  return typeof v === "string" && (allowed as readonly string[]).includes(v) ? (v as T) : dflt;
}
