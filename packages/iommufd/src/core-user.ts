/** The parts of `@iommu-sim/core`'s user-space layer (core/src/user) this package uses, gathered in one place. */
export { copyStructFromUser, type UapiObject, UapiStruct, type UapiValue } from "@iommu-sim/core";
