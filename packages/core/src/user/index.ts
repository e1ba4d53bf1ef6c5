/**
 * User space of a simulated machine: processes, files and fd tables, address spaces, page pinning and accounting,
 * and the uAPI struct codec. See README.md for the Linux files each module mirrors.
 */
export * from "./accounting.js";
export * from "./chrdev.js";
export * from "./cred.js";
export * from "./current.js";
export * from "./fdtable.js";
export * from "./file.js";
export * from "./gup.js";
export * from "./mm.js";
export * from "./page-refs.js";
export * from "./process.js";
export * from "./shmem.js";
export * from "./uapi-struct.js";
