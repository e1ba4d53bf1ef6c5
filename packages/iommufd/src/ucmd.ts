/**
 * One ioctl call in flight: the context, the caller, the command copied in, and the way back to the caller's
 * struct (object form or bytes).
 * @linux struct iommufd_ucmd, iommufd_ucmd_respond
 */
import { kerr } from "@iommu-sim/core";
import type { UapiStruct } from "./core-user.js";
import type { IommufdCtx } from "./ctx.js";
import type { IommufdObject } from "./object.js";
import type { IommufdUser } from "./user-glue.js";

/**
 * The caller's argument: a struct in object form, its bytes, or a user pointer (a number or bigint address in the
 * calling process's memory, where the struct is read from and out fields are written back).
 */
export type IoctlArg = Record<string, unknown> | Uint8Array | number | bigint;

/**
 * @linux struct iommufd_ucmd
 */
export class IommufdUcmd<T extends object = Record<string, unknown>> {
  /** An object allocated with iommufd_object_alloc_ucmd, finalized or aborted by the ioctl core. @linux new_obj */
  newObj: IommufdObject | undefined = undefined;

  constructor(
    /** @linux iommufd_ucmd.ictx */
    readonly ictx: IommufdCtx,
    /** The calling process. @linux current */
    readonly user: IommufdUser,
    /** The command, copied in and zero-extended. @linux iommufd_ucmd.cmd */
    readonly cmd: T,
    /** @linux iommufd_ucmd.user_size */
    readonly userSize: number,
    private readonly struct: UapiStruct<T>,
    private readonly arg: IoctlArg,
  ) {}

  /**
   * Copy the command back to the caller: min(user size, `len`) bytes.
   * @linux iommufd_ucmd_respond
   */
  respond(len = this.struct.size): void {
    this.copyOut(0, Math.min(this.userSize, len));
  }

  /**
   * Copy one field back (IOMMU_OPTION writes only val64).
   * @linux copy_to_user(&ubuffer->field, ...)
   */
  respondField(name: keyof T & string): void {
    const f = this.struct.field(name);
    if (f.offset + f.size > this.userSize) throw kerr("EFAULT", `${name} is beyond the caller's struct`);
    this.copyOut(f.offset, f.offset + f.size);
  }

  private copyOut(from: number, to: number): void {
    if (typeof this.arg === "object" && !(this.arg instanceof Uint8Array)) {
      // The object form: each field as it would read back from the bytes (checked, converted, fresh arrays).
      const obj = this.arg;
      const decoded = this.struct.normalize(this.cmd as Partial<Record<keyof T & string, never>>) as Record<
        string,
        unknown
      >;
      for (const f of this.struct.fields) {
        if (f.name === "size") continue;
        if (f.offset >= from && f.offset + f.size <= to) obj[f.name] = decoded[f.name];
      }
      return;
    }
    const bytes = this.struct.encode(this.cmd as Partial<Record<keyof T & string, never>>);
    if (typeof this.arg === "bigint" || typeof this.arg === "number") {
      // copy_to_user: EFAULT when the caller's memory is unmapped or read-only there.
      if (to > from) this.user.write(BigInt(this.arg) + BigInt(from), bytes.subarray(from, to));
      return;
    }
    if (this.arg instanceof Uint8Array) {
      if (to > this.arg.byteLength) throw kerr("EFAULT", "response beyond the caller's buffer");
      this.arg.set(bytes.subarray(from, to), from);
    }
  }
}
