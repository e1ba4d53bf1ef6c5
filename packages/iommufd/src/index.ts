/**
 * @iommu-sim/iommufd — the iommufd user object model (IOAS, HWPT, devices, accesses), the io_pagetable, the uAPI
 * and the VFIO glue, mirroring drivers/iommu/iommufd. See the README for the Linux file each module mirrors.
 */
export * from "./access.js";
export * from "./core.js";
export * from "./ctx.js";
export * from "./device.js";
export * from "./hw-pagetable.js";
export * from "./io-pagetable.js";
export * from "./ioas.js";
export * from "./ioctl.js";
export * from "./main.js";
export * from "./module.js";
export * from "./object.js";
export * from "./option.js";
export * from "./pages.js";
export * from "./tokens.js";
export * from "./uapi.js";
export * from "./ucmd.js";
export * from "./user-glue.js";
export * from "./vfio-compat.js";
