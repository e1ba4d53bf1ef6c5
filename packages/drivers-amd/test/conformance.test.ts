/**
 * The conformance suite against the AMD driver, with the capabilities its target in @iommu-sim/testkit claims
 * (the testkit depends on this package; this test reaches it through the workspace).
 */
import { amdTarget, defineConformanceSuite } from "@iommu-sim/testkit";

defineConformanceSuite(amdTarget());
