/**
 * The interface between endpoint DMA and an IOMMU hardware model. A model owns its register file (MMIO) and its
 * in-memory structures; the platform hands it each DMA access as a {@link DmaRequest} and gets back a
 * {@link DmaTranslation}. The call is synchronous and allocation-free: the caller reuses one request and one
 * result object.
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import type { PhysicalMemory } from "./memory.js";
import type { MmioHandler } from "./mmio.js";

/**
 * One DMA access as it arrives at the IOMMU: the bus transaction's requester/stream ID, PASID/SSID, address and
 * attributes.
 * @linux the PCIe TLP / AXI transaction attributes seen by the IOMMU (RID, PASID prefix, AxPROT)
 */
export interface DmaRequest {
  /** The stream ID / requester ID the platform routes this device with. */
  requesterId: number;
  /** -1 when the access carries no PASID/SSID. */
  pasid: number;
  iova: number;
  write: boolean;
  exec: boolean;
  privileged: boolean;
}

/**
 * The outcome of translating one {@link DmaRequest}.
 * @linux the result of the hardware page walk (or its fault record)
 */
export interface DmaTranslation {
  /** Physical address of iova. */
  pa: number;
  /** Bytes from iova that stay contiguous in pa (to the end of the page/block). */
  length: number;
  /** 0 = translated; otherwise a model-defined non-zero code. */
  faultCode: number;
  /** Short text of the fault, "" when ok. */
  faultReason: string;
}

/**
 * A simulated IOMMU: its register file and its translation function. A fault is recorded by the model in its own
 * fault/event queue (architected records in memory) before `translate` returns; the platform turns a non-zero
 * `faultCode` into a thrown {@link DmaFault} for the caller.
 * @linux the IOMMU hardware a driver in drivers/iommu programs
 */
export interface IommuHwModel {
  readonly name: string;
  /** 'mock' | 'smmuv3' | 'vtd' | 'amd' | user kinds. */
  readonly kind: string;
  /** Its register file, mapped at the platform's MMIO base. */
  readonly mmio: MmioHandler;
  readonly mmioSize: number;
  /** Hot path: sync, no allocation. */
  translate(req: DmaRequest, out: DmaTranslation): void;
  /**
   * A snapshot of the model's event counters in one shape for every kind (tools print them side by side). Read-only:
   * calling it changes nothing. Optional: a model without counters is shown without them.
   */
  counters?(): IommuHwCounters;
}

/**
 * What every IOMMU hardware model can count, named the same across kinds. A field a kind has no such thing for
 * (the mock has no command queue) is absent.
 * @linux the PMU events of an IOMMU (SMMUv3 PMCG, VT-d perfmon): transactions, TLB hits/misses, walks, faults
 */
export interface IommuHwCounters {
  /** DMA transactions the model translated or refused (one per translate call). */
  translations: number;
  /** Translations served by the IOTLB. */
  iotlbHits: number;
  /** Translations that missed the IOTLB. */
  iotlbMisses: number;
  /** Page-table walks started. */
  walks: number;
  /** Faults recorded (event/fault records, page requests included). */
  faults: number;
  /** Page requests queued (PRI / PRQ / PPR). */
  pageRequests: number;
  /** Commands consumed from the command queue. */
  commands?: number;
  /** Invalidations performed (TLB, configuration and ATC invalidation commands or registers). */
  invalidations: number;
}

/**
 * What a model factory is given: the instance name, the machine's memory and diagnostics, and the platform
 * description's feature options for this instance.
 * @linux the platform resources a device model is instantiated with (QEMU device properties)
 */
export interface HwModelContext {
  name: string;
  memory: PhysicalMemory;
  diag: Diagnostics;
  options: Record<string, unknown>;
}

/**
 * Builds one hardware model instance.
 * @linux a QEMU TypeInfo's instance_init, for an IOMMU device type
 */
export type HwModelFactory = (ctx: HwModelContext) => IommuHwModel;

/** A fresh request object, for callers that keep one to reuse. @linux the transaction attributes of a bus master */
export function newDmaRequest(): DmaRequest {
  return { requesterId: 0, pasid: -1, iova: 0, write: false, exec: false, privileged: false };
}

/** A fresh translation result object, for callers that keep one to reuse. @linux the result of a hardware page walk */
export function newDmaTranslation(): DmaTranslation {
  return { pa: 0, length: 0, faultCode: 0, faultReason: "" };
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * A DMA access the IOMMU refused. Thrown to the endpoint's caller after the model has recorded its own fault
 * record (event queue, fault log, PPR/PRQ entry).
 * @linux the DMA master's view of an aborted transaction (completer abort / unsupported request)
 */
export class DmaFault extends Error {
  /** The faulting IOVA (the chunk that failed, not necessarily the start of the transfer). */
  readonly iova: number;
  /** The endpoint device's name. */
  readonly device: string;
  /** The IOMMU instance that refused the access. */
  readonly iommu: string;
  readonly requesterId: number;
  /** -1 when the access carried no PASID. */
  readonly pasid: number;
  readonly write: boolean;
  /** The model's non-zero fault code. */
  readonly faultCode: number;
  readonly faultReason: string;

  constructor(f: {
    iova: number;
    device: string;
    iommu: string;
    requesterId: number;
    pasid: number;
    write: boolean;
    faultCode: number;
    faultReason: string;
  }) {
    super(
      `DMA ${f.write ? "write" : "read"} fault: ${f.device} iova ${hex(f.iova)} via ${f.iommu} ` +
        `(requester ${hex(f.requesterId)}${f.pasid >= 0 ? ` pasid ${f.pasid}` : ""}): ` +
        `${f.faultReason || "fault"} [code ${f.faultCode}]`,
    );
    this.name = "DmaFault";
    this.iova = f.iova;
    this.device = f.device;
    this.iommu = f.iommu;
    this.requesterId = f.requesterId;
    this.pasid = f.pasid;
    this.write = f.write;
    this.faultCode = f.faultCode;
    this.faultReason = f.faultReason;
  }
}
