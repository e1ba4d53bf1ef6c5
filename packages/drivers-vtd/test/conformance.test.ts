/**
 * The conformance suite against the VT-d driver, with the capabilities its target in @iommu-sim/testkit claims
 * (the testkit depends on this package; this test reaches it through the workspace).
 */
import { defineConformanceSuite, vtdTarget } from "@iommu-sim/testkit";

defineConformanceSuite(vtdTarget());
