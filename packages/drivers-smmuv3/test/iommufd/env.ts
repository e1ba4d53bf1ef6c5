// The SMMUv3 VMM environment lives in the testkit now (importable by any VMM test).
export * from "@iommu-sim/testkit/smmuv3-vmm";
