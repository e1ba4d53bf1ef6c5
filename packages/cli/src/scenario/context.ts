/**
 * The state a scenario run builds up, by the names its steps give: the machine, the VMM process, its iommufd, bound
 * devices (device fd and iommufd dev_id), iommufd objects, mapped regions and guests; plus what the run observed
 * (object-graph snapshots, inspections, the fault and event timeline) for the summary and the report.
 */
import type { KernelModule, Machine, PlatformDescription, Process } from "@iommu-sim/core";
import { KernelError } from "@iommu-sim/core";
import type { Tracer } from "../trace-writer.js";

/** A device the VMM bound through its VFIO cdev. */
export interface BoundDevice {
  fd: number;
  devId: number;
}

/** An iommufd object the scenario named. */
export interface NamedObject {
  kind: "ioas" | "hwpt" | "viommu" | "vdevice" | "veventq" | "fault";
  id: number;
  /** The IOMMU kind it belongs to (vIOMMU), for vendor data. */
  iommuKind?: string;
  /** The object's file (vEVENTQ, fault queue), if it has one. */
  fd?: number | undefined;
}

/** User memory mapped into an IOAS. */
export interface Region {
  ioas: string;
  iova: number;
  size: number;
  /** The VMM's VA of the memory. */
  va: bigint;
}

/** One node of an object-graph snapshot. */
export interface GraphNode {
  id: number;
  type: string;
  /** The scenario's name for it, if any. */
  label?: string;
  users: number;
  /** A tombstone: the ID is held but the object is gone (IOMMU_DESTROY says ENOENT). */
  tombstone?: boolean;
}

/** One "holds a users reference on" edge. */
export interface GraphEdge {
  from: number;
  to: number;
  why: string;
}

/** The iommufd object graph at a point of the run. */
export interface GraphSnapshot {
  label: string;
  step: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** One entry of the fault and event timeline. */
export interface TimelineEvent {
  step: number;
  kind: "fault" | "page-request" | "vevent" | "page-response" | "dma";
  iommu?: string;
  device?: string;
  text: string;
}

/** A decoded translation path (see the inspect step). */
export interface InspectionRecord {
  step: number;
  device: string;
  iova: number;
  pasid?: number;
  text: string;
  /** Structured result from the vendor decoder (levels with raw values). */
  data: unknown;
}

/** Everything a run knows; steps read and extend it. */
export class RunContext {
  machine: Machine | undefined;
  process: Process | undefined;
  iommufd: number | undefined;
  readonly devices = new Map<string, BoundDevice>();
  readonly objects = new Map<string, NamedObject>();
  readonly regions = new Map<string, Region>();
  /** What each bound device is attached to (an IOAS or HWPT name). */
  readonly attached = new Map<string, string>();
  /** The IOAS each named HWPT was allocated on. */
  readonly hwptIoas = new Map<string, string>();
  /** Vendor guest state by name (e.g. an SMMUv3 guest's layout). */
  readonly guests = new Map<string, unknown>();
  readonly snapshots: GraphSnapshot[] = [];
  readonly timeline: TimelineEvent[] = [];
  readonly inspections: InspectionRecord[] = [];
  /** The index of the step running (0-based). */
  stepIndex = 0;
  /** Whether the teardown step ran (the runner tears down otherwise). */
  tornDown = false;
  /** Shows what a long step is doing now (the terminal's status line; nothing elsewhere). */
  status: (text: string) => void = () => {};

  constructor(
    readonly platform: PlatformDescription,
    readonly modules: readonly KernelModule[],
    readonly seed: number,
    readonly tracer: Tracer | undefined,
  ) {}

  /** The machine, once booted. */
  get m(): Machine {
    if (!this.machine) throw new StepError("the machine is not booted yet (add a boot step first)");
    return this.machine;
  }

  /** The VMM process. */
  get p(): Process {
    if (!this.process) throw new StepError("no VMM process yet (add a spawn step first)");
    return this.process;
  }

  /** The VMM's /dev/iommu fd. */
  get fd(): number {
    if (this.iommufd === undefined) throw new StepError("iommufd is not open yet (add an open-iommufd step first)");
    return this.iommufd;
  }

  device(name: string): BoundDevice {
    const d = this.devices.get(name);
    if (!d) throw new StepError(`device ${name} is not bound (add a bind step first)`);
    return d;
  }

  object(name: string, ...kinds: NamedObject["kind"][]): NamedObject {
    const o = this.objects.get(name);
    if (!o) throw new StepError(`no object named ${name}`);
    if (kinds.length > 0 && !kinds.includes(o.kind)) {
      throw new StepError(`${name} is a ${o.kind}, expected ${kinds.join(" or ")}`);
    }
    return o;
  }

  /** A page-table object (IOAS or HWPT) by name. */
  pt(name: string): number {
    return this.object(name, "ioas", "hwpt", "viommu").id;
  }

  region(name: string): Region {
    const r = this.regions.get(name);
    if (!r) throw new StepError(`no mapped region named ${name}`);
    return r;
  }

  /** The scenario name of an iommufd object ID, if it has one. */
  labelOf(id: number): string | undefined {
    for (const [k, o] of this.objects) if (o.id === id) return k;
    for (const [k, d] of this.devices) if (d.devId === id) return k;
    return undefined;
  }

  note(e: Omit<TimelineEvent, "step">): void {
    this.timeline.push({ step: this.stepIndex + 1, ...e });
  }
}

/** A step that could not do what it says (not an errno the scenario expected). */
export class StepError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StepError";
  }
}

/** The errno code of a kernel error, or undefined. */
export function errnoOf(e: unknown): string | undefined {
  return e instanceof KernelError ? e.code : undefined;
}
