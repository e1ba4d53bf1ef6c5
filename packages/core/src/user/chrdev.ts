/**
 * The machine's character devices by path (what devtmpfs shows under /dev). A kernel module registers its node in
 * init (`/dev/iommu`, `/dev/vfio/devices/vfio0`) and removes it in exit.
 * Mirrors `drivers/char/misc.c` (misc_register / misc_deregister) and `fs/char_dev.c` (chrdev_open).
 */
import type { Diagnostics } from "../kernel/diagnostics.js";
import { kerr } from "../kernel/errno.js";
import type { FileOperations } from "./file.js";

/**
 * Character devices of one machine (one per machine, DI token `Tokens.chrdevs`).
 * @linux the misc device list and the char device map (cdev_map)
 */
export class ChrdevRegistry {
  private readonly devs = new Map<string, FileOperations>();

  constructor(private readonly diag?: Diagnostics) {}

  /**
   * Make `path` openable with `fops`. Throws EEXIST when the path is taken, EINVAL for a path outside /dev.
   * @linux misc_register / cdev_add + device_create
   */
  register(path: string, fops: FileOperations): void {
    if (!path.startsWith("/dev/")) throw kerr("EINVAL", `char device path ${path} is not under /dev`);
    if (this.devs.has(path)) throw kerr("EEXIST", `char device ${path} already registered`);
    this.devs.set(path, fops);
  }

  /**
   * Remove `path`; files already open stay usable (they pin the module). Unregistering an unknown path is a
   * warning.
   * @linux misc_deregister / cdev_del
   */
  unregister(path: string): void {
    if (!this.devs.delete(path)) this.diag?.report("warning", `unregister of unknown char device ${path}`);
  }

  /**
   * The operations of `path`, or undefined.
   * @linux kobj_lookup in chrdev_open
   */
  lookup(path: string): FileOperations | undefined {
    return this.devs.get(path);
  }

  /** Registered paths, sorted. */
  paths(): string[] {
    return [...this.devs.keys()].sort();
  }

  /** Teardown report: char devices left registered after every module was unloaded. */
  leaks(): string[] {
    return this.paths().map((p) => `char device ${p} still registered at teardown`);
  }
}
