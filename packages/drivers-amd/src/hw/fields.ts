/**
 * Field helpers of the AMD-Vi hardware model (core's bitfield helpers): every register and structure field is
 * declared once, as data, in registers.ts and structures.ts, and used by name. The model reads raw memory with its
 * own definitions only: it knows nothing of the driver's headers nor of core's page-table engine.
 * @linux include/linux/bitfield.h
 */
export {
  bits,
  type Field,
  field,
  fieldGet,
  fieldPrep,
  fieldSet,
  getAddr,
  getField,
  maskOf,
  setAddr,
  setField,
  TWO_32,
} from "@iommu-sim/core";
