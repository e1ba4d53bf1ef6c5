/**
 * DI extension points of iommufd: object types and ioctl ops are multi-registrations in the machine's container,
 * so another package (drivers-mock's IOMMU_TEST_CMD, like CONFIG_IOMMUFD_TEST) adds its own.
 * @linux iommufd_object_ops[] and iommufd_ioctl_ops[] (drivers/iommu/iommufd/main.c)
 */
import { createToken } from "@iommu-sim/core";
import type { IommufdCore } from "./core.js";
import type { UapiStruct } from "./core-user.js";
import type { IommufdObject } from "./object.js";
import type { IommufdUcmd } from "./ucmd.js";

/**
 * What the core does with objects of one type.
 * @linux struct iommufd_object_ops
 */
export interface IommufdObjectTypeOps {
  /** The type's name, e.g. `IOAS`. @linux enum iommufd_object_type */
  readonly type: string;
  /** Free what the object holds; called once its users dropped to 0. @linux iommufd_object_ops.destroy */
  destroy(obj: IommufdObject): void | Promise<void>;
  /** Undo a fully initialised but never finalized object (instead of destroy). @linux iommufd_object_ops.abort */
  abort?(obj: IommufdObject): void | Promise<void>;
  /** Revoke long-ish short-term references before waiting for them. @linux iommufd_object_ops.pre_destroy */
  preDestroy?(obj: IommufdObject): void | Promise<void>;
  /** The struct file the object carries (fault queues, vEVENTQs). @linux iommufd_object_ops.file_offset */
  fileOf?(obj: IommufdObject): { fput(): void | Promise<void> } | undefined;
}

/**
 * One ioctl command.
 * @linux struct iommufd_ioctl_op
 */
export interface IommufdIoctlOp {
  /** `_IOC_NR` of the command (0x80 + n). */
  readonly nr: number;
  /** Full ioctl number (`_IO(';', nr)`). @linux iommufd_ioctl_op.ioctl_num */
  readonly ioctlNum: number;
  /** The command's struct (its `size` is what the kernel copies in). @linux iommufd_ioctl_op.size */
  readonly struct: UapiStruct<object>;
  /** offsetofend of the last field of the first version. @linux iommufd_ioctl_op.min_size */
  readonly minSize: number;
  /** A command that finished without sleeping may return nothing (no promise). @linux iommufd_ioctl_op.execute */
  execute(ucmd: IommufdUcmd): Promise<void> | void;
}

/** DI tokens of iommufd. */
export const IommufdTokens = {
  /** Multi-registration: object types. */
  objectType: createToken<IommufdObjectTypeOps>("iommufd.objectType"),
  /** Multi-registration: ioctl ops. */
  ioctlOp: createToken<IommufdIoctlOp>("iommufd.ioctlOp"),
  /** The per-machine iommufd state (tables built from the registrations). */
  core: createToken<IommufdCore>("iommufd.core"),
} as const;
