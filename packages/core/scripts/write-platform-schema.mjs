#!/usr/bin/env node
// Write platform.schema.json (the platform description as JSON Schema, for editors) from the built package.
// Run after a build: `npm run schema -w @iommu-sim/core`. A test fails when the committed file is stale.
import { writeFileSync } from "node:fs";
import { platformJsonSchema } from "../dist/index.js";

const out = new URL("../platform.schema.json", import.meta.url);
writeFileSync(out, `${JSON.stringify(platformJsonSchema(), null, 2)}\n`);
