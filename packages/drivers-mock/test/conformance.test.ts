/**
 * The conformance suite against the mock driver, with every capability the mock has claimed (the target lives in
 * @iommu-sim/testkit, which depends on this package; this test reaches it through the workspace).
 */
import { defineConformanceSuite, mockTarget } from "@iommu-sim/testkit";

defineConformanceSuite(mockTarget());
