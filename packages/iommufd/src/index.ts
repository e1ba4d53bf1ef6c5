/**
 * @iommu-sim/iommufd — the iommufd user object model (IOAS, HWPT, devices, accesses), the io_pagetable, the uAPI
 * and the VFIO glue, mirroring drivers/iommu/iommufd. See the README for the Linux file each module mirrors.
 */
export * from "./access.js";
export * from "./core.js";
export * from "./ctx.js";
export * from "./device.js";
// issue 5: fault queues and vEVENTQs
export * from "./eventq.js";
export * from "./fault.js";
export * from "./helpers.js";
export * from "./hw-pagetable.js";
// issue 5: nested translation, vIOMMU, vDEVICE, HW queue
export * from "./hw-queue.js";
export * from "./io-pagetable.js";
export * from "./ioas.js";
export * from "./ioctl.js";
export * from "./main.js";
export * from "./mmap.js";
export * from "./module.js";
export * from "./nested.js";
export * from "./object.js";
export * from "./option.js";
export * from "./pages.js";
export * from "./tokens.js";
export * from "./uapi.js";
export * from "./ucmd.js";
export * from "./user-glue.js";
export * from "./vdevice.js";
export * from "./veventq.js";
export * from "./vfio-cdev.js";
export * from "./vfio-compat.js";
export * from "./viommu.js";
