/**
 * IOMMU domains: the translation contexts devices are attached to, their allocation through the driver and their
 * release, plus the per-device IOMMU view the group and domain code reads.
 * @linux struct iommu_domain (include/linux/iommu.h), __iommu_domain_alloc / iommu_paging_domain_alloc_flags /
 * iommu_domain_free (drivers/iommu/iommu.c)
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { KernelError } from "../kernel/errno.js";
import { kfree } from "../kernel/slab.js";
import type { Device } from "../platform/driver-core/device.js";
import { devHasIommu, devIommuOps } from "./dev-iommu.js";
import type { IommuGroup } from "./group.js";
import {
  IOMMU_DOMAIN,
  IOMMU_DOMAIN_BITS,
  type IommuDirtyOps,
  type IommuDomainGeometry,
  type IommuDomainOps,
  type IommuOps,
  type IommuUserData,
} from "./types.js";

/** What a domain's cookie is. @linux enum iommu_domain_cookie_type */
export const IOMMU_COOKIE = {
  NONE: 0,
  DMA_IOVA: 1,
  DMA_MSI: 2,
  FAULT_HANDLER: 3,
  SVA: 4,
  IOMMUFD: 5,
} as const;

/** Fault flags passed to a domain's fault handler. @linux IOMMU_FAULT_READ / IOMMU_FAULT_WRITE */
export const IOMMU_FAULT_READ = 0x0;
export const IOMMU_FAULT_WRITE = 0x1;

/**
 * A domain's legacy fault handler: returns 0 when handled, a negative errno otherwise.
 * @linux iommu_fault_handler_t
 */
export type IommuFaultHandler = (
  domain: IommuDomain,
  dev: Device,
  iova: number,
  flags: number,
  token: unknown,
) => number;

/**
 * Where {@link IopfHandler}'s signature is declared (method syntax keeps the parameter bivariant, so io-pgfault can
 * install a handler typed on its `IopfGroup`).
 * @linux the iopf_handler member of struct iommu_domain
 */
export interface IopfHandlerHost {
  handler(group: unknown): unknown;
}

/**
 * The handler io-pgfault calls with a complete group of page requests for this domain.
 * @linux iommu_domain.iopf_handler
 */
export type IopfHandler = IopfHandlerHost["handler"];

/** The ops of a domain whose driver gave none and whose IOMMU has no default ops. */
const NO_DOMAIN_OPS: IommuDomainOps = Object.freeze({});

/** What a driver passes when it creates a domain. */
export interface IommuDomainInit {
  /** Per-domain ops; when absent the core uses the driver's `defaultDomainOps`. @linux iommu_domain.ops */
  ops?: IommuDomainOps;
  /** Type of a static domain (identity, blocked); the core sets it for allocated domains. @linux type */
  type?: number;
  /** Page sizes the domain maps; when 0 the core takes the driver's `pgsizeBitmap`. @linux pgsize_bitmap */
  pgsizeBitmap?: number;
  /** The IOVA range the domain translates. @linux geometry */
  geometry?: IommuDomainGeometry;
  /** Dirty tracking, for domains allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING. @linux dirty_ops */
  dirtyOps?: IommuDirtyOps;
  /** Where the core's WARN_ONs about this domain go (the core fills it in when it allocates the domain). */
  diag?: Diagnostics;
  /** Name for diagnostics. */
  name?: string;
}

/**
 * An IOMMU domain. Drivers create (or subclass) it in `domainAllocPaging(Flags)` or as static identity/blocked
 * domains; the core sets `type` and `owner` when it allocates one, and frees it with {@link iommuDomainFree}.
 * @linux struct iommu_domain
 */
export class IommuDomain {
  /** @linux iommu_domain.type */
  type: number;
  /** @linux iommu_domain.ops */
  ops: IommuDomainOps;
  /** The driver that allocated it; undefined for static domains. @linux iommu_domain.owner */
  owner: IommuOps | undefined = undefined;
  /** @linux iommu_domain.pgsize_bitmap (a sum of powers of two; may exceed 2^32) */
  pgsizeBitmap: number;
  /** @linux iommu_domain.geometry */
  geometry: IommuDomainGeometry;
  /** @linux iommu_domain.dirty_ops */
  dirtyOps: IommuDirtyOps | undefined;
  /** @linux iommu_domain.cookie_type */
  cookieType: number = IOMMU_COOKIE.NONE;
  /** The DMA-API or MSI cookie, when `cookieType` says there is one. @linux iova_cookie / msi_cookie */
  cookie: unknown = undefined;
  /** Page-request handler used by io-pgfault (part C). @linux iommu_domain.iopf_handler */
  iopfHandler: IopfHandler | undefined = undefined;
  /** Data the IOPF handler's owner attaches (iommufd's fault object). @linux the iommufd fault of the hwpt */
  faultData: unknown = undefined;
  /** The iommufd hw_pagetable owning this domain. @linux iommu_domain.iommufd_hwpt */
  iommufd: unknown = undefined;
  /** Legacy fault handler. @linux iommu_domain.handler */
  handler: IommuFaultHandler | undefined = undefined;
  /** @linux iommu_domain.handler_token */
  handlerToken: unknown = undefined;
  /** The mm of an SVA domain. @linux iommu_domain.mm */
  mm: unknown = undefined;
  /** Bind count of an SVA domain. @linux iommu_domain.users */
  users = 0;
  /** Where WARN_ONs about this domain go. */
  diag: Diagnostics | undefined;
  /** Name for diagnostics. */
  readonly name: string;
  /** Set once the domain has been freed. */
  freed = false;

  constructor(init: IommuDomainInit = {}) {
    this.ops = init.ops ?? NO_DOMAIN_OPS;
    this.type = init.type ?? IOMMU_DOMAIN.BLOCKED;
    this.pgsizeBitmap = init.pgsizeBitmap ?? 0;
    this.geometry = init.geometry ?? { apertureStart: 0, apertureEnd: Number.MAX_SAFE_INTEGER, forceAperture: false };
    this.dirtyOps = init.dirtyOps;
    this.diag = init.diag;
    this.name = init.name ?? "iommu_domain";
  }

  /** Whether the domain translates through page tables. @linux __IOMMU_DOMAIN_PAGING */
  get isPaging(): boolean {
    return (this.type & IOMMU_DOMAIN_BITS.PAGING) !== 0;
  }

  /** `name (type)`, for messages. */
  toString(): string {
    return `${this.name} (${iommuDomainTypeStr(this.type)})`;
  }

  /** A short form for test-runner diffs and JSON (the object graph reaches the whole machine). */
  toJSON(): string {
    return `IommuDomain(${this.toString()})`;
  }

  /** A short form for `util.inspect` / console.log. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toJSON();
  }
}

/**
 * Human-readable domain type.
 * @linux iommu_domain_type_str
 */
export function iommuDomainTypeStr(t: number): string {
  switch (t) {
    case IOMMU_DOMAIN.BLOCKED:
      return "Blocked";
    case IOMMU_DOMAIN.IDENTITY:
      return "Passthrough";
    case IOMMU_DOMAIN.UNMANAGED:
      return "Unmanaged";
    case IOMMU_DOMAIN.DMA:
    case IOMMU_DOMAIN.DMA_FQ:
      return "Translated";
    case IOMMU_DOMAIN.PLATFORM:
      return "Platform";
    default:
      return "Unknown";
  }
}

/**
 * Whether the domain is a DMA-API domain (DMA or DMA_FQ).
 * @linux iommu_is_dma_domain
 */
export function iommuIsDmaDomain(domain: IommuDomain): boolean {
  return (domain.type & IOMMU_DOMAIN_BITS.DMA_API) !== 0;
}

/**
 * Whether `domain` may be attached to devices of the driver `ops`: it was allocated by that driver, or it is one
 * of the driver's static domains.
 * @linux domain_iommu_ops_compatible
 */
export function domainIommuOpsCompatible(ops: IommuOps, domain: IommuDomain): boolean {
  if (domain.owner === ops) return true;
  return domain === ops.blockedDomain || domain === ops.identityDomain;
}

/** The diagnostics of the machine `dev`'s group lives in, if it has one. */
function diagOf(dev: Device): Diagnostics | undefined {
  return (dev.iommuGroup as IommuGroup | undefined)?.registry.diag;
}

/**
 * Fill in what the core owns of a freshly allocated domain: type, owner, default ops and page sizes.
 * @linux iommu_domain_init
 */
export function iommuDomainInit(domain: IommuDomain, type: number, ops: IommuOps, diag?: Diagnostics): void {
  domain.type = type;
  domain.owner = ops;
  if (domain.ops === NO_DOMAIN_OPS && ops.defaultDomainOps) domain.ops = ops.defaultDomainOps;
  if (!domain.pgsizeBitmap) domain.pgsizeBitmap = ops.pgsizeBitmap ?? 0;
  if (domain.diag === undefined && diag !== undefined) domain.diag = diag;
}

/**
 * Allocate a paging domain of `type` for `dev` through the driver: `domainAllocPaging` when there are no flags,
 * else `domainAllocPagingFlags`. ENODEV when the device has no IOMMU, EOPNOTSUPP when the driver cannot.
 * @linux __iommu_paging_domain_alloc_flags
 */
export async function iommuPagingDomainAllocType(dev: Device, type: number, flags: number): Promise<IommuDomain> {
  if (!devHasIommu(dev)) throw new KernelError("ENODEV", `${dev.name} has no IOMMU`);
  const ops = devIommuOps(dev);
  let domain: IommuDomain;
  if (ops.domainAllocPaging && !flags) domain = await ops.domainAllocPaging(dev);
  else if (ops.domainAllocPagingFlags) domain = await ops.domainAllocPagingFlags(dev, flags, undefined);
  else throw new KernelError("EOPNOTSUPP", "driver cannot allocate paging domains");
  iommuDomainInit(domain, type, ops, diagOf(dev));
  return domain;
}

/**
 * Allocate an unmanaged paging domain for `dev` with IOMMU_HWPT_ALLOC_* `flags`.
 * @linux iommu_paging_domain_alloc_flags
 */
export function iommuPagingDomainAllocFlags(dev: Device, flags: number): Promise<IommuDomain> {
  return iommuPagingDomainAllocType(dev, IOMMU_DOMAIN.UNMANAGED, flags);
}

/**
 * Allocate an unmanaged paging domain for `dev`.
 * @linux iommu_paging_domain_alloc
 */
export function iommuPagingDomainAlloc(dev: Device): Promise<IommuDomain> {
  return iommuPagingDomainAllocFlags(dev, 0);
}

/**
 * A nested domain on the nesting parent `parent` for `dev`, from driver data (the call iommufd makes for a nested
 * HWPT, for kernel-side users and tests): EOPNOTSUPP when the driver has no `domainAllocNested` (drivers that nest
 * only through a vIOMMU, like arm-smmu-v3), EINVAL when `parent` is not the driver's; the driver validates the data.
 * @linux iommufd_hwpt_nested_alloc's ops->domain_alloc_nested call
 */
export async function iommuDomainAllocNested(
  dev: Device,
  parent: IommuDomain,
  flags: number,
  data: IommuUserData,
): Promise<IommuDomain> {
  const ops = devIommuOps(dev);
  if (!ops.domainAllocNested) throw new KernelError("EOPNOTSUPP", "driver has no domain_alloc_nested");
  if (!domainIommuOpsCompatible(ops, parent)) throw new KernelError("EINVAL", `${parent} is not this driver's`);
  const domain = await ops.domainAllocNested(dev, parent, flags, data);
  domain.owner = ops;
  return domain;
}

/**
 * A domain of `type` for `dev`: the driver's static identity or blocked domain when it has one, otherwise a paging
 * domain for paging types; EOPNOTSUPP when the driver cannot provide the type.
 * @linux __iommu_domain_alloc
 */
export async function iommuDomainAllocType(dev: Device, type: number): Promise<IommuDomain> {
  const ops = devIommuOps(dev);
  if (type === IOMMU_DOMAIN.IDENTITY && ops.identityDomain) return ops.identityDomain;
  if (type === IOMMU_DOMAIN.BLOCKED && ops.blockedDomain) return ops.blockedDomain;
  // Linux would hand a non-paging request to domain_alloc_paging_flags; we refuse it, so the caller falls back.
  if ((type & IOMMU_DOMAIN_BITS.PAGING) === 0) {
    throw new KernelError("EOPNOTSUPP", `driver has no ${iommuDomainTypeStr(type)} domain`);
  }
  return iommuPagingDomainAllocType(dev, type, 0);
}

/**
 * Free a domain: drop its cookie and call the driver's `free`. Static domains (no `free` op) are left alone.
 * Freeing an allocated domain twice is reported as a double free.
 * @linux iommu_domain_free
 */
export function iommuDomainFree(domain: IommuDomain): void {
  domain.cookieType = IOMMU_COOKIE.NONE;
  domain.cookie = undefined;
  if (!domain.ops.free) return;
  const wasFreed = domain.freed;
  if (domain.diag) kfree(domain.diag, domain, `iommu domain ${domain.name}`);
  else if (wasFreed) throw new KernelError("EINVAL", `double free of iommu domain ${domain.name}`);
  if (wasFreed) return;
  domain.freed = true;
  domain.ops.free(domain);
}

/**
 * Install the legacy fault handler of a domain.
 * @linux iommu_set_fault_handler
 */
export function iommuSetFaultHandler(domain: IommuDomain, handler: IommuFaultHandler, token: unknown): void {
  domain.cookieType = IOMMU_COOKIE.FAULT_HANDLER;
  domain.handler = handler;
  domain.handlerToken = token;
}

/**
 * Report a translation fault to the domain's legacy handler; returns its result, or -ENOSYS without one.
 * @linux report_iommu_fault
 */
export function reportIommuFault(domain: IommuDomain, dev: Device, iova: number, flags: number): number {
  const ENOSYS = 38;
  if (domain.cookieType === IOMMU_COOKIE.FAULT_HANDLER && domain.handler) {
    return domain.handler(domain, dev, iova, flags, domain.handlerToken);
  }
  return -ENOSYS;
}
