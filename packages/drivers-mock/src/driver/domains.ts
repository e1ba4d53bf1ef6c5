/**
 * The mock driver's domains: paging domains on core's generic page table with the mock format (2 KiB / 1 MiB),
 * nested domains (a mock stage-1 walked through a paging parent, with cache IDs), and the static identity and
 * blocked domains. Each domain knows how to describe itself as a context entry; attaching writes the entries.
 */
import {
  type Device,
  IOMMU_DOMAIN,
  type IommuDirtyOps,
  IommuDomain,
  type IommuDomainOps,
  type IommuViommu,
  IoPageTable,
  type IotlbGather,
  minPageSize,
  mockFormat,
  ptDomainGeometry,
} from "@iommu-sim/core";
import { CTX_MODE, INV_OP } from "../spec/fields.js";
import {
  IOMMU_TEST_IOTLB_DEFAULT,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_HUGE_PGSIZE_BITMAP,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
  MOCK_PGSIZE_BITMAP,
} from "./consts.js";
import type { MockCtxConfig, MockIommu, MockMaster } from "./mock-iommu.js";

/**
 * A paging domain: a mock-format page table and a domain ID.
 * @linux struct mock_iommu_domain (selftest.c, on generic_pt's pt_iommu_mock)
 */
export class MockPagingDomain extends IommuDomain {
  /** Instances the domain (or a nested child) is attached to, with attachment counts, for invalidation. */
  readonly attachedTo = new Map<MockIommu, number>();
  /** Hardware dirty-bit updates are on. @linux mock_iommu_domain.flags & MOCK_DIRTY_TRACK */
  dirtyTracking = false;

  constructor(
    ops: IommuDomainOps,
    readonly pt: IoPageTable,
    /** Domain ID: the IOTLB tag. */
    readonly did: number,
    /** Allocated with IOMMU_HWPT_ALLOC_NEST_PARENT. */
    readonly nestParent: boolean,
    dirtyOps: IommuDirtyOps | undefined,
    /** `struct iommu_hwpt_selftest.pagetable_type`. */
    readonly pagetableType: number = MOCK_IOMMUPT_DEFAULT,
  ) {
    // MOCK_IOMMUPT_HUGE keeps the table's own aperture (the mock one is for the default type only) and maps only
    // huge pages and CPU pages. @linux mock_domain_alloc_pgtable
    const huge = pagetableType === MOCK_IOMMUPT_HUGE;
    super({
      ops,
      pgsizeBitmap: huge ? MOCK_HUGE_PGSIZE_BITMAP : MOCK_PGSIZE_BITMAP,
      geometry: huge
        ? ptDomainGeometry(pt)
        : { apertureStart: MOCK_APERTURE_START, apertureEnd: MOCK_APERTURE_LAST, forceAperture: true },
      ...(dirtyOps ? { dirtyOps } : {}),
      name: `mock_domain#${did}`,
    });
  }

  /**
   * A page size the domain offers as a run of the table's own leaves: a CPU page of a MOCK_IOMMUPT_HUGE domain is
   * two mock pages. Returns the leaf size; `count` scales by size / leaf.
   * @linux the generic page table choosing its own leaf sizes in map_pages / unmap_pages
   */
  leafSize(pgsize: number): number {
    if (this.pt.pgsizeBitmap >= pgsize && Math.floor(this.pt.pgsizeBitmap / pgsize) % 2 === 1) return pgsize;
    return minPageSize(this.pt.pgsizeBitmap);
  }

  /** The context entry of a device attached to this domain. */
  ctx(pri: boolean): MockCtxConfig {
    return {
      mode: CTX_MODE.TRANSLATE,
      levels: this.pt.levels,
      did: this.did,
      ttb: this.pt.root,
      dirty: this.dirtyTracking,
      pri,
    };
  }
}

/**
 * A nested domain: a stage-1 table owned by user space (its root an IPA; none = stage-1 bypass) translated through
 * a paging parent, tagged by a stage-1 cache ID; plus the selftest's fake cache entries `iotlb[]`.
 * @linux struct mock_iommu_domain_nested (selftest.c)
 */
export class MockNestedDomain extends IommuDomain {
  /** The selftest's fake IOTLB: one value per cache ID. @linux mock_iommu_domain_nested.iotlb */
  readonly iotlb = new Uint32Array(MOCK_NESTED_DOMAIN_IOTLB_NUM).fill(IOMMU_TEST_IOTLB_DEFAULT);
  /** The vIOMMU it was allocated on, if any (viommu.ts). @linux mock_iommu_domain_nested.mock_viommu */
  viommu: IommuViommu | undefined = undefined;

  constructor(
    ops: IommuDomainOps,
    readonly parent: MockPagingDomain,
    /** Stage-1 cache ID. */
    readonly s1id: number,
    /** Stage-1 root IPA, or -1 for stage-1 bypass. */
    readonly s1ttb: number,
    readonly s1Levels: number,
    iotlb: number,
  ) {
    super({ ops, type: IOMMU_DOMAIN.NESTED, name: `mock_nested#${s1id}` });
    this.iotlb.fill(iotlb >>> 0);
  }

  /** The context entry of a device attached to this domain. */
  ctx(pri: boolean): MockCtxConfig {
    const p = this.parent;
    if (this.s1ttb < 0) return { ...p.ctx(pri), s1id: this.s1id };
    return {
      mode: CTX_MODE.NESTED,
      levels: p.pt.levels,
      s1Levels: this.s1Levels,
      did: p.did,
      s1id: this.s1id,
      ttb: p.pt.root,
      s1ttb: this.s1ttb,
      dirty: p.dirtyTracking,
      pri,
    };
  }
}

/** The context entry for `domain` (undefined or blocked: abort). @linux arm_smmu_make_s2_domain_ste / arm_smmu_make_bypass_ste / arm_smmu_make_abort_ste */
export function ctxForDomain(domain: IommuDomain | undefined): MockCtxConfig {
  const pri = domain?.iopfHandler !== undefined;
  if (domain instanceof MockPagingDomain || domain instanceof MockNestedDomain) return domain.ctx(pri);
  if (domain?.type === IOMMU_DOMAIN.IDENTITY) return { mode: CTX_MODE.BYPASS };
  return { mode: CTX_MODE.ABORT };
}

/** The paging domain whose IOTLB entries a device attached to `domain` uses. @linux to_mock_domain (of a nested domain: its parent) */
export function pagingOf(domain: IommuDomain | undefined): MockPagingDomain | undefined {
  if (domain instanceof MockPagingDomain) return domain;
  if (domain instanceof MockNestedDomain) return domain.parent;
  return undefined;
}

/**
 * Count an attachment of `domain` on `iommu` (+1) or drop one (-1). Invalidation only reaches the IOMMUs a domain
 * is attached to, so when its last device there leaves (its entries already rewritten), the IOTLB entries tagged
 * with its domain ID are flushed on that IOMMU: an unmap made while detached could not reach them, and a later
 * re-attach would hit them stale (found by the testkit's isolation check).
 * @linux arm_smmu_attach_prepare/commit bookkeeping; the DID flush of domain_context_clear_one (intel/iommu.c)
 */
export function trackAttach(domain: IommuDomain | undefined, iommu: MockIommu, delta: 1 | -1): void {
  const p = pagingOf(domain);
  if (!p) return;
  const n = (p.attachedTo.get(iommu) ?? 0) + delta;
  if (n > 0) p.attachedTo.set(iommu, n);
  else if (p.attachedTo.delete(iommu)) iommu.invalidate(INV_OP.DOMAIN, { did: p.did });
}

/**
 * Build a paging domain's page table (throws ENOMEM from the page allocator).
 * @linux pt_iommu_mock_init
 */
export function newMockPageTable(
  iommu: MockIommu,
  ias: number,
  oas: number,
  sync: (g: IotlbGather) => void,
): IoPageTable {
  const m = iommu.machine;
  return new IoPageTable(mockFormat, m.memory, m.pages, { ias, oas, site: "mock_pgtable", diag: m.diag, sync });
}

/** A device's master, for ops that receive the device. @linux dev_iommu_priv_get */
export type MasterOf = (dev: Device) => MockMaster;
