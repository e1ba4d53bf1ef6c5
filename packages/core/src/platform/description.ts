/**
 * The JSON description of a simulated platform: memory, IOMMU instances, buses, endpoint devices and the firmware
 * tables that tie devices to IOMMUs (DT `iommus`/`iommu-map`, ACPI DMAR and IVRS). What firmware hands Linux at
 * boot, reduced to what the IOMMU subsystem reads from it.
 *
 * Parsing is two-staged: a zod shape check, then cross-reference checks. Every problem is reported with its path
 * (`iommus[1].mmio.base`) and the offending value, all at once, in one {@link PlatformError}.
 */
import { z } from "zod";
import { MAX_PHYS_SIZE } from "./memory.js";

// ---------------------------------------------------------------------------------------------------------------
// Scalars

const UNIT_SHIFT: Record<string, number> = { "": 0, k: 10, m: 20, g: 30, t: 40, p: 50 };

/**
 * Parse a size or address: a non-negative safe integer, or a string in decimal, hex (`0x09050000`) or with a binary
 * unit (`64KiB`, `4GiB`, `2M`, `1TB` — all powers of 1024). Returns undefined when it is not one.
 * @linux memparse
 */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (typeof value !== "string") return undefined;
  const s = value.trim().replaceAll("_", "");
  if (/^0x[0-9a-f]+$/i.test(s)) {
    const n = Number.parseInt(s.slice(2), 16);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  const m = /^(\d+)\s*([kmgtp]?)(?:i?b)?$/i.exec(s);
  if (!m) return undefined;
  const n = Number(m[1]) * 2 ** (UNIT_SHIFT[(m[2] ?? "").toLowerCase()] ?? 0);
  return Number.isSafeInteger(n) ? n : undefined;
}

const SIZE_EXPECTED = 'expected a non-negative integer, hex string ("0x1000") or size ("64KiB", "4GiB")';

/** A size/address field: number or string, output a number. */
const sizeSchema = z
  .union([z.number(), z.string()], { error: SIZE_EXPECTED })
  .meta({
    description: "A size or address: a non-negative integer, a hex string or a size with a binary unit",
    examples: ["0x09050000", "64KiB", "4GiB", 4096],
  })
  .transform((v, ctx) => {
    const n = parseSize(v);
    if (n === undefined) {
      ctx.addIssue({
        code: "custom",
        message: SIZE_EXPECTED,
        input: v,
      });
      return z.NEVER;
    }
    return n;
  });

/** A 32-bit id field (RID, stream ID, map length): number or hex string. */
const u32Schema = sizeSchema.refine((n) => n <= 0xffffffff, { message: "expected a 32-bit value" });

/** The longest name of an IOMMU, bus or device (a DT node name has at most 31 characters; we allow more). */
export const MAX_NAME_LENGTH = 64;
/** The deepest nesting of arrays and objects a platform file may have (a valid one needs 6). */
export const MAX_PLATFORM_DEPTH = 32;
/** The smallest memory the kernel and its IOMMU drivers boot in (page tables, stream and device tables). */
export const MIN_MEMORY_SIZE = 2 ** 20;

const nameSchema = z
  .string({ error: "expected a name (a string)" })
  .max(MAX_NAME_LENGTH, `expected a name of at most ${MAX_NAME_LENGTH} characters`)
  .regex(/^[A-Za-z0-9_.:@/-]+$/, "expected a non-empty name of letters, digits and _ . : @ / -");

/** A decoded PCI bus/device/function. @linux PCI_BUS_NUM, PCI_SLOT, PCI_FUNC */
export interface Bdf {
  bus: number;
  dev: number;
  fn: number;
  /** devfn as Linux packs it: dev << 3 | fn. */
  devfn: number;
  /** The 16-bit requester ID: bus << 8 | devfn. */
  rid: number;
}

/**
 * Decode `"BB:DD.F"` (hex bus 00-ff, hex device 00-1f, function 0-7); undefined when malformed.
 * @linux PCI_DEVID, PCI_DEVFN
 */
export function parseBdf(s: string): Bdf | undefined {
  const m = /^([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i.exec(s.trim());
  if (!m) return undefined;
  const bus = Number.parseInt(m[1]!, 16);
  const dev = Number.parseInt(m[2]!, 16);
  const fn = Number.parseInt(m[3]!, 10);
  if (dev > 0x1f) return undefined;
  const devfn = (dev << 3) | fn;
  return { bus, dev, fn, devfn, rid: (bus << 8) | devfn };
}

/**
 * Render a 16-bit requester ID as `"BB:DD.F"`.
 * @linux pci_name (without the domain)
 */
export function formatBdf(rid: number): string {
  const bus = (rid >> 8) & 0xff;
  const dev = (rid >> 3) & 0x1f;
  const fn = rid & 7;
  return `${bus.toString(16).padStart(2, "0")}:${dev.toString(16).padStart(2, "0")}.${fn}`;
}

/** A `"BB:DD.F"` field, normalized to lower-case zero-padded form. */
const bdfSchema = z.string().transform((v, ctx) => {
  const b = parseBdf(v);
  if (!b) {
    ctx.addIssue({
      code: "custom",
      message: 'expected a PCI address "BB:DD.F" (hex bus, device <= 1f, function 0-7)',
      input: v,
    });
    return z.NEVER;
  }
  return formatBdf(b.rid);
});

// ---------------------------------------------------------------------------------------------------------------
// IOMMUs

/** The hardware kinds this project ships models and drivers for. Other kinds are user-registered. @linux the in-tree IOMMU drivers modelled (mock = iommufd selftest, arm-smmu-v3, intel-iommu, amd-iommu) */
export const KNOWN_IOMMU_KINDS = ["mock", "smmuv3", "vtd", "amd"] as const;
/** One of {@link KNOWN_IOMMU_KINDS}. @linux the in-tree IOMMU drivers modelled */
export type KnownIommuKind = (typeof KNOWN_IOMMU_KINDS)[number];

/** MMIO window size used when an IOMMU entry gives none, per kind (register file sizes of the real parts). @linux ARM_SMMU_REG_SZ-like register window sizes (resource_size of the IOMMU MMIO resource) */
export const DEFAULT_MMIO_SIZE: Record<KnownIommuKind, number> & { other: number } = {
  mock: 0x1000,
  smmuv3: 0x20000, // two 64 KiB register pages
  vtd: 0x1000,
  amd: 0x80000,
  other: 0x10000,
};

const bits = (max: number) => z.number().int().min(0).max(max);
/** A cache size: the models allocate typed arrays of this many entries. */
const entries = z
  .number()
  .int()
  .min(0)
  .max(2 ** 16);
const ways = z.number().int().min(1).max(16);
const common = {
  tlbEntries: entries.optional(),
  pasidBits: bits(20).optional(),
  pri: z.boolean().optional(),
  ats: z.boolean().optional(),
  dirty: z.boolean().optional(),
  nesting: z.boolean().optional(),
  coherent: z.boolean().optional(),
};

/**
 * Feature options of the known kinds, each key the option a hardware model reads (see its options type). Unknown
 * keys are errors: a misspelled option must not be silently ignored. A model that grows an option adds it here.
 * @linux the DT/ACPI and ID-register feature bits of each IOMMU (IDR0-5, CAP/ECAP, EFR)
 */
export const IOMMU_OPTION_SCHEMAS = {
  mock: z.strictObject({
    ...common,
    tlbWays: z.union([z.literal(1), z.literal(2)]).optional(),
    cfgEntries: entries.optional(),
  }),
  smmuv3: z.strictObject({
    ...common,
    asid16: z.boolean().optional(),
    stall: z.boolean().optional(),
    hyp: z.boolean().optional(),
    twoLevelStreamTable: z.boolean().optional(),
    cd2l: z.boolean().optional(),
    msi: z.boolean().optional(),
    ril: z.boolean().optional(),
    granules: z
      .array(z.union([z.literal(4096), z.literal(16384), z.literal(65536)]))
      .min(1)
      .optional(),
    tlbWays: ways.optional(),
    cfgEntries: entries.optional(),
    cfgWays: ways.optional(),
    walkCacheEntries: entries.optional(),
    walkCacheWays: ways.optional(),
    s2WalkTlbEntries: entries.optional(),
    s2WalkTlbWays: ways.optional(),
    replacement: z.enum(["round-robin", "lru"]).optional(),
    strict: z.boolean().optional(),
    cmdqBatch: z.number().int().min(0).optional(),
    stages: z.enum(["s1", "s2", "s1s2"]).optional(),
    ssidBits: bits(20).optional(),
    sidBits: z.number().int().min(1).max(32).optional(),
    oas: z.number().int().min(32).max(52).optional(),
    httu: z.enum(["none", "ha", "hd"]).optional(),
    btm: z.boolean().optional(),
    vmid16: z.boolean().optional(),
    cmdqSizeLog2: bits(19).optional(),
    evtqSizeLog2: bits(19).optional(),
    priqSizeLog2: bits(19).optional(),
  }),
  vtd: z.strictObject({
    ...common,
    scalableMode: z.boolean().optional(),
    firstStage: z.boolean().optional(),
    secondStage: z.boolean().optional(),
    cachingMode: z.boolean().optional(),
    sagaw: z
      .array(z.union([z.literal(3), z.literal(4), z.literal(5)]))
      .min(1)
      .optional(),
    domainIdBits: z.number().int().min(4).max(16).optional(),
    passThrough: z.boolean().optional(),
    fl5lp: z.boolean().optional(),
    fl1gp: z.boolean().optional(),
    sllps: bits(3).optional(),
    psi: z.boolean().optional(),
    mamv: bits(63).optional(),
    faultRecords: z.number().int().min(1).max(256).optional(),
    qi: z.boolean().optional(),
    rwbf: z.boolean().optional(),
    mgaw: z.number().int().min(39).max(57).optional(),
    tlbWays: ways.optional(),
    contextEntries: entries.optional(),
    pasidEntries: entries.optional(),
    cacheWays: ways.optional(),
    pagingCacheEntries: entries.optional(),
    replacement: z.enum(["round-robin", "lru"]).optional(),
    strict: z.boolean().optional(),
    qiBatch: z.number().int().min(0).optional(),
  }),
  amd: z.strictObject({
    ...common,
    v2: z.boolean().optional(),
    ppr: z.boolean().optional(),
    guestTranslation: z.boolean().optional(),
    hostLevels: z.union([z.literal(4), z.literal(5), z.literal(6)]).optional(),
    domainIdBits: z.number().int().min(4).max(16).optional(),
    tlbWays: ways.optional(),
    dteEntries: entries.optional(),
    pdcEntries: entries.optional(),
    replacement: z.enum(["round-robin", "lru"]).optional(),
    strict: z.boolean().optional(),
  }),
} satisfies Record<KnownIommuKind, z.ZodType>;

const iommuObjectSchema = z.strictObject({
  name: nameSchema,
  kind: z
    .string({ error: `expected an IOMMU kind (${KNOWN_IOMMU_KINDS.join(", ")})` })
    .max(MAX_NAME_LENGTH, `expected a kind of at most ${MAX_NAME_LENGTH} characters`)
    .regex(/^[a-z][a-z0-9_-]*$/, "expected a lower-case kind name"),
  mmio: z.strictObject({ base: sizeSchema, size: sizeSchema.optional() }),
  fwnode: z.string().min(1).max(256, "expected a fwnode path of at most 256 characters").optional(),
  options: z.record(z.string(), z.unknown()).optional(),
});

const iommuSchema = iommuObjectSchema.transform((i) => {
  const known = (KNOWN_IOMMU_KINDS as readonly string[]).includes(i.kind);
  const size = i.mmio.size ?? (known ? DEFAULT_MMIO_SIZE[i.kind as KnownIommuKind] : DEFAULT_MMIO_SIZE.other);
  return {
    name: i.name,
    kind: i.kind,
    mmio: { base: i.mmio.base, size },
    fwnode: i.fwnode ?? `/iommu@${i.mmio.base.toString(16)}`,
    options: i.options ?? {},
  };
});

// ---------------------------------------------------------------------------------------------------------------
// Buses and devices

const iommuMapEntrySchema = z.strictObject({
  ridBase: u32Schema,
  iommu: nameSchema,
  sidBase: u32Schema,
  length: u32Schema.refine((n) => n > 0, { message: "expected a non-zero length" }),
  ridMask: u32Schema.optional(),
});

const platformBusSchema = z.strictObject({ name: nameSchema, type: z.literal("platform") });
const pciBusSchema = z.strictObject({
  name: nameSchema,
  type: z.literal("pci"),
  segment: z.number().int().min(0).max(0xffff),
  acs: z.boolean().default(true),
  iommuMap: z.array(iommuMapEntrySchema).optional(),
});
const busSchema = z.discriminatedUnion("type", [platformBusSchema, pciBusSchema]);

const deviceSchema = z.strictObject({
  name: nameSchema,
  bus: nameSchema,
  /** Platform devices: DT `iommus = <&phandle args...>`. */
  iommus: z.array(z.strictObject({ iommu: nameSchema, args: z.array(u32Schema).default([]) })).optional(),
  /** PCI devices: the address on the bus's segment. */
  bdf: bdfSchema.optional(),
  /** PCI: extra requester IDs the device's DMA may carry (quirks, bridges). */
  aliases: z.array(bdfSchema).optional(),
  ats: z.boolean().optional(),
  pri: z.boolean().optional(),
  /** PCI: PASID width in bits (0 = no PASID capability). */
  pasid: bits(20).optional(),
  /** PCI: whether this function implements ACS (matters for multi-function devices). */
  acs: z.boolean().optional(),
  /** PCI: force the multi-function bit (otherwise set when another function shares the slot). */
  multifunction: z.boolean().optional(),
  /** Platform devices: DT `dma-can-stall` (the master tolerates stalled transactions, for IOPF without PRI). */
  dmaCanStall: z.boolean().optional(),
});

// ---------------------------------------------------------------------------------------------------------------
// ACPI tables

const dmarSchema = z.strictObject({
  iommu: nameSchema,
  segment: z.number().int().min(0).max(0xffff),
  includePciAll: z.boolean().default(false),
  scope: z.array(bdfSchema).default([]),
});

/** One DMAR RMRR: memory a device keeps DMA-ing to (firmware buffers), identity-mapped for it. */
const rmrrSchema = z.strictObject({
  segment: z.number().int().min(0).max(0xffff).default(0),
  base: sizeSchema,
  size: sizeSchema,
  scope: z.array(bdfSchema),
});

const ivrsEntrySchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("select"), bdf: bdfSchema }),
  z.strictObject({ type: z.literal("range"), start: bdfSchema, end: bdfSchema }),
  z.strictObject({ type: z.literal("alias"), bdf: bdfSchema, alias: bdfSchema }),
  z.strictObject({ type: z.literal("all") }),
]);

const ivrsSchema = z.strictObject({
  iommu: nameSchema,
  segment: z.number().int().min(0).max(0xffff).default(0),
  entries: z.array(ivrsEntrySchema),
});

/** The zod schema of a platform description (shape only; see {@link parsePlatform} for the cross-checks). @linux the DT bindings / ACPI table layouts, as one schema */
export const platformSchema = z.strictObject({
  /** The JSON Schema an editor checks the file against; ignored here. */
  $schema: z.string().optional(),
  memory: z
    .strictObject({
      size: sizeSchema
        .refine((n) => n % 4096 === 0, { message: "expected a multiple of 4 KiB (4096)" })
        .refine((n) => n >= MIN_MEMORY_SIZE, { message: `expected at least ${MIN_MEMORY_SIZE} (1 MiB)` })
        .refine((n) => n <= MAX_PHYS_SIZE, { message: "expected at most 2^52 (4 PiB, the largest physical address)" })
        .default(4 * 2 ** 30),
    })
    .default({ size: 4 * 2 ** 30 }),
  iommus: z.array(iommuSchema).default([]),
  buses: z.array(busSchema).default([]),
  devices: z.array(deviceSchema).default([]),
  acpi: z
    .strictObject({
      dmar: z.array(dmarSchema).default([]),
      rmrr: z.array(rmrrSchema).default([]),
      ivrs: z.array(ivrsSchema).default([]),
    })
    .optional(),
});

/**
 * The platform schema as JSON Schema (draft 2020-12), for editors: shapes, names, enums and per-kind IOMMU options
 * (the cross-reference rules of {@link parsePlatform} are not expressible there). Shipped as
 * `@iommu-sim/core/platform.schema.json`.
 * @linux none: the DT binding YAML schemas (Documentation/devicetree/bindings) play this part for DT
 */
export function platformJsonSchema(): Record<string, unknown> {
  const forKind = <K extends KnownIommuKind>(k: K) =>
    iommuObjectSchema.extend({ kind: z.literal(k), options: IOMMU_OPTION_SCHEMAS[k].optional() });
  const perKind = z.discriminatedUnion("kind", [forKind("mock"), forKind("smmuv3"), forKind("vtd"), forKind("amd")]);
  const editorSchema = platformSchema.extend({ iommus: z.array(perKind).optional() });
  const schema = z.toJSONSchema(editorSchema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return {
    $schema: schema.$schema,
    $id: "https://github.com/iommu-sim/iommu-sim/blob/main/packages/core/platform.schema.json",
    title: "iommu-sim platform description",
    description:
      "Memory, IOMMU instances, buses, endpoint devices and the firmware tables (DT iommus/iommu-map, ACPI DMAR and IVRS) of a simulated machine. `iommu-sim validate FILE` checks the cross-references too.",
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== "$schema")),
  };
}

/** A parsed, checked platform description. @linux the firmware description (DT blob / ACPI tables) */
export type PlatformDescription = z.output<typeof platformSchema>;
/** What a JSON platform file may contain (before defaults and conversions). @linux the firmware description as written */
export type PlatformInput = z.input<typeof platformSchema>;
/** One IOMMU instance. @linux an IOMMU's DT node / DRHD / IVHD */
export type IommuDesc = PlatformDescription["iommus"][number];
/** One bus. @linux struct bus_type instance (platform bus, PCI host bridge) */
export type BusDesc = PlatformDescription["buses"][number];
/** A PCI host bridge / segment. @linux struct pci_host_bridge */
export type PciBusDesc = Extract<BusDesc, { type: "pci" }>;
/** One `iommu-map` entry. @linux the iommu-map property (Documentation/devicetree/bindings/pci/pci-iommu.txt) */
export type IommuMapEntryDesc = NonNullable<PciBusDesc["iommuMap"]>[number];
/** One endpoint device (platform or PCI, told apart by its bus's type). @linux a DT device node / PCI function */
export type DeviceDesc = PlatformDescription["devices"][number];
/** One DMAR DRHD unit. @linux struct acpi_dmar_hardware_unit */
export type DmarUnitDesc = NonNullable<PlatformDescription["acpi"]>["dmar"][number];
/** One DMAR RMRR. @linux struct acpi_dmar_reserved_memory */
export type DmarRmrrDesc = NonNullable<PlatformDescription["acpi"]>["rmrr"][number];
/** One IVRS IVHD block. @linux struct ivhd_header */
export type IvrsUnitDesc = NonNullable<PlatformDescription["acpi"]>["ivrs"][number];
/** One IVHD device entry. @linux struct ivhd_entry */
export type IvrsEntryDesc = IvrsUnitDesc["entries"][number];

// ---------------------------------------------------------------------------------------------------------------
// Errors

/** One problem found in a platform description. @linux a firmware-bug message (FW_BUG) */
export interface PlatformIssue {
  /** Dotted path with indices, e.g. `iommus[1].mmio.base`; `(root)` for the top level. */
  path: string;
  message: string;
  value: unknown;
}

/** How many issues a {@link PlatformError} message lists (all are in `issues`). */
const MAX_LISTED_ISSUES = 20;

/**
 * A platform description that does not parse or does not hold together. The message lists every issue as
 * `path: message (got value)`.
 * @linux the "firmware bug" errors of DT/ACPI table parsing
 */
export class PlatformError extends Error {
  readonly issues: PlatformIssue[];
  /** `file`: the file the description came from, named in the message. */
  constructor(issues: PlatformIssue[], file?: string) {
    super(
      `${file === undefined ? "" : `${file}: `}invalid platform description:\n${issues
        .slice(0, MAX_LISTED_ISSUES)
        .map((i) => `  ${formatIssue(i)}`)
        .join(
          "\n",
        )}${issues.length > MAX_LISTED_ISSUES ? `\n  ... and ${issues.length - MAX_LISTED_ISSUES} more` : ""}`,
    );
    this.name = "PlatformError";
    this.issues = issues;
  }
}

function showValue(v: unknown): string {
  if (v === undefined) return "undefined";
  if (typeof v === "string") {
    const q = JSON.stringify(v.length > 80 ? v.slice(0, 77) : v);
    return v.length > 80 ? `${q.slice(0, -1)}..." (${v.length} characters)` : q;
  }
  if (typeof v === "number") return Number.isInteger(v) && v > 0xffff ? `0x${v.toString(16)}` : String(v);
  if (typeof v === "object" && v !== null) {
    const what = Array.isArray(v) ? `an array of ${v.length}` : "an object";
    // Small values are shown as JSON; huge or deeply nested ones (a hostile file) only by their shape.
    if ((Array.isArray(v) ? v.length : Object.keys(v).length) <= 16) {
      try {
        const s = JSON.stringify(v);
        if (s.length <= 80) return s;
      } catch {
        // nested too deep to print
      }
    }
    return what;
  }
  return String(v);
}

function formatIssue(i: PlatformIssue): string {
  return `${i.path}: ${i.message} (got ${showValue(i.value)})`;
}

/** Render a path like `iommus[1].mmio.base`. @linux of_node_full_name (for description paths) */
export function formatPath(path: readonly PropertyKey[]): string {
  let s = "";
  for (const p of path) {
    if (typeof p === "number") s += `[${p}]`;
    else s += s === "" ? String(p) : `.${String(p)}`;
  }
  return s === "" ? "(root)" : s;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const p of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** The keys a strict object at `path` accepts, where that is worth listing (the root and IOMMU options). */
function knownKeysAt(root: unknown, path: readonly PropertyKey[]): string[] | undefined {
  if (path.length === 0) return Object.keys(platformSchema.shape);
  if (path.length === 3 && path[0] === "iommus" && path[2] === "options") {
    const kind = valueAt(root, [...path.slice(0, 2), "kind"]);
    const schema = IOMMU_OPTION_SCHEMAS[kind as KnownIommuKind];
    return schema ? Object.keys(schema.shape) : undefined;
  }
  return undefined;
}

function zodIssues(
  root: unknown,
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[] = [],
): PlatformIssue[] {
  const out: PlatformIssue[] = [];
  for (const iss of issues) {
    const path = [...prefix, ...iss.path];
    if (iss.code === "unrecognized_keys") {
      const known = knownKeysAt(root, path);
      for (const k of iss.keys) {
        const near = known && closest(k, known);
        const message = known
          ? `unknown ${path.at(-1) === "options" ? "option" : "property"}${near ? ` (did you mean ${near}?)` : ""}: expected one of ${known.join(", ")}`
          : "unknown property";
        out.push({ path: formatPath([...path, k]), message, value: valueAt(root, [...path, k]) });
      }
      continue;
    }
    const at = valueAt(root, path);
    const value = at !== undefined ? at : "input" in iss ? iss.input : undefined;
    out.push({ path: formatPath(path), message: iss.message, value });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-reference checks

/** Whether a description's bus is a PCI host bridge. @linux dev_is_pci (for a bus description) */
export function isPciBus(bus: BusDesc): bus is PciBusDesc {
  return bus.type === "pci";
}

function crossCheck(
  d: PlatformDescription,
  extraKinds: ReadonlySet<string>,
  rules: ReadonlyMap<string, IommuPlatformRules>,
): PlatformIssue[] {
  const issues: PlatformIssue[] = [];
  const add = (path: readonly PropertyKey[], message: string, value: unknown) =>
    issues.push({ path: formatPath(path), message, value });

  // Names: IOMMU instances and devices share one device namespace; buses have their own.
  const deviceNames = new Map<string, string>();
  d.iommus.forEach((io, i) => {
    const prev = deviceNames.get(io.name);
    if (prev) add(["iommus", i, "name"], `duplicate device name (also ${prev})`, io.name);
    else deviceNames.set(io.name, formatPath(["iommus", i]));
  });
  d.devices.forEach((dev, i) => {
    const prev = deviceNames.get(dev.name);
    if (prev) add(["devices", i, "name"], `duplicate device name (also ${prev})`, dev.name);
    else deviceNames.set(dev.name, formatPath(["devices", i]));
  });
  const iommus = new Map(d.iommus.map((io) => [io.name, io]));
  const fwnodes = new Map<string, number>();
  d.iommus.forEach((io, i) => {
    const prev = fwnodes.get(io.fwnode);
    if (prev !== undefined) add(["iommus", i, "fwnode"], `duplicate fwnode (also iommus[${prev}])`, io.fwnode);
    else fwnodes.set(io.fwnode, i);
    const schema = (IOMMU_OPTION_SCHEMAS as Record<string, z.ZodType>)[io.kind];
    if (!schema && !extraKinds.has(io.kind)) {
      const expected = [...KNOWN_IOMMU_KINDS, ...extraKinds];
      const near = closest(io.kind, expected);
      add(
        ["iommus", i, "kind"],
        `unknown IOMMU kind: expected one of ${expected.join(", ")}${near ? ` (did you mean ${near}?)` : ""}`,
        io.kind,
      );
    }
    if (schema) {
      const r = schema.safeParse(io.options, { reportInput: true });
      if (!r.success) issues.push(...zodIssues(d, r.error.issues, ["iommus", i, "options"]));
    }
    for (const iss of rules.get(io.kind)?.check?.(io) ?? []) add(["iommus", i, ...iss.path], iss.message, iss.value);
    if (io.mmio.size === 0) add(["iommus", i, "mmio", "size"], "MMIO window must not be empty", io.mmio.size);
    else if (!Number.isSafeInteger(io.mmio.base + io.mmio.size)) {
      add(["iommus", i, "mmio", "size"], "MMIO window must end below 2^53", io.mmio.size);
    }
    const regs = REGISTER_FILE_SIZE[io.kind as keyof typeof REGISTER_FILE_SIZE];
    if (regs !== undefined && io.mmio.size > 0 && io.mmio.size < regs) {
      add(
        ["iommus", i, "mmio", "size"],
        `MMIO window smaller than the ${io.kind} register file (expected at least 0x${regs.toString(16)})`,
        io.mmio.size,
      );
    }
  });
  // MMIO windows must not overlap.
  const windows = d.iommus.map((io, i) => ({ i, base: io.mmio.base, end: io.mmio.base + io.mmio.size }));
  windows.sort((a, b) => a.base - b.base);
  for (let k = 1; k < windows.length; k++) {
    const a = windows[k - 1]!;
    const b = windows[k]!;
    if (b.base < a.end) {
      add(
        ["iommus", b.i, "mmio", "base"],
        `MMIO window [0x${b.base.toString(16)}, 0x${b.end.toString(16)}) overlaps iommus[${a.i}] (${d.iommus[a.i]!.name}) [0x${a.base.toString(16)}, 0x${a.end.toString(16)})`,
        b.base,
      );
    }
  }
  const refIommu = (path: readonly PropertyKey[], name: string, want?: KnownIommuKind) => {
    const io = iommus.get(name);
    if (!io) add(path, "unknown IOMMU", name);
    else if (want && io.kind !== want && (KNOWN_IOMMU_KINDS as readonly string[]).includes(io.kind)) {
      add(path, `IOMMU of kind ${io.kind} cannot be described by this table (expected ${want})`, name);
    }
    return io;
  };

  // Buses.
  const buses = new Map<string, BusDesc>();
  const segments = new Map<number, number>();
  d.buses.forEach((b, i) => {
    if (buses.has(b.name)) add(["buses", i, "name"], "duplicate bus name", b.name);
    else buses.set(b.name, b);
    if (isPciBus(b)) {
      const prev = segments.get(b.segment);
      if (prev !== undefined) add(["buses", i, "segment"], `PCI segment already used by buses[${prev}]`, b.segment);
      else segments.set(b.segment, i);
      b.iommuMap?.forEach((e, k) => {
        const io = refIommu(["buses", i, "iommuMap", k, "iommu"], e.iommu);
        if (e.ridBase + e.length > 0x10000) {
          add(["buses", i, "iommuMap", k, "length"], "ridBase + length exceeds the 16-bit RID space", e.length);
        }
        const idBits = io && rules.get(io.kind)?.streamIdBits?.(io);
        if (idBits !== undefined && e.sidBase + e.length > 2 ** idBits) {
          add(
            ["buses", i, "iommuMap", k, "length"],
            `sidBase + length exceeds the ${idBits}-bit StreamIDs of ${io!.name} (expected sidBase + length <= 0x${(2 ** idBits).toString(16)})`,
            e.length,
          );
        }
      });
    }
  });
  const pb = buses.get("platform");
  if (pb && pb.type !== "platform") {
    add(
      ["buses", d.buses.indexOf(pb), "type"],
      'the bus named "platform" holds the IOMMUs and must be of type platform',
      pb.type,
    );
  }

  // ACPI units.
  const dmar = d.acpi?.dmar ?? [];
  const ivrs = d.acpi?.ivrs ?? [];
  const includeAll = new Map<number, number>();
  dmar.forEach((u, i) => {
    refIommu(["acpi", "dmar", i, "iommu"], u.iommu, "vtd");
    if (!segments.has(u.segment)) add(["acpi", "dmar", i, "segment"], "no PCI bus has this segment", u.segment);
    if (u.includePciAll) {
      const prev = includeAll.get(u.segment);
      if (prev !== undefined) {
        add(
          ["acpi", "dmar", i, "includePciAll"],
          `segment already has an INCLUDE_PCI_ALL unit (acpi.dmar[${prev}])`,
          true,
        );
      } else includeAll.set(u.segment, i);
    }
  });
  ivrs.forEach((u, i) => {
    refIommu(["acpi", "ivrs", i, "iommu"], u.iommu, "amd");
    if (!segments.has(u.segment)) add(["acpi", "ivrs", i, "segment"], "no PCI bus has this segment", u.segment);
    u.entries.forEach((e, k) => {
      if (e.type === "range" && parseBdf(e.start)!.rid > parseBdf(e.end)!.rid) {
        add(["acpi", "ivrs", i, "entries", k, "end"], `range end is below its start ${e.start}`, e.end);
      }
    });
  });

  // Devices. StreamIDs of the IOMMUs whose driver gives each ID to one master (arm_smmu_insert_master, the mock).
  const bdfs = new Map<string, number>();
  const sidOwners = new Map<string, number>();
  const claimSid = (path: readonly PropertyKey[], io: IommuDesc, sid: number, dev: number) => {
    const bits = rules.get(io.kind)!.streamIdBits!(io);
    if (sid >= 2 ** bits) {
      add(
        path,
        `StreamID beyond the ${bits}-bit range of ${io.name} (expected below 0x${(2 ** bits).toString(16)})`,
        sid,
      );
      return;
    }
    const key = `${io.name}/${sid}`;
    const prev = sidOwners.get(key);
    if (prev === undefined) sidOwners.set(key, dev);
    else if (prev !== dev) {
      add(
        path,
        `StreamID 0x${sid.toString(16)} of ${io.name} already used by devices[${prev}] (${d.devices[prev]!.name})`,
        sid,
      );
    }
  };
  d.devices.forEach((dev, i) => {
    const at = (...p: PropertyKey[]) => ["devices", i, ...p];
    const bus = buses.get(dev.bus);
    if (!bus) {
      add(at("bus"), "unknown bus", dev.bus);
      return;
    }
    dev.iommus?.forEach((s, k) => {
      const io = refIommu(at("iommus", k, "iommu"), s.iommu);
      const first = iommus.get(dev.iommus![0]!.iommu);
      if (io && first && io.kind !== first.kind && !isPciBus(bus)) {
        // iommu_fwspec_init refuses an IOMMU of another driver than the device's first (EINVAL): it would get none.
        add(
          at("iommus", k, "iommu"),
          `a device's IOMMUs share one driver: expected an IOMMU of kind ${first.kind} as iommus[0] (${first.name})`,
          s.iommu,
        );
      }
      const r = io && !isPciBus(bus) ? rules.get(io.kind) : undefined;
      if (!io || !r) return;
      if (r.iommuCells !== undefined && s.args.length !== r.iommuCells) {
        add(at("iommus", k, "args"), `expected ${r.iommuCells} cell(s) (#iommu-cells of ${io.kind})`, s.args);
      } else if (r.streamIdBits && s.args.length > 0) claimSid(at("iommus", k, "args", 0), io, s.args[0]!, i);
    });
    if (!isPciBus(bus)) {
      for (const f of ["bdf", "aliases", "ats", "pri", "pasid", "acs", "multifunction"] as const) {
        if (dev[f] !== undefined) add(at(f), `only PCI devices have ${f} (bus ${bus.name} is a platform bus)`, dev[f]);
      }
      return;
    }
    if (dev.iommus) {
      add(
        at("iommus"),
        "PCI devices reach their IOMMU through the bus iommu-map or ACPI tables, not iommus",
        dev.iommus,
      );
    }
    if (dev.bdf === undefined) {
      add(at("bdf"), `a device on PCI bus ${bus.name} needs a bdf`, undefined);
      return;
    }
    const key = `${bus.segment}:${dev.bdf}`;
    const prev = bdfs.get(key);
    if (prev !== undefined) {
      add(
        at("bdf"),
        `address already used on segment ${bus.segment} by devices[${prev}] (${d.devices[prev]!.name})`,
        dev.bdf,
      );
    } else bdfs.set(key, i);
    dev.aliases?.forEach((a, k) => {
      if (a === dev.bdf) add(at("aliases", k), "a device is not its own DMA alias", a);
    });
    if ((dev.pri || (dev.pasid ?? 0) > 0) && dev.ats === false) {
      add(at("ats"), "PRI and PASID-tagged translated requests need ATS", dev.ats);
    }
    // How many mechanisms reach this device?
    const rid = parseBdf(dev.bdf)!.rid;
    // Its StreamIDs through the iommu-map: its own RID, then its DMA aliases (pci_for_each_dma_alias). A RID the
    // map does not cover bypasses translation; an alias the map does not cover, or maps to another IOMMU, fails
    // the whole of_iommu_configure (ENODEV / EINVAL), so the device would silently get no IOMMU.
    const mapEntry = (r: number) =>
      bus.iommuMap?.find((m) => {
        const masked = ((m.ridMask ?? 0xffffffff) & r) >>> 0;
        return masked >= m.ridBase && masked < m.ridBase + m.length;
      });
    const own = mapEntry(rid);
    if (own) {
      [dev.bdf, ...(dev.aliases ?? [])].forEach((b, k) => {
        const r = parseBdf(b)!.rid;
        const path = k === 0 ? at("bdf") : at("aliases", k - 1);
        const e = mapEntry(r);
        if (!e) {
          add(
            path,
            `DMA alias not in the iommu-map of ${bus.name} while the device's own RID is (it would get no IOMMU)`,
            b,
          );
          return;
        }
        const ownKind = iommus.get(own.iommu)?.kind;
        if (e.iommu !== own.iommu && iommus.get(e.iommu)?.kind !== ownKind) {
          add(path, `DMA alias mapped to ${e.iommu}: expected an IOMMU of kind ${ownKind} like ${own.iommu}`, b);
          return;
        }
        const io = iommus.get(e.iommu);
        if (!io || !rules.get(io.kind)?.streamIdBits) return;
        const sid = ((((e.ridMask ?? 0xffffffff) & r) >>> 0) - e.ridBase + e.sidBase) >>> 0;
        claimSid(path, io, sid, i);
      });
    }
    const how: string[] = [];
    bus.iommuMap?.forEach((e, k) => {
      const m = (e.ridMask ?? 0xffffffff) & rid;
      if (m >= e.ridBase && m < e.ridBase + e.length && how.every((h) => !h.startsWith("iommu-map"))) {
        how.push(`iommu-map (${formatPath(["buses", d.buses.indexOf(bus), "iommuMap", k])})`);
      }
    });
    const scoped = dmar.flatMap((u, k) => (u.segment === bus.segment && u.scope.includes(dev.bdf!) ? [k] : []));
    for (const k of scoped) how.push(`dmar scope (acpi.dmar[${k}])`);
    if (scoped.length === 0) {
      const all = includeAll.get(bus.segment);
      if (all !== undefined) how.push(`dmar INCLUDE_PCI_ALL (acpi.dmar[${all}])`);
    }
    ivrs.forEach((u, k) => {
      if (u.segment === bus.segment && ivrsEntryCovers(u.entries, rid) !== undefined)
        how.push(`ivrs (acpi.ivrs[${k}])`);
    });
    if (how.length > 1) add(at("bdf"), `device reached by more than one IOMMU mechanism: ${how.join(", ")}`, dev.bdf);
  });
  return issues;
}

/** Register file sizes of the kinds with a model: a smaller MMIO window would overlap the next device. */
const REGISTER_FILE_SIZE = {
  mock: DEFAULT_MMIO_SIZE.mock,
  smmuv3: DEFAULT_MMIO_SIZE.smmuv3,
  vtd: DEFAULT_MMIO_SIZE.vtd,
} as const;

/** The candidate nearest to `word` by edit distance, when it is a likely typo (distance <= 2). */
function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * The first array or object nested deeper than {@link MAX_PLATFORM_DEPTH}, as an issue; checked without recursion
 * before the schema walks the value (a file nested thousands deep would otherwise overflow the stack).
 */
function depthIssue(json: unknown): PlatformIssue | undefined {
  const stack: { v: unknown; path: PropertyKey[] }[] = [{ v: json, path: [] }];
  while (stack.length > 0) {
    const { v, path } = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (path.length >= MAX_PLATFORM_DEPTH) {
      return {
        path: formatPath(path),
        message: `nested too deep: expected at most ${MAX_PLATFORM_DEPTH} levels of arrays and objects`,
        value: v,
      };
    }
    const children: [PropertyKey, unknown][] = Array.isArray(v) ? v.map((x, k) => [k, x]) : Object.entries(v);
    for (const [k, x] of children) stack.push({ v: x, path: [...path, k] });
  }
  return undefined;
}

/** Options of {@link parsePlatform}. */
export interface ParsePlatformOptions {
  /**
   * IOMMU kinds besides {@link KNOWN_IOMMU_KINDS} to accept (kinds that loaded modules register a hardware model
   * for; `createMachine` passes its modules' kinds). Their `options` are left to the model.
   */
  kinds?: Iterable<string>;
  /**
   * What the drivers that will drive the IOMMUs require of them (`createMachine` passes its modules'
   * `platformRules`; `iommu-sim` those of the drivers it loads): StreamID ranges, `#iommu-cells`, option limits.
   */
  rules?: Iterable<IommuPlatformRules>;
}

/** One issue an {@link IommuPlatformRules.check} finds, its path relative to the IOMMU's entry (`["options", "sidBits"]`). */
export interface IommuRuleIssue {
  path: readonly PropertyKey[];
  message: string;
  value: unknown;
}

/**
 * What an IOMMU driver requires of the description of an IOMMU it drives, so that a description it would refuse at
 * probe (or silently not bind) fails validation instead. A driver module lists these in `platformRules`.
 * @linux the IOMMU's DT binding (#iommu-cells) and what its probe refuses (arm_smmu_sid_in_range, ...)
 */
export interface IommuPlatformRules {
  /** The IOMMU kind (DT compatible) these rules are for. */
  kind: string;
  /** Cells of a DT `iommus` specifier for this IOMMU. @linux #iommu-cells */
  iommuCells?: number;
  /**
   * The StreamID width the driver accepts for this instance; with it, StreamIDs (DT `iommus` first cell, PCI
   * `iommu-map` output) are checked against the range and for being given to one device only.
   * @linux arm_smmu_sid_in_range, and the EEXIST/EINVAL of a StreamID already in the driver's tree
   */
  streamIdBits?(io: IommuDesc): number;
  /** Further checks of the instance's description (its options). */
  check?(io: IommuDesc): IommuRuleIssue[];
}

/**
 * Whether an IVHD's entries cover `rid`; returns the requester ID its DMA carries (the alias for an alias entry),
 * or undefined. Later entries do not override earlier ones.
 * @linux init_iommu_from_acpi (IVHD_DEV_SELECT, IVHD_DEV_RANGE_START/END, IVHD_DEV_ALIAS, IVHD_DEV_ALL)
 */
export function ivrsEntryCovers(entries: readonly IvrsEntryDesc[], rid: number): number | undefined {
  for (const e of entries) {
    switch (e.type) {
      case "all":
        return rid;
      case "select":
        if (parseBdf(e.bdf)!.rid === rid) return rid;
        break;
      case "range":
        if (rid >= parseBdf(e.start)!.rid && rid <= parseBdf(e.end)!.rid) return rid;
        break;
      case "alias":
        if (parseBdf(e.bdf)!.rid === rid) return parseBdf(e.alias)!.rid;
        break;
    }
  }
  return undefined;
}

/**
 * Parse and check a platform description. Throws {@link PlatformError} naming the path and value of every problem:
 * first the shape (types, units, unknown properties), then cross-references (unknown bus or IOMMU names, duplicate
 * names, overlapping MMIO windows, bdf collisions, a device reached by two mechanisms).
 * @linux unflatten_device_tree / acpi_table_parse — reading firmware's description of the machine
 */
export function parsePlatform(json: unknown, opts: ParsePlatformOptions = {}): PlatformDescription {
  const deep = depthIssue(json);
  if (deep) throw new PlatformError([deep]);
  const r = platformSchema.safeParse(json, { reportInput: true });
  if (!r.success) throw new PlatformError(zodIssues(json, r.error.issues));
  const extra = new Set(opts.kinds ?? []);
  for (const k of KNOWN_IOMMU_KINDS) extra.delete(k);
  const rules = new Map([...(opts.rules ?? [])].map((x) => [x.kind, x]));
  const issues = crossCheck(r.data, extra, rules);
  if (issues.length > 0) throw new PlatformError(issues);
  checked.add(r.data);
  return r.data;
}

/**
 * Parse the text of a JSON platform file: a byte-order mark, a syntax error (with its line and column) or nesting
 * too deep for the JSON parser are {@link PlatformError}s like any schema error, never a raw exception.
 * @linux reading the DT blob / ACPI tables firmware hands over (fdt_check_header before unflattening)
 */
export function parsePlatformText(text: string, opts: ParsePlatformOptions = {}): PlatformDescription {
  const root = (message: string): PlatformError => new PlatformError([{ path: "(root)", message, value: undefined }]);
  if (text.charCodeAt(0) === 0xfeff) {
    throw root("the file starts with a UTF-8 byte-order mark (U+FEFF): expected JSON text without a BOM");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    if (e instanceof RangeError) {
      throw root(`nested too deep: expected at most ${MAX_PLATFORM_DEPTH} levels of arrays and objects`);
    }
    throw root(`expected JSON: ${jsonErrorWhere(text, (e as Error).message)}`);
  }
  return parsePlatform(json, opts);
}

/** A JSON.parse message with the line and column of its "position N", if it names one. */
function jsonErrorWhere(text: string, message: string): string {
  const m = /position (\d+)/.exec(message);
  if (!m) return message;
  const pos = Number(m[1]);
  const before = text.slice(0, pos);
  const line = before.split("\n").length;
  const col = pos - before.lastIndexOf("\n");
  return `${message} (line ${line}, column ${col})`;
}

/** Descriptions `parsePlatform` produced (immutable facts about values, shared by no machine state). */
const checked = new WeakSet<object>();

/**
 * Whether `value` is a description returned by {@link parsePlatform} (so it need not be validated again).
 * @linux none: a validation cache
 */
export function isPlatformDescription(value: unknown): value is PlatformDescription {
  return typeof value === "object" && value !== null && checked.has(value);
}
