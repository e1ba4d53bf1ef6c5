/**
 * What a driver under test declares: its platform, its module(s), and the capabilities it claims. The suite runs
 * every check whose capabilities are claimed and reports the others as not applicable, never as passed.
 */
import type {
  Device,
  DriverModule,
  IommuDomain,
  IommuUserData,
  KernelModule,
  Machine,
  PlatformInput,
} from "@iommu-sim/core";

/** A page request a device sends, as the testkit asks a target to issue it. @linux struct iommu_fault_page_request */
export interface PageRequestSpec {
  /** -1 for a request without PASID. */
  pasid: number;
  addr: number;
  write: boolean;
  /** Page request group index. */
  grpid: number;
  last: boolean;
}

/** A page response the hardware received (normalised to the IOMMU_PAGE_RESP_* codes). @linux struct iommu_page_response */
export interface PageResponseSeen {
  grpid: number;
  /** IOMMU_PAGE_RESP_SUCCESS (0), INVALID (1) or FAILURE (2). */
  code: number;
}

/** How a target's vIOMMU takes IOMMU_HWPT_INVALIDATE arrays. @linux iommufd_viommu_ops.cache_invalidate */
export interface ViommuInvalidateSpec {
  /** `data_type` of the entries (e.g. IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3). */
  dataType: number;
  /** `entry_len`: the size of one entry. */
  entryLen: number;
  /** A valid entry invalidating the caches of the vDEVICE with virtual ID `virtId`. */
  entry(virtId: number): Uint8Array;
  /** An entry the driver refuses (a forbidden opcode, an out-of-range cache ID), and the errno it gives. */
  bad(virtId: number): Uint8Array;
  badCode: string;
}

/** How a target's device raises an event its driver reports to the vIOMMU's vEVENTQ. @linux iommufd_viommu_report_event */
export interface ViommuVeventSpec {
  /** The vEVENTQ type (IOMMU_VEVENTQ_TYPE_*). */
  type: number;
  /** Size of one vEVENT's payload. */
  payloadLen: number;
  /**
   * Data of the nested HWPT to attach instead of `nestedData()`, given an IPA of a zero-filled page the VMM mapped
   * (e.g. a stage-1 vSTE whose context pointer is that page, so the CD fetch finds no valid CD).
   */
  nestedData?(zeroIpa: number): IommuUserData;
  /** Make `dev` (attached to the nested HWPT) raise the event; `iova` is mapped to the zero page. */
  trigger(m: Machine, dev: Device, iova: number): Promise<void>;
  /** The virtual device ID the payload names. */
  virtId(payload: Uint8Array): number;
}

/** Capabilities a driver claims. Every check that needs one not claimed is reported "n/a: <capability>". */
export interface ConformanceCapabilities {
  /** Page sizes of paging domains (bytes), each checked by the mapping checks. The first is the granule. */
  pageSizes: readonly number[];
  /** An IOVA window inside every paging domain's aperture the checks may map in (at least 64 granules). */
  iova: { base: number; size: number };
  /** `ops.identityDomain` (or IDENTITY domains): DMA reaches PA = IOVA. */
  identity?: boolean;
  /** `ops.blockedDomain`: DMA is refused. */
  blocked?: boolean;
  /** Attaching paging domains to PASIDs of `device` (which must support at least `pasids`). */
  pasid?: { device: string; pasids: readonly number[] };
  /**
   * Nested domains: how to build one on a nesting parent for `dev` (driver data, or through the driver's vIOMMU).
   * The suite only relies on isolation: a DMA through it reaches memory the parent maps, or faults.
   */
  nested?: { alloc(m: Machine, dev: Device, parent: IommuDomain): Promise<IommuDomain>; parentFlags: number };
  /**
   * IOPF (PRI) on `device`. By default the device sends page requests through its endpoint
   * (`m.device(name).pageRequest`, which its model must accept) and responses are read back the same way; a target
   * whose model predates that may pass both hooks.
   */
  iopf?: {
    device: string;
    pageRequest?(m: Machine, dev: Device, req: PageRequestSpec): boolean | Promise<boolean>;
    responses?(m: Machine): readonly PageResponseSeen[];
  };
  /**
   * Translation and permission faults are reported to the domain's fault handler (report_iommu_fault). Linux's
   * Intel driver only logs them, so VT-d does not claim it.
   */
  reportsFaults?: boolean;
  /** Dirty tracking on paging domains allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING. */
  dirty?: boolean;
  /** The hardware model's strict mode (every cache hit re-checked against memory): its platform options. */
  strict?: { options: Record<string, unknown> };
  /** The model caches translations (the stale-cache check applies). */
  cachesTranslations?: boolean;
  /** iommufd through the VFIO cdev works for `primary` (IOAS, HWPT alloc/replace; dirty and nested where claimed). */
  iommufd?: boolean;
  /** vIOMMU/vDEVICE through iommufd: the vIOMMU type and the data of a nested HWPT allocated on it. */
  viommu?: {
    type: number;
    nestedData(): IommuUserData;
    virtId?: number;
    /** IOMMU_HWPT_INVALIDATE on the vIOMMU: the entry type and size, a valid entry and one the driver rejects. */
    invalidate?: ViommuInvalidateSpec;
    /** vEVENTQ: how the device raises an event the driver forwards to the vIOMMU. */
    vevent?: ViommuVeventSpec;
  };
}

/**
 * A driver under test.
 * @linux what a driver's Kconfig entry and DT binding declare: the driver, its hardware, its features
 */
export interface ConformanceTarget {
  /** Short name used in test names and reports ("mock", "smmuv3"). */
  name: string;
  /** The IOMMU driver module under test. */
  driver: DriverModule;
  /** Other modules loaded before it (rarely needed). */
  modules?: readonly KernelModule[];
  /** A fresh platform description (JSON input form). Default: core's default platform. */
  platform?(): PlatformInput;
  /** The IOMMU platform device (instance) the checks use, e.g. "mock0". */
  iommu: string;
  /** Endpoints behind `iommu`: `primary` and `secondary` must be in different IOMMU groups. */
  devices: { primary: string; secondary: string };
  /** IDs (DT `iommus` args[0]) free for platform devices the probe checks add behind `iommu`. */
  spareIds: readonly number[];
  /**
   * For an ACPI IOMMU (VT-d, AMD-Vi), which finds its devices from their requester IDs rather than DT `iommus`:
   * free PCI functions (`bus` names a PCI bus of the platform, `bdf` is `"BB:DD.F"`) that the firmware tables put
   * behind `iommu` and behind no other IOMMU (a DMAR DRHD scope or INCLUDE_PCI_ALL segment, IVRS IVHD entries).
   * The probe checks hot-add a PCI function there, as PCI enumeration or hotplug does, and the bus notifier probes
   * it. Used when `spareIds` is empty.
   * @linux pci_scan_slot + pci_bus_add_device -> iommu_bus_notifier(BUS_NOTIFY_ADD_DEVICE) -> iommu_probe_device
   */
  sparePci?: readonly { bus: string; bdf: string }[];
  /** Run after boot (e.g. register devices the platform description cannot express). */
  setup?(m: Machine): Promise<void>;
  /** Let the driver consume its event/fault queues (its threaded IRQ). Default: run the scheduler until idle. */
  settle?(m: Machine): Promise<void>;
  /** Claimed capabilities. */
  caps: ConformanceCapabilities;
  /**
   * Test-only deliberate bugs the driver offers (names it checks with `machine.mutant(name)`): the mutation run
   * switches each on alone and expects the suite to fail.
   */
  mutants?: readonly string[];
  /** Mutants switched on in every machine the checks boot (set by `runMutants`, not by hand). */
  enabledMutants?: readonly string[];
}

/** Options of a suite run. */
export interface ConformanceOptions {
  /**
   * Seed of the random checks: a failure names the seed that replays it; pass it here (or as IOMMU_SIM_SEED) with
   * `only` set to the check. Default: each check's own seed, derived from its id.
   */
  seed?: number;
  /** Scale of random campaigns: "ci" (bounded, npm test) or "soak" (IOMMU_SIM_SOAK=1). */
  scale?: "ci" | "soak";
  /** Only checks whose id starts with one of these. */
  only?: readonly string[];
}
