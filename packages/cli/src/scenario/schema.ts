/**
 * The scenario file format (JSON or YAML): a name, an optional description, and steps run in order. Each step is an
 * object whose `do` names its kind; every step may carry a `name` (shown in progress and in errors) and `expect`
 * an errno (`ENOENT`) the step must fail with. Numbers may be written as integers, hex strings or sizes (`2MiB`).
 * The schema is the documentation: docs in packages/cli/README.md list the kinds with an example each.
 */
import { parseSize } from "@iommu-sim/core";
import { z } from "zod";

/** An address or size: integer, hex string or size with a binary unit. */
export const num = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: "custom", message: 'expected an integer, hex string ("0x1000") or size ("2MiB")', input: v });
    return z.NEVER;
  }
  return n;
});

const ident = z.string().regex(/^[A-Za-z0-9_.:@/-]+$/, "expected a name of letters, digits and _ . : @ / -");
const errno = z.string().regex(/^E[A-Z0-9]+$/, 'expected an errno name such as "ENOENT"');

const common = {
  /** A label for progress lines and errors (default: the kind and its main argument). */
  name: z.string().optional(),
  /** The errno this step must fail with; the run fails when it succeeds or fails otherwise. */
  expect: errno.optional(),
};

function step<K extends string, S extends z.ZodRawShape>(kind: K, shape: S) {
  return z.strictObject({ do: z.literal(kind), ...common, ...shape });
}

/** Every step kind, by its `do`. */
export const stepSchemas = [
  step("boot", {}),
  step("spawn", {}),
  step("open-iommufd", {}),
  step("bind", { device: ident }),
  step("ioas-alloc", { as: ident }),
  step("map", {
    ioas: ident,
    iova: num,
    size: num,
    as: ident,
    /** Map read-only (IOMMU_IOAS_MAP_READABLE only). */
    readonly: z.boolean().optional(),
  }),
  step("unmap", { ioas: ident, iova: num, size: num }),
  step("hwpt-alloc", {
    device: ident,
    pt: ident,
    as: ident,
    nestParent: z.boolean().optional(),
    /** A fault queue (from fault-queue-alloc): the HWPT reports I/O page faults there. */
    faultQueue: ident.optional(),
  }),
  step("attach", { device: ident, pt: ident, pasid: z.number().int().nonnegative().optional() }),
  step("detach", { device: ident, pasid: z.number().int().nonnegative().optional() }),
  step("dma", {
    device: ident,
    iova: num,
    op: z.enum(["read", "write"]),
    /** Bytes to write (default 4 bytes 0xa5 0x5a 0xc3 0x3c) or to read (`length`). */
    data: z.array(z.number().int().min(0).max(255)).optional(),
    length: num.optional(),
    pasid: z.number().int().nonnegative().optional(),
    /** What must happen: the access completes, faults, or becomes a page request. */
    outcome: z.enum(["ok", "fault", "page-request"]).default("ok"),
    /** For a fault: a word its reason must contain (`permission`, `translation`). */
    fault: z.string().optional(),
  }),
  step("fault-queue-alloc", { as: ident }),
  step("page-requests", {
    queue: ident,
    /** How many requests must be pending. */
    count: z.number().int().nonnegative().optional(),
    /** Before answering, map a page of fresh memory at each faulting address in this IOAS. */
    mapIn: ident.optional(),
    respond: z.enum(["success", "invalid"]).default("success"),
  }),
  step("viommu-alloc", { device: ident, hwpt: ident, as: ident }),
  step("vdevice-alloc", { viommu: ident, device: ident, virtId: num, as: ident }),
  step("veventq-alloc", { viommu: ident, depth: z.number().int().positive().default(8), as: ident }),
  step("veventq-read", {
    queue: ident,
    count: z.number().int().nonnegative().optional(),
    /** The virtual ID every record must carry. */
    virtId: num.optional(),
  }),
  step("smmuv3-guest", {
    /** The guest's device (its vSTE becomes a nested HWPT on the vIOMMU). */
    device: ident,
    viommu: ident,
    /** Guest RAM: a region mapped by a `map` step (guest IPA = its IOVA). */
    ram: ident,
    /** The guest IOVA its stage 1 maps. */
    iova: num,
    asid: z.number().int().min(0).max(0xffff).default(5),
    as: ident,
  }),
  step("smmuv3-guest-remap", {
    guest: ident,
    /** The guest-RAM page (index) the guest IOVA now points at. */
    page: z.number().int().nonnegative(),
    /** Issue the guest's TLBI_NH_VA through IOMMU_HWPT_INVALIDATE (false: skip it, a stale-TLB bug). */
    invalidate: z.boolean().default(true),
  }),
  step("unbind", { device: ident }),
  step("destroy", { object: ident }),
  step("close", { fd: ident }),
  step("snapshot", { label: z.string() }),
  step("inspect", { device: ident, iova: num, pasid: z.number().int().nonnegative().optional() }),
  step("teardown", {}),
] as const;

export const stepSchema = z.discriminatedUnion("do", stepSchemas);

/** One scenario step, parsed. */
export type Step = z.output<typeof stepSchema>;
/** The step kinds. */
export type StepKind = Step["do"];

export const scenarioSchema = z.strictObject({
  name: z.string(),
  description: z.string().optional(),
  /** The machine's seed (default 1). */
  seed: z.number().int().nonnegative().optional(),
  steps: z.array(stepSchema).min(1),
});

/** A parsed scenario. */
export type Scenario = z.output<typeof scenarioSchema>;
