/**
 * A call program: what one fuzz iteration does, as plain data. Each call has a stable `id`; arguments that name an
 * object, an fd or a VA produced by an earlier call say so with a {@link Ref} to that call's result, so removing
 * or mutating calls (shrinking) keeps the program meaningful, and a reproducer can print `r3.out_ioas_id`.
 * @linux none: syzkaller's prog.Prog (calls with resource arguments)
 */

/** A reference to a field of an earlier call's result (`value` when the call returned a number or VA). */
export interface Ref {
  $ref: number;
  field: string;
  /** Added to the resolved value (an offset into a mapping, an ID off by one). */
  add?: number;
}

/** A VA inside the calling process's scratch page set (where struct bodies and blobs for pointers live). */
export interface Scratch {
  $scratch: number;
}

/** An argument value. */
export type Val = number | bigint | string | boolean | Ref | Scratch | Val[];

/** How an ioctl argument is passed. */
export type IoctlForm = "object" | "bytes" | "uptr" | "int";

/** What every call has. */
export interface CallBase {
  /** Stable identity within the program. */
  id: number;
  /** The process making the call: 0 for the first one, else the id of the `fork` call that created it. */
  proc: number;
  /** Arm fail-nth for this call: the Nth allocation inside it fails (like iommufd_fail_nth). */
  failNth?: number;
}

/** One system call of a program. */
export type Call =
  | (CallBase & { op: "open"; path: string })
  | (CallBase & { op: "close"; fd: Val })
  | (CallBase & { op: "mmap"; length: number; shared?: boolean; fd?: Val })
  | (CallBase & { op: "munmap"; va: Val; length: Val })
  | (CallBase & { op: "memfd"; size: number })
  | (CallBase & { op: "fork" })
  | (CallBase & { op: "exit" })
  | (CallBase & { op: "read"; fd: Val; length: number })
  | (CallBase & { op: "write"; fd: Val; data: string })
  | (CallBase & { op: "poke"; va: Val; data: string })
  | (CallBase & {
      op: "ioctl";
      fd: Val;
      /** The spec's name: `IOMMU_IOAS_MAP`, `IOMMU_TEST_OP_ACCESS_RW`, `VFIO_IOMMU_MAP_DMA`, … */
      name: string;
      form: IoctlForm;
      args: Record<string, Val>;
    });

/** A whole program. */
export interface Program {
  /** Seed of the machine the program runs on. */
  seed: number;
  calls: Call[];
}

/** Whether `v` is a {@link Ref}. @linux none (syzkaller ResultArg) */
export function isRef(v: unknown): v is Ref {
  return typeof v === "object" && v !== null && "$ref" in v;
}

/** Whether `v` is a {@link Scratch}. @linux none (syzkaller PointerArg into the data area) */
export function isScratch(v: unknown): v is Scratch {
  return typeof v === "object" && v !== null && "$scratch" in v;
}

/** Serialize a program (bigints as `{"$big": "0x…"}`). @linux none (syzkaller prog.Serialize) */
export function programToJson(p: Program): string {
  return JSON.stringify(p, (_k, v) => (typeof v === "bigint" ? { $big: `0x${v.toString(16)}` } : v), 1);
}

/** Parse {@link programToJson}'s output. @linux none (syzkaller prog.Deserialize) */
export function programFromJson(s: string): Program {
  return JSON.parse(s, (_k, v) =>
    typeof v === "object" && v !== null && typeof v.$big === "string" ? BigInt(v.$big) : v,
  ) as Program;
}

/** Deep copy of a call. @linux none (syzkaller prog.Clone) */
export function cloneCall<C extends Call>(c: C): C {
  return structuredClone(c);
}

/** Every call id `c` refers to (its process included). @linux none (syzkaller ResultArg uses) */
export function refsOf(c: Call): number[] {
  const out: number[] = [];
  if (c.proc !== 0) out.push(c.proc);
  const walk = (v: unknown): void => {
    if (isRef(v)) out.push(v.$ref);
    else if (Array.isArray(v)) for (const x of v) walk(x);
    else if (typeof v === "object" && v !== null && !isScratch(v)) for (const x of Object.values(v)) walk(x);
  };
  for (const [k, v] of Object.entries(c)) if (k !== "id" && k !== "proc") walk(v);
  return out;
}
