/** Where a command writes: injectable so tests capture the output. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

/** Exit codes of the `iommu-sim` command. */
export const EXIT = {
  ok: 0,
  /** A run found a problem (a failed scenario, a diagnostic). */
  failure: 1,
  /** Bad usage or a bad platform description. */
  usage: 2,
} as const;
