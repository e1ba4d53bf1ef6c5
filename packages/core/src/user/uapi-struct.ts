/**
 * Binary layouts of uAPI structs, declared once as data. A struct is a list of fields with C types; offsets follow
 * the x86-64 ABI (natural alignment, `__aligned_u64` aligned to 8, the struct padded to its alignment). User space
 * passes either an object with the kernel's field names (`__u32` as number, `__u64` as bigint) or the struct's bytes;
 * the kernel side works on bytes, as `copy_struct_from_user` does.
 */
import { kerr } from "../kernel/errno.js";

/** C field types a uAPI struct uses. */
export type UapiType = "u8" | "u16" | "u32" | "s32" | "u64" | "s64";

/** One field: a name and a type, optionally an array of `count` elements (e.g. `__reserved[3]`). */
export interface UapiFieldSpec {
  name: string;
  type: UapiType;
  count?: number;
}

/** A laid-out field. */
export interface UapiField extends UapiFieldSpec {
  offset: number;
  size: number;
}

const SIZE: Record<UapiType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8, s64: 8 };

/** The value of a field in object form: numbers for types up to 32 bits, bigints for 64-bit ones. */
export type UapiValue = number | bigint | number[] | bigint[];

/** A struct in object form. */
export type UapiObject = Record<string, UapiValue>;

/**
 * A uAPI struct layout: `sizeof`, field offsets, and object <-> bytes conversion.
 * @linux a `struct` in include/uapi/linux/*.h
 */
export class UapiStruct<T extends object = UapiObject> {
  readonly fields: readonly UapiField[];
  /** sizeof(struct). */
  readonly size: number;
  private readonly byName = new Map<string, UapiField>();

  constructor(
    readonly name: string,
    specs: readonly UapiFieldSpec[],
  ) {
    let off = 0;
    let align = 1;
    const fields: UapiField[] = [];
    for (const s of specs) {
      const el = SIZE[s.type];
      off = Math.ceil(off / el) * el;
      align = Math.max(align, el);
      const f: UapiField = { ...s, offset: off, size: el * (s.count ?? 1) };
      fields.push(f);
      this.byName.set(s.name, f);
      off += f.size;
    }
    this.fields = fields;
    this.size = Math.ceil(off / align) * align;
  }

  /** A field by name; throws for an unknown name (a bug in the caller). */
  field(name: keyof T & string): UapiField {
    const f = this.byName.get(name);
    if (!f) throw new Error(`struct ${this.name} has no field ${name}`);
    return f;
  }

  /**
   * `offsetofend(struct, field)`: what an ioctl table uses as a command's minimum size.
   * @linux offsetofend
   */
  offsetofend(name: keyof T & string): number {
    const f = this.field(name);
    return f.offset + f.size;
  }

  /** A zeroed object with every field (0, 0n, or arrays of them). */
  zero(): T {
    // Copies of one template share its shape (a fast clone); only array fields need fresh values.
    if (this.zeroTemplate === undefined) {
      const t: Record<string, UapiValue> = {};
      for (const f of this.fields) t[f.name] = is64(f.type) ? 0n : 0;
      this.zeroTemplate = t;
    }
    const o: Record<string, UapiValue> = { ...this.zeroTemplate };
    for (const f of this.fields) {
      if (f.count !== undefined) o[f.name] = new Array(f.count).fill(is64(f.type) ? 0n : 0) as number[] | bigint[];
    }
    return o as T;
  }
  private zeroTemplate: Record<string, UapiValue> | undefined;

  /**
   * Encode an object into `sizeof` bytes (missing fields are zero). A number for a 64-bit field or a bigint for a
   * narrow one is accepted when it fits; values that do not fit the field throw EINVAL-free `RangeError` (a caller
   * bug, not a kernel error).
   */
  encode(obj: Partial<Record<keyof T & string, UapiValue>>, out = new Uint8Array(this.size)): Uint8Array {
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    const fields = this.fields;
    for (let k = 0; k < fields.length; k++) {
      const f = fields[k]!;
      const v = (obj as Record<string, UapiValue | undefined>)[f.name];
      if (v === undefined) continue;
      const el = SIZE[f.type];
      if (!Array.isArray(v)) {
        if (f.offset + el <= out.byteLength) writeField(dv, f.offset, f.type, v, this.name, f.name);
        continue;
      }
      for (let i = 0; i < (f.count ?? 1); i++) {
        const x = v[i];
        if (x === undefined) continue;
        const at = f.offset + i * el;
        if (at + el > out.byteLength) break;
        writeField(dv, at, f.type, x, this.name, f.name);
      }
    }
    return out;
  }

  /**
   * The object form `obj` as {@link UapiStruct.decode} of its {@link UapiStruct.encode} reads it (every field
   * checked and converted the same way: RangeError for a value that does not fit; 64-bit fields as bigints; missing
   * fields zero), without the bytes in between. Fresh arrays; `obj` is not aliased.
   */
  normalize(obj: Partial<Record<keyof T & string, UapiValue>>): T {
    const o = this.zero() as Record<string, UapiValue>;
    const fields = this.fields;
    for (let k = 0; k < fields.length; k++) {
      const f = fields[k]!;
      const v = (obj as Record<string, UapiValue | undefined>)[f.name];
      if (v === undefined) continue;
      if (!Array.isArray(v)) {
        const x = fieldValue(f.type, v, this.name, f.name);
        if (f.count !== undefined) (o[f.name] as (number | bigint)[])[0] = x;
        else o[f.name] = x;
        continue;
      }
      for (let i = 0; i < (f.count ?? 1); i++) {
        const e = v[i];
        if (e === undefined) continue;
        const x = fieldValue(f.type, e, this.name, f.name);
        if (f.count !== undefined) (o[f.name] as (number | bigint)[])[i] = x;
        else o[f.name] = x;
      }
    }
    return o as T;
  }

  /** Decode `bytes` (at least up to each field's end; shorter input leaves the rest zero) into an object. */
  decode(bytes: Uint8Array): T {
    const o = this.zero() as Record<string, UapiValue>;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (const f of this.fields) {
      const el = SIZE[f.type];
      if (f.count !== undefined) {
        const arr = o[f.name] as (number | bigint)[];
        for (let i = 0; i < f.count; i++) {
          const at = f.offset + i * el;
          if (at + el <= bytes.byteLength) arr[i] = readField(dv, at, f.type);
        }
      } else if (f.offset + el <= bytes.byteLength) {
        o[f.name] = readField(dv, f.offset, f.type);
      }
    }
    return o as T;
  }

  /** Copy decoded fields of `bytes` back into `obj` in place (copy_to_user into the caller's object). */
  assignInto(obj: Record<string, unknown>, bytes: Uint8Array, upTo = bytes.byteLength): void {
    const d = this.decode(bytes.subarray(0, Math.min(upTo, bytes.byteLength))) as Record<string, UapiValue>;
    for (const f of this.fields) if (f.offset + f.size <= upTo) obj[f.name] = d[f.name];
  }
}

function is64(t: UapiType): boolean {
  return t === "u64" || t === "s64";
}

/**
 * Check one field's value and convert it to what reading the field back gives (a number up to 32 bits, a bigint
 * for 64 bits); the struct and field names only go into the message of a value that does not fit.
 */
function fieldValue(t: UapiType, x: number | bigint, struct: string, name: string): number | bigint {
  switch (t) {
    case "u8":
    case "u16":
    case "u32":
    case "s32": {
      const n = typeof x === "bigint" ? Number(x) : x;
      const lo = t === "s32" ? -0x8000_0000 : 0;
      const hi = t === "u8" ? 0xff : t === "u16" ? 0xffff : t === "u32" ? 0xffff_ffff : 0x7fff_ffff;
      if (!Number.isInteger(n) || n < lo || n > hi) {
        throw new RangeError(`${struct}.${name}: ${String(x)} does not fit ${t}`);
      }
      return n === 0 ? 0 : n; // no -0: the bytes have none
    }
    case "u64":
    case "s64": {
      const b = typeof x === "bigint" ? x : BigInt(x);
      if (t === "u64" && (b < 0n || b > 0xffff_ffff_ffff_ffffn)) {
        throw new RangeError(`${struct}.${name}: ${b} does not fit u64`);
      }
      return t === "u64" ? b : BigInt.asIntN(64, b);
    }
  }
}

/** Write one field (checked by {@link fieldValue}). */
function writeField(dv: DataView, at: number, t: UapiType, x: number | bigint, struct: string, name: string): void {
  const v = fieldValue(t, x, struct, name);
  switch (t) {
    case "u8":
      dv.setUint8(at, v as number);
      return;
    case "u16":
      dv.setUint16(at, v as number, true);
      return;
    case "u32":
      dv.setUint32(at, v as number, true);
      return;
    case "s32":
      dv.setInt32(at, v as number, true);
      return;
    case "u64":
      dv.setBigUint64(at, v as bigint, true);
      return;
    case "s64":
      dv.setBigInt64(at, v as bigint, true);
  }
}

function readField(dv: DataView, at: number, t: UapiType): number | bigint {
  switch (t) {
    case "u8":
      return dv.getUint8(at);
    case "u16":
      return dv.getUint16(at, true);
    case "u32":
      return dv.getUint32(at, true);
    case "s32":
      return dv.getInt32(at, true);
    case "u64":
      return dv.getBigUint64(at, true);
    case "s64":
      return dv.getBigInt64(at, true);
  }
}

/**
 * Copy a user struct of `usize` bytes into a kernel struct of `ksize` bytes: a shorter user struct is zero-extended;
 * a longer one must have only zero bytes past `ksize` (E2BIG otherwise).
 * @linux copy_struct_from_user
 */
export function copyStructFromUser(user: Uint8Array, ksize: number): Uint8Array {
  const k = new Uint8Array(ksize);
  k.set(user.subarray(0, Math.min(user.byteLength, ksize)));
  for (let i = ksize; i < user.byteLength; i++)
    if (user[i] !== 0) throw kerr("E2BIG", "non-zero bytes past the struct");
  return k;
}
