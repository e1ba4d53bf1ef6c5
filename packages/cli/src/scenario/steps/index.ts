/** Every step kind's runner, by its `do`. A new kind: its schema in ../schema.ts and its runner here. */
import { dma } from "./dma.js";
import { pageRequests, veventqRead } from "./events.js";
import {
  attach,
  bind,
  close,
  destroy,
  detach,
  faultQueueAlloc,
  hwptAlloc,
  ioasAlloc,
  map,
  unbind,
  unmap,
} from "./iommufd.js";
import { boot, openIommufd, spawn, teardown } from "./machine.js";
import { inspect, snapshot } from "./observe.js";
import { smmuv3Guest, smmuv3GuestRemap } from "./smmuv3-guest.js";
import type { StepTable } from "./types.js";
import { vdeviceAlloc, veventqAlloc, viommuAlloc } from "./viommu.js";

export const STEPS: StepTable = {
  boot,
  spawn,
  "open-iommufd": openIommufd,
  bind,
  "ioas-alloc": ioasAlloc,
  map,
  unmap,
  "hwpt-alloc": hwptAlloc,
  attach,
  detach,
  dma,
  "fault-queue-alloc": faultQueueAlloc,
  "page-requests": pageRequests,
  "viommu-alloc": viommuAlloc,
  "vdevice-alloc": vdeviceAlloc,
  "veventq-alloc": veventqAlloc,
  "veventq-read": veventqRead,
  "smmuv3-guest": smmuv3Guest,
  "smmuv3-guest-remap": smmuv3GuestRemap,
  unbind,
  destroy,
  close,
  snapshot,
  inspect,
  teardown,
};
