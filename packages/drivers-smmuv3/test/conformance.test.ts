/**
 * The conformance suite against the SMMUv3 driver, with every capability it has claimed (the target lives in
 * @iommu-sim/testkit, which depends on this package; this test reaches it through the workspace).
 */
import { defineConformanceSuite, smmuv3Target } from "@iommu-sim/testkit";

defineConformanceSuite(smmuv3Target());
