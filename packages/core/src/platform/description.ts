/**
 * The JSON description of a simulated platform: memory, IOMMU instances, buses, endpoint devices and the firmware
 * tables that tie devices to IOMMUs (DT `iommus`/`iommu-map`, ACPI DMAR and IVRS). What firmware hands Linux at
 * boot, reduced to what the IOMMU subsystem reads from it.
 *
 * Parsing is two-staged: a zod shape check, then cross-reference checks. Every problem is reported with its path
 * (`iommus[1].mmio.base`) and the offending value, all at once, in one {@link PlatformError}.
 */
import { z } from "zod";

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

/** A size/address field: number or string, output a number. */
const sizeSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({
      code: "custom",
      message: 'expected a non-negative integer, hex string ("0x1000") or size ("64KiB", "4GiB")',
      input: v,
    });
    return z.NEVER;
  }
  return n;
});

/** A 32-bit id field (RID, stream ID, map length): number or hex string. */
const u32Schema = sizeSchema.refine((n) => n <= 0xffffffff, { message: "expected a 32-bit value" });

const nameSchema = z
  .string()
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
const common = {
  tlbEntries: z.number().int().min(0).optional(),
  pasidBits: bits(20).optional(),
  pri: z.boolean().optional(),
  ats: z.boolean().optional(),
  dirty: z.boolean().optional(),
  nesting: z.boolean().optional(),
  coherent: z.boolean().optional(),
};

/**
 * Feature options validated for the known kinds. Known keys are type-checked; other keys pass through so a model
 * can grow options without touching this file.
 * @linux the DT/ACPI and ID-register feature bits of each IOMMU (IDR0-5, CAP/ECAP, EFR)
 */
export const IOMMU_OPTION_SCHEMAS = {
  mock: z.looseObject({ ...common }),
  smmuv3: z.looseObject({
    ...common,
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
  vtd: z.looseObject({
    ...common,
    scalableMode: z.boolean().optional(),
    firstStage: z.boolean().optional(),
    secondStage: z.boolean().optional(),
    cachingMode: z.boolean().optional(),
    sagaw: z.array(z.union([z.literal(3), z.literal(4), z.literal(5)])).optional(),
    domainIdBits: z.number().int().min(4).max(16).optional(),
  }),
  amd: z.looseObject({
    ...common,
    v2: z.boolean().optional(),
    ppr: z.boolean().optional(),
    guestTranslation: z.boolean().optional(),
    hostLevels: z.union([z.literal(4), z.literal(5), z.literal(6)]).optional(),
    domainIdBits: z.number().int().min(4).max(16).optional(),
  }),
} satisfies Record<KnownIommuKind, z.ZodType>;

const iommuSchema = z
  .strictObject({
    name: nameSchema,
    kind: z.string().regex(/^[a-z][a-z0-9_-]*$/, "expected a lower-case kind name"),
    mmio: z.strictObject({ base: sizeSchema, size: sizeSchema.optional() }),
    fwnode: z.string().min(1).optional(),
    options: z.record(z.string(), z.unknown()).optional(),
  })
  .transform((i) => {
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
  memory: z.strictObject({ size: sizeSchema.default(4 * 2 ** 30) }).default({ size: 4 * 2 ** 30 }),
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

/**
 * A platform description that does not parse or does not hold together. The message lists every issue as
 * `path: message (got value)`.
 * @linux the "firmware bug" errors of DT/ACPI table parsing
 */
export class PlatformError extends Error {
  readonly issues: PlatformIssue[];
  constructor(issues: PlatformIssue[]) {
    super(`invalid platform description:\n${issues.map((i) => `  ${formatIssue(i)}`).join("\n")}`);
    this.name = "PlatformError";
    this.issues = issues;
  }
}

function showValue(v: unknown): string {
  if (v === undefined) return "undefined";
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") return Number.isInteger(v) && v > 0xffff ? `0x${v.toString(16)}` : String(v);
  try {
    const s = JSON.stringify(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
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

function zodIssues(
  root: unknown,
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[] = [],
): PlatformIssue[] {
  const out: PlatformIssue[] = [];
  for (const iss of issues) {
    const path = [...prefix, ...iss.path];
    if (iss.code === "unrecognized_keys") {
      for (const k of iss.keys) {
        out.push({ path: formatPath([...path, k]), message: "unknown property", value: valueAt(root, [...path, k]) });
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

function crossCheck(d: PlatformDescription): PlatformIssue[] {
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
    if (schema) {
      const r = schema.safeParse(io.options, { reportInput: true });
      if (!r.success) issues.push(...zodIssues(d, r.error.issues, ["iommus", i, "options"]));
    }
    if (io.mmio.size === 0) add(["iommus", i, "mmio", "size"], "MMIO window must not be empty", io.mmio.size);
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
        refIommu(["buses", i, "iommuMap", k, "iommu"], e.iommu);
        if (e.ridBase + e.length > 0x10000) {
          add(["buses", i, "iommuMap", k, "length"], "ridBase + length exceeds the 16-bit RID space", e.length);
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

  // Devices.
  const bdfs = new Map<string, number>();
  d.devices.forEach((dev, i) => {
    const at = (...p: PropertyKey[]) => ["devices", i, ...p];
    const bus = buses.get(dev.bus);
    if (!bus) {
      add(at("bus"), "unknown bus", dev.bus);
      return;
    }
    dev.iommus?.forEach((s, k) => {
      refIommu(at("iommus", k, "iommu"), s.iommu);
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
export function parsePlatform(json: unknown): PlatformDescription {
  const r = platformSchema.safeParse(json, { reportInput: true });
  if (!r.success) throw new PlatformError(zodIssues(json, r.error.issues));
  const issues = crossCheck(r.data);
  if (issues.length > 0) throw new PlatformError(issues);
  checked.add(r.data);
  return r.data;
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
