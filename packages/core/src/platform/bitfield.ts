/**
 * Register and descriptor fields declared once, as data (`{ name, bit, width }`), and the helpers that read and
 * write them. Bits of an in-memory structure are counted from bit 0 of its first little-endian 32-bit word across
 * the whole structure, as the SMMUv3 specification numbers STE/CD bits (bit 64 is bit 0 of dword 1); a field never
 * crosses a 32-bit word, so wider fields (addresses) are declared as _LO/_HI halves. Hardware models and drivers
 * each declare their own field tables with these helpers; sharing the helpers shares no knowledge of a format.
 * @linux include/linux/bitfield.h (FIELD_GET / FIELD_PREP over GENMASK_ULL definitions)
 */

/**
 * One field of a register or descriptor.
 * @linux a GENMASK_ULL()/BIT() definition used with FIELD_GET/FIELD_PREP (include/linux/bitfield.h)
 */
export interface Field {
  readonly name: string;
  /** First bit, counted across the structure (its 32-bit word is `bit >>> 5`). */
  readonly bit: number;
  /** Width in bits (1..32). */
  readonly width: number;
}

/** Declare a field of `width` bits at `bit`. @linux GENMASK_ULL(bit + width - 1, bit) */
export function field(name: string, bit: number, width = 1): Field {
  if (width < 1 || width > 32 || (bit & 31) + width > 32) {
    throw new RangeError(`field ${name} (bit ${bit}, width ${width}) crosses a 32-bit word`);
  }
  return { name, bit, width };
}

/** Declare a field by its inclusive [hi:lo] bit range, as the spec tables write it. @linux GENMASK_ULL(hi, lo) */
export function bits(name: string, hi: number, lo: number): Field {
  return field(name, lo, hi - lo + 1);
}

/** Index of the 32-bit word holding `f`. @linux the word of a FIELD_GET on a __le64 array */
export function wordOf(f: Field): number {
  return f.bit >>> 5;
}

/** Shift of `f` inside its word. @linux __bf_shf */
export function shiftOf(f: Field): number {
  return f.bit & 31;
}

/** The mask of `f` inside its word, as a signed 32-bit integer. @linux GENMASK */
export function maskOf(f: Field): number {
  const s = f.bit & 31;
  return f.width === 32 ? -1 : (((1 << f.width) - 1) << s) | 0;
}

/** Extract `f` (unsigned) from the 32-bit word that holds it. @linux FIELD_GET */
export function fieldGet(word: number, f: Field): number {
  const s = f.bit & 31;
  return f.width === 32 ? word >>> 0 : (word >>> s) & ((2 ** f.width - 1) >>> 0);
}

/** Extract `f` from a structure held as 32-bit words. @linux FIELD_GET(mask, le64_to_cpu(desc[n])) */
export function getField(words: ArrayLike<number>, f: Field, base = 0): number {
  return fieldGet(words[base + (f.bit >>> 5)]! >>> 0, f);
}

/** `word` with `f` replaced by `value` (masked to the field's width). @linux u32_replace_bits */
export function fieldSet(word: number, f: Field, value: number): number {
  const m = maskOf(f);
  return ((word & ~m) | ((value << (f.bit & 31)) & m)) >>> 0;
}

/** `fieldSet(0, f, value)`. @linux FIELD_PREP */
export function fieldPrep(f: Field, value: number): number {
  return fieldSet(0, f, value);
}

/** Set `f` to `value` in a structure held as 32-bit words. @linux FIELD_PREP into desc[n] */
export function setField(words: { [i: number]: number }, f: Field, value: number): void {
  const w = f.bit >>> 5;
  words[w] = fieldSet(words[w] ?? 0, f, value);
}

/** 2^32, for joining 32-bit halves of an address without bigint. */
export const TWO_32 = 4294967296;

/** Powers of two 0..63 (exact doubles). */
const POW2 = new Float64Array(64);
for (let i = 0; i < 64; i++) POW2[i] = 2 ** i;
const LOCAL_TWO_32 = 4294967296;

/**
 * 2^`lg2` for an integer `lg2` in 0..63, from a table: what a walker's hot path uses instead of `2 ** lg2` (a call
 * to Math.pow when `lg2` is not a constant).
 * @linux BIT_ULL(lg2)
 */
export function pow2(lg2: number): number {
  return POW2[lg2]!;
}

/**
 * `x` (a non-negative integer below 2^53) rounded down to a multiple of 2^`lg2` (0..63), without the floating-point
 * remainder (a call to fmod) that `x - x % 2 ** lg2` costs: a mask below 4 GiB, else an exact division by a power
 * of two. For the address arithmetic of the hardware models' walk and TLB paths.
 * @linux ALIGN_DOWN(x, BIT_ULL(lg2))
 */
export function alignDownLg2(x: number, lg2: number): number {
  if (x < LOCAL_TWO_32 && lg2 < 32) return (x & (-1 << lg2)) >>> 0;
  const size = POW2[lg2]!;
  return Math.floor(x / size) * size;
}

/**
 * Join an address from two fields of a structure: `lo` holds address bits [31:lo.bit&31], `hi` address bits
 * [32 + hi.width - 1 : 32] (both fields sit at their address bit positions in their words).
 * @linux the `desc & GENMASK_ULL(51, n)` address extraction of arm-smmu-v3.c
 */
export function getAddr(words: ArrayLike<number>, lo: Field, hi: Field, base = 0): number {
  const l = (words[base + (lo.bit >>> 5)]! & maskOf(lo)) >>> 0;
  const h = (words[base + (hi.bit >>> 5)]! & maskOf(hi)) >>> 0;
  return h * TWO_32 + l;
}

/** Store an address into two fields of a structure (the inverse of {@link getAddr}). @linux FIELD_PREP of an address mask */
export function setAddr(words: { [i: number]: number }, lo: Field, hi: Field, addr: number): void {
  const l = addr >>> 0;
  const h = Math.floor(addr / TWO_32);
  const wl = lo.bit >>> 5;
  const wh = hi.bit >>> 5;
  words[wl] = (((words[wl] ?? 0) & ~maskOf(lo)) | (l & maskOf(lo))) >>> 0;
  words[wh] = (((words[wh] ?? 0) & ~maskOf(hi)) | (h & maskOf(hi))) >>> 0;
}
